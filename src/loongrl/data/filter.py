"""Difficulty filtering (step 1 of KeyChain): keep questions a strong model answers sometimes, not always.

K samples per question from a filter model on the item's own short context, the reference's prompt,
"the answer is" extraction (first occurrence) and the one-way "prediction in gold" match. Items whose
correct count falls in the keep window (default 1..6 of 8) are kept; optionally the all-wrong items get a
second model and are rescued when its count falls in the rescue window (default 1..7 of 8). The output is
an id list (file order) for `loongrl data keychain|qa --ids`, plus statistics.

Every item's count is appended to a JSONL cache as soon as its batch is scored, keyed by model and
sampling settings, so an interrupted run resumes without paying for any item twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable

from loongrl.data.io import write_json_atomic, write_text_atomic
from loongrl.data.sources import Record, load_source
from loongrl.generation.backends import SamplingConfig
from loongrl.generation.sample import grouped, sample_and_score
from loongrl.rewards.extract import first_answer_is
from loongrl.rewards.scorers import prediction_in_gold

# Reference filter_infer.py default template; one user turn, the model's own chat template.
FILTER_PROMPT = (
    "The following are given passages.\n{context}\n\nAnswer the question based on the given passages. Please "
    "think step by step before answering. After thinking, output the final answer in the format of "
    "'The answer is <your answer here>'\n\nQuestion: {input}"
)


@dataclass
class FilterConfig:
    """Settings of one difficulty-filter run (defaults: the reference's first pass).

    Args:
        k: Samples per question (8).
        temperature: Sampling temperature (1.0 in the reference, both passes).
        top_p: Nucleus mass (1.0: not set in the reference).
        max_new_tokens: Cap per sample (2,048).
        keep_min, keep_max: First pass keeps items with keep_min <= correct <= keep_max (1..6: 7/8 is dropped
            too, as in the reference code; the paper says only 0 and 8 are dropped). keep_max defaults to
            min(6, k - 1) and rescue_max to min(7, k - 1), so a smaller k never keeps always-solved items.
        rescue_min, rescue_max: Rescue pass (all-wrong items, second model) keeps rescue_min..rescue_max (1..7).
        batch_size: Items per generation call; also how often the cache is written.
        seed: Sampling seed.
    """

    k: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 2048
    keep_min: int = 1
    keep_max: int | None = None  # min(6, k - 1)
    rescue_min: int = 1
    rescue_max: int | None = None  # min(7, k - 1)
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self):
        # counts out of k: 6 and 7 of 8 by default; with fewer samples they come down with k
        if self.keep_max is None:
            self.keep_max = min(6, self.k - 1)
        if self.rescue_max is None:
            self.rescue_max = min(7, self.k - 1)
        if not 0 <= self.keep_min <= self.keep_max < self.k:
            raise ValueError(f"filter: need 0 <= keep_min ({self.keep_min}) <= keep_max ({self.keep_max}) < k "
                             f"({self.k}): an item solved {self.k} of {self.k} times is never kept")
        if not 0 <= self.rescue_min <= self.rescue_max < self.k:
            raise ValueError(f"filter: need 0 <= rescue_min ({self.rescue_min}) <= rescue_max ({self.rescue_max}) "
                             f"< k ({self.k})")

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(n=self.k, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=self.seed)


def filter_messages(data, rec: Record) -> list[dict]:
    """The short-context prompt: the item's own passages as `title\\ntext`, joined by newlines."""
    pool = data.pool
    context = "\n".join(f"{pool.titles[p]}\n{pool.texts[p]}" if pool.titles[p] else pool.texts[p]
                        for p in rec.passage_ids)
    return [{"role": "user", "content": FILTER_PROMPT.format(context=context, input=rec.question)}]


class CountCache:
    """Append-only JSONL of per-item correct counts for one (model, sampling) setting."""

    def __init__(self, path: str, model: str, cfg: FilterConfig):
        self.path = path
        key = json.dumps({"model": model, "sampling": asdict(cfg.sampling())}, sort_keys=True)
        self.key = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.counts: dict[str, int] = {}
        self.ignored_lines = 0
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:  # a line cut short by a crash
                        self.ignored_lines += 1
                        continue
                    if entry.get("key") == self.key:
                        self.counts[entry["id"]] = entry["correct"]

    def add(self, entries: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for e in entries:
                f.write(json.dumps({"key": self.key, **e}, ensure_ascii=False) + "\n")
                self.counts[e["id"]] = e["correct"]
            f.flush()
            os.fsync(f.fileno())


def _score(records: list[Record], responses: list[str]) -> list[dict]:
    """The reference's filter metric: the first "the answer is" answer, correct if it is inside a gold."""
    preds = [first_answer_is(r) for r in responses]
    return [{"pred": p, "acc": prediction_in_gold(p, rec.answers)} for rec, p in zip(records, preds)]


def count_correct(backend, data, records: list[Record], cfg: FilterConfig, cache: CountCache,
                  progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Correct counts out of `cfg.k` for each record; only records missing from the cache are generated.

    Batches have fixed boundaries over `records`, so an uninterrupted and a resumed run send the same batches.
    """
    for start in range(0, len(records), cfg.batch_size):
        batch = [r for r in records[start:start + cfg.batch_size] if r.id not in cache.counts]
        if batch:
            sampling = cfg.sampling()
            sampling.seed = cfg.seed + start
            scored = sample_and_score(batch, backend, sampling, grouped(_score), lambda r: filter_messages(data, r),
                                      desc=None)
            cache.add([{"id": rec.id, "correct": int(sum(s["acc"] for s in samples)),
                        "predictions": [s["pred"] for s in samples]} for rec, samples in zip(batch, scored)])
        if progress:
            progress(min(cfg.batch_size, len(records) - start))
    return {r.id: cache.counts[r.id] for r in records}


def difficulty_filter(source: str, input_path: str, backend, cfg: FilterConfig, out_ids: str,
                      rescue_backend=None, progress: Callable[[int], None] | None = None) -> dict:
    """Run the filter over every item of a source file; write `out_ids` and `out_ids + '.stats.json'`.

    Caches live next to the output (`out_ids + '.cache.jsonl'`, `'.rescue.cache.jsonl'`).
    """
    data = load_source(source, input_path)
    model = getattr(backend, "name", type(backend).__name__)
    first = count_correct(backend, data, data.records, cfg, CountCache(out_ids + ".cache.jsonl", model, cfg),
                          progress)
    keep = {rid for rid, c in first.items() if cfg.keep_min <= c <= cfg.keep_max}
    rescued: set[str] = set()
    second: dict[str, int] = {}
    if rescue_backend is not None:
        zeros = [r for r in data.records if first[r.id] == 0]
        rescue_model = getattr(rescue_backend, "name", type(rescue_backend).__name__)
        second = count_correct(rescue_backend, data, zeros, cfg,
                               CountCache(out_ids + ".rescue.cache.jsonl", rescue_model, cfg), progress)
        rescued = {rid for rid, c in second.items() if cfg.rescue_min <= c <= cfg.rescue_max}
    final = [r.id for r in data.records if r.id in keep or r.id in rescued]  # file order, as the reference
    write_text_atomic(out_ids, "".join(rid + "\n" for rid in final))
    stats = {
        "source": source, "input": input_path, "model": model, "config": asdict(cfg),
        "read": data.read, "skipped_input_rows": dict(data.skipped), "items": len(data.records),
        "first_pass_correct_histogram": {str(c): n for c, n in sorted(Counter(first.values()).items())},
        "kept_first_pass": len(keep), "rescue_candidates": len(second), "rescued": len(rescued),
        "rescue_correct_histogram": {str(c): n for c, n in sorted(Counter(second.values()).items())},
        "kept": len(final), "dropped": len(data.records) - len(final),
    }
    write_json_atomic(out_ids + ".stats.json", stats)
    return stats
