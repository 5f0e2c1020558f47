"""Answer extraction from model responses (stdlib only, no heavy imports).

Every function returns ``None`` when no answer can be found, so callers can tell
"no answer" (reward 0, nothing to judge) apart from an empty answer string.
"""

from __future__ import annotations

import re

THINK_END = "</think>"
# QwenLong-L1 (DeepSeek-R1 distill) special tokens that may survive decoding.
R1_SPECIAL_TOKENS = ("<｜Assistant｜>", "<｜end▁of▁sentence｜>")

_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
# DocMath: "the answer is" + optional sign/currency, then a number (QwenLong-L1 docmath.py).
_DOCMATH_NUMBER = re.compile(r"the answer is[\s:]*[=≈`%$°£€¥]?\s*(-?[0-9][0-9.,]*)", re.IGNORECASE)
_CORRECT_CHOICE_PAREN = re.compile(r"The correct answer is \(([A-D])\)")
_CORRECT_CHOICE_BARE = re.compile(r"The correct answer is ([A-D])")
_MINERVA_ANSWER = re.compile(r"Answer\s*:\s*([^\n]+)")


def after_think(text: str, require: bool = True) -> str | None:
    """Text after the last ``</think>``, stripped.

    Without a ``</think>``: ``None`` if ``require`` (LoongRL and QwenLong-L1 training
    rewards give 0, an implicit format reward), else the whole text stripped.
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


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (brace matched), ``\\boxed X$`` or ``\\fbox{...}``.

    Follows the MATH/LoongRL ``last_boxed_only_string`` rules: ``\\fbox`` is only a
    fallback when there is no ``\\boxed``; ``\\boxed `` (with a space) runs to the
    next ``$`` or the end; an unbalanced box gives ``None``. The content is stripped.
    """
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


def count_boxed(text: str) -> int:
    return text.count("\\boxed")


def after_answer_is(text: str) -> str | None:
    """Text after the last "the answer is" (case-insensitive), minus R1 special tokens,
    whitespace and periods at both ends (QwenLong-L1 docqa.py)."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    ans = text[matches[-1].end():]
    for tok in R1_SPECIAL_TOKENS:
        ans = ans.replace(tok, "")
    return ans.strip().strip(".").strip()


def first_answer_is(text: str) -> str | None:
    """Text after the FIRST "the answer is" (case-insensitive), stripped: the KeyChain seed filter's
    extraction (reference merge_output.py); None when the phrase is missing."""
    m = _ANSWER_IS.search(text)
    return None if m is None else text[m.end():].strip()


def loongrl_answer(response: str, require_think: bool = True) -> str | None:
    """LoongRL training-reward answer: last box in the text after the last ``</think>``,
    with ``*`` removed (markdown bold around the box must not break it)."""
    region = after_think(response, require=require_think)
    if region is None:
        return None
    return last_boxed(region.replace("*", ""))


def boxed_or_answer_is(response: str) -> str | None:
    """LoongRL hard-mining judge (``boxed_exact_match_judge``): the last box anywhere,
    else the text after the last "the answer is". Empty ``\boxed{}`` literals (often
    echoed from the instruction) are dropped first."""
    text = response.replace("*", "").replace("\\boxed{}", "")
    boxed = last_boxed(text)
    return boxed if boxed is not None else after_answer_is(text)


def qwenlong_answer(response: str, require_think: bool = True) -> str | None:
    """QwenLong-L1 free-form answer: text after the last ``</think>`` without ``*``,
    then the text after the last "the answer is".

    The original match is case-sensitive (lowercase only); we accept any case, because
    "The answer is X" at sentence start is the most common phrasing.
    """
    region = after_think(response, require=require_think)
    if region is None:
        return None
    return after_answer_is(region.replace("*", ""))


def docmath_number(response: str, require_think: bool = True) -> str | None:
    """QwenLong-L1 DocMath answer: the number after the last "the answer is", commas
    removed, trailing "." stripped. Non-numeric answers give ``None``."""
    region = after_think(response, require=require_think)
    if region is None:
        return None
    matches = _DOCMATH_NUMBER.findall(region.replace("*", ""))
    if not matches:
        return None
    return matches[-1].replace(",", "").rstrip(".") or None


def correct_choice(response: str) -> str | None:
    """QwenLong-L1 multiple-choice letter: "The correct answer is (X)", else without
    parentheses (case-sensitive, A-D, last match)."""
    for pattern in (_CORRECT_CHOICE_PAREN, _CORRECT_CHOICE_BARE):
        found = pattern.findall(response)
        if found:
            return found[-1]
    return None


def minerva_answer(response: str) -> str | None:
    """verl ``math_dapo`` extraction: last "Answer: X" line in the last 300 characters."""
    found = _MINERVA_ANSWER.findall(response[-300:])
    return found[-1].strip() if found else None
