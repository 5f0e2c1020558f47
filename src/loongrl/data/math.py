"""Math parts of the LoongRL mixture, from user-supplied files in their published formats.

- MathQA (allenai/math_qa JSON or JSONL): `Problem`, `options` ("a ) 38 , b ) 27.675 , ...", or a list),
  `correct` letter. Becomes a 5-option multiple-choice prompt scored by the letter in the boxed "(X)".
- DAPO-Math-17k (verl parquet): rows passed through with the prompt unchanged, scored by `math_dapo`.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterator

from loongrl.data.sources import _require, clean, parse_rows
from loongrl.readers import InputError, iter_json_rows

LETTERS = "ABCDE"
MATHQA_TEMPLATE = "Question: {problem}\nChoices:" + "\n".join("({}) {{{}}}".format(c, c) for c in LETTERS)
_OPTION = re.compile(r"(?:^|,)\s*([a-e])\s*\)\s*")


def parse_mathqa_options(options, path: str, n: int) -> list[str]:
    """The five option texts of a MathQA row (string "a ) x , b ) y , ..." or a list)."""
    if isinstance(options, list):
        opts = [clean(str(o)) for o in options]
    elif isinstance(options, str):
        marks = list(_OPTION.finditer(options))
        if [m.group(1) for m in marks] != list("abcde"):
            raise InputError(path, n, "options", "expected five options labelled a ) to e )", "bad_options")
        ends = [m.start() for m in marks[1:]] + [len(options)]
        opts = [clean(options[m.end():e]) for m, e in zip(marks, ends)]
    else:
        raise InputError(path, n, "options", f"expected a string or list, got {type(options).__name__}",
                         "bad_options")
    if len(opts) != 5 or not all(opts):
        raise InputError(path, n, "options", f"expected 5 non-empty options, got {len(opts)}", "bad_options")
    return opts


def _mathqa(row: Any, path: str, n: int) -> tuple[str, dict]:
    problem = clean(_require(row, "Problem", path, n))
    opts = parse_mathqa_options(_require(row, "options", path, n, (str, list)), path, n)
    correct = clean(str(_require(row, "correct", path, n, str))).upper()
    if correct not in LETTERS:
        raise InputError(path, n, "correct", f"{correct!r} is not a letter a-e", "bad_correct")
    user = MATHQA_TEMPLATE.format(problem=problem, **dict(zip(LETTERS, opts)))
    return str(row.get("id", n)), {"question": problem, "user": user, "answers": [correct]}


def mathqa_rows(path: str, skipped: Counter, strict: bool = False) -> Iterator[tuple[str, dict]]:
    """(id, row-fields) for each usable MathQA item; bad rows counted in `skipped` by reason."""
    for _, item in parse_rows(iter_json_rows(path), _mathqa, path, strict, skipped):
        yield item


def _dapo(row: Any, path: str, n: int) -> tuple[str, dict]:
    prompt = _require(row, "prompt", path, n, list)
    if not prompt or not isinstance(prompt[-1], dict) or not prompt[-1].get("content"):
        raise InputError(path, n, "prompt", "expected a chat list ending in a message", "bad_prompt")
    gt = _require(row, "reward_model", path, n, dict).get("ground_truth")
    if gt in (None, "", []):
        raise InputError(path, n, "reward_model.ground_truth", "missing", "missing_ground_truth")
    rid = str((row.get("extra_info") or {}).get("index", n))
    return rid, {"question": prompt[-1]["content"], "user": prompt[-1]["content"],
                 "answers": gt if isinstance(gt, list) else [str(gt)]}


def dapo_rows(path: str, skipped: Counter, strict: bool = False) -> Iterator[tuple[str, dict]]:
    """(id, row-fields) for each DAPO-Math-17k row (verl parquet: prompt, reward_model, extra_info)."""
    from loongrl.data.io import iter_rows

    for _, item in parse_rows(enumerate(iter_rows(path)), _dapo, path, strict, skipped):
        yield item
