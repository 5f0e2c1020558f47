"""The project's own rows as an evaluation: held-out KeyChain, plain long-context QA, Book RULER, or
any .parquet/.jsonl file in the canonical schema (``loongrl.data.io``).

Each row's ``prompt`` is sent as is and every sample is scored by the shared scorer
(``loongrl.rewards.router.row_scorer``: the reward training and mining use, routed by
``data_source``), plus what a reader of the results needs next to it:

- ``acc`` (hybrid score >= 1), ``score``, ``exact`` (extracted answer equals a gold after
  normalisation), ``f1`` (LongBench token F1 of the extracted answer; 0 without one);
- format: ``answered`` (an answer was extracted), ``boxed`` (the response has ``\\boxed{``), ``think``
  (it has ``</think>``);
- breakdowns by data source, prompt length (``extra_info.prompt_tokens`` in power-of-two buckets)
  and gold depth (mean of ``extra_info.gold_passage_depths``, in fifths of the context; ``n/a``
  for rows without one, e.g. Book RULER).

Item values are means over its samples (average pass@1 when n > 1); tables show 100 x the mean over items.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from loongrl.data.io import iter_rows
from loongrl.data.sources import InputError
from loongrl.eval.run import EvalItem
from loongrl.generation.sample import grouped
from loongrl.rewards import scorers

METRICS = ("acc", "f1", "exact", "score", "answered", "boxed", "think")
LENGTH_EDGES = (1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
BREAKDOWNS = {"source": "data source", "length": "prompt tokens", "depth": "gold depth"}
ROLES = ("system", "user", "assistant")


def length_bucket(tokens: int | None) -> str:
    """Power-of-two buckets: "<=1K", "1-2K", ..., "64-128K", ">128K"; "n/a" without a count."""
    if not tokens:
        return "n/a"
    low = 0
    for edge in LENGTH_EDGES:
        if tokens <= edge:
            return f"<={edge // 1024}K" if low == 0 else f"{low // 1024}-{edge // 1024}K"
        low = edge
    return f">{LENGTH_EDGES[-1] // 1024}K"


def depth_bucket(depth: float | None) -> str:
    """Fifths of the context: "0-20%" ... "80-100%"; "n/a" without a depth."""
    if depth is None:
        return "n/a"
    fifth = min(4, int(depth * 5))
    return f"{fifth * 20}-{fifth * 20 + 20}%"


def _check(path: str, n: int, row) -> None:
    if not isinstance(row, dict):
        raise InputError(path, n, "<row>", "not an object", "not_an_object")
    if not isinstance(row.get("data_source"), str) or not row["data_source"]:
        raise InputError(path, n, "data_source", "missing or not a string", "bad_field")
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt):
        raise InputError(path, n, "prompt", "must be a non-empty list of {role, content} messages", "bad_field")
    roles = [m["role"] for m in prompt if m["role"] not in ROLES]
    if roles:
        raise InputError(path, n, "prompt", f"role {roles[0]!r} is not one of {', '.join(ROLES)}", "bad_field")
    info = row.get("extra_info") or {}
    if not isinstance(info, dict):
        raise InputError(path, n, "extra_info", "not an object", "bad_field")
    tokens = info.get("prompt_tokens")
    if tokens is not None and (not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0):
        raise InputError(path, n, "extra_info.prompt_tokens", f"must be a token count, got {tokens!r}", "bad_field")
    depths = info.get("gold_passage_depths")
    if depths is not None and (not isinstance(depths, list) or not all(
            isinstance(d, (int, float)) and not isinstance(d, bool) and 0 <= d <= 1 for d in depths)):
        raise InputError(path, n, "extra_info.gold_passage_depths", f"must be a list of fractions in [0, 1], "
                         f"got {depths!r}", "bad_field")
    gold = (row.get("reward_model") or {}).get("ground_truth")
    if gold is None or (not isinstance(gold, str) and not scorers.as_gold_list(gold)):
        raise InputError(path, n, "reward_model.ground_truth", "missing or empty", "bad_field")


def load_items(path: str, limit: int | None = None) -> tuple[list[EvalItem], dict[str, dict]]:
    """Items of one row file (the first ``limit`` rows) and the rows by item id, for the scorer."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"row file not found: {path}")
    stem = os.path.splitext(os.path.basename(path))[0]
    items, rows = [], {}
    for n, row in enumerate(iter_rows(path)):
        if limit is not None and n >= limit:
            break
        _check(path, n, row)
        info = row.get("extra_info") or {}
        depths = list(info.get("gold_passage_depths") or [])
        depth = sum(depths) / len(depths) if depths else None
        tokens = info.get("prompt_tokens") or None
        meta = {"file": stem, "row": n, "row_id": info.get("id"), "source": row["data_source"], "prompt_tokens": tokens,
                "gold_depth": depth, "length": length_bucket(tokens), "depth": depth_bucket(depth)}
        item = EvalItem(f"{stem}/{n}", row["data_source"], [dict(m) for m in row["prompt"]],
                        scorers.as_gold_list(row["reward_model"]["ground_truth"]), info.get("question") or "", meta)
        items.append(item)
        rows[item.id] = row
    if not items:
        raise InputError(path, 0, "<file>", "no rows", "empty_file")
    return items, rows


