"""Training the memory agent: the recipe option, its verl overrides and lengths (written out by hand below), the
checks before launch and the preflight's scaling. The run through verl's real trainer is
tests/test_train_memory_agent_preflight.py (verl_cpu, slow)."""

from __future__ import annotations

import os

import pytest

from conftest import write_model_config

from loongrl.train import verl_backend
from loongrl.train.checks import rope_scaling_plan, run_checks
from loongrl.train.recipe import RecipeError, parse_recipe

MEMORY = {"chunk_tokens": 3000, "memory_tokens": 700, "answer_tokens": 500, "problem_tokens": 400}


def _recipe(model="org/base", **rl):
    stage = {"data": {"components": [{"path": "/d/a.parquet"}]}, "max_prompt_tokens": 120000,
             "max_response_tokens": 900, "batch_size": 8, "group_size": 4, "memory_agent": dict(MEMORY), **rl}
    return parse_recipe({"name": "m", "model": model, "cluster": {"nnodes": 1, "gpus_per_node": 2},
                         "stages": [{"name": "mem", "rl": stage}]}, "m.yaml", "/base")


def _overrides(recipe) -> dict:
    ov = verl_backend.rl_overrides(recipe, recipe.stages[0], "/m", "/d/data.parquet", "/ck")
    return {k: v for k, v in (o.split("=", 1) for o in ov)}


def test_verl_gets_one_conversations_lengths_the_agent_loop_and_its_budgets():
    o = _overrides(_recipe())
    # a conversation: problem 400 + chunk 3000 + memory 700 + template room 256 = 4356 prompt tokens; the longest
    # reply is a memory update (700 > answer 500); the token budget holds one conversation: 4356 + 700
    assert (o["data.max_prompt_length"], o["data.max_response_length"]) == ("4356", "700")
    assert o["actor_rollout_ref.actor.ppo_max_token_len_per_gpu"] == "5056"
    assert o["actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu"] == "5056"
    # rows are longer than a conversation: verl must not drop them (the stage's own filter bounds them at 120000)
    assert o["data.filter_overlong_prompts"] == "False"
    assert o["actor_rollout_ref.rollout.agent.default_agent_loop"] == "memory_agent"
    custom = "+actor_rollout_ref.rollout.custom.memory_agent"
    assert (o[f"{custom}.chunk_tokens"], o[f"{custom}.memory_tokens"], o[f"{custom}.answer_tokens"]) == \
        ("3000", "700", "500")
    assert o["+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES"] == "loongrl.train.memory_agent_verl"
    assert o["algorithm.adv_estimator"] == "grpo"  # verl's own: final answers only, broadcast to the conversations

    # without it, the same stage is one conversation of the whole prompt, filtered by verl as before
    plain = _overrides(_recipe(memory_agent=None))
    assert (plain["data.max_prompt_length"], plain["data.max_response_length"]) == ("120000", "900")
    assert plain["data.filter_overlong_prompts"] == "True"
    assert not [k for k in plain if "memory_agent" in k or "rollout.custom" in k or "VERL_USE_EXTERNAL_MODULES" in k]


def test_the_overrides_compose_against_verls_config_and_reach_the_registered_agent_loop():
    pytest.importorskip("verl", reason="verl is not installed (make setup installs it)")
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    from verl.utils.config import omega_conf_to_dataclass

    from loongrl.generation.memory_agent import MemoryAgentConfig
    from loongrl.train.memory_agent_verl import MemoryAgentLoop, memory_agent_config

    recipe = _recipe()
    cfg = verl_backend.compose_overrides(verl_backend.rl_overrides(recipe, recipe.stages[0], "/m", "/d.parquet", "/ck"))
    rollout = cfg.actor_rollout_ref.rollout
    assert (rollout.prompt_length, rollout.response_length) == (4356, 700)  # verl's own interpolation of data.*
    assert rollout.agent.default_agent_loop == "memory_agent"
    # verl's rollout dataclass keeps the extension point the agent loop reads
    assert omega_conf_to_dataclass(rollout).custom == {"memory_agent": {"chunk_tokens": 3000, "memory_tokens": 700,
                                                                         "answer_tokens": 500}}
    assert memory_agent_config(rollout.custom) == MemoryAgentConfig(chunk_tokens=3000, memory_tokens=700,
                                                                     answer_tokens=500)
    assert _agent_loop_registry["memory_agent"] == {"_target_": f"{MemoryAgentLoop.__module__}.MemoryAgentLoop"}
    with pytest.raises(ValueError, match="actor_rollout_ref.rollout.custom.memory_agent"):
        memory_agent_config(None)


