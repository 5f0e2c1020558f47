"""Routing plus the verl and TRL adapters, called the way those engines call them."""

import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loongrl.rewards import compute_score, resolve_task, trl_reward
from loongrl.rewards import router, scorers

ROUTER_PATH = Path(router.__file__)
KEYCHAIN_RESPONSE = ("<think>Follow the chain: 7a0f9ecc -> 021553ad gives the question.</think>\n"
                     r"The woman was **\boxed{Chief of Protocol}**.")


@pytest.mark.parametrize("data_source, ability, task", [
    ("keychain_hotpotqa", "longcontext_qa", "longqa"),
    ("longqa_musique", "longcontext_qa", "longqa"),
    ("custom_longcontextqa_hotpotqa", None, "longqa"),
    ("custom_longcontext_needle_qa_2wiki", None, "longqa"),
    ("custom_rulerniah_multivalue", None, "ruler_niah"),
    ("book_ruler_multikey", None, "ruler_niah"),
    ("custom_mathqa_choice_train", None, "math_choice"),
    ("mathqa_choice", None, "math_choice"),
    ("math_dapo", None, "math_dapo"),
    ("longbench_musique", None, "longbench"),                     # item 7: no longer QwenLong's docqa
    ("longbench_hotpotqa", None, "longbench"),                    # item 7: no longer an error
    ("docmath_simpshort", None, "qwenlong_docmath"),
    ("long_toc_choices_0", None, "qwenlong_choice"),
    ("multihoprag_0_20000", None, "qwenlong_docqa"),
    ("musique_0_20000", None, "qwenlong_docqa"),
    ("book_ruler", "ruler_niah", "ruler_niah"),                   # no prefix matches: ability as fallback
    ("mathqa", "math_qa_choices", "math_choice"),
])
def test_resolve_task(data_source, ability, task):
    assert resolve_task(data_source, ability).name == task


def test_prefix_table_is_exact():
    prefixes = [p for p, _ in router.DATA_SOURCE_PREFIXES]
    # no prefix starts another, so the table's order cannot change a route
    assert not [(a, b) for a in prefixes for b in prefixes if a != b and b.startswith(a)]
    assert {name for _, name in router.DATA_SOURCE_PREFIXES} == set(router.TASKS)


@pytest.mark.parametrize("data_source", ["gsm8k", "my_musique_set", "hf_docmath", "LONGQA_x"])
def test_unknown_data_source_is_a_clear_error(data_source):
    # item 7: substrings no longer route; the message names the source and every known prefix
    with pytest.raises(ValueError, match=rf"data_source='{data_source}' ability='math'; known data_source "
                                         r"prefixes: keychain_, longqa_, .*, musique; abilities: "):
        compute_score(data_source, "x", "1", {"ability": "math"})


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


# ---- issue 11: reference parity, hand-checked against the reference code paths --------------------

def test_math_dapo_answer_line_is_case_insensitive_as_verl():
    # item 2: verl's pattern is (?i)Answer\s*:\s*([^\n]+)
    for response in ("<think>x</think>\nanswer: 13", "<think>x</think>\nThe final answer: 13"):
        assert compute_score("math_dapo", response, "13")["score"] == 1.0
        assert compute_score("math_dapo", response, "13", faithful=True)["score"] == 1.0


def test_long_toc_choices_strips_stars_and_takes_the_first_match():
    # item 3: long.py removes "*" and uses re.search (first match)
    assert compute_score("long_toc_choices_0", "</think>The correct answer is **(B)**", "B")["score"] == 1.0
    both = "</think>The correct answer is (B). Hmm, The correct answer is (C)."
    assert compute_score("long_toc_choices_0", both, "B")["score"] == 1.0
    assert compute_score("long_toc_choices_0", both, "C")["score"] == 0.0
    # the gold goes through the same parser (QwenLong-L1 stores it as "The correct answer is (X)")
    assert compute_score("long_toc_choices_0", both, "The correct answer is (B)")["score"] == 1.0


