"""Rule scorers: plain functions ``scorer(prediction, golds...) -> float`` in [0, 1].

``prediction`` is an already-extracted answer string (see ``extract.py``) or None (no answer: 0);
``golds`` is a gold string, a list of them, or anything ``as_gold_list`` accepts (scalars, None),
and the best match counts. Each scorer's docstring names its reference implementation and every
place where it departs from it (docs/rewards.md has the table). Stdlib only at import time;
math-verify is imported by the scoring worker process only (``math_verify_match``).
"""

from __future__ import annotations

import logging
import math
import re
import string
import threading
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

log = logging.getLogger(__name__)

_ASCII_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# LoongRL's normalize_text (longcontext_qa.py, ruler_multi.py): exactly these become spaces.
_LOONGRL_PUNCT = re.compile("[" + re.escape("!\"#$%&'()*+,-./:;<=>?@[]^{|}—“”…《》！（）：？￥") + "]")
_LOONGRL_IMPORT = re.compile(r"import\s[a-zA-Z.]+(\sas\s[a-zA-Z.]+)\n")
_CONTROL = re.compile(r"[\x00-\x1f]")
_LETTER_IN_PARENS = re.compile(r"\((\w)\)")
_BARE_LETTER = re.compile(r"\s*\(?([A-Za-z])\)?[.:]?\s*")


def as_gold_list(golds) -> list[str]:
    """Any ground truth -> list of gold strings; never raises.

    A string stays whole; None gives no golds; a scalar (int, float, bool, numpy scalar) becomes one
    string; an iterable (list, tuple, numpy array) gives one string per non-None element.

    Example:
        >>> as_gold_list("Paris"), as_gold_list(1990), as_gold_list(None), as_gold_list(["a", None, 2])
        (['Paris'], ['1990'], [], ['a', '2'])
    """
    if isinstance(golds, str):
        return [golds]
    if type(golds) is list and all(type(g) is str for g in golds):
        return golds
    if golds is None:
        return []
    if isinstance(golds, bytes) or not isinstance(golds, Iterable):
        golds = [golds]
    return [g if isinstance(g, str) else g.decode() if isinstance(g, bytes) else str(g) for g in golds if g is not None]


def normalize_answer(s: str) -> str:
    """SQuAD / LongBench ``normalize_answer``: lowercase, drop ASCII punctuation, drop the articles
    a/an/the, collapse whitespace. Punctuation goes first, so "the-end" keeps its article.

    Example:
        >>> normalize_answer("The-End of  an Era!")
        'theend of era'
    """
    return " ".join(_ARTICLES.sub(" ", _ASCII_PUNCT.sub("", s.lower())).split())


def normalize_loongrl_text(s: str) -> str:
    """LoongRL ``normalize_text``: lowercase, its punctuation set to spaces (no backslash, no
    underscore), "import x as y" lines dropped, whitespace collapsed.

    Example:
        >>> normalize_loongrl_text("New-York: 8230912, 1094587.")
        'new york 8230912 1094587'
    """
    s = _LOONGRL_PUNCT.sub(" ", s.lower())
    if "import" in s:
        s = _LOONGRL_IMPORT.sub(" ", s)
    return " ".join(s.split())


# Golds repeat across a group's samples (and epochs): normalise each once.
_gold_squad = lru_cache(maxsize=1 << 16)(normalize_answer)
_gold_loongrl = lru_cache(maxsize=1 << 16)(normalize_loongrl_text)


def _contains(haystack: str, needle: str, word_boundary: bool) -> bool:
    if word_boundary:  # both strings are space-joined tokens after normalisation
        return f" {needle} " in f" {haystack} "
    return needle in haystack