@pytest.mark.parametrize("extra, message", [
    ({"advantage": "task_normalized"}, "works with `advantage: grpo` and no `aepo` only"),
    ({"aepo": {"entropy_low": 0.1, "entropy_high": 0.9}}, "works with `advantage: grpo` and no `aepo` only"),
    ({"overlong_buffer": {"length": 100}}, "does not take an overlong_buffer"),
    ({"memory_agent": {**MEMORY, "chunk_tokens": 0}}, "memory_agent.chunk_tokens: must be >= 1"),
])
def test_combinations_verl_would_get_wrong_are_refused_naming_the_field(extra, message):
    with pytest.raises(RecipeError, match="stages\\[0\\].rl.memory_agent") as e:
        _recipe(**extra)
    assert message in str(e.value)


def test_trl_refuses_the_memory_agent_and_verls_checks_state_its_lengths():
    report = run_checks(_recipe(), "trl")
    assert ("mem: memory_agent runs on the verl backend only (TRL's GRPOTrainer trains one completion per "
            "generation, not a sample's K conversations); use --backend verl or remove it from the recipe") \
        in report.problems
    verl = run_checks(_recipe(), "verl")
    assert not [p for p in verl.problems if "memory" in p]
    assert ("mem: memory agent on verl: chunks of 3000 tokens, memory 700, answer 500; each conversation <= 4356 + "
            "700 tokens, rows <= 120000 prompt tokens") in verl.ran
    assert "mem: token budget 5056/GPU x SP 1 = 5056 >= prompt 4356 + response 700 (actor, ref, rollout log-prob)" \
        in verl.ran


def test_a_document_past_the_window_needs_no_yarn_when_the_agent_reads_it_in_chunks(tmp_path):
    model = write_model_config(str(tmp_path / "qwen7b"))  # a 32,768-token native window
    short = _recipe(model)
    assert rope_scaling_plan(short, short.stages[0]) is None  # 4356 + 700 fits
    long = _recipe(model, memory_agent=None)  # the whole 120,000-token prompt: YaRN x4
    assert rope_scaling_plan(long, long.stages[0])["factor"] == 4


def test_the_preflight_scales_chunks_with_the_rows_and_caps_the_replies():
    from loongrl.train.preflight import RESPONSE_TOKENS, preflight_recipe

    recipe, notes = _recipe(), []
    pf = preflight_recipe(recipe, "/tiny", {"/d/a.parquet": "/pf/a.parquet"}, 0.01, notes)
    m = pf.stages[0].rl.memory_agent
    # rows cut to 1% of their length, so chunks too (ceil(3000 x 0.01) = 30): as many conversations per row
    assert (m.chunk_tokens, m.memory_tokens, m.answer_tokens, m.problem_tokens) == (30, RESPONSE_TOKENS,
                                                                                    RESPONSE_TOKENS, 400)
    assert recipe.stages[0].rl.memory_agent.chunk_tokens == 3000  # the recipe itself untouched
    assert f"stage mem: memory agent with chunks of 30 tokens, memory and answer <= {RESPONSE_TOKENS} and " \
           f"{RESPONSE_TOKENS} new tokens" in notes
    assert os.path.basename(pf.stages[0].rl.data.components[0].path) == "a.parquet"


def test_training_splits_a_keychain_row_as_evaluation_does():
    """The agent loop reads a row's document as `eval --memory-agent` does: the intro and the chain instructions
    are the problem, the passages the document (the fallback would leave the intro in the document)."""
    pytest.importorskip("verl")
    from loongrl.data.prompts import KEYCHAIN_INTRO, KEYCHAIN_TAIL
    from loongrl.eval.cli import memory_templates
    from loongrl.generation.memory_agent import split_prompt
    from loongrl.train import memory_agent_verl

    context = "Passage 1:\nA\nkey 1 -> value\n\nPassage 2:\nB"
    tail = KEYCHAIN_TAIL.format(head="abc")
    prompt = [{"role": "system", "content": "S"}, {"role": "user", "content": KEYCHAIN_INTRO + context + "\n\n" + tail}]
    problem, document = split_prompt(prompt, memory_agent_verl.ROW_TEMPLATES)
    assert document == context
    assert problem == "S\n\n" + KEYCHAIN_INTRO.strip() + "\n\n" + tail
    assert (problem, document) == split_prompt(prompt, memory_templates())
