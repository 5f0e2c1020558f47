"""Rule scorers on real inputs with hand-checked expected values."""

import gzip
import json
from pathlib import Path

import pytest
from conftest import INPUTS

from loongrl.rewards import scorers

HOTPOT = Path(INPUTS["hotpotqa"])


@pytest.fixture(scope="module")
def hotpot_answers():
    with gzip.open(HOTPOT, "rt", encoding="utf-8") as handle:
        return [row["answer"] for row in json.load(handle)]


def test_two_way_match_both_directions_and_lists():
    assert scorers.two_way_match("Chief of Protocol", ["chief of protocol"]) == 1.0
    assert scorers.two_way_match("She was Chief of Protocol of the US", ["Chief of Protocol"]) == 1.0  # gold ⊆ pred
    assert scorers.two_way_match("Protocol", ["Chief of Protocol"]) == 1.0                              # pred ⊆ gold
    assert scorers.two_way_match("Ambassador", ["Chief of Protocol", "Ambassador to Ghana"]) == 1.0
    assert scorers.two_way_match("Senator", ["Chief of Protocol"]) == 0.0
    assert scorers.two_way_match(None, ["x"]) == 0.0


def test_two_way_match_empty_prediction_guard():
    # "the" and "." normalise to "", which is a substring of every gold without the guard
    for pred in ("the", ".", "", "  a  "):
        assert scorers.two_way_match(pred, ["Chief of Protocol"]) == 0.0


def test_two_way_match_word_boundary():
    assert scorers.two_way_match("no", ["Norway"]) == 1.0                  # the reference behaviour
    assert scorers.two_way_match("no", ["Norway"], word_boundary=True) == 0.0
    assert scorers.two_way_match("Oslo, Norway", ["Norway"], word_boundary=True) == 1.0
    assert scorers.two_way_match("no", ["no"], word_boundary=True) == 1.0


def test_two_way_match_on_hotpotqa_golds(hotpot_answers):
    answers = hotpot_answers[:300]
    # every real gold answer matches itself wrapped in extra words and punctuation
    for gold in answers:
        assert scorers.two_way_match(f"I believe it is: {gold}!", [gold]) == 1.0, gold
    # the yes/no answers in HotpotQA are where the bare substring rule is loose
    assert "no" in answers and "yes" in answers
    assert scorers.two_way_match("Norway", ["no"]) == 1.0
    assert scorers.two_way_match("Norway", ["no"], word_boundary=True) == 0.0
    assert scorers.two_way_match("yesterday", ["yes"], word_boundary=True) == 0.0
    assert "Chief of Protocol" in answers
    assert scorers.two_way_match("Chief of Staff", ["Chief of Protocol"]) == 0.0


def test_covered_match_is_one_way_with_loongrl_normaliser():
    assert scorers.covered_match("the key is 7a0f9ecc.", ["7A0F9ECC"]) == 1.0
    assert scorers.covered_match("7a0f", ["7a0f9ecc"]) == 0.0              # pred ⊆ gold is not enough
    assert scorers.covered_match("New-York city", ["new york"]) == 1.0     # '-' becomes a space
    assert scorers.covered_match("anything", ["..."]) == 0.0               # gold empty after normalising


def test_exact_match():
    assert scorers.exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert scorers.exact_match("Eiffel Tower in Paris", ["eiffel tower"]) == 0.0
    assert scorers.exact_match("the", ["a"]) == 0.0                        # both empty: no match


# (prediction, golds, expected F1) — computed by hand from LongBench's qa_f1_score.
LONGBENCH_F1_CASES = [
    ("The Eiffel Tower", ["Eiffel Tower"], 1.0),
    ("Paris, France", ["Paris"], 2 * 0.5 * 1.0 / 1.5),                  # P=1/2 R=1
    ("The answer is 42.", ["42"], 0.5),                                   # P=1/3 R=1
    ("new york new york", ["new york"], 2 * 0.5 * 1.0 / 1.5),           # multiset overlap is 2
    ("London", ["Paris"], 0.0),
    ("1969 until 1974", ["1969", "1969 until 1974"], 1.0),                # max over golds
    ("an apple", ["apple"], 1.0),
    ("", ["x"], 0.0),
    # punctuation is removed BEFORE articles: "the-end" -> "theend" (article survives);
    # the other order would give "end" and F1 = 1.0
    ("the-end", ["end"], 0.0),
    # "A.B. Smith" -> "ab smith"; removing articles first would drop "a" and give 0.5
    ("A.B. Smith", ["AB Smith"], 1.0),
    # only ASCII punctuation is removed: the typographic apostrophe stays
    ("Beyoncé’s", ["Beyoncé's"], 0.0),
    ("Theodore Roosevelt", ["roosevelt, theodore"], 1.0),               # bag of tokens, order-free
    ("Ann", ["Ann", "Anne"], 1.0),
    ("Fraser River basin", ["the Fraser River"], 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0)),  # P=2/3 R=1 -> 0.8
]


