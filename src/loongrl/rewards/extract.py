"""Answer extraction from model responses (stdlib only, no heavy imports).

``final_answer`` is THE extraction of the LoongRL-style tasks: the training reward, hard mining and
evaluation all read a response through it (via ``router``), so one response has one answer
everywhere. The other functions are the reference extractions of individual tasks (QwenLong-L1,
verl's math_dapo) and the LoongRL reference rules, kept for ``faithful`` scoring.

Every function returns ``None`` when no answer can be found, so callers can tell "no answer"
(reward 0, nothing to judge) apart from an empty answer string. All run in linear time.
"""

from __future__ import annotations

import re

THINK_END = "</think>"
# QwenLong-L1 (DeepSeek-R1 distill) special tokens that may survive decoding.
R1_SPECIAL_TOKENS = ("<｜Assistant｜>", "<｜end▁of▁sentence｜>")

_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
# QwenLong-L1 docmath.py parse_model_answer: symbols in this order, each optional, then the number.
_DOCMATH_NUMBER = re.compile(r"the answer is (=?≈?`?%?\$?°?£?€?¥?-?[0-9.,]+)", re.IGNORECASE)
_CORRECT_CHOICE_PAREN = re.compile(r"The correct answer is \(([A-D])\)")
_CORRECT_CHOICE_BARE = re.compile(r"The correct answer is ([A-D])")
# verl math_dapo: (?i)Answer\s*:\s*([^\n]+) -- case-insensitive, so "final answer: 13" counts.
_MINERVA_ANSWER = re.compile(r"Answer\s*:\s*([^\n]+)", re.IGNORECASE)


def after_think(text: str, require: bool = True) -> str | None:
    """Text after the last ``</think>``, stripped.

    Without a ``</think>``: ``None`` if ``require`` (reward 0: an implicit format reward), else the
    whole text stripped.

    Example:
        >>> after_think("a</think>b</think> c"), after_think("no tag"), after_think(" no tag ", require=False)
        ('c', None, 'no tag')
    """
    idx = text.rfind(THINK_END)
    if idx < 0:
        return None if require else text.strip()
    return text[idx + len(THINK_END):].strip()


