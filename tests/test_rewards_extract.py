"""Answer extraction on hand-written responses (expected values checked by hand)."""

import pytest

from loongrl.rewards import extract


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{Paris}", "Paris"),
    (r"\boxed{a} then \boxed{b}", "b"),                                  # last box wins
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),                            # nested braces
    (r"\boxed{ {x} + {y} } tail", "{x} + {y}"),
    (r"$\boxed 42$ done", "42"),                                          # \boxed with a space, up to $
    (r"answer \boxed 7", "7"),                                            # no closing $: to the end
    (r"$\boxed 5$ then \boxed{7}", "7"),                                  # the last box wins in either form
    (r"\fbox{yes}", "yes"),                                               # \fbox fallback
    (r"\fbox{x} \boxed{y}", "y"),                                         # \boxed preferred over \fbox
    (r"\boxed{unbalanced", None),
    ("no box here", None),
    (r"\boxed{}", ""),                                                    # empty but present
    (r"$\boxed 5$ and $x$", "5"),                                         # \boxed with a space: up to the FIRST $
    (r"\boxedfoo{7}", None),                                              # a letter before the brace: no box
])
def test_last_boxed(text, expected):
    assert extract.last_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    (r"$\boxed 5$ then \boxed{7}", "5"),          # item 10: a "\boxed " anywhere beats a later \boxed{}
    (r"\boxed{a} and \boxed{ b }", " b "),        # content not stripped
    (r"\fbox{yes}", None),                        # remove_boxed asserts "\boxed{": an \fbox scores 0
    (r"\boxed{unbalanced", None),
    (r"so \boxed{Paris}", "Paris"),
    (r"$\boxed 5$ and $x$", "5"),                # up to the first "$" after it
    (r"$\boxed 4$ then $\boxed 5$", "5"),         # the last "\boxed " of several
    (r"\boxedfoo{7}", None),                     # the last \boxed is not "\boxed{": remove_boxed's assertion fails
])
def test_last_boxed_loongrl_rules(text, expected):
    assert extract.last_boxed(text, loongrl_rules=True) == expected


def test_after_think_required_and_optional():
    assert extract.after_think("reasoning</think>  final ") == "final"
    assert extract.after_think("a</think>b</think> c") == "c"              # last </think>
    assert extract.after_think("no think tag") is None
    assert extract.after_think(" no think tag ", require=False) == "no think tag"


def test_final_answer_is_one_answer_per_response():
    # item 6: the instruction's empty box echoed after the answer must not win
    assert extract.final_answer(r"<think>x</think> The answer is \boxed{Paris} (enclosed in \boxed{} as required).") \
        == "Paris"
    assert extract.final_answer(r"<think>maybe \boxed{Rome}</think> The answer is **\boxed{Paris}**.") == "Paris"
    assert extract.final_answer(r"</think>\boxed{**Chief of Protocol**}") == "Chief of Protocol"   # * removed
    assert extract.final_answer("<think>x</think> So the answer is Barack Obama.") == "Barack Obama"  # no box
    assert extract.final_answer(r"</think> Put it in \boxed{ }. The answer is Oslo.") == "Oslo"
    assert extract.final_answer(r"the answer is x \boxed{y}", require_think=False) == "y"           # box first
    # a box inside the thinking only does not count once </think> is required
    assert extract.final_answer(r"<think>\boxed{Rome}</think> I am not sure.") is None
    assert extract.final_answer(r"\boxed{Rome}") is None
    assert extract.final_answer(r"\boxed{Rome}", require_think=False) == "Rome"


def test_after_answer_is_case_and_last_match():
    assert extract.after_answer_is("I think the answer is A. No wait, The answer is Paris.") == "Paris"
    assert extract.after_answer_is("The Answer Is  42 .<｜end▁of▁sentence｜>") == "42"
    assert extract.after_answer_is("nothing") is None
    # QwenLong-L1 docqa.py matches lowercase only
    assert extract.after_answer_is("The answer is Paris.", case_sensitive=True) is None
    assert extract.after_answer_is("Therefore, the answer is Paris.", case_sensitive=True) == "Paris"


def test_docmath_number_first_match_reference_regex():
    assert extract.docmath_number("So the answer is $1,234.5.") == "$1234.5"      # symbol kept, normalised later
    assert extract.docmath_number("The answer is -0.25") == "-0.25"
    # item 4: the FIRST "the answer is" counts (docmath.py uses re.search)
    assert extract.docmath_number("the answer is 12. Rechecking, the answer is 15.") == "12"
    assert extract.docmath_number("the answer is about ten") is None
    assert extract.docmath_number("the answer is: 5") is None                     # exactly one space, no colon
    assert extract.docmath_number("the answer is **7**") == "7"                   # * removed first


def test_correct_choice_strips_stars_and_takes_first():
    # item 3
    assert extract.correct_choice("The correct answer is **(B)**") == "B"
    assert extract.correct_choice("The correct answer is (B). Wait, The correct answer is (C).") == "B"
    assert extract.correct_choice("The correct answer is C") == "C"
    assert extract.correct_choice("the correct answer is (B)") is None             # case-sensitive, as QwenLong-L1


def test_minerva_answer_case_insensitive_last_line_in_tail():
    # item 2: verl's pattern is (?i)Answer\s*:\s*([^\n]+)
    assert extract.minerva_answer("answer: 13") == "13"
    assert extract.minerva_answer("The final answer: 13") == "13"
    assert extract.minerva_answer("work\nAnswer: 3\nmore\nANSWER: \\frac{1}{2}\n") == "\\frac{1}{2}"
    assert extract.minerva_answer("Answer: 5" + "x" * 400) is None                 # only the last 300 chars count


def test_verl_last_boxed_brace_form_only():
    assert extract.verl_last_boxed(r"a \boxed{1} b \boxed{ 2 }") == " 2 "
    assert extract.verl_last_boxed(r"\boxed 2") is None
    assert extract.verl_last_boxed(r"\boxed{2") is None


def test_minerva_answer_reads_the_last_300_characters():
    # "Answer: 7\n" is 10 characters: with 290 more it starts 300 from the end, with 291, 301
    assert extract.minerva_answer("Answer: 7\n" + "y" * 290) == "7"
    assert extract.minerva_answer("Answer: 7\n" + "y" * 291) is None


def test_after_answer_is_reference_form_reads_the_text_after_the_last_phrase():
    # QwenLong-L1 docqa.py: rsplit("the answer is", 1)[1]: everything after the LAST phrase, many words kept
    text = "So the answer is Rome. Rechecking the passages, the answer is Paris, France."
    assert extract.after_answer_is(text, case_sensitive=True) == "Paris, France"
    assert extract.after_answer_is(text) == "Paris, France"


def test_after_answer_is_strips_periods_only():
    # only whitespace and "." come off the ends: an answer ending in "X" keeps it
    assert extract.after_answer_is("So the answer is Malcolm X.") == "Malcolm X"
    assert extract.after_answer_is("So the answer is XXL.", case_sensitive=True) == "XXL"


def test_final_answer_drops_an_empty_box_before_reading_the_answer_is_phrase():
    assert extract.final_answer(r"<think>t</think> The answer is \boxed{} Paris.") == "Paris"
