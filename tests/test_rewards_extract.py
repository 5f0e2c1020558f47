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
    (r"\fbox{yes}", "yes"),                                               # \fbox fallback
    (r"\fbox{x} \boxed{y}", "y"),                                         # \boxed preferred over \fbox
    (r"\boxed{unbalanced", None),
    ("no box here", None),
    (r"\boxed{}", ""),                                                    # empty but present
])
def test_last_boxed(text, expected):
    assert extract.last_boxed(text) == expected


def test_after_think_required_and_optional():
    assert extract.after_think("reasoning</think>  final ") == "final"
    assert extract.after_think("a</think>b</think> c") == "c"              # last </think>
    assert extract.after_think("no think tag") is None
    assert extract.after_think(" no think tag ", require=False) == "no think tag"


def test_loongrl_answer_uses_last_think_and_strips_stars():
    response = r"<think>maybe \boxed{Rome}</think> The answer is **\boxed{Paris}**."
    assert extract.loongrl_answer(response) == "Paris"
    # a box inside the thinking only does not count once </think> is required
    assert extract.loongrl_answer(r"<think>\boxed{Rome}</think> I am not sure.") is None
    assert extract.loongrl_answer(r"\boxed{Rome}") is None
    assert extract.loongrl_answer(r"\boxed{Rome}", require_think=False) == "Rome"
    # markdown bold inside the box is removed before matching
    assert extract.loongrl_answer(r"</think>\boxed{**Chief of Protocol**}") == "Chief of Protocol"


def test_after_answer_is_case_insensitive_last_match():
    assert extract.after_answer_is("I think the answer is A. No wait, The answer is Paris.") == "Paris"
    assert extract.after_answer_is("The Answer Is  42 .<｜end▁of▁sentence｜>") == "42"
    assert extract.after_answer_is("nothing") is None


def test_boxed_or_answer_is_for_hard_mining():
    assert extract.boxed_or_answer_is(r"the answer is x \boxed{y}") == "y"
    assert extract.boxed_or_answer_is("so the answer is Barack Obama.") == "Barack Obama"
    assert extract.boxed_or_answer_is(r"Put it in \boxed{}. The answer is Oslo.") == "Oslo"


def test_qwenlong_forms():
    assert extract.qwenlong_answer("<think>..</think>Therefore, the answer is **Leonardo da Vinci**.") == "Leonardo da Vinci"
    assert extract.qwenlong_answer("the answer is x") is None             # </think> required
    assert extract.docmath_number("</think>So the answer is $1,234.5.") == "1234.5"
    assert extract.docmath_number("</think>The answer is -0.25") == "-0.25"
    assert extract.docmath_number("</think>the answer is about ten") is None
    assert extract.correct_choice("The correct answer is (B)") == "B"
    assert extract.correct_choice("The correct answer is C") == "C"
    assert extract.correct_choice("the correct answer is (B)") is None     # case-sensitive, as QwenLong-L1


def test_minerva_answer_last_line_in_tail():
    assert extract.minerva_answer("work\nAnswer: 3\nmore\nAnswer: \\frac{1}{2}\n") == "\\frac{1}{2}"
    assert extract.minerva_answer("Answer: 5" + "x" * 400) is None          # only the last 300 chars count