def test_docmath_numbers_as_the_reference():
    # item 4: first "the answer is"; scale factors 100, 1,000 and 100,000 (not 1,000,000)
    twice = "</think>So the answer is 12. Rechecking, the answer is 15."
    assert compute_score("docmath_x", twice, "12")["score"] == 1.0
    assert compute_score("docmath_x", twice, "15")["score"] == 0.0
    assert compute_score("docmath_x", "</think>the answer is 1.5", "150100")["score"] == 1.0    # x100,000
    assert compute_score("docmath_x", "</think>the answer is 1.5", "1501000")["score"] == 0.0   # x1,000,000
    assert compute_score("docmath_x", "</think>The answer is $1,234.5", "Therefore, the answer is 1234.5.")["score"] == 1.0


@pytest.mark.parametrize("prefix", [p for p, _ in router.DATA_SOURCE_PREFIXES])
@pytest.mark.parametrize("ground_truth", [1990, 19.5, True, None, [None], []])
def test_scalar_and_none_inputs_never_crash(prefix, ground_truth):
    # item 5: a None response has no answer (0); a None gold has nothing to match (0)
    assert compute_score(prefix + "x", None, ground_truth)["score"] == 0.0
    result = compute_score(prefix + "x", "<think>x</think> 1990", ground_truth)
    assert result["score"] in (0.0, 1.0) and result["acc"] == result["score"]


def test_scalar_golds_are_strings():
    # item 5: ground_truth=1990 used to raise TypeError
    assert compute_score("docmath_x", "</think>the answer is 1990", 1990)["score"] == 1.0
    assert compute_score("keychain_x", "</think>\\boxed{1990}", 1990)["score"] == 1.0
    assert compute_score("custom_mathqa_choice_x", "</think>\\boxed{(B)}", ["B"])["score"] == 1.0
    assert compute_score("math_dapo", "</think>Answer: 1990", 1990)["score"] == 1.0
    assert compute_score("keychain_x", "</think>\\boxed{1990}", None)["score"] == 0.0


ITEM_6 = r"<think>x</think> The answer is \boxed{Paris} (enclosed in \boxed{} as required)."


def test_one_answer_for_training_mining_and_evaluation():
    # item 6: the training reward, the hard-mining scorer and the LongBench scorer read "Paris"
    from loongrl.eval import longbench
    from loongrl.eval.run import EvalItem
    from loongrl.rewards.router import row_scorer

    train = compute_score("keychain_hotpotqa", ITEM_6, ["Paris"])
    row = {"data_source": "keychain_hotpotqa", "reward_model": {"ground_truth": ["Paris"]}, "extra_info": {}}
    [mined] = row_scorer({"require_think": True})([row], [ITEM_6])
    item = EvalItem("hotpotqa/1", "hotpotqa", [], ["Paris"], "q")
    [[evaluated]] = longbench.make_scorer(longbench.get_preset("loongrl"))([item], [[ITEM_6]])
    assert (train["pred"], train["score"]) == ("Paris", 1.0)
    assert (mined["pred"], mined["score"], mined["exact"]) == ("Paris", 1.0, 1.0)
    assert (evaluated["pred"], evaluated["score"]) == ("Paris", 1.0)


def test_golds_in_qwenlong_answer_is_form():
    # item 7: the gold is parsed like the response, so "the answer is answer" no longer matches it
    gold = "Therefore, the answer is Paris."
    assert compute_score("musique_0_20000", "</think>So the answer is answer.", gold)["score"] == 0.0
    assert compute_score("musique_0_20000", "</think>So the answer is Paris.", gold)["score"] == 1.0
    assert compute_score("longbench_musique", "</think>\\boxed{Paris}", ["Paris"])["score"] == 1.0


