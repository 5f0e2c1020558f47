"""Rule scorers on real inputs with hand-checked expected values."""

import gc
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
    assert scorers.covered_match("anything", ["..."], empty_guard=False) == 1.0   # the reference: "" is found
    golds = ["8230912", "1094587"]
    assert scorers.covered_match("8230912 and 1094587", golds, require_all=True) == 1.0
    assert scorers.covered_match("8230912", golds, require_all=True) == 0.0
    assert scorers.covered_match("8230912", golds) == 1.0                  # any-of: LoongRL's default mode


def test_loongrl_normaliser_character_set():
    # LoongRL's normalize_text replaces exactly its punctuation set; backslash and underscore stay
    assert scorers.normalize_loongrl_text("A\\B_C《D》—E…F") == "a\\b_c d e f"
    assert scorers.normalize_loongrl_text("x = 1;\nimport numpy as np\ny") == "x 1 y"


@pytest.mark.parametrize("golds, expected", [
    ("Paris", ["Paris"]), (1990, ["1990"]), (2.5, ["2.5"]), (None, []), (["a", None, 3], ["a", "3"]),
    (("x", "y"), ["x", "y"]), (True, ["True"]),
    ([1990, 19.5], ["1990", "19.5"]),                       # a list of numbers: each one a string
    (b"Paris", ["Paris"]), ([b"Oslo", None], ["Oslo"]),     # bytes (a binary parquet column) are decoded
])
def test_as_gold_list_never_raises(golds, expected):
    assert scorers.as_gold_list(golds) == expected


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
    ("the value is 42", "C", 0.0), (None, "A", 0.0), ("(B) or (C)", "B", 1.0),   # the first "(X)" counts
])
def test_choice_match(pred, gold, expected):
    assert scorers.choice_match(pred, gold) == expected


def test_choice_match_bare_letter_is_a_departure():
    # LoongRL's mathqa regex needs "(X)"; a bare letter is accepted unless bare_letter=False
    assert scorers.choice_match("B", "B") == 1.0
    assert scorers.choice_match("B", "B", bare_letter=False) == 0.0
    assert scorers.choice_match("(B)", "B", bare_letter=False) == 1.0