def two_way_match(prediction: str | None, golds, word_boundary: bool = False, empty_guard: bool = True) -> float:
    """LoongRL / QwenLong-L1 sub-EM: 1 if normalised gold ⊆ prediction or prediction ⊆ gold, for any gold.

    Departures (both switched off by ``empty_guard=False``, the reference behaviour): a prediction
    that normalises to "" (``\\boxed{the}``) scores 0 instead of matching every gold, and a gold that
    normalises to "" is skipped instead of matching every prediction. An empty raw prediction scores
    0 in both. ``word_boundary`` makes containment token-aligned so "no" does not match "norway".

    Example:
        >>> two_way_match("Protocol", ["Chief of Protocol"]), two_way_match("the", ["Paris"])
        (1.0, 0.0)
        >>> two_way_match("the", ["Paris"], empty_guard=False), two_way_match("no", "Norway", word_boundary=True)
        (1.0, 0.0)
    """
    if not prediction:
        return 0.0
    pred = normalize_answer(prediction)
    if empty_guard and not pred:
        return 0.0
    for gold in as_gold_list(golds):
        g = _gold_squad(gold)
        if (g or not empty_guard) and (_contains(pred, g, word_boundary) or _contains(g, pred, word_boundary)):
            return 1.0
    return 0.0


def covered_match(prediction: str | None, golds, require_all: bool = False, word_boundary: bool = False,
                  empty_guard: bool = True) -> float:
    """LoongRL ``is_gt_in_pred``: normalised gold ⊆ normalised prediction (``normalize_loongrl_text``).

    Any gold by default (LoongRL's ``pure_exact_match``); ``require_all`` needs every gold (its
    ``format_exact_match`` rule, the only sensible one for a 20-value RULER answer). A gold that
    normalises to "" is skipped (``empty_guard=False``: found, as in the reference).

    Example:
        >>> covered_match("the key is 7a0f9ecc.", ["7A0F9ECC"]), covered_match("7a0f", ["7a0f9ecc"])
        (1.0, 0.0)
        >>> covered_match("8230912", ["8230912", "1094587"]), covered_match("8230912", ["8230912", "1094587"], True)
        (1.0, 0.0)
    """
    if prediction is None:
        return 0.0
    pred = normalize_loongrl_text(prediction)
    found = None
    for gold in as_gold_list(golds):
        g = _gold_loongrl(gold)
        if g or not empty_guard:
            found = _contains(pred, g, word_boundary)
            if found is not require_all:  # a miss decides all-of, a hit decides any-of
                return float(found)
    return float(bool(found))