# (data_source, response, gold, ours, faithful): every departure in docs/rewards.md, with the value
# the reference code gives (faithful=True) and ours, both worked out by hand from the reference.
DEPARTURES = [
    # empty-prediction guard: "the" normalises to "", which the reference finds in every gold
    ("keychain_x", r"</think>\boxed{the}", ["Paris"], 0.0, 1.0),
    # golds that normalise to "" are skipped; the reference finds "" in every prediction
    ("keychain_x", r"</think>\boxed{Paris}", ["the"], 0.0, 1.0),
    # one answer per response: the reference training reward reads the last box only
    ("keychain_x", "</think>So the answer is Paris.", ["Paris"], 1.0, 0.0),
    ("keychain_x", ITEM_6, ["Paris"], 1.0, 0.0),
    # a "\boxed " anywhere wins in the reference; the last box wins here
    ("keychain_x", r"</think>$\boxed 5$ so \boxed{7}", ["5"], 0.0, 1.0),
    ("keychain_x", r"</think>$\boxed 5$ so \boxed{7}", ["7"], 1.0, 0.0),
    # \fbox: the reference's remove_boxed assertion fails (reward 0)
    ("keychain_x", r"</think>\fbox{Paris}", ["Paris"], 1.0, 0.0),
    # KeyChain: two-way in both (the paper); the reference dispatcher's one-way scorer would say 0
    ("custom_longcontext_needle_qa_x", r"</think>\boxed{Protocol}", ["Chief of Protocol"], 1.0, 1.0),
    # RULER: all values (ours) vs any value (LoongRL's default mode)
    ("book_ruler_multivalue", r"</think>\boxed{8230912}", ["8230912", "1094587"], 0.0, 1.0),
    # RULER: LoongRL's normaliser in both ("-" is a space), not RULER's raw substring
    ("book_ruler_multikey", r"</think>\boxed{wandering age}", ["wandering-age"], 1.0, 1.0),
    # require_think: LoongRL requires </think> on its two-way QA path only
    ("book_ruler_multikey", r"\boxed{8230912}", ["8230912"], 0.0, 1.0),
    ("mathqa_choice", r"\boxed{(B)}", "B", 0.0, 1.0),
    ("math_dapo", "Answer: 4", "4", 0.0, 1.0),
    ("keychain_x", r"\boxed{Paris}", ["Paris"], 0.0, 0.0),
    # MathQA: a bare letter counts here; LoongRL's regex needs "(X)"
    ("mathqa_choice", r"</think>\boxed{B}", "B", 1.0, 0.0),
    # math_dapo: math-verify equivalence vs verl's Minerva string equality
    ("math_dapo", "</think>Answer: 0.5", "\\frac{1}{2}", 1.0, 0.0),
    # QwenLong docqa: "The answer is" at sentence start counts here; the reference matches lowercase only
    ("multihoprag_x", "</think>The answer is Paris.", "Therefore, the answer is Paris.", 1.0, 0.0),
    # DocMath: an answer that does not parse never matches; the reference reads it as 0
    ("docmath_x", "</think>the answer is 1.2.3", "So the answer is 0", 0.0, 1.0),
    # LongBench (eval): one answer; LoongRL's analysis counts the box OR the "the answer is" text
    ("longbench_hotpotqa", r"</think>\boxed{Rome}. The answer is Paris.", ["Paris"], 0.0, 1.0),
]


@pytest.mark.parametrize("data_source, response, gold, ours, faithful", DEPARTURES)
def test_documented_departures_and_the_faithful_switch(data_source, response, gold, ours, faithful):
    assert compute_score(data_source, response, gold)["score"] == ours
    assert compute_score(data_source, response, gold, faithful=True)["score"] == faithful


