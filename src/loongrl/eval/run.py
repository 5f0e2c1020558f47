"""The evaluation loop shared by LongBench, RULER, NIAH and the project's own rows: sample and score
(``loongrl.generation.sample``), append, resume.

Every finished item is appended to ``samples.jsonl`` as one JSON line (its responses, extracted
answers and scores) right after its chunk is scored. A rerun with the same output folder reads
that file first and never requests completed items again; the file records a fingerprint of the
run settings, and a rerun with different settings stops with an error instead of mixing runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from loongrl.data.io import write_text_atomic
from loongrl.generation.backends import SamplingConfig
from loongrl.generation.sample import sample_and_score


@dataclass
class EvalItem:
    """One evaluation prompt with its gold answers. ``meta`` is reported as is (length, depth...)."""

    id: str
    task: str
    messages: list[dict]
    golds: list[str]
    question: str = ""
    meta: dict = field(default_factory=dict)


Scorer = Callable[[Sequence[EvalItem], list[list[str]]], list[list[dict]]]
"""(items, responses per item) -> per item, per sample: a dict with at least "pred" and "score"."""


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ResumeError(ValueError):
    pass


def read_done(path: str, run_id: str) -> dict[str, dict]:
    """Completed records by id. A torn last line (a killed run) is dropped with a warning and the
    file rewritten without it; a bad line elsewhere or another run's record is an error."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    done: dict[str, dict] = {}
    good: list[str] = []
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            record["id"], record["run"]  # noqa: B018 - both keys must be there
        except (ValueError, KeyError, TypeError) as err:
            if n == len(lines):
                print(f"warning: {path}: line {n} is incomplete ({err}); that item will be redone", file=sys.stderr)
                break
            raise ResumeError(f"{path}: line {n}: not a sample record ({err})") from None
        if record["run"] != run_id:
            raise ResumeError(f"{path}: line {n}: written by a run with other settings (run {record['run']}, "
                              f"this run {run_id}); use a new output folder or delete the file")
        done[record["id"]] = record
        good.append(line)
    if len(good) != len(lines) or (text and not text.endswith("\n")):  # appends must start on a new line
        write_text_atomic(path, "".join(g + "\n" for g in good))
    return done


def run_eval(items: Sequence[EvalItem], backend, sampling: SamplingConfig, scorer: Scorer, out_path: str,
             settings: dict, chunk_size: int = 8, progress: bool = True, desc: str = "eval") -> list[dict]:
    """Generate and score every item not already in ``out_path``; all records in item order.

    ``settings`` (task, preset, lengths...) plus the backend name and sampling make the run
    fingerprint. Items are sent ``chunk_size`` at a time; each finished chunk is on disk before
    the next starts, so at most one chunk is lost when a run is killed.
    """
    from loongrl.progress import progress_bar

    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("evaluation items have duplicate ids")
    run_id = fingerprint({"settings": settings, "backend": getattr(backend, "name", type(backend).__name__),
                          "sampling": asdict(sampling)})
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    done = read_done(out_path, run_id)
    pending = [it for it in items if it.id not in done]
    check = getattr(backend, "check_turns", None)  # a memory agent checks every item's turns before the first chunk
    if check is not None:
        check([it.messages for it in pending], [f"item {it.id}" for it in pending])
    with progress_bar(total=len(items), initial=len(items) - len(pending), unit="item", desc=desc,
                      disable=not progress) as bar, \
            open(out_path, "a", encoding="utf-8") as out:
        for start in range(0, len(pending), chunk_size):
            chunk = pending[start:start + chunk_size]
            scored = sample_and_score(chunk, backend, sampling, scorer, lambda it: it.messages, desc=None)
            for item, samples in zip(chunk, scored):
                record = {"id": item.id, "run": run_id, "task": item.task, "question": item.question,
                          "golds": item.golds, "meta": item.meta, "samples": samples,
                          "score": sum(s["score"] for s in samples) / len(samples)}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                done[item.id] = record
            out.flush()
            bar.update(len(chunk))
    return [done[i] for i in ids]
