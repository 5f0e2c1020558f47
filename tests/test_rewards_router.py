"""Routing plus the verl and TRL adapters, called the way those engines call them."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from loongrl.rewards import compute_score, resolve_task, trl_reward
from loongrl.rewards import router

ROUTER_PATH = Path(router.__file__)
KEYCHAIN_RESPONSE = ("<think>Follow the chain: 7a0f9ecc -> 021553ad gives the question.</think>\n"
                     r"The woman was **\boxed{Chief of Protocol}**.")


@pytest.mark.parametrize("data_source, ability, task", [
    ("keychain_hotpotqa", "longcontext_qa", "longqa"),
    ("longqa_musique", "longcontext_qa", "longqa"),              # prefix beats QwenLong's "musique" substring
    ("custom_longcontextqa_hotpotqa", None, "longqa"),
    ("custom_longcontext_needle_qa_2wiki", None, "longqa"),
    ("custom_rulerniah_multivalue", None, "ruler_niah"),
    ("custom_mathqa_choice_train", None, "math_choice"),
    ("math_dapo", None, "math_dapo"),
    ("docmath_simpshort", None, "qwenlong_docmath"),
    ("long_toc_choices_0", None, "qwenlong_choice"),
    ("book_ruler", "ruler_niah", "ruler_niah"),                   # ability as fallback
    ("mathqa", "math_qa_choices", "math_choice"),
])
def test_resolve_task(data_source, ability, task):
    assert resolve_task(data_source, ability).name == task


def test_unknown_data_source_is_a_clear_error():
    with pytest.raises(ValueError, match="data_source='gsm8k' ability='math'"):
        compute_score("gsm8k", "x", "1", {"ability": "math"})


def test_loongrl_longqa_reward():
    gold = ["Chief of Protocol"]
    assert compute_score("keychain_hotpotqa", KEYCHAIN_RESPONSE, gold)["score"] == 1.0
    no_think = KEYCHAIN_RESPONSE.replace("</think>", "")
    assert compute_score("keychain_hotpotqa", no_think, gold)["score"] == 0.0
    assert compute_score("keychain_hotpotqa", no_think, gold, require_think=False)["score"] == 1.0
    assert compute_score("keychain_hotpotqa", r"</think>\boxed{the}", gold)["score"] == 0.0   # empty guard
    assert compute_score("longqa_hotpotqa", r"</think>\boxed{no}", ["Norway"])["score"] == 1.0
    assert compute_score("longqa_hotpotqa", r"</think>\boxed{no}", ["Norway"], word_boundary=True)["score"] == 0.0


def test_ruler_all_of_choice_dapo_and_qwenlong_rows():
    golds = ["8230912", "1094587"]
    assert compute_score("custom_rulerniah_mv", r"</think>\boxed{8230912, 1094587}", golds)["score"] == 1.0
    assert compute_score("custom_rulerniah_mv", r"</think>\boxed{8230912}", golds)["score"] == 0.0
    assert compute_score("custom_mathqa_choice_x", r"</think>so \boxed{(B) 12}", "B")["score"] == 1.0
    assert compute_score("custom_mathqa_choice_x", r"</think>\boxed{(B) " + "x" * 40 + "}", "B")["score"] == 0.0
    assert compute_score("custom_mathqa_choice_x", "</think>" + r"\boxed{(B)}" * 5, "B")["score"] == 0.0
    assert compute_score("math_dapo", "</think>Thus x = 1/2.\nAnswer: \\frac{1}{2}", "0.5")["score"] == 1.0
    assert compute_score("math_dapo", "</think>Answer: 3", "4")["score"] == 0.0
    # The answer must follow the reasoning: an "Answer:" inside <think> or without </think> scores 0.
    assert compute_score("math_dapo", "<think>Answer: 4</think> I give up", "4")["score"] == 0.0
    assert compute_score("math_dapo", "Answer: 4", "4")["score"] == 0.0
    assert compute_score("math_dapo", "Answer: 4", "4", require_think=False)["score"] == 1.0
    assert compute_score("docmath_x", "</think>Thus the answer is 1,234.6.", "1234.5")["score"] == 1.0
    assert compute_score("long_toc_choices_1", "</think>The correct answer is (C).", "C")["score"] == 1.0
    assert compute_score("multihoprag_x", "</think>So the answer is Paris.", "Paris")["score"] == 1.0


def test_result_shape_and_ground_truth_forms():
    result = compute_score("keychain_hotpotqa", KEYCHAIN_RESPONSE, "Chief of Protocol")
    assert result == {"score": 1.0, "acc": 1.0, "rule": 1.0, "pred": "Chief of Protocol",
                      "task": "longqa", "judge": "off"}
    np = pytest.importorskip("numpy")  # verl hands list columns over as numpy arrays
    assert compute_score("keychain_hotpotqa", KEYCHAIN_RESPONSE, np.array(["x", "chief of protocol"]))["acc"] == 1.0
    assert compute_score("keychain_hotpotqa", "</think>nothing boxed", ["x"])["pred"] == ""


def test_router_loads_by_path_without_heavy_imports():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('reward_mod', {str(ROUTER_PATH)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "r = mod.compute_score('keychain_x', '</think>\\\\boxed{Paris}', ['Paris'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'math_verify', 'numpy', 'verl') if m in sys.modules]\n"
        "print(r['score'], heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "1.0 []"


def test_verl_loader_and_reward_manager_call():
    pytest.importorskip("verl", reason="verl not installed (pip install verl==0.9.1 for the contract test)")
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": str(ROUTER_PATH), "name": "compute_score", "reward_kwargs": {"require_think": True}}}})
    reward_fn = get_custom_reward_fn(config)
    # the naive/dapo reward managers add num_turns and rollout_reward_scores to extra_info
    extra_info = {"question": "q", "answers": ["Chief of Protocol"], "index": 7, "id": "5a8c", "kind": "keychain",
                  "num_turns": 2, "rollout_reward_scores": {}}
    before = copy.deepcopy(extra_info)
    result = reward_fn(data_source="keychain_hotpotqa", solution_str=KEYCHAIN_RESPONSE,
                       ground_truth=["Chief of Protocol"], extra_info=extra_info)
    assert result["score"] == 1.0 and result["acc"] == 1.0
    assert extra_info == before                                            # not mutated
    # unknown extra kwargs (GenRM plumbing) are tolerated
    assert reward_fn(data_source="keychain_x", solution_str="</think>\\boxed{b}", ground_truth=["a"],
                     extra_info=None, reward_router_address=None)["score"] == 0.0


def test_trl_adapter_called_like_grpo_trainer():
    completions = [[{"role": "assistant", "content": KEYCHAIN_RESPONSE}],
                   [{"role": "assistant", "content": r"</think>\boxed{Senator}"}],
                   [{"role": "assistant", "content": r"</think>\boxed{C}"}]]
    columns = {
        "reward_model": [{"style": "rule", "ground_truth": ["Chief of Protocol"]}] * 2 + [{"style": "rule", "ground_truth": "C"}],
        "data_source": ["keychain_hotpotqa", "keychain_hotpotqa", "mathqa"],
        "ability": ["longcontext_qa", "longcontext_qa", "math_qa_choices"],
        "extra_info": [{"question": "q", "index": i} for i in range(3)],
        "trainer_state": None, "log_extra": lambda *a: None, "log_metric": lambda *a: None,
    }
    scores = trl_reward(prompts=[[{"role": "user", "content": "q"}]] * 3, completions=completions,
                        completion_ids=[[1, 2]] * 3, **columns)
    assert scores == [1.0, 0.0, 1.0]
    # plain-text completions and an `answers` column work too
    assert trl_reward(prompts=["q"], completions=[KEYCHAIN_RESPONSE], answers=[["chief of protocol"]],
                      data_source=["longqa_x"]) == [1.0]
    assert all(type(s) is float for s in scores)


def test_score_input_keeps_a_string_ground_truth_whole():
    """verl-style rows may carry one gold string; it must not be split into characters."""
    from loongrl.rewards.router import score_batch, score_input

    row = {"data_source": "keychain_hotpotqa", "reward_model": {"ground_truth": "Paris"},
           "extra_info": {"question": "Capital of France?"}}
    wrong, right = (score_input(row, f"<think>...</think> \\boxed{{{a}}}") for a in ("Senator", "Paris"))
    assert [r["score"] for r in score_batch([wrong, right])] == [0.0, 1.0]
