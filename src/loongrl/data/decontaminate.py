"""Flag training items whose question also occurs in an evaluation set (hold-out contamination).

LongBench v1 built its hotpotqa/2wikimqa/musique test sets from the dev splits of those datasets, so
training rows drawn from the same dev splits must be left out before reporting LongBench scores.
Questions are compared after ``clean()`` and LongBench/SQuAD ``normalize_answer`` (lowercase, no
punctuation, no articles, single spaces), so formatting differences do not hide a match.

The flagged list (one item id and one cleaned question per line) is what the data commands'
``--exclude FILE`` reads.

Training files among themselves: ``question_keys`` gives the ids and questions of a row file (or of an
exclude list) in the form synthesis leaves out (``SynthConfig.exclude``), and ``overlap`` names the files that
share questions, so sets of several lengths or stages can be made disjoint and checked (docs/data.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from loongrl.data.sources import clean, load_source, question_key, read_id_list
from loongrl.readers import InputError, iter_json_rows
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


def _id_of(row: dict) -> str | None:
    info = row.get("extra_info")
    if isinstance(info, dict) and info.get("id"):
        return str(info["id"])
    for key in ID_FIELDS:
        if row.get(key) is not None:
            return str(row[key])
    return None


def _parquet_rows(path: str) -> Iterator[tuple[int, dict]]:
    import pyarrow as pa

    from loongrl.data.io import RowFileError, iter_rows

    try:
        yield from enumerate(iter_rows(path))
    except RowFileError as e:  # not parquet, a folder
        raise InputError(path, 0, "<file>", e.reason, "unreadable") from None
    except (pa.ArrowException, OSError) as e:  # truncated, unreadable
        raise InputError(path, 0, "<file>", f"not a readable parquet file ({e})", "unreadable") from None


def _iter_rows_with_ids(path: str) -> Iterator[tuple[int, str | None, str]]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"file not found: {path}")
    rows: Iterable = _parquet_rows(path) if path.endswith(".parquet") else iter_json_rows(path)
    for n, row in rows:
        if isinstance(row, InputError):
            raise row
        if not isinstance(row, dict):
            raise InputError(path, n, "<row>", "not a JSON object", "not_an_object")
        question = _question_of(row)
        if question is None:
            raise InputError(path, n, "question", "no question field (extra_info.question, question or input)",
                             "no_question")
        yield n, _id_of(row), question


def iter_questions(path: str) -> Iterator[tuple[str, str]]:
    """(id, question) of each row of a .json/.jsonl(.gz) file or a .parquet row file (id `row{n}` if it has none)."""
    for n, rid, question in _iter_rows_with_ids(path):
        yield rid or f"row{n}", question


ROW_FILE_ENDINGS = (".parquet", ".jsonl", ".json", ".jsonl.gz", ".json.gz")


def question_keys(path: str) -> frozenset[str]:
    """The item ids and questions (as ``question_key``: whitespace collapsed, lower case) of a file, the form
    ``SynthConfig.exclude`` takes: a row file (.parquet, .jsonl, .json, optionally .gz; ``extra_info.id`` and
    ``extra_info.question``, or ``_id``/``id`` and ``question``/``input``) or else an exclude list, one id or
    question per line (e.g. what ``data decontaminate`` writes).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "rows.jsonl")
        >>> _ = open(path, "w").write('{"extra_info": {"id": "a1", "question": "Who  wrote Emma?"}}\\n')
        >>> sorted(question_keys(path))
        ['a1', 'who wrote emma?']
    """
    if not path.endswith(ROW_FILE_ENDINGS):
        if not os.path.exists(path):
            raise FileNotFoundError(f"file not found: {path}")
        return read_id_list(path, fold=True)
    keys: set[str] = set()
    for _, rid, question in _iter_rows_with_ids(path):
        if rid:
            keys.add(rid)
        keys.add(question_key(question))
    return frozenset(keys)


@dataclass
class Overlap:
    """Questions a later file shares with an earlier one."""

    first: str  # the earlier file
    second: str  # the later file
    shared: int  # rows of `second` whose id or question is among `first`'s
    examples: list[str]  # up to 3 of those questions, as `second` writes them

    def line(self) -> str:
        shown = "; ".join(repr(q) for q in self.examples)
        return f"{self.second} shares {self.shared} question(s) with {self.first} (e.g. {shown})"


def overlap(paths: Sequence[str]) -> list[Overlap]:
    """Every pair of files (earlier, later, in the order given) that share a question, by item id or question;
    an empty list when the files are disjoint. Files are read as ``question_keys`` reads them.

    Example:
        >>> import tempfile, os
        >>> tmp = tempfile.mkdtemp()
        >>> def rows(name, *items):
        ...     path = os.path.join(tmp, name)
        ...     _ = open(path, "w").write("".join('{"_id": "%s", "question": "%s"}\\n' % i for i in items))
        ...     return path
        >>> a = rows("4k.jsonl", ("q1", "Who wrote Emma?"), ("q2", "Where is Ulm?"))
        >>> b = rows("8k.jsonl", ("q2", "Where is Ulm?"), ("q3", "When did Kant die?"))
        >>> c = rows("16k.jsonl", ("q4", "Who painted Guernica?"))
        >>> [o.line().replace(tmp + os.sep, "") for o in overlap([a, b, c])]
        ["8k.jsonl shares 1 question(s) with 4k.jsonl (e.g. 'Where is Ulm?')"]
    """
    keys = [question_keys(p) for p in paths]
    found = []
    for j, later in enumerate(paths):
        if not later.endswith(ROW_FILE_ENDINGS):  # an exclude list has lines, not rows: only compared as `first`
            rows = [(line, line) for line in sorted(read_id_list(later))]
        else:
            rows = [(rid, q) for _, rid, q in _iter_rows_with_ids(later)]
        for i in range(j):
            hits = [q for rid, q in rows if (rid and rid in keys[i]) or question_key(q) in keys[i]]
            if hits:
                found.append(Overlap(paths[i], later, len(hits), hits[:3]))
    return found


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
