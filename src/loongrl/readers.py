"""Reading JSON input files row by row, with errors that name the file, the row and the field.

The bottom floor: data sources, task generators (``loongrl.tasks``) and evaluation sets all read their
JSON and JSON Lines files (optionally gzipped) through ``iter_json_rows``.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import Any, Iterator


class InputError(ValueError):
    """A row of an input file is unusable; the message names file, row and field."""

    def __init__(self, path: str, row: int, field_name: str, problem: str, reason: str):
        super().__init__(f"{path}: row {row}: field '{field_name}': {problem}")
        self.reason = reason


def open_text(path: str) -> io.TextIOBase:
    """A UTF-8 text file, gunzipped on the fly when its name ends in .gz."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_json_rows(path: str) -> Iterator[tuple[int, Any]]:
    """Rows of a JSON list (row = list index) or of JSON Lines (row = 1-based line number).

    A bad JSON list raises ``InputError``; a bad line of JSON Lines is yielded as an ``InputError`` in place
    of its row, so the caller decides whether to stop or to count it and go on.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "rows.jsonl")
        >>> _ = open(path, "w").write('{"q": "Who?"}\\n\\nnot json\\n')
        >>> [(n, r if isinstance(r, dict) else str(r)) for n, r in iter_json_rows(path)]
        [(1, {'q': 'Who?'}), (3, "...rows.jsonl: row 3: field '<line>': invalid JSON (Expecting value)")]
    """
    with open_text(path) as f:
        first, blank = f.readline(), 0
        while first and not first.strip():
            first, blank = f.readline(), blank + 1
        if first.lstrip().startswith("["):
            try:
                rows = json.loads(first + f.read())
            except json.JSONDecodeError as e:
                raise InputError(path, 0, "<file>", f"invalid JSON list ({e.msg} at line {e.lineno + blank})",
                                 "invalid_json") from None
            yield from enumerate(rows)
            return
        f.seek(0)
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                yield n, InputError(path, n, "<line>", f"invalid JSON ({e.msg})", "invalid_json")