def prediction_in_gold(prediction: str | None, golds) -> float:
    """The KeyChain seed filter's "CEM": the SQuAD-normalised prediction is a substring of a
    normalised gold (one direction only, reference merge_output.py). An empty prediction never matches.

    Example:
        >>> prediction_in_gold("Obama", ["Barack Obama"]), prediction_in_gold("Barack Obama", ["Obama"])
        (1.0, 0.0)
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(bool(pred) and any(pred in normalize_answer(g) for g in as_gold_list(golds)))


def exact_match(prediction: str | None, golds) -> float:
    """SQuAD exact match after ``normalize_answer`` (an empty prediction never matches).

    Example:
        >>> exact_match("The Eiffel Tower.", ["eiffel tower"]), exact_match("Eiffel Tower in Paris", "eiffel tower")
        (1.0, 0.0)
    """
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


def token_f1(prediction: str | None, golds) -> float:
    """LongBench ``qa_f1_score``, max over golds (bag-of-tokens F1 after ``normalize_answer``).

    Example:
        >>> round(token_f1("Paris, France", ["Paris"]), 4)
        0.6667
    """
    if prediction is None:
        return 0.0
    pred_tokens = normalize_answer(prediction).split()
    return max((_f1(pred_tokens, normalize_answer(g).split()) for g in as_gold_list(golds)), default=0.0)


def _ruler_clean(prediction: str) -> str:
    # RULER postprocess: strip, then control characters become newlines.
    return _CONTROL.sub("\n", prediction.strip()).lower()


def string_match_all(prediction: str | None, golds) -> float:
    """RULER niah/vt/cwe/fwe metric: share of golds found (case-insensitive substring).

    Example:
        >>> round(string_match_all("numbers 8230912 and 1094587", ["8230912", "1094587", "5550001"]), 4)
        0.6667
    """
    golds = as_gold_list(golds)
    if prediction is None or not golds:
        return 0.0
    pred = _ruler_clean(prediction)
    return sum(g.lower() in pred for g in golds) / len(golds)


def string_match_part(prediction: str | None, golds) -> float:
    """RULER qa metric: 1 if any gold is a case-insensitive substring of the prediction.

    Example:
        >>> string_match_part("It was PARIS.", ["paris", "lyon"])
        1.0
    """
    if prediction is None:
        return 0.0
    pred = _ruler_clean(prediction)
    return float(any(g.lower() in pred for g in as_gold_list(golds)))


def choice_letter(text: str | None, bare_letter: bool = True) -> str | None:
    """The option letter: the first "(X)" anywhere (LoongRL mathqa's ``\\((\\w)\\)``), else, with
    ``bare_letter``, a text that is only a letter ("C", "C.", "(c)"); upper-cased.

    Example:
        >>> choice_letter("(B) 12"), choice_letter("b."), choice_letter("b.", bare_letter=False)
        ('B', 'B', None)
    """
    if text is None:
        return None
    found = _LETTER_IN_PARENS.search(text) or (_BARE_LETTER.fullmatch(text) if bare_letter else None)
    return found.group(1).upper() if found else None


def choice_match(prediction: str | None, golds, bare_letter: bool = True) -> float:
    """Multiple choice: 1 if the prediction's letter equals a gold's letter (any case). Golds are
    letters ("B", "(B)"); ``bare_letter`` applies to the prediction only (LoongRL needs "(X)").

    Example:
        >>> choice_match("(C) 42", "C"), choice_match("C", ["c"]), choice_match("C", "C", bare_letter=False)
        (1.0, 1.0, 0.0)
    """
    letter = choice_letter(prediction, bare_letter)
    if letter is None:
        return 0.0
    return float(any(letter == choice_letter(g) for g in as_gold_list(golds)))


# ---- DocMath numbers: QwenLong-L1 docmath.py's normalize + compare_two_numbers, without eval -----

DOCMATH_MAX_CHARS = 200
_MONEY = ("£", "€", "¥", "million", "billion", "thousand", "US", "USD", "RMB")  # removed in this order
_NUM = r"[-+]?(?:[\d,]*\.*\d+)"
_UNIT_AFTER = re.compile(rf"({_NUM}) [^0-9 ]+")
_UNIT_BEFORE = re.compile(rf"[^0-9 ]+ ({_NUM})")
_SUFFIX = re.compile(rf"({_NUM})[^\d]{{1,2}}")
_PREFIX = re.compile(r"[^-+\d]{1,2}((?:[\d,]*\.*\d+))")
_GROUPED = re.compile(r"[-+]?(\d{1,3}(,\d{3})*|(\d+))(\.\d+)?")
_OPTION = re.compile(r"\([a-d]\)")
_POW10 = re.compile(r"10\^(-?\d+)")
# One factor of the products the reference's eval() meets: a Python number literal or 10^k.
_FACTOR = re.compile(r"([-+]?)(?:(\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)"
                     r"|(0+|[1-9]\d*)|\x00(-?\d+)\x00)")


def _eval_product(s: str) -> int | float | None:
    """The value of ``f1 op f2 ...`` (``op`` in ``* /``, factors as ``_FACTOR``), left to right as
    Python evaluates it; None for anything else (where the reference's eval raises)."""
    value, pos, op = None, 0, "*"
    while True:
        m = _FACTOR.match(s, pos)
        if m is None:
            return None
        sign, flt, integer, exponent = m.groups()
        try:
            x = float(flt) if flt else int(integer) if integer else math.pow(10, int(exponent))
        except (OverflowError, ValueError):  # math.pow(10, 400); a 5000-digit int
            return None
        x = -x if sign == "-" else x
        try:
            value = x if value is None else value * x if op == "*" else value / x
        except (ZeroDivisionError, OverflowError):
            return None
        pos = m.end()
        if pos == len(s):
            return value
        op = s[pos]
        if op not in "*/":
            return None
        pos += 1


def docmath_value(text: str | None, unparsable=None) -> int | float | bool | None:
    """QwenLong-L1 DocMath ``normalize``: the number (or bool) an answer string stands for.

    Same steps in the same order: strip, drop a trailing ".", remove £ € ¥ million billion thousand
    US USD RMB, keep the right of "=" and "≈", remove `` ` % $ ° ``, map yes/true/no/false to a bool,
    drop "approximately" and anything after " or ", drop a unit before or after the number, read
    "10^k", " x " and " × ", drop thousands separators. The reference then ``eval``s the string; this
    reads only number literals, 10^k, and their products and quotients. Where that eval would fail
    the reference uses 0: pass ``unparsable=0`` for that, the default None never matches. Results
    the reference compares as never equal (an option "(a)", a tuple: any comma left) give None, and
    so do texts over ``DOCMATH_MAX_CHARS`` (the reference's unit regexes backtrack quadratically).

    Example:
        >>> docmath_value("$1,234.5."), docmath_value("12 kg"), docmath_value("3 x 10^5"), docmath_value("yes")
        (1234.5, 12, 300000.0, True)
        >>> docmath_value("about ten"), docmath_value("about ten", unparsable=0), docmath_value("007")
        (None, 0, None)
    """
    if text is None:
        return None
    s = str(text).strip().rstrip(".")
    if len(s) > DOCMATH_MAX_CHARS:
        return None
    for money in _MONEY:
        s = s.replace(money, "")
    if "=" in s:
        s = s.split("=")[-1].strip()
    if "≈" in s:
        s = s.split("≈")[-1].strip()
    for ch in "`%$°":
        s = s.replace(ch, "")
    if s in ("true", "yes", "false", "no"):
        s = "True" if s in ("true", "yes") else "False"
    if "True" in s or "False" in s:
        return "True" in s
    if "approximately" in s:
        s = s.replace("approximately", "").strip()
    if " or " in s:
        s = s.split(" or ")[0]
    for pattern in (_UNIT_AFTER, _UNIT_BEFORE, _SUFFIX, _PREFIX):
        if m := pattern.fullmatch(s):
            s = m.group(1)
    s = _POW10.sub("\x00\\1\x00", s)  # the reference writes math.pow(10, k) here
    s = s.replace(" x ", "*").replace(" × ", "*")
    if _GROUPED.fullmatch(s):
        s = s.replace(",", "")
    if _OPTION.search(s) or "," in s:  # eval gives a string or a tuple: compares unequal to any number
        return None
    value = _eval_product(s or "0")
    return unparsable if value is None else value


_gold_docmath = lru_cache(maxsize=1 << 16)(docmath_value)


def _within_eps(pred: float, gold: float) -> bool:
    eps = abs(gold) * 0.0015
    return gold - eps <= pred <= gold + eps


def _ceil_to(x: float, decimals: int) -> float:
    factor = 10 ** decimals
    return math.ceil(x * factor) / factor


def _docmath_equal(p, gold, round_digits: int) -> bool:
    """QwenLong-L1 ``get_acc`` for one normalised pair (``compare_two_numbers`` for numbers)."""
    if isinstance(gold, bool):
        return p == gold  # Python equality: 1 == True, as the reference
    try:
        v1, v2 = max(abs(gold), abs(p)), min(abs(gold), abs(p))
        if v1 != 0 and v2 != 0:
            d = math.log10(v1) - math.log10(v2)
            if int(d) == d:  # magnitudes a power of ten apart (exactly, in floating point), or equal
                return True
        for limit, factor in ((50, 100), (500, 1000), (50000, 100000)):
            if v2 <= v1 / limit and _within_eps(v2 * factor, v1):
                return True
        if _ceil_to(v1, round_digits) == _ceil_to(v2, round_digits):
            return True
        return _within_eps(p, gold)
    except (OverflowError, ValueError):  # inf, or inf - inf = nan, where the reference would crash
        return False


def docmath_match(prediction: str | None, golds, round_digits: int = 3, unparsable_is_zero: bool = False) -> float:
    """QwenLong-L1 DocMath comparison (``docmath.py``), for any gold; signs are ignored as there.

    Correct when the magnitudes (a) are a power of ten apart (equality included), (b) match within
    0.15% after scaling the smaller by 100, 1,000 or 100,000 (when it is at most 1/50, 1/500 or
    1/50,000 of the larger: percent and "in thousands" mismatches), (c) agree after rounding *up* to
    ``round_digits`` decimals (3 in training; QwenLong's eval copy uses 2), or (d) the values are
    within 0.15% of the gold. Booleans compare by equality. Departure: an answer that does not parse
    never matches; the reference reads it as 0 (``unparsable_is_zero=True``), which matches a gold
    of 0. A gold that is not a number or bool is skipped (the reference asserts).

    Example:
        >>> docmath_match("45", ["0.45"]), docmath_match("1234.6", "1234.5"), docmath_match("-5", "5")
        (1.0, 1.0, 1.0)
        >>> docmath_match("0.04505", "45"), docmath_match("n/a", "0")
        (1.0, 0.0)
        >>> docmath_match("n/a", "0", unparsable_is_zero=True)
        1.0
    """
    unparsable = 0 if unparsable_is_zero else None
    pred = docmath_value(prediction, unparsable)
    if pred is None:
        return 0.0
    for text in as_gold_list(golds):
        gold = _gold_docmath(text, unparsable)
        if gold is not None and _docmath_equal(pred, gold, round_digits):
            return 1.0
    return 0.0


# ---- math: math-verify in a bounded worker process, and verl's Minerva string match ----------

MATH_TIMEOUT_S = 5.0
"""Default wall-clock budget of one ``math_verify_match`` call (``reward_kwargs.math_timeout_s``)."""
_MATH_POOL = None
_MATH_POOL_LOCK = threading.Lock()


def _as_latex(text: str) -> str:
    return text if ("$" in text or "\\boxed" in text) else f"${text}$"


@lru_cache(maxsize=4096)
def _parse_math(text: str, timeout_s: int):
    from math_verify import parse

    return parse(_as_latex(text), parsing_timeout=timeout_s)


def math_verify_unbounded(prediction: str, golds: list[str], timeout_s: int = 2) -> float:
    """math-verify equivalence in this process, with math-verify's own (signal) timeouts: the
    scoring worker's function. Do not call it from a training process: a big power hangs it.
    Parses are cached (golds repeat across a group's samples)."""
    target = _parse_math(prediction, timeout_s)
    if not target:
        return 0.0
    from math_verify import verify

    return float(any(gold and verify(gold, target, timeout_seconds=timeout_s)
                     for gold in (_parse_math(g, timeout_s) for g in golds)))


def new_math_pool(**kwargs):
    """A ``WorkerPool`` of math-verify workers, each warmed up (imports, first parse) before use."""
    from loongrl.rewards.bounded import WorkerPool

    return WorkerPool("loongrl.rewards.scorers:math_verify_unbounded", warmup=["1/2", ["0.5"]], **kwargs)


def math_pool():
    """The process-wide math-verify pool (workers start on first use; all stop at exit)."""
    global _MATH_POOL
    with _MATH_POOL_LOCK:
        if _MATH_POOL is None:
            _MATH_POOL = new_math_pool()
        return _MATH_POOL


def math_verify_match(prediction: str | None, golds, timeout_s: float = MATH_TIMEOUT_S) -> float:
    """Mathematical equivalence through Hugging Face ``math-verify``, bounded: the check runs in a
    worker process that is killed after ``timeout_s`` seconds (score 0), so it returns in time from
    any thread whatever the input (e.g. ``7^{7^{7^7}}``). A worker's start-up (importing and warming
    math-verify, ~1 s; on first use per concurrent caller and after a kill) is not part of the budget.
    A failure inside math-verify also scores 0; both are logged. Departure: verl's ``math_dapo``
    compares Minerva-normalised strings (``minerva_match``).

    Example:
        >>> math_verify_match("\\\\frac{1}{2}", ["0.5"]), math_verify_match("2", "3")
        (1.0, 0.0)
    """
    from loongrl.rewards.bounded import ScoringTimeout, WorkerError, WorkerStartError

    golds = as_gold_list(golds)
    if not prediction or not prediction.strip() or not golds:
        return 0.0
    try:
        return float(math_pool().call(prediction, golds, max(1, int(timeout_s) // 2), timeout_s=timeout_s))
    except ScoringTimeout:
        log.warning("math-verify stopped after %.3g s (scored 0): %.200r", timeout_s, prediction)
    except WorkerStartError:
        raise  # a broken environment (math-verify missing), not a bad answer: never a silent 0
    except WorkerError as err:
        log.warning("math-verify failed (scored 0): %s: %.200r", err, prediction)
    return 0.0


# verl math_dapo.normalize_final_answer (the Minerva / Hendrycks MATH rules), as data.
_MINERVA_SUBSTITUTIONS = (("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""),
                          ("mbox", "text"), (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"))
_MINERVA_REMOVED = (
    "square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots", "sue", "points",
    "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges", "students",
    "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}",
    "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"', "\\dots")
_MINERVA_REWRITES = ((re.compile(r"(.*?)(\$)(.*?)(\$)(.*)"), "$\\3$"), (re.compile(r"(\\text\{)(.*?)(\})"), "\\2"),
                     (re.compile(r"(\\textbf\{)(.*?)(\})"), "\\2"), (re.compile(r"(\\overline\{)(.*?)(\})"), "\\2"),
                     (re.compile(r"(\\boxed\{)(.*)(\})"), "\\2"), (re.compile(r"(frac)([^{])(.)"), "frac{\\2}{\\3}"),
                     (re.compile(r"(sqrt)([^{])"), "sqrt{\\2}"))


def minerva_normalize(answer: str) -> str:
    """verl ``math_dapo.normalize_final_answer``: the right of the last "=", fixed substitutions and
    removals (units, ``\\text``, spaces), ``\\frac12`` -> ``\\frac{1}{2}``, ``$`` dropped, "1,000" -> "1000".

    Example:
        >>> minerva_normalize("x = \\\\frac12"), minerva_normalize("1,000 dollars"), minerva_normalize("\\\\text{(B)}")
        ('\\\\frac{1}{2}', '1000', '(B)')
    """
    answer = answer.split("=")[-1]
    for before, after in _MINERVA_SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expr in _MINERVA_REMOVED:
        answer = answer.replace(expr, "")
    for pattern, repl in _MINERVA_REWRITES:
        answer = pattern.sub(repl, answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer.strip()


def minerva_match(prediction: str | None, golds) -> float:
    """verl ``math_dapo``'s check (LoongRL's DAPO reward): Minerva-normalised strings are equal.

    Example:
        >>> minerva_match("\\\\frac12", "\\\\frac{1}{2}"), minerva_match("0.5", "\\\\frac{1}{2}")
        (1.0, 0.0)
    """
    if prediction is None:
        return 0.0
    pred = minerva_normalize(prediction)
    return float(any(pred == minerva_normalize(g) for g in as_gold_list(golds)))
