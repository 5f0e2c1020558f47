"""Rule scorers: plain functions ``scorer(prediction, gold...) -> float`` in [0, 1].

``prediction`` is an already-extracted answer string (see ``extract.py``); ``golds``
is a list of acceptable gold strings and the best match counts. Stdlib only at import
time; ``math_verify`` is imported lazily by ``math_verify_match``.
"""

from __future__ import annotations

import math
import re
import string
import threading
from collections import Counter
from collections.abc import Iterable

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# LoongRL longcontext_qa.py normalize_text: these become spaces (plus CJK punctuation).
_LOONGRL_PUNCT = re.compile(r"[,.:\"'\[\]\-=+\\|!@#$%^&*();<>?/{}，。：；！？、“”‘’（）【】《》]")
_CONTROL = re.compile(r"[\x00-\x1f]")
_LETTER_IN_PARENS = re.compile(r"\((\w)\)")
_BARE_LETTER = re.compile(r"^\s*\(?([A-Za-z])\)?[.:]?\s*$")


def as_gold_list(golds: str | Iterable[str]) -> list[str]:
    """A single gold string or any iterable (list, tuple, numpy array) -> list of str."""
    if isinstance(golds, str):
        return [golds]
    return [str(g) for g in golds]


def normalize_answer(s: str) -> str:
    """SQuAD / LongBench ``normalize_answer``: lowercase, drop ASCII punctuation, drop
    the articles a/an/the, collapse whitespace. The order matters: punctuation goes
    first, so "the-end" -> "theend" keeps its article-like prefix."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def normalize_loongrl_text(s: str) -> str:
    """LoongRL ``normalize_text``: lowercase, punctuation to spaces, collapse spaces."""
    return " ".join(_LOONGRL_PUNCT.sub(" ", s.lower()).split())


def _contains(haystack: str, needle: str, word_boundary: bool) -> bool:
    if word_boundary:  # both strings are space-joined tokens after normalisation
        return f" {needle} " in f" {haystack} "
    return needle in haystack


def two_way_match(prediction: str | None, golds: str | Iterable[str], word_boundary: bool = False) -> float:
    """LoongRL sub-EM: 1 if normalised gold ⊆ prediction or prediction ⊆ gold, for any gold.

    Empty-prediction guard: a prediction that normalises to "" (``\\boxed{the}``) scores 0
    instead of matching everything. ``word_boundary`` makes containment token-aligned so
    "no" does not match "norway".
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    if not pred:
        return 0.0
    for gold in as_gold_list(golds):
        g = normalize_answer(gold)
        if g and (_contains(pred, g, word_boundary) or _contains(g, pred, word_boundary)):
            return 1.0
    return 0.0


def covered_match(prediction: str | None, golds: str | Iterable[str]) -> float:
    """One-way "gold ⊆ prediction" with LoongRL's ``normalize_text`` (the reference
    KeyChain scorer). Empty golds never match."""
    if prediction is None:
        return 0.0
    pred = normalize_loongrl_text(prediction)
    for gold in as_gold_list(golds):
        g = normalize_loongrl_text(gold)
        if g and g in pred:
            return 1.0
    return 0.0


def prediction_in_gold(prediction: str | None, golds: str | Iterable[str]) -> float:
    """The seed filter's "CEM": the SQuAD-normalised prediction is a substring of a normalised gold
    (one direction only, reference merge_output.py). An empty prediction never matches."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(bool(pred) and any(pred in normalize_answer(g) for g in as_gold_list(golds)))


def exact_match(prediction: str | None, golds: str | Iterable[str]) -> float:
    """SQuAD exact match after ``normalize_answer`` (an empty prediction never matches)."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(bool(pred) and any(pred == normalize_answer(g) for g in as_gold_list(golds)))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str | None, golds: str | Iterable[str]) -> float:
    """LongBench ``qa_f1_score``, max over golds (bag-of-tokens F1 after normalize_answer)."""
    if prediction is None:
        return 0.0
    pred_tokens = normalize_answer(prediction).split()
    return max((_f1(pred_tokens, normalize_answer(g).split()) for g in as_gold_list(golds)), default=0.0)


def _ruler_clean(prediction: str) -> str:
    # RULER postprocess: strip, then control characters become newlines.
    return _CONTROL.sub("\n", prediction.strip()).lower()


def string_match_all(prediction: str | None, golds: str | Iterable[str]) -> float:
    """RULER niah/vt/cwe/fwe metric: share of golds found (case-insensitive substring)."""
    golds = as_gold_list(golds)
    if prediction is None or not golds:
        return 0.0
    pred = _ruler_clean(prediction)
    return sum(g.lower() in pred for g in golds) / len(golds)


def string_match_part(prediction: str | None, golds: str | Iterable[str]) -> float:
    """RULER qa metric: 1 if any gold is a case-insensitive substring of the prediction."""
    if prediction is None:
        return 0.0
    pred = _ruler_clean(prediction)
    return float(any(g.lower() in pred for g in as_gold_list(golds)))


