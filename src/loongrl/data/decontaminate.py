"""Flag training items whose question also occurs in an evaluation set (hold-out contamination).

LongBench v1 built its hotpotqa/2wikimqa/musique test sets from the dev splits of those datasets, so
training rows drawn from the same dev splits must be left out before reporting LongBench scores.
Questions are compared after ``clean()`` and LongBench/SQuAD ``normalize_answer`` (lowercase, no
punctuation, no articles, single spaces), so formatting differences do not hide a match.

The flagged list (one item id and one cleaned question per line) is what the data commands'
``--exclude FILE`` reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from loongrl.data.sources import InputError, _iter_json_rows, clean, load_source
from loongrl.rewards.scorers import normalize_answer

QUESTION_FIELDS = ("question", "input")  # dev files / LongBench rows
ID_FIELDS = ("_id", "id")


def normalize_question(text: str) -> str:
    return normalize_answer(clean(text))


def _question_of(row: dict) -> str | None:
    info = row.get("extra_info")
    if isinstance(info, dict) and isinstance(info.get("question"), str):
        return info["question"]  # a synthesised training row (verl schema)
    for key in QUESTION_FIELDS:
        if isinstance(row.get(key), str):
            return row[key]
    return None


def _id_of(row: dict, n: int) -> str:
    info = row.get("extra_info")
    if isinstance(info, dict) and info.get("id"):
        return str(info["id"])
    for key in ID_FIELDS:
        if row.get(key) is not None:
            return str(row[key])
    return f"row{n}"


def iter_questions(path: str) -> Iterator[tuple[str, str]]:
    """(id, question) of each row of a .json/.jsonl(.gz) file or a .parquet row file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"file not found: {path}")
    if path.endswith(".parquet"):
        from loongrl.data.io import iter_rows

        rows: Iterable = enumerate(iter_rows(path))
    else:
        rows = _iter_json_rows(path)
    for n, row in rows:
        if isinstance(row, InputError):
            raise row
        if not isinstance(row, dict):
            raise InputError(path, n, "<row>", "not a JSON object", "not_an_object")
        question = _question_of(row)
        if question is None:
            raise InputError(path, n, "question", "no question field (extra_info.question, question or input)",
                             "no_question")
        yield _id_of(row, n), question


@dataclass
class Flagged:
    id: str
    question: str
    eval_file: str


@dataclass
class Report:
    checked: int = 0
    eval_questions: int = 0
    flagged: list[Flagged] = field(default_factory=list)

    def exclude_lines(self) -> list[str]:
        """For ``--exclude``: each flagged id and its cleaned question, in input order, no repeats."""
        return list(dict.fromkeys(x for f in self.flagged for x in (f.id, clean(f.question))))


def decontaminate(train: str, eval_files: list[str], source: str | None = None) -> Report:
    """Compare the questions of ``train`` (a training row file, or a source file with ``source``,
    e.g. "hotpotqa") with those of every evaluation file."""
    index: dict[str, str] = {}
    for path in eval_files:
        for _, question in iter_questions(path):
            index.setdefault(normalize_question(question), path)
    report = Report(eval_questions=len(index))
    if source:
        pairs: Iterable[tuple[str, str]] = ((r.id, r.question) for r in load_source(source, train, strict=True).records)
    else:
        pairs = iter_questions(train)
    for rid, question in pairs:
        report.checked += 1
        hit = index.get(normalize_question(question))
        if hit is not None:
            report.flagged.append(Flagged(rid, question, hit))
    return report
