"""Training the memory agent through verl's real trainer on this CPU: the preflight (`loongrl.train.preflight`, what
`loongrl train --backend verl --preflight` runs) with the real SmolLM2-135M-Instruct, one RL stage with `memory_agent`
on (chunks of 40 tokens, memory and answer <= 16 new tokens), 4 prompts x 2 samples, one step (two would double the
test's time). Each row's document (78 tokens) is read in 2 chunks, so each sample is 2 memory conversations and a
final answer: K = 3 training rows per sample, 24 in the step, each with the final answer's reward. The problem asks
the model to copy "The answer is <word>"; SmolLM2's final answer did so in 3 of 8 samples (the same protocol in HF
generate at T=1, chunks of 48 tokens), so a group's two rewards often differ (not always: see the last test).
Marked `verl_cpu` and `slow`: 5 min 36 s on the shared, busy 2-core machine (one Ray start, one stage of 177 s, most
of it the actor update of the 24 rows, and its merge)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest
import yaml

pytest.importorskip("verl", reason="verl is not installed (pip install '.[verl]')")

from loongrl.data.io import write_rows  # noqa: E402

pytestmark = [pytest.mark.verl_cpu, pytest.mark.slow]
WORDS = ("river", "apple", "stone", "tiger", "piano", "lemon", "ocean", "maple")
FILLER = "The weather was calm and the town was quiet that day. "
CHUNK_TOKENS = 48
CHUNKS = 2  # the document's 93 tokens in chunks of 48 (checked in the test with the model's tokenizer)
GROUP = 2
REWARD = {"require_think": False, "word_boundary": True, "faithful": False}


def _rows() -> list[dict]:
    return [{"data_source": "longqa_demo", "ability": "longcontext_qa",
             "prompt": [{"role": "user", "content": "Read the text.\n" + (FILLER * 2 + f"The answer is {w}. ") * 3
                         + f"\n\nCopy the following text word for word.\nText: The answer is {w}."}],
             "reward_model": {"style": "rule", "ground_truth": [w]}, "extra_info": {"index": i}}
            for i, w in enumerate(WORDS)]


@pytest.fixture(scope="module")
def memory_preflight(tmp_path_factory, smollm2):
    d = tmp_path_factory.mktemp("memory_preflight")
    write_rows(str(d / "qa.parquet"), _rows())
    recipe = {"name": "memory-agent", "model": smollm2, "seed": 0, "cluster": {"nnodes": 1, "gpus_per_node": 1},
              "stages": [{"name": "mem", "rl": {
                  "data": {"components": [{"path": "qa.parquet"}]},
                  "memory_agent": {"chunk_tokens": CHUNK_TOKENS, "memory_tokens": 16, "answer_tokens": 16,
                                   "problem_tokens": 64},
                  "group_size": GROUP, "kl_coef": 0.0, "max_prompt_tokens": 256, "max_response_tokens": 32,
                  "batch_size": 4, "steps": 1, "optim": {"learning_rate": 1.0e-6},
                  "reward_kwargs": REWARD}}]}
    (d / "mem.yaml").write_text(yaml.safe_dump(recipe))
    out = d / "out"
    # the CLI's preflight with one step instead of its two (`preflight(steps=)`), in its own process as the CLI runs
    run = (f"from loongrl.train.recipe import load_recipe; from loongrl.train.preflight import preflight; "
           f"import sys; r = preflight(load_recipe({str(d / 'mem.yaml')!r}), {str(out)!r}, model={smollm2!r}, "
           f"timeout=900, steps=1); sys.exit(0 if all(x.status.startswith('passed') for x in r) else 1)")
    proc = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=1200)
    return proc, out / "run" / "00_mem"


def _template(prompt: str) -> str:
    return max(("Updated memory:", "Your answer:"), key=prompt.rfind)


def _jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_each_chunk_is_a_conversation_trained_with_the_final_answers_reward(memory_preflight, smollm2):
    from transformers import AutoTokenizer

    from loongrl.generation.memory_agent import chunk_document, split_prompt
    from loongrl.rewards.router import compute_score

    proc, sdir = memory_preflight
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[preflight] stage mem (rl): passed" in proc.stdout
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert {len(chunk_document(tokenizer, split_prompt(r["prompt"])[1], CHUNK_TOKENS)) for r in _rows()} == {CHUNKS}

    metrics = {r["step"]: r["data"] for r in _jsonl(sdir / "verl_metrics.jsonl")}
    assert sorted(metrics) == [1] and "actor/lr" in metrics[1]
    for step in (1,):
        # verl's own dump of the step's training rows, keyed {uid}_{session}_{conversation}
        rows = _jsonl(sdir / "rollouts" / f"{step}.jsonl")
        sessions = defaultdict(list)
        for r in rows:
            uid, session, index = r["uid"].rsplit("_", 2)
            sessions[(uid, session)].append((int(index), r))
        assert len({uid for uid, _ in sessions}) == 4 and len(sessions) == 4 * GROUP
        assert len(rows) == 4 * GROUP * (CHUNKS + 1)
        for convs in sessions.values():
            convs.sort(key=lambda x: x[0])
            assert [i for i, _ in convs] == list(range(CHUNKS + 1))
            # CHUNKS reading conversations (the update template), then the final answer (the answer template): the
            # template's last line is the later of the two in the prompt (a memory may echo either)
            assert [_template(r["input"]) for _, r in convs] == ["Updated memory:"] * CHUNKS + ["Your answer:"]
            # the memory written by conversation i is what conversation i + 1 reads
            for (_, a), (_, b) in zip(convs, convs[1:]):
                assert a["output"].strip() in b["input"]
            # every conversation carries the final answer's reward: the shared scorer's on the final answer's text
            final = convs[-1][1]
            assert final["score"] == compute_score("longqa_demo", final["output"], final["gts"], {}, **REWARD)["score"]
            assert len({r["score"] for _, r in convs}) == 1
        # verl's metrics are over the same rows (num_turns: 2 messages per conversation)
        assert metrics[step]["training/num_turns/mean"] == 2
        assert metrics[step]["response_length/max"] <= 16
    assert metrics[1]["actor/grad_norm"] >= 0 and "[hf rollout] replica 0: loaded" in open(sdir / "verl.log").read()


def test_the_advantage_is_the_final_answers_within_its_group_given_to_every_conversation(memory_preflight):
    proc, sdir = memory_preflight
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = {r["step"]: r["data"] for r in _jsonl(sdir / "verl_metrics.jsonl")}[1]
    scores = defaultdict(set)  # the rewards of each prompt's group (its two final answers)
    for r in _jsonl(sdir / "rollouts" / "1.jsonl"):
        scores[r["uid"].rsplit("_", 2)[0]].add(r["score"])
    if not any(len(s) > 1 for s in scores.values()):  # no group's rewards differ (p ~ 0.08): no gradient to check
        assert m["critic/advantages/max"] == m["critic/advantages/min"] == 0 and m["actor/pg_loss"] == 0
        return
    # by hand: GRPO over a group's two final answers with rewards a != b gives (r - (a+b)/2) / (|a-b|/sqrt(2)) =
    # +-1/sqrt(2), on every token of every conversation of the session. Grouping every conversation instead (three
    # rows each, rewards a,a,a,b,b,b: std |a-b| x sqrt(6/4/5)) would give +-0.9129.
    assert m["critic/advantages/max"] == pytest.approx(2 ** -0.5, rel=1e-4)
    assert m["critic/advantages/min"] == pytest.approx(-(2 ** -0.5), rel=1e-4)
    assert m["actor/pg_loss"] != 0 and m["actor/grad_norm"] > 0  # a policy gradient: the step moved the weights