def choice_letter(text: str | None) -> str | None:
    """The option letter in "(C)", "C", "C." or "(c)"; the first "(X)" wins (LoongRL mathqa)."""
    if text is None:
        return None
    found = _LETTER_IN_PARENS.search(text) or _BARE_LETTER.match(text)
    return found.group(1).upper() if found else None


def choice_match(prediction: str | None, gold: str | Iterable[str]) -> float:
    """Multiple-choice: 1 if the prediction's letter equals the gold letter (any case)."""
    letter = choice_letter(prediction)
    if letter is None:
        return 0.0
    return float(any(letter == choice_letter(g) for g in as_gold_list(gold)))


# ---- DocMath-style numbers (a safe parser; the original used eval) -----------------

_SCALE_WORDS = re.compile(r"\b(million|billion|thousand|usd|us|rmb)\b|[£€¥]")
_SCI = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:x|×|\*|\\times)\s*10\s*\^\s*\{?\s*(-?\d+)\s*\}?")
_POW10 = re.compile(r"(?<![\d.])10\s*\^\s*\{?\s*(-?\d+)\s*\}?")
_FRACTION = re.compile(r"(-?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def parse_number(text: str | None) -> float | bool | None:
    """Parse a DocMath-style answer into a float or bool, or None.

    Drops currency/scale words and units, keeps the right side of "=" or "≈" and the
    part before " or ", maps yes/true and no/false to booleans, and reads "a x 10^k",
    "10^k" and "a/b". Never evaluates the text as code.
    """
    if text is None:
        return None
    s = text.lower().strip()
    s = re.split(r"[=≈]", s)[-1].split(" or ")[0]
    s = s.replace("approximately", "").replace(",", "")
    s = _SCALE_WORDS.sub(" ", s)
    s = re.sub(r"[`%$°]", " ", s).strip().rstrip(".").strip()
    if s in ("yes", "true"):
        return True
    if s in ("no", "false"):
        return False
    if m := _SCI.search(s):
        return float(m.group(1)) * 10.0 ** int(m.group(2))
    if m := _POW10.search(s):
        return 10.0 ** int(m.group(1))
    if m := _FRACTION.search(s):
        denominator = float(m.group(2))
        return float(m.group(1)) / denominator if denominator else None
    if m := _NUMBER.search(s):
        value = float(m.group(0))
        return value if math.isfinite(value) else None
    return None


def _close(a: float, b: float, rel_tol: float) -> bool:
    return abs(a - b) <= rel_tol * abs(b) if b else abs(a) <= 1e-9


def numeric_match(
    prediction: str | None,
    golds: str | Iterable[str],
    rel_tol: float = 0.0015,
    scale_tolerant: bool = True,
    round_digits: int | None = None,
) -> float:
    """DocMath-style comparison: 1 if |pred - gold| <= rel_tol * |gold| for any gold.

    ``scale_tolerant`` also accepts a prediction off by a factor of 100, 1,000 or
    1,000,000 (percent vs fraction, "in thousands/millions" tables), as DocMath does;
    ``round_digits`` additionally accepts equality after rounding (DocMath's (c) rule).
    Booleans compare by equality; anything unparsable scores 0.
    """
    pred = parse_number(prediction)
    if pred is None:
        return 0.0
    for gold_text in as_gold_list(golds):
        gold = parse_number(gold_text)
        if gold is None:
            continue
        if isinstance(pred, bool) or isinstance(gold, bool):
            if pred is gold:
                return 1.0
            continue
        if _close(pred, gold, rel_tol):
            return 1.0
        if scale_tolerant and any(
            _close(pred * f, gold, rel_tol) or _close(pred, gold * f, rel_tol) for f in (100.0, 1e3, 1e6)
        ):
            return 1.0
        if round_digits is not None and round(pred, round_digits) == round(gold, round_digits):
            return 1.0
    return 0.0


def _as_latex(text: str) -> str:
    return text if ("$" in text or "\\boxed" in text) else f"${text}$"


def math_verify_match(prediction: str | None, golds: str | Iterable[str]) -> float:
    """Mathematical equivalence through Hugging Face ``math-verify`` (imported lazily).

    math-verify's timeouts use ``signal.alarm``, which only works in the main thread;
    elsewhere (judge pools, Ray workers' threads) they are switched off.
    """
    if prediction is None or not prediction.strip():
        return 0.0
    from math_verify import parse, verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    target = parse(_as_latex(prediction), parsing_timeout=timeout)
    if not target:
        return 0.0
    for gold_text in as_gold_list(golds):
        gold = parse(_as_latex(gold_text), parsing_timeout=timeout)
        if gold and verify(gold, target, timeout_seconds=timeout):
            return 1.0
    return 0.0
