"""Data operations between stages: mixtures, the length filter, hard mining, retrospective sampling.

All of them are pure functions over rows of the project's parquet schema plus per-item statistics
from `loongrl.generation.sample`; nothing here loads a model. Every filter returns its counts by reason,
so nothing is dropped silently.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter, defaultdict
from typing import Callable

from loongrl.data.io import file_sha256, iter_rows, write_rows  # noqa: F401  (re-exported for stage code)

from .recipe import DataMixture, RecipeError


def _messages_problem(value, field: str) -> str | None:
    if value is None:
        return f"{field}: missing"
    if not isinstance(value, list) or not value:
        return f"{field}: not a non-empty chat list of {{role, content}} messages"
    for j, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f"{field}[{j}]: not a {{role, content}} message"
    return None


def row_problems(row: dict, sft: bool = False) -> list[str]:
    """What keeps a row from being trained on: `prompt` a non-empty chat list of {role, content},
    `reward_model.ground_truth` present, and for SFT a `completion` chat list (the gold response)."""
    problems = [_messages_problem(row.get("prompt"), "prompt")]
    rm = row.get("reward_model")
    gt = rm.get("ground_truth") if isinstance(rm, dict) else None
    if gt is None or (isinstance(gt, (list, str)) and not gt):
        problems.append("reward_model.ground_truth: missing or empty")
    if sft:
        problems.append(_messages_problem(row.get("completion"), "completion"))
    return [p for p in problems if p]


def read_rows(path: str) -> list[dict]:
    if not os.path.isfile(path):
        raise RecipeError(f"{path}: data file not found")
    return list(iter_rows(path))


def read_stage_rows(path: str) -> list[dict]:
    """The rows of a stage's data file; a row without a usable `prompt` is an error naming the file and the row,
    not a bare KeyError at counting (the rest of the schema is checked before launch, `checks.py`)."""
    rows = read_rows(path)
    bad = [(i, p) for i, row in enumerate(rows) if (p := _messages_problem(row.get("prompt"), "prompt"))]
    if bad:
        i, problem = bad[0]
        raise RecipeError(f"{path}: row {i}: {problem}" + (f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""))
    return rows


def source_of(row: dict) -> str:
    return row.get("data_source") or "?"


def prompt_token_counter(tokenizer, with_completion: bool = False) -> Callable[[dict], int]:
    """Prompt length with the chat template and generation prompt applied (what the engine feeds); with
    `with_completion`, the whole SFT sequence (prompt + `completion` messages), which `max_length` bounds."""
    def count(row: dict) -> int:
        messages = list(row["prompt"]) + (list(row.get("completion") or []) if with_completion else [])
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=not with_completion, tokenize=True,
                                            return_dict=False)  # transformers 5 returns a dict otherwise (P4)
        return len(ids)
    return count


def recorded_prompt_tokens(row: dict) -> int:
    """Length recorded by the data synthesizer (`extra_info.prompt_tokens`, its own tokenizer)."""
    n = (row.get("extra_info") or {}).get("prompt_tokens")
    if n is None:
        raise ValueError(f"row {row.get('extra_info', {}).get('id')} has no extra_info.prompt_tokens; "
                         "pass a tokenizer to count prompt lengths")
    return int(n)


def length_filter(rows: list[dict], count: Callable[[dict], int], min_tokens: int = 0,
                  max_tokens: int | None = None) -> tuple[list[dict], dict]:
    """Keep rows with min_tokens < length <= max_tokens; counts of dropped rows by reason and source."""
    kept, dropped = [], defaultdict(Counter)
    for row in rows:
        n = count(row)
        if max_tokens is not None and n > max_tokens:
            dropped["over_max_prompt_tokens"][source_of(row)] += 1
        elif n <= min_tokens:
            dropped["under_min_prompt_tokens"][source_of(row)] += 1
        else:
            kept.append(row)
    return kept, {"kept": len(kept), "min_prompt_tokens": min_tokens, "max_prompt_tokens": max_tokens,
                  "dropped": {k: dict(v) for k, v in dropped.items()}}


def build_mixture(mixture: DataMixture, seed: int, count: Callable[[dict], int] | None,
                  max_prompt_tokens: int | None) -> tuple[list[dict], dict]:
    """The rows of a mixture: parts subset/repeated, length-filtered, shuffled with `seed`."""
    rng = random.Random(seed)
    rows, parts = [], []
    for comp in mixture.components:
        part = read_stage_rows(comp.path)
        if comp.max_items is not None and comp.max_items < len(part):
            part = rng.sample(part, comp.max_items)
        rows += part * comp.repeat
        parts.append({"path": comp.path, "sha256": file_sha256(comp.path), "taken": len(part),
                      "repeat": comp.repeat})
    limit = mixture.max_prompt_tokens if mixture.max_prompt_tokens is not None else max_prompt_tokens
    if count is not None:
        rows, filt = length_filter(rows, count, mixture.min_prompt_tokens, limit)
    else:
        filt = {"kept": len(rows), "skipped": "no tokenizer to count with"}
    rng.shuffle(rows)
    return rows, {"components": parts, "length_filter": filt, "rows": len(rows)}


def hard_mine(rows: list[dict], item_stats: list[dict], solved_threshold: float = 1.0) -> tuple[list[dict], dict]:
    """LoongRL hard mining: drop items whose mean accuracy over K samples is >= `solved_threshold`.

    `item_stats[i]` (from `sample.score_items`) describes `rows[i]`.
    """
    if len(rows) != len(item_stats):
        raise ValueError(f"{len(rows)} rows but {len(item_stats)} item statistics")
    kept, per_source = [], defaultdict(Counter)
    for row, st in zip(rows, item_stats):
        if st["mean_acc"] >= solved_threshold:
            per_source[source_of(row)]["dropped_solved"] += 1
        else:
            per_source[source_of(row)]["kept_unsolved" if st["mean_acc"] == 0 else "kept_partial"] += 1
            kept.append(row)
    return kept, {"input": len(rows), "kept": len(kept), "dropped_solved": len(rows) - len(kept),
                  "solved_threshold": solved_threshold, "by_source": {k: dict(v) for k, v in per_source.items()}}


def retrospective_sample(prev_rows: list[dict], item_stats: list[dict], new_rows: list[dict],
                         hard_threshold: float, carry_share: float, seed: int) -> tuple[list[dict], dict]:
    """QwenLong-L1 retrospective sampling: carry hard items of the previous phase into the new pool.

    Hard = mean reward <= `hard_threshold`; difficulty = 1 - mean reward (clamped to >= 1e-3 so every
    hard item can be drawn). Hard items are drawn without replacement with probability proportional to
    difficulty (Efraimidis-Spirakis keys) until they are `carry_share` of the returned pool, or until
    they run out. Returns the shuffled new pool and counts.
    """
    if len(prev_rows) != len(item_stats):
        raise ValueError(f"{len(prev_rows)} rows but {len(item_stats)} item statistics")
    rng = random.Random(seed)
    hard = [(r, st) for r, st in zip(prev_rows, item_stats) if st["mean_reward"] <= hard_threshold]
    want = math.ceil(carry_share / (1 - carry_share) * len(new_rows)) if carry_share > 0 else 0
    keyed = sorted(hard, key=lambda rs: rng.random() ** (1.0 / max(1e-3, 1.0 - rs[1]["mean_reward"])),
                   reverse=True)
    carried = [r for r, _ in keyed[:want]]
    pool = new_rows + carried
    rng.shuffle(pool)
    by_source = defaultdict(Counter)
    for r, _ in hard:
        by_source[source_of(r)]["hard"] += 1
    for r in carried:
        by_source[source_of(r)]["carried"] += 1
    for r in new_rows:
        by_source[source_of(r)]["new"] += 1
    return pool, {"previous": len(prev_rows), "hard": len(hard), "not_hard": len(prev_rows) - len(hard),
                  "wanted": want, "carried": len(carried), "hard_not_carried": len(hard) - len(carried),
                  "new": len(new_rows), "pool": len(pool),
                  "carried_share": round(len(carried) / max(1, len(pool)), 4),
                  "hard_threshold": hard_threshold, "carry_share": carry_share,
                  "by_source": {k: dict(v) for k, v in by_source.items()}}