def make_scorer(rows_by_id: dict[str, dict], reward_kwargs: dict | None = None, judge: bool = True):
    """The shared row scorer, plus F1 and format flags per sample."""
    from loongrl.rewards.router import row_scorer

    score = grouped(row_scorer(reward_kwargs, judge=judge))

    def run(items: Sequence[EvalItem], responses: list[list[str]]) -> list[list[dict]]:
        results = score([rows_by_id[it.id] for it in items], responses)
        for item, texts, samples in zip(items, responses, results):
            for text, s in zip(texts, samples):
                s.update(f1=scorers.token_f1(s["pred"] or None, item.golds), answered=float(bool(s["pred"])),
                         boxed=float("\\boxed{" in text), think=float("</think>" in text))
        return results

    return run


def load_files(paths: Sequence[str], limit: int | None = None) -> list[tuple[str, str, list[EvalItem], dict]]:
    """(path, name, items, rows by item id) of every file (the first ``limit`` rows each); names must differ
    (their samples files are ``samples_<name>.jsonl``)."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if len(set(stems)) != len(stems):
        raise ValueError(f"row files need distinct names (their samples files are samples_<name>.jsonl): {stems}")
    return [(path, stem, *load_items(path, limit)) for path, stem in zip(paths, stems)]


def evaluate(paths: Sequence[str], backend, sampling, out_dir: str, reward: dict | None = None,
             limit: int | None = None, chunk_size: int = 8, progress: bool = True,
             loaded: list | None = None, settings: dict | None = None) -> list[dict]:
    """Every row of every file through ``backend`` and the shared scorer; records in file order.

    Samples go to ``out_dir/samples_<file name>.jsonl`` (a rerun resumes; a changed file or setting is
    refused). ``reward``: the scorer's ``reward_kwargs`` (``require_think``, ``word_boundary``, ``judge_config``).
    ``loaded``: ``load_files(paths, limit)`` when the caller has read them already (the CLI measures the prompts
    against the window first); ``settings``: more run settings (window, rope scaling) for the fingerprint.
    """
    from loongrl.data.io import file_sha256
    from loongrl.eval.run import run_eval

    reward = dict(reward or {})
    judge = (reward.get("judge_config") or {}).get("model")
    records = []
    for path, stem, items, by_id in loaded or load_files(paths, limit):
        run_settings = {"bench": "rows", "file": os.path.abspath(path), "sha256": file_sha256(path), "limit": limit,
                        "reward": {k: v for k, v in reward.items() if k != "judge_config"}, "judge": judge,
                        **(settings or {})}
        records += run_eval(items, backend, sampling, make_scorer(by_id, reward),
                            os.path.join(out_dir, f"samples_{stem}.jsonl"), run_settings, chunk_size=chunk_size,
                            progress=progress, desc=stem)
    return records


def _item_means(record: dict) -> dict[str, float]:
    samples = record["samples"]
    return {m: sum(float(s[m]) for s in samples) / len(samples) for m in METRICS}


def summarize(records: Sequence[dict]) -> tuple[dict, list[list]]:
    """Overall and per-group metrics (100 x mean over items) and the Markdown table's rows."""
    from loongrl.eval.report import mean100

    per_item = [(r, _item_means(r)) for r in records]

    def block(members) -> dict:
        return {"items": len(members), **{m: mean100([v[m] for _, v in members]) for m in METRICS}}

    summary = {"overall": block(per_item), "breakdowns": {}}
    rows = [["all", *summary["overall"].values()]]
    for key, label in BREAKDOWNS.items():
        groups: dict[str, list] = {}
        for record, values in per_item:
            groups.setdefault(record["meta"][key], []).append((record, values))
        order = _order(key, groups)
        summary["breakdowns"][key] = {g: block(groups[g]) for g in order}
        rows += [[f"{label}: {g}", *summary["breakdowns"][key][g].values()] for g in order]
    return summary, rows


def _order(key: str, groups) -> list[str]:
    """Sources alphabetically; length and depth buckets in numeric order; "n/a" last."""
    if key == "source":
        return sorted(groups)
    labels = ([length_bucket(e) for e in LENGTH_EDGES] + [length_bucket(LENGTH_EDGES[-1] + 1)] if key == "length"
              else [depth_bucket(i / 5) for i in range(5)])
    return [g for g in labels + ["n/a"] if g in groups]