@pytest.mark.parametrize("text, expected", [
    ("1,234.5", 1234.5), ("$1234.5", 1234.5), ("12 million", 12), ("x = 3.5", 3.5), ("approximately 7 or 8", 7),
    ("45%", 45), ("3 x 10^5", 300000.0), ("10^6", 1000000.0), ("3/4", 0.75), ("1e5", 100000.0),
    ("yes", True), ("false", False), ("Yes", None),          # only lowercase yes/no/true/false map to bools
    ("12 kg", 12), ("USD 5", 5),                             # "US" goes first, "D 5" loses its unit
    ("(a) 12", 12), ("(b)", None),                           # an option alone is a string: never a number
    ("007", None),                                           # not a Python literal: the reference's eval fails
    ("about ten", None), ("1/0", None), ("1,2", None),       # a tuple in the reference
    ("2.5 × 10^{-3}", None),                                 # "10^{" is not rewritten by the reference
    ("__import__('os').system('echo pwned')", None),         # never evaluated
    ("9" * 201, None),                                       # over DOCMATH_MAX_CHARS
])
def test_docmath_value(text, expected):
    value = scorers.docmath_value(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("pred, gold, expected", [
    ("1", "10", 1.0),                  # (a) magnitudes a power of ten apart: log10 difference 1.0
    ("-5", "5", 1.0),                  # (a) equal magnitudes: the sign is ignored, as in the reference
    ("3", "30.5", 0.0),                # ratio 10.17: no rule applies
    ("0.4506", "45", 1.0),             # (b) x100 = 45.06, within 0.15% (0.0675) of 45
    ("1.5", "150100", 1.0),            # (b) x100,000 = 150,000, within 0.15% (225.15) of 150,100
    ("1.5", "1501000", 0.0),           # x1,000,000 is not a reference rule (the old scorer said 1)
    ("0.0001", "0.0009", 1.0),         # (c) both round UP to 0.001 at 3 decimals
    ("100.1", "100", 1.0),             # (d) 0.1% <= 0.15%
    ("100.2", "100", 0.0),             # (d) 0.2% > 0.15%, and 100.2 rounds up to 100.2
    ("yes", "True", 1.0), ("no", "True", 0.0),
    ("1", "True", 1.0),                # a bool gold compares with ==, and 1 == True in Python
    ("n/a", "5", 0.0),
])
def test_docmath_match_reference_rules(pred, gold, expected):
    assert scorers.docmath_match(pred, [gold]) == expected


def test_docmath_unparsable_answer_departure():
    # the reference's eval fails on "1.2.3" and uses 0, which matches a gold of 0 (rule (b): 0 <= 0/50)
    assert scorers.docmath_match("1.2.3", "0") == 0.0
    assert scorers.docmath_match("1.2.3", "0", unparsable_is_zero=True) == 1.0
    assert scorers.docmath_match("0.0004", "0.0001", round_digits=2) == 1.0   # QwenLong's eval copy: 2 decimals


def test_minerva_match_is_string_equality_after_normalisation():
    assert scorers.minerva_match("\\frac12", "\\frac{1}{2}") == 1.0       # \fracab -> \frac{a}{b}
    assert scorers.minerva_match("1,000 dollars", "1000") == 1.0
    assert scorers.minerva_match("0.5", "\\frac{1}{2}") == 0.0              # no mathematical equivalence
    assert scorers.minerva_match("x = 4", "4") == 1.0                       # right of the last "="


@pytest.mark.parametrize("pred, gold, expected", [
    (r"\frac{1}{2}", "0.5", 1.0),
    (r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2", 1.0),
    ("2", "3", 0.0),
    (r"\boxed{4}", "4", 1.0),
    ("x^2+2x+1", "(x+1)^2", 1.0),
    ("", "1", 0.0),
])
def test_math_verify_match(pred, gold, expected):
    assert scorers.math_verify_match(pred, [gold]) == expected


def test_math_verify_match_in_worker_thread():
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:  # the check runs in a worker process, so any thread works
        assert pool.submit(scorers.math_verify_match, r"\frac{1}{2}", ["0.5"]).result() == 1.0


# ---- issue 13: cases that pin each rule's constants and boundaries (values worked out by hand) ----

@pytest.mark.parametrize("text, expected", [
    ("12.", 12),                        # the trailing period goes before parsing: an int, not 12.0
    ("9" * 200, int("9" * 200)),        # exactly DOCMATH_MAX_CHARS is still read
    ("£12", 12), ("€3.5", 3.5), ("¥7", 7),
    ("x=3.5", 3.5),                     # the right of "=", spaces or not
    ("y = 2x = 14", 14),                # the right of the LAST "="
    ("pi≈3.14", 3.14), ("1/3 ≈ 0.333 ≈ 0.33", 0.33),   # the right of the last "≈"
    ("true", True), ("no", False),
    ("-5", -5), ("-2.5", -2.5),         # signs are kept (the comparison ignores them)
    ("6X2", None),                      # only "*" and "/" join factors
])
def test_docmath_value_steps(text, expected):
    value = scorers.docmath_value(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("pred, gold, expected", [
    ("0.1", "1", 1.0),                 # (a) a power of ten apart, the larger being exactly 1
    ("2", "20", 1.0),                  # (a) log10(20) - log10(2) = 1 (a sum of logs would not be whole)
    ("1", "99850.72", 1.0),            # (b) x100,000 = 100,000 <= 99,850.72 x 1.0015 = 100,000.496
    ("0.0331", "0.0334", 1.0),         # (c) 0.0331 and 0.0334 both round UP to 0.034
    ("2003", "2000", 1.0), ("1997", "2000", 1.0),   # (d) exactly 0.15% off, both sides inclusive
    ("2003.01", "2000", 0.0),
    ("1e999", "5", 0.0),               # inf never matches (the reference crashes on it)
])
def test_docmath_match_boundaries(pred, gold, expected):
    assert scorers.docmath_match(pred, [gold]) == expected


def test_docmath_unparsable_gold_reads_as_zero_only_when_faithful():
    assert scorers.docmath_match("0", "n/a", unparsable_is_zero=True) == 1.0
    assert scorers.docmath_match("0", "n/a") == 0.0


def test_no_prediction_never_matches():
    for scorer in (scorers.exact_match, scorers.minerva_match, scorers.prediction_in_gold, scorers.token_f1,
                   scorers.string_match_part, scorers.covered_match, scorers.two_way_match, scorers.docmath_match):
        assert scorer(None, ["0"]) == 0.0, scorer.__name__


@pytest.mark.parametrize("pred, golds, expected", [
    (r"\frac{1}{2}", ["0.5"], 1.0), ("1/2", ["0.5"], 1.0), (r"\boxed{4}", ["4"], 1.0), ("$x^2$", ["x^2"], 1.0),
    ("2", ["3"], 0.0), ("2", ["3", "2"], 1.0), ("", ["1"], 0.0), ("x", [""], 0.0),
])
def test_math_verify_worker_function_in_process(pred, golds, expected):
    # the function the scoring workers run, called here in the main thread (its own signal timeouts work)
    assert scorers.math_verify_unbounded(pred, golds) == expected


def test_math_verify_reads_a_text_with_its_own_dollar_signs_as_written():
    # "$x = 2$, so $y = 3$" already marks its math: math-verify reads the last span, y = 3. Wrapped in one more
    # pair of "$" the whole sentence would be one formula, with "so" read as the product s*o, not 3.
    assert scorers.math_verify_unbounded("$x = 2$, so $y = 3$", ["3"]) == 1.0
    assert scorers.math_verify_unbounded("3", ["$x = 2$, so $y = 3$"]) == 1.0


NESTED_ONE = "(" * 50 + "1" + ")" * 50   # equals 1; math-verify takes seconds (6.5 s here) to parse it


def test_math_verify_gives_up_a_parse_that_overruns_its_timeout():
    # the worker passes its budget on to math-verify's own parse timeout: a 1 s budget stops the parse of
    # either side after 1 s (no answer: 0), where an unbounded parse would find 1 = 1.
    # math-verify's timeout is a SIGALRM handler that raises; if the alarm lands while the garbage collector
    # runs a finalizer (an earlier test's asyncio transport), Python swallows the exception and the parse runs
    # on to 1 (seen once in CI). The scoring workers hold no such objects; here, collect first and keep the
    # collector off during the parse.
    gc.collect()
    gc.disable()
    try:
        assert scorers.math_verify_unbounded(NESTED_ONE, ["1"], timeout_s=1) == 0.0
        assert scorers.math_verify_unbounded("1", [NESTED_ONE], timeout_s=1) == 0.0
    finally:
        gc.enable()


def test_math_pool_takes_the_pool_settings_and_imports_math_verify_at_start_up(tmp_path, monkeypatch):
    from loongrl.rewards.bounded import WorkerStartError

    # the keyword arguments reach the WorkerPool: no Python starts within a 1 ms start-up budget
    pool = scorers.new_math_pool(max_workers=1, startup_timeout_s=0.001)
    try:
        assert pool.max_workers == 1
        with pytest.raises(WorkerStartError, match="not ready after 0.001 s"):
            pool.call("1/2", ["0.5"], 1, timeout_s=30)
    finally:
        pool.close()
    # the warm-up call imports math-verify before the worker reports ready: an install that fails to import
    # is a start error (raised by math_verify_match), not a per-answer error that would score 0
    (tmp_path / "math_verify.py").write_text("raise ImportError('math_verify cannot be imported here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    pool = scorers.new_math_pool(max_workers=1)
    try:
        with pytest.raises(WorkerStartError, match="math_verify cannot be imported here"):
            pool.call("1/2", ["0.5"], 1, timeout_s=30)
    finally:
        pool.close()


@pytest.mark.parametrize("text, expected", [
    ("3 x 10^5.", 300000.0),            # the trailing "." goes first, or "10^5." would not be read
    ("9XXX", None),                     # only "." comes off the end: the letters stay, and "9XXX" is not a number
    ("x = 3 kg", 3),                    # the right of "=" is "3 kg", whose unit is dropped next
    ("approximately 3 x 10^5", 300000.0),   # "approximately" removed before the product is read
    ("5 × 2 or 10", 10),                # the text before " or " is "5 × 2" (not its first word), and × multiplies
    ("2.5 × 10^3", 2500.0),
    ("%", 0),                           # nothing left: the reference's dummy "0"
])
def test_docmath_value_each_step_on_its_own(text, expected):
    value = scorers.docmath_value(text)
    assert value == expected and type(value) is type(expected)


def test_docmath_options_and_tuples_never_read_as_numbers_even_when_unparsable_is_zero():
    # the reference's eval gives a string for "(b)" and a tuple for "1,2": unequal to every number, even to a gold
    # of 0 that an unparsable answer would match in faithful mode
    for text in ("(b)", "1,2"):
        assert scorers.docmath_value(text, unparsable=0) is None, text
        assert scorers.docmath_match(text, "0", unparsable_is_zero=True) == 0.0, text
    assert scorers.docmath_value("about ten", unparsable=0) == 0                # a plain failure does read as 0


def test_math_verify_match_scores_0_when_the_check_is_stopped():
    # a budget of 0 s: the worker's answer cannot arrive in time, the check is stopped and scores 0, not 1
    assert scorers.math_verify_match(r"\frac{1}{2}", ["0.5"]) == 1.0
    assert scorers.math_verify_match(r"\frac{1}{2}", ["0.5"], timeout_s=0) == 0.0


def test_two_way_match_skips_a_gold_that_normalises_to_nothing():
    # the gold "The" normalises to "", a substring of every prediction: skipped by the guard, found by the reference
    assert scorers.two_way_match("Paris", ["The"]) == 0.0
    assert scorers.two_way_match("Paris", ["The", "paris"]) == 1.0           # the other gold still counts
    assert scorers.two_way_match("Paris", ["The"], empty_guard=False) == 1.0


def test_token_f1_when_recall_is_below_one_and_without_golds():
    # "Paris" against "Paris France": P = 1/1, R = 1/2, F1 = 2 * 1 * 0.5 / 1.5 = 2/3
    assert scorers.token_f1("Paris", ["Paris France"]) == pytest.approx(2 / 3)
    assert scorers.token_f1("Paris", []) == 0.0                               # no gold: nothing to overlap


def test_ruler_match_all_control_characters_become_newlines_and_no_golds_score_0():
    # RULER's postprocess turns control characters (a tab here) into "\n" before the substring test
    assert scorers.string_match_all("8230912\t1094587", ["8230912\n1094587"]) == 1.0
    assert scorers.string_match_all(None, ["8230912"]) == 0.0
    assert scorers.string_match_all("8230912", []) == 0.0