@pytest.mark.parametrize("pred, golds, expected", LONGBENCH_F1_CASES)
def test_token_f1_longbench_parity(pred, golds, expected):
    assert scorers.token_f1(pred, golds) == pytest.approx(expected)


def test_normalize_answer_order():
    assert scorers.normalize_answer("The-End of  an Era!") == "theend of era"


def test_ruler_string_match_all_and_part():
    golds = ["8230912", "1094587", "5550001"]
    pred = "The special magic numbers are 8230912 and 1094587."
    assert scorers.string_match_all(pred, golds) == pytest.approx(2 / 3)
    assert scorers.string_match_part(pred, golds) == 1.0
    assert scorers.string_match_all("ABC-def", ["abc-DEF"]) == 1.0        # case-insensitive
    assert scorers.string_match_part("nothing", golds) == 0.0
    # control characters become newlines, so a tab does not equal a space
    assert scorers.string_match_all("magic\tnumber", ["magic number"]) == 0.0


@pytest.mark.parametrize("pred, gold, expected", [
    ("(C) 42", "C", 1.0), ("c", "C", 1.0), ("C.", "(C)", 1.0), ("(B)", "C", 0.0),
    ("the value is 42", "C", 0.0), (None, "A", 0.0),
])
def test_choice_match(pred, gold, expected):
    assert scorers.choice_match(pred, gold) == expected


@pytest.mark.parametrize("text, expected", [
    ("1,234.5", 1234.5), ("$ 12 million", 12.0), ("x = 3.5", 3.5), ("approximately 7 or 8", 7.0),
    ("45%", 45.0), ("3 x 10^5", 300000.0), ("2.5 × 10^{-3}", 0.0025), ("10^6", 1e6), ("3/4", 0.75),
    ("Yes", True), ("false", False), ("12 kg", 12.0), ("about ten", None), ("1/0", None),
    ("__import__('os').system('echo pwned')", None),                       # never evaluated
])
def test_parse_number(text, expected):
    assert scorers.parse_number(text) == expected


def test_numeric_match_tolerance_and_scale():
    assert scorers.numeric_match("100.1", ["100"]) == 1.0                  # 0.1% <= 0.15%
    assert scorers.numeric_match("100.2", ["100"]) == 0.0                  # 0.2% > 0.15%
    assert scorers.numeric_match("100.2", ["100"], rel_tol=0.01) == 1.0
    assert scorers.numeric_match("0.45", ["45%"]) == 1.0                   # percent vs fraction
    assert scorers.numeric_match("0.45", ["45%"], scale_tolerant=False) == 0.0
    assert scorers.numeric_match("12,000", ["12 thousand"]) == 1.0         # "thousand" dropped, x1000 scale
    assert scorers.numeric_match("0.004", ["0"]) == 0.0
    assert scorers.numeric_match("0.004", ["0"], round_digits=2) == 1.0
    assert scorers.numeric_match("yes", ["True"]) == 1.0
    assert scorers.numeric_match("no", ["True"]) == 0.0
    assert scorers.numeric_match("1", ["True"]) == 0.0                     # a bool never equals a number
    assert scorers.numeric_match("n/a", ["5"]) == 0.0


@pytest.mark.parametrize("pred, gold, expected", [
    (r"\frac{1}{2}", "0.5", 1.0),
    (r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2", 1.0),
    ("2", "3", 0.0),
    (r"\boxed{4}", "4", 1.0),
    ("x^2+2x+1", "(x+1)^2", 1.0),
    ("", "1", 0.0),
])
def test_math_verify_match(pred, gold, expected):
    pytest.importorskip("math_verify", reason="math-verify is a runtime dependency; install it")
    assert scorers.math_verify_match(pred, [gold]) == expected


def test_math_verify_match_in_worker_thread():
    pytest.importorskip("math_verify", reason="math-verify is a runtime dependency; install it")
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:  # signal-based timeouts must be off outside the main thread
        assert pool.submit(scorers.math_verify_match, r"\frac{1}{2}", ["0.5"]).result() == 1.0