def _match_braces(text: str, open_idx: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_idx``, or None if unbalanced."""
    depth = 0
    for i in range(open_idx, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def last_boxed(text: str, loongrl_rules: bool = False) -> str | None:
    """Content of the last ``\\boxed{...}`` (brace matched), ``\\boxed X`` (to the next ``$``) or,
    when there is no ``\\boxed``, ``\\fbox{...}``; stripped. An unbalanced last box gives ``None``.

    ``loongrl_rules`` reproduces LoongRL's ``last_boxed_only_string`` + ``remove_boxed`` exactly:
    a ``\\boxed `` (with a space) ANYWHERE wins over a later ``\\boxed{}``, an ``\\fbox`` never
    counts (its ``remove_boxed`` assertion fails, reward 0), and the content is not stripped.

    Example:
        >>> last_boxed(r"\\boxed{a} then \\boxed{\\frac{1}{2}}"), last_boxed(r"$\\boxed 42$ and \\boxed{7}")
        ('\\\\frac{1}{2}', '7')
        >>> last_boxed(r"$\\boxed 42$ and \\boxed{7}", loongrl_rules=True), last_boxed(r"\\fbox{x}", loongrl_rules=True)
        ('42', None)
    """
    if loongrl_rules:
        if "\\boxed " in text:
            return text.rsplit("\\boxed ", 1)[1].split("$", 1)[0]
        idx = text.rfind("\\boxed")
        if idx < 0 or not text.startswith("\\boxed{", idx):
            return None
        close = _match_braces(text, idx)
        return None if close is None else text[idx + len("\\boxed{"):close]
    for macro in ("\\boxed", "\\fbox"):
        idx = text.rfind(macro)
        if idx >= 0:
            break
    else:
        return None
    rest_idx = idx + len(macro)
    if text.startswith(" ", rest_idx):
        return text[rest_idx:].split("$", 1)[0].strip()
    brace = text.find("{", rest_idx)
    # Only whitespace may sit between the macro and its brace (rules out e.g. \boxedfoo{).
    if brace < 0 or text[rest_idx:brace].strip():
        return None
    close = _match_braces(text, brace)
    if close is None:
        return None
    return text[brace + 1:close].strip()


def verl_last_boxed(text: str) -> str | None:
    """verl ``math_dapo``'s box: the last ``\\boxed{`` brace matched, content unstripped (no
    ``\\boxed `` or ``\\fbox`` forms).

    Example:
        >>> verl_last_boxed(r"so \\boxed{ 12 }."), verl_last_boxed(r"\\boxed 12")
        (' 12 ', None)
    """
    idx = text.rfind("\\boxed{")
    if idx < 0:
        return None
    close = _match_braces(text, idx)
    return None if close is None else text[idx + len("\\boxed{"):close]


def count_boxed(text: str) -> int:
    return text.count("\\boxed")


def after_answer_is(text: str, case_sensitive: bool = False) -> str | None:
    """Text after the last "the answer is", minus R1 special tokens, whitespace and periods at both
    ends (QwenLong-L1 docqa.py). The reference matches lowercase only (``case_sensitive``); by
    default any case counts, because "The answer is X" at sentence start is the common phrasing.

    Example:
        >>> after_answer_is("I think the answer is A. No, The answer is Paris."), after_answer_is("nothing")
        ('Paris', None)
        >>> after_answer_is("The answer is Paris.", case_sensitive=True) is None
        True
    """
    if case_sensitive:
        if "the answer is" not in text:
            return None
        ans = text.rsplit("the answer is", 1)[1]
    else:
        last = None
        for last in _ANSWER_IS.finditer(text):
            pass
        if last is None:
            return None
        ans = text[last.end():]
    for tok in R1_SPECIAL_TOKENS:
        ans = ans.replace(tok, "")
    return ans.strip().strip(".").strip()


def first_answer_is(text: str) -> str | None:
    """Text after the FIRST "the answer is" (case-insensitive), stripped: the KeyChain seed filter's
    extraction (reference merge_output.py); None when the phrase is missing.

    Example:
        >>> first_answer_is("the answer is Oslo. Or the answer is Bergen")
        'Oslo. Or the answer is Bergen'
        >>> print(first_answer_is("Oslo, I think"))
        None
    """
    m = _ANSWER_IS.search(text)
    return None if m is None else text[m.end():].strip()


def final_answer(response: str, require_think: bool = True) -> str | None:
    """The one answer of a response, shared by training reward, hard mining and evaluation.

    In the text after the last ``</think>`` (``None`` without one if ``require_think``), with ``*``
    removed and empty ``\\boxed{}`` literals (often echoed from the instruction) dropped: the last
    box (``last_boxed``), else the text after the last "the answer is" (``after_answer_is``).
    This is LoongRL's hard-mining judge applied after ``</think>``; LoongRL's training reward reads
    the last box only (``last_boxed(..., loongrl_rules=True)``, see ``faithful`` in the router).

    Example:
        >>> final_answer(r"<think>x</think> The answer is \\boxed{Paris} (enclosed in \\boxed{} as required).")
        'Paris'
        >>> final_answer("<think>x</think> So the answer is **Oslo**."), final_answer(r"\\boxed{Rome}")
        ('Oslo', None)
    """
    region = after_think(response, require=require_think)
    if region is None:
        return None
    text = region.replace("*", "").replace("\\boxed{}", "")
    boxed = last_boxed(text)
    return boxed if boxed else after_answer_is(text)


def docmath_number(text: str) -> str | None:
    """QwenLong-L1 DocMath answer: the FIRST "the answer is" (any case) followed by exactly one space,
    optional ``= ≈ ` % $ ° £ € ¥`` (in that order), an optional minus and ``[0-9.,]+``; commas
    removed, trailing "." stripped; ``*`` is removed first. Non-numeric answers give ``None``.

    Example:
        >>> docmath_number("So the answer is $1,234.5. Earlier the answer is 7"), docmath_number("the answer is ten")
        ('$1234.5', None)
    """
    m = _DOCMATH_NUMBER.search(text.replace("*", ""))
    if m is None:
        return None
    return m.group(1).replace(",", "").rstrip(".") or None


def correct_choice(text: str) -> str | None:
    """QwenLong-L1 multiple-choice letter (long.py): ``*`` removed, then the FIRST "The correct
    answer is (X)", else the first without parentheses (case-sensitive phrase, X in A-D).

    Example:
        >>> correct_choice("The correct answer is **(B)**"), correct_choice("The correct answer is C, not (D)")
        ('B', 'C')
    """
    text = text.replace("*", "")
    found = _CORRECT_CHOICE_PAREN.search(text) or _CORRECT_CHOICE_BARE.search(text)
    return found.group(1) if found else None


def minerva_answer(text: str) -> str | None:
    """verl ``math_dapo`` extraction: the last "Answer: X" line (any case) in the last 300 characters.

    Example:
        >>> minerva_answer("Answer: 3\\nThe final answer: 13"), minerva_answer("Answer: 5" + "x" * 400)
        ('13', None)
    """
    found = _MINERVA_ANSWER.findall(text[-300:])
    return found[-1].strip() if found else None