def test_departures_table_lists_every_case():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "rewards.md").read_text()
    table = doc.split("## Departures from the references", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Scorer")]
    assert len(rows) >= 14
    for row in rows:
        assert row.count("|") >= 5 and "`" in row  # scorer, departure, reason, example (code), faithful value


def test_unknown_reward_kwargs_are_rejected():
    from loongrl.rewards.router import row_scorer

    with pytest.raises(ValueError, match="unknown reward_kwargs \\['wordboundary'\\]; known: require_think"):
        row_scorer({"wordboundary": True})


def test_faithful_math_dapo_agrees_with_verl_itself():
    """The faithful path against the installed reference (verl 0.9.1's math_dapo), not a copy of it."""
    math_dapo = pytest.importorskip("verl.utils.reward_score.math_dapo", reason="make setup installs verl==0.9.1")
    answers = ["\\frac12", "\\frac{1}{2}", "0.5", "1,000 dollars", "x = 4", "\\text{(B)}", "$5$", "10 \\text{ cm}",
               "\\boxed{7}", "a 3", "2\\sqrt2", "\\$4.50", "{,}1", "5^\\circ", "  12  "]
    for a in answers:
        assert scorers.minerva_normalize(a) == math_dapo.normalize_final_answer(a), a
    responses = ["</think>The final answer: 13", "answer: 13", "Answer: \\frac12", "so \\boxed{13}", "x" * 400 + "\\boxed{13}",
                 "Answer: 13\n" + "y" * 320, "no answer at all", "ANSWER:13", "\\boxed{ 13}",
                 # at the edges of verl's windows: "Answer:" in the last 300 characters, a box in the last 100
                 "Answer: 13\n" + "y" * 289, "Answer: 13\n" + "y" * 290, "\\boxed{13}" + "y" * 90,
                 "\\boxed{13}" + "y" * 91]
    for response in responses:
        for gold in ("13", "\\frac{1}{2}"):
            verl_acc = float(math_dapo.compute_score(response, gold)["acc"])
            assert compute_score("math_dapo", response, gold, faithful=True)["score"] == verl_acc, (response, gold)


# ---- issue 13: every option reaches the scorer through each adapter ------------------------------

def _columns(completions, golds, data_source="keychain_hotpotqa", **extra):
    return dict(prompts=["q"] * len(completions), completions=completions,
                reward_model=[{"style": "rule", "ground_truth": g} for g in golds],
                data_source=[data_source] * len(completions), **extra)


@pytest.mark.parametrize("option, completion, gold, default, changed", [
    ("require_think", r"\boxed{Paris}", ["Paris"], 0.0, 1.0),                 # require_think=False
    ("word_boundary", r"</think>\boxed{no}", ["Norway"], 1.0, 0.0),            # word_boundary=True
    ("faithful", "</think>So the answer is Paris.", ["Paris"], 1.0, 0.0),      # faithful=True: the box only
])
def test_trl_adapter_honours_each_option(option, completion, gold, default, changed):
    flipped = {"require_think": False, "word_boundary": True, "faithful": True}[option]
    assert router.make_trl_reward()(**_columns([completion], [gold])) == [default]
    assert router.make_trl_reward(**{option: flipped})(**_columns([completion], [gold])) == [changed]


def test_trl_adapter_logs_the_pass_rate_and_reads_every_gold_column():
    logged = []
    reward = router.make_trl_reward()
    completions = [r"</think>\boxed{Paris}", r"</think>\boxed{Rome}", r"</think>\boxed{Oslo}", r"</think>\boxed{x}"]
    scores = reward(**_columns(completions, [["Paris"], ["Paris"], ["Oslo"], ["Oslo"]]),
                    log_metric=lambda name, value: logged.append((name, value)))
    assert scores == [1.0, 0.0, 1.0, 0.0] and logged == [("pass_rate", 0.5)]
    for column in ("ground_truth", "answers", "answer"):
        assert reward(prompts=["q"], completions=[r"</think>\boxed{Paris}"], data_source=["keychain_x"],
                      **{column: [["Paris"]]}) == [1.0], column
    with pytest.raises(ValueError, match="TRL reward needs a 'reward_model', 'ground_truth', 'answers' or 'answer'"):
        reward(prompts=["q"], completions=["x"], data_source=["keychain_x"])
    math = router.make_trl_reward(math_timeout_s=10.0)
    assert math(**_columns(["</think>Answer: \\frac{1}{2}"], ["0.5"], data_source="math_dapo")) == [1.0]


def test_trl_adapter_routes_by_ability_when_no_prefix_matches():
    reward = router.make_trl_reward()
    columns = _columns([r"</think>\boxed{(B)}"], ["B"], data_source="mathqa")
    assert reward(**columns, ability=["math_qa_choices"]) == [1.0]
    with pytest.raises(ValueError, match="data_source='mathqa' ability=None"):
        reward(**columns)


@pytest.mark.timing
def test_trl_adapter_bounds_math_verify_by_its_math_timeout(server):
    from test_rewards_bounded import PATHOLOGICAL

    reward = router.make_trl_reward(math_timeout_s=0.5)
    assert reward(**_columns(["</think>Answer: 5"], ["5"], data_source="math_dapo")) == [1.0]   # workers warm
    start = time.perf_counter()
    assert reward(**_columns([PATHOLOGICAL], ["5"], data_source="math_dapo")) == [0.0]
    assert time.perf_counter() - start < 3.0                     # 0.5 s, not the default 5 s


def test_trl_adapter_and_mining_scorer_send_the_question_to_the_judge(server):
    server.reset()
    server.verdicts["JFK"] = "[[YES]]"
    judge = {"base_url": server.base_url, "model": "judge-q", "timeout_s": 2.0, "max_retries": 0,
             "api_key_env": "LOONGRL_TEST_JUDGE_KEY"}
    reward = router.make_trl_reward(judge_config=judge)
    assert reward(**_columns([r"</think>\boxed{JFK}"], [["John F. Kennedy"]],
                             extra_info=[{"question": "Who was the 35th president?"}])) == [1.0]
    row = {"data_source": "keychain_hotpotqa", "reward_model": {"ground_truth": ["John F. Kennedy"]},
           "extra_info": {"question": "Who was the 35th president?"}}
    [mined] = router.row_scorer({"judge_config": judge})([row], [r"</think>\boxed{JFK}"])
    assert (mined["score"], mined["rule"], mined["judge"], mined["exact"]) == (1.0, 0.0, "yes", 0.0)
    assert [r["body"]["messages"][-1]["content"].split("\n")[1] for r in server.requests] == \
        ["Problem: Who was the 35th president?"] * 2
    [rule_only] = router.row_scorer({"judge_config": judge}, judge=False)([row], [r"</think>\boxed{JFK}"])
    assert (rule_only["score"], rule_only["judge"]) == (0.0, "off") and len(server.requests) == 2


def test_mining_scorer_honours_reward_kwargs():
    row = {"data_source": "keychain_hotpotqa", "reward_model": {"ground_truth": ["Norway"]}, "extra_info": {}}
    assert router.row_scorer()([row], [r"</think>\boxed{no}"])[0]["score"] == 1.0
    assert router.row_scorer({"word_boundary": True})([row], [r"</think>\boxed{no}"])[0]["score"] == 0.0
    with pytest.raises(ValueError, match=r"unknown reward_kwargs \['word_boundry'\]"):
        router.row_scorer({"word_boundry": True})


def test_score_input_carries_ability_and_question():
    row = {"data_source": "mathqa", "ability": "math_qa_choices", "reward_model": {"ground_truth": ["B"]},
           "extra_info": {"question": "2 + 2?", "id": "7"}}
    assert router.score_input(row, "r") == {"data_source": "mathqa", "ability": "math_qa_choices", "response": "r",
                                            "ground_truth": ["B"], "question": "2 + 2?"}
    assert router.score_input({**row, "extra_info": None}, "r")["question"] is None


@pytest.mark.parametrize("data_source, response, gold", [
    ("musique_0", "So the answer is Paris.", "Paris"),
    ("docmath_0", "So the answer is 12.", "12"),
    ("long_toc_choices_0", "The correct answer is (B).", "B"),
])
def test_qwenlong_tasks_require_think_even_when_faithful(data_source, response, gold):
    # the QwenLong-L1 references read only the text after </think>: faithful keeps that requirement
    assert compute_score(data_source, "<think>x</think>" + response, gold, faithful=True)["score"] == 1.0
    assert compute_score(data_source, response, gold, faithful=True)["score"] == 0.0
    assert compute_score(data_source, response, gold, require_think=False)["score"] == 1.0


def test_qwenlong_docqa_options():
    stars = compute_score("musique_0", "</think>So the answer is **Paris**.", "Paris", word_boundary=True)
    assert (stars["pred"], stars["score"]) == ("Paris", 1.0)                    # "*" removed before matching
    assert compute_score("musique_0", "</think>So the answer is no.", "Norway")["score"] == 1.0
    assert compute_score("musique_0", "</think>So the answer is no.", "Norway", word_boundary=True)["score"] == 0.0
    assert compute_score("musique_0", "</think>So the answer is the.", "Paris")["score"] == 0.0   # empty guard
    assert compute_score("musique_0", "</think>So the answer is the.", "Paris", faithful=True)["score"] == 1.0


@pytest.mark.parametrize("response, gold, ours, faithful", [
    ("</think>" + r"\boxed{(B)}" * 4, "B", 1.0, 1.0),                        # up to 4 boxes...
    ("</think>" + r"\boxed{(B)}" * 5, "B", 0.0, 0.0),                        # ...not 5
    ("</think>\\boxed{(B) " + "x" * 28 + "}", "B", 1.0, 1.0),                # a 32-character box...
    ("</think>\\boxed{(B) " + "x" * 29 + "}", "B", 0.0, 0.0),                # ...not 33
    (r"</think>\boxed{(B) {x}}", "B", 1.0, 1.0),                              # one "{", "}" and...
    (r"</think>\boxed{(B) {{x}}}", "B", 0.0, 0.0),                            # ...not two
    (r"</think>\boxed{(B) \in}", "B", 1.0, 1.0), (r"</think>\boxed{(B) \a\b}", "B", 0.0, 0.0),   # backslashes
    (r"</think>$\boxed (C)$ then \boxed{(B)}", "B", 1.0, 0.0),              # LoongRL: a "\boxed " anywhere wins
    (r"\boxed{(B)}", "B", 0.0, 1.0),                                          # the reference reads the whole text
])
def test_math_choice_guards_and_faithful_box(response, gold, ours, faithful):
    assert compute_score("mathqa_choice", response, gold)["score"] == ours
    assert compute_score("mathqa_choice", response, gold, faithful=True)["score"] == faithful
    if response.startswith("</think>"):                                      # require_think=False reads the same box
        assert compute_score("mathqa_choice", response[8:], gold, require_think=False)["score"] == ours


def test_ruler_rows_options():
    golds = ["8230912", "1094587"]
    assert compute_score("book_ruler_mv", r"\boxed{8230912 1094587}", golds, require_think=False)["score"] == 1.0
    assert compute_score("book_ruler_mk", r"</think>\boxed{key-7a0f9ecc}", ["7a0f9ecc"])["score"] == 1.0
    assert compute_score("book_ruler_mk", r"</think>\boxed{key7a0f9ecc}", ["7a0f9ecc"], word_boundary=True)["score"] == 0.0
    # faithful: LoongRL's last box of the whole text, space form first; an empty gold is "found"
    assert compute_score("book_ruler_mk", r"$\boxed 8230912$ \boxed{0}", golds, faithful=True)["score"] == 1.0
    assert compute_score("book_ruler_mk", r"\boxed{anything}", ["..."], faithful=True)["score"] == 1.0
    assert compute_score("book_ruler_mk", r"</think>\boxed{anything}", ["..."])["score"] == 0.0


def test_faithful_math_dapo_reads_a_box_at_the_very_start():
    # verl's math_dapo: no "Answer:" line, so the last box of the last 100 characters, even at position 0
    assert compute_score("math_dapo", r"\boxed{12}", "12", faithful=True)["score"] == 1.0
    assert compute_score("math_dapo", r"\boxed{12}", "13", faithful=True)["score"] == 0.0


def test_math_dapo_window_edges_and_the_box_fallback():
    # "Answer: 13\n" is 11 characters: with 289 more it starts 300 from the end (read), with 290, 301 (not)
    assert [compute_score("math_dapo", "Answer: 13\n" + "y" * n, "13", faithful=True)["score"]
            for n in (289, 290)] == [1.0, 0.0]
    # "\\boxed{13}" is 10 characters: the box must start within the last 100
    assert [compute_score("math_dapo", "\\boxed{13}" + "y" * n, "13", faithful=True)["score"]
            for n in (90, 91)] == [1.0, 0.0]
    # ours: no "Answer:" line after </think>, so the last box is the answer
    result = compute_score("math_dapo", "<think>t</think> so \\boxed{13}.", "13")
    assert (result["pred"], result["score"]) == ("13", 1.0)


def test_faithful_longbench_reads_the_box_or_the_answer_is_phrase_as_loongrls_analysis():
    def lb(response, gold, **kw):
        r = compute_score("longbench_musique", response, gold, faithful=True, **kw)
        return r["pred"], r["score"]

    assert lb("<think>t</think> so \\boxed{Paris} and the answer is London", "London") == ("Paris", 1.0)  # either
    assert lb("<think>t</think> the answer is London.", "London") == ("London", 1.0)   # no box: the phrase
    assert lb("\\boxed{London}", "London", require_think=True) == ("", 0.0)            # no </think>: nothing
    assert lb("<think>t</think> \\boxed{London} then \\boxed{}", "London") == ("London", 1.0)  # empty box dropped
    assert lb("<think>t</think> \\boxed{**Paris**}", "Paris France") == ("Paris", 1.0)  # bold marks removed first
    assert lb("<think>t</think> \\boxed{the}", "Paris")[1] == 1.0      # the reference: "" matches every gold
    assert lb("<think>t</think> \\boxed{no}", "Norway")[1] == 1.0
    assert lb("<think>t</think> \\boxed{no}", "Norway", word_boundary=True)[1] == 0.0


# ---- mutation survivors: each argument of the adapters, checked by hand -------------------------

def test_compute_score_routes_by_an_ability_reward_kwarg():
    # "mathqa" matches no prefix: the ability comes from reward_kwargs when extra_info has none
    assert compute_score("mathqa", r"</think>\boxed{(B)}", "B", ability="math_qa_choices")["score"] == 1.0
    assert compute_score("mathqa", r"</think>\boxed{(B)}", "B", {}, ability="math_qa_choices")["task"] == "math_choice"
    with pytest.raises(ValueError, match="data_source='mathqa' ability=None"):
        compute_score("mathqa", r"</think>\boxed{(B)}", "B")


def test_trl_adapter_logs_the_pass_rate_of_a_single_completion():
    logged = []
    reward = router.make_trl_reward()
    assert reward(**_columns([r"</think>\boxed{Paris}"], [["Paris"]]),
                  log_metric=lambda name, value: logged.append((name, value))) == [1.0]
    assert logged == [("pass_rate", 1.0)]                                     # 1 of 1, not 1 of 2


def test_adapters_pass_their_math_timeout_to_math_verify():
    # a budget of 0 s stops every check before its answer can arrive (scored 0); the default 5 s does not
    columns = _columns(["</think>Answer: \\frac{1}{2}"], ["0.5"], data_source="math_dapo")
    assert router.make_trl_reward()(**columns) == [1.0]
    assert router.make_trl_reward(math_timeout_s=0.0)(**columns) == [0.0]
    assert compute_score("math_dapo", "</think>Answer: \\frac{1}{2}", "0.5", math_timeout_s=0.0)["score"] == 0.0


def test_trl_adapter_missing_gold_column_message_is_exact():
    with pytest.raises(ValueError, match=r"^TRL reward needs a 'reward_model', 'ground_truth', 'answers' or "
                                         r"'answer' column$"):
        router.make_trl_reward()(prompts=["q"], completions=["x"], data_source=["keychain_x"])


def test_one_judge_per_config_whatever_the_form_of_its_values(tmp_path):
    # a pathlib.Path cache file (not JSON) is accepted, and is the same judge as its string form
    from loongrl.rewards.judge import JudgeConfig

    path = tmp_path / "verdicts.sqlite"
    judge = router.get_judge(JudgeConfig(base_url="http://127.0.0.1:9/v1", cache_path=path))
    assert router.get_judge({"base_url": "http://127.0.0.1:9/v1", "cache_path": str(path)}) is judge
    assert router.get_judge({"base_url": "http://127.0.0.1:9/v1", "cache_path": str(path) + "2"}) is not judge
    assert judge.cache is not None and path.exists()
    assert router.get_judge(None) is None


def test_faithful_longbench_drops_an_empty_box_before_reading_the_answer_is_phrase():
    # "\boxed{}" is removed (not replaced): the phrase reads "Paris", which is inside the gold "Paris Hilton"
    result = compute_score("longbench_musique", "<think>t</think> The answer is \\boxed{} Paris.", ["Paris Hilton"],
                           faithful=True)
    assert (result["pred"], result["score"]) == ("Paris", 1.0)


def test_math_choice_allows_repeated_letters_other_than_braces_and_backslashes():
    # only "{", "}" and "\" are limited to one each; a Roman numeral "XXV" in the box is fine
    assert compute_score("mathqa_choice", r"</think>\boxed{(B) XXV}", "B")["score"] == 1.0
    assert compute_score("mathqa_choice", r"</think>\boxed{(B) XXV}", "B", faithful=True)["score"] == 1.0


def test_faithful_longqa_removes_bold_marks_before_reading_the_box():
    # LoongRL's SUBEM path deletes "*" first: the box reads "Paris", which is inside the gold "Paris Hilton"
    result = compute_score("keychain_x", r"<think>t</think> \boxed{**Paris**}", ["Paris Hilton"], faithful=True)
    assert (result["pred"], result["score"]) == ("Paris", 1.0)


def test_unknown_reward_kwargs_message_lists_every_known_name():
    with pytest.raises(ValueError, match=r"^unknown reward_kwargs \['strict'\]; known: require_think, word_boundary, "
                                         r"faithful, math_timeout_s, judge_config$"):
        router.options(strict=True)


def test_unknown_data_source_message_lists_every_ability():
    with pytest.raises(ValueError, match=r"; abilities: longcontext_qa, math_qa_choices, ruler_niah$"):
        resolve_task("gsm8k", "math")
