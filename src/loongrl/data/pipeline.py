"""Run a synthesis: load a source, build rows in item order (optionally in worker processes), stream them out."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from loongrl.progress import progress_bar

from loongrl.data.io import RowWriter, file_sha256, write_json_atomic
from loongrl.data.sources import load_source, question_key
from loongrl.data.synth import RowBuilder, Skip, SynthConfig
from loongrl.data.tokens import get_counter


@dataclass
class Summary:
    read: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    pool_skipped: Counter = field(default_factory=Counter)  # extra-pool passages, not items: apart from `skipped`
    fit: Counter = field(default_factory=Counter)  # non-additive tokenizers: rows verified / trimmed / topped up
    setup_seconds: float = 0.0  # loading the source and the tokenizer
    rows_seconds: float = 0.0  # building and writing the rows

    def line(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        line = f"read {self.read} / written {self.written} / skipped {sum(self.skipped.values())}: {reasons}"
        if self.pool_skipped:
            line += f"; extra pool: {', '.join(f'{k}={v}' for k, v in sorted(self.pool_skipped.items()))}"
        if self.fit:
            line += (f"; {self.fit['verified']} prompts counted whole ({self.fit['trimmed']} trimmed, "
                     f"{self.fit['topped_up']} topped up)")
        return line


_BUILDER: RowBuilder | None = None  # set in the parent before workers fork, so they share it


def _build_one(i: int):
    rec = _BUILDER.data.records[i]
    try:
        return "row", (_BUILDER.build(rec), _BUILDER.last_fit)
    except Skip as s:
        return "skip", s.reason


def synthesize(config: SynthConfig, out: str, workers: int = 1, progress: bool = True) -> Summary:
    """Write rows for `config` to `out` (.parquet or .jsonl) and a summary to `out + '.summary.json'`.

    Output bytes depend only on the config, never on `workers`.
    """
    global _BUILDER
    t0 = time.perf_counter()
    data = load_source(config.source, config.input, strict=config.strict, extra_pool=config.extra_pool)
    summary = Summary(read=data.read, skipped=Counter(data.skipped), pool_skipped=Counter(data.pool_skipped))
    counter = get_counter(config.tokenizer)
    _BUILDER = RowBuilder(config, data, counter)
    items = []
    for i in range(config.start, len(data.records)):
        rec = data.records[i]
        if config.include is not None and rec.id not in config.include:
            summary.skipped["not_in_ids"] += 1
        elif rec.id in config.exclude or question_key(rec.question) in config.exclude:
            summary.skipped["excluded"] += 1
        else:
            items.append(i)
    if config.start > 0:
        summary.skipped["before_start"] += min(config.start, len(data.records))
    target = len(items) if config.num is None else config.num
    bar = progress_bar(total=target, unit="row", desc=f"{'keychain' if config.keychain else 'qa'} {config.source}",
                       disable=not progress)
    writer, pool = None, None
    t1 = time.perf_counter()
    try:
        # made inside the try: an interrupt right after it creates the .tmp file must still remove it
        writer = RowWriter(out)
        if workers > 1:
            pool = mp.get_context("fork").Pool(workers)
            results = pool.imap(_build_one, items, chunksize=4)
        else:
            results = map(_build_one, items)
        consumed = 0
        if target > 0:
            for status, value in results:
                consumed += 1
                if status == "row":
                    row, fit = value
                    writer.write(row)
                    summary.fit.update(fit)
                    bar.update(1)
                else:
                    summary.skipped[value] += 1
                if writer.count >= target:
                    break
        if len(items) - consumed:  # items left unused once --num rows were written
            summary.skipped["beyond_num"] += len(items) - consumed
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        elif os.path.exists(out + ".tmp"):  # interrupted inside RowWriter(): its file, not yet its handle
            os.remove(out + ".tmp")
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        _BUILDER = None
    summary.written = writer.count
    summary.setup_seconds, summary.rows_seconds = t1 - t0, time.perf_counter() - t1
    cfg = asdict(config)
    cfg["exclude"] = len(config.exclude)
    cfg["include"] = None if config.include is None else len(config.include)
    write_json_atomic(out + ".summary.json", {
        "read": summary.read, "written": summary.written, "skipped": dict(sorted(summary.skipped.items())),
        "extra_pool_skipped": dict(sorted(summary.pool_skipped.items())),
        "config": cfg, "input_sha256": file_sha256(config.input), "tokenizer_fingerprint": counter.fingerprint,
        "exact_fast_counting": counter.fast, "additive_counting": counter.additive,
        "tokenizer_engine": counter.engine, "fit": dict(sorted(summary.fit.items())),
        "setup_seconds": round(summary.setup_seconds, 3), "rows_seconds": round(summary.rows_seconds, 3),
    })
    return summary
