"""Row files: verl's RL parquet schema (and JSONL), written atomically, read in batches."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

_STR_LIST = pa.list_(pa.string())
_F64_LIST = pa.list_(pa.float64())

# extra_info has the same keys in every row (empty values where a field does not apply), so that
# parts can be concatenated and verl/TRL see one struct type.
EXTRA_INFO = pa.struct([
    ("split", pa.string()), ("index", pa.int64()), ("id", pa.string()), ("source", pa.string()),
    ("kind", pa.string()), ("question", pa.string()), ("answers", _STR_LIST),
    ("prompt_tokens", pa.int64()), ("max_prompt_tokens", pa.int64()), ("tokenizer", pa.string()),
    ("tokenizer_fingerprint", pa.string()), ("seed", pa.int64()), ("num_passages", pa.int64()),
    ("num_fillers", pa.int64()), ("placement", pa.string()), ("gold_passage_depths", _F64_LIST),
    ("chain_head", pa.string()), ("chain", _STR_LIST), ("real_link_depths", _F64_LIST),
    ("num_chains", pa.int64()), ("hops", pa.int64()), ("key_format", pa.string()),
])

SCHEMA = pa.schema([
    ("data_source", pa.string()),
    ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", _STR_LIST)])),
    ("extra_info", EXTRA_INFO),
])
SFT_SCHEMA = SCHEMA.append(pa.field("completion", SCHEMA.field("prompt").type))
"""SFT rows: the RL schema plus a `completion` chat column (the gold assistant turn)."""


# Defaults for the extra_info fields a part does not use.
_EMPTY = {pa.string(): "", pa.int64(): 0, _STR_LIST: [], _F64_LIST: []}
EXTRA_DEFAULTS = {f.name: _EMPTY[f.type] for f in EXTRA_INFO}


def make_row(data_source: str, ability: str, messages: list[dict], answers: list[str], **extra) -> dict:
    """A row in the canonical schema; `extra` fills extra_info fields, the rest get empty defaults."""
    unknown = set(extra) - set(EXTRA_DEFAULTS)
    if unknown:
        raise KeyError(f"unknown extra_info fields: {sorted(unknown)}")
    return {
        "data_source": data_source,
        "prompt": messages,
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": list(answers)},
        "extra_info": {**EXTRA_DEFAULTS, "index": -1, "answers": list(answers), **extra},
    }


class RowWriter:
    """Streams rows to `path` (.parquet or .jsonl) through a temporary file renamed on close.

    A run that dies leaves only `path + '.tmp'`, never a truncated file under the final name.
    """

    def __init__(self, path: str, batch_rows: int = 64):
        if not (path.endswith(".parquet") or path.endswith(".jsonl")):
            raise ValueError(f"output must end in .parquet or .jsonl: {path}")
        self.path = path
        self.tmp = path + ".tmp"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.batch_rows = batch_rows
        self._buf: list[dict] = []
        self.count = 0
        if path.endswith(".parquet"):
            self._pq = pq.ParquetWriter(self.tmp, SCHEMA, compression="zstd")
            self._fh = None
        else:
            self._pq = None
            self._fh = open(self.tmp, "w", encoding="utf-8")

    def write(self, row: dict) -> None:
        row["extra_info"]["index"] = self.count
        self.count += 1
        if self._fh is not None:
            self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        self._buf.append(row)
        if len(self._buf) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._pq.write_table(pa.Table.from_pylist(self._buf, schema=SCHEMA))
            self._buf = []

    def close(self) -> None:
        if self._pq is not None:
            self._flush()
            self._pq.close()
        else:
            self._fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            if self._pq is not None:
                self._pq.close()
            else:
                self._fh.close()
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)


class RowFileError(ValueError):
    """A row file that cannot be read as one; the message names the path, `reason` is the rest."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def iter_rows(path: str, batch_rows: int = 64) -> Iterator[dict]:
    """Rows of a .parquet or .jsonl row file, one at a time, without loading the whole file. A folder, a JSONL
    line that is not JSON or a file that is not parquet is a RowFileError naming the path (pyarrow's and json's
    own messages do not)."""
    if os.path.isdir(path):
        raise RowFileError(path, "is a folder, not a row file (.parquet or .jsonl)")
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.rstrip())
                except json.JSONDecodeError as e:  # a line number: unambiguous whatever a caller counts as a row
                    raise RowFileError(path, f"line {n}: invalid JSON ({e.msg}: column {e.pos + 1})") from None
                yield row
        return
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            yield from batch.to_pylist()
    except pa.ArrowInvalid as e:  # e.g. "Parquet magic bytes not found in footer..."
        raise RowFileError(path, f"not a readable parquet file ({e})") from None


def file_sha256(path: str) -> str | None:
    """sha256 of a file (streamed), None when `path` is not a file (e.g. an `hf:` input)."""
    if not os.path.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str, write: Callable[[str], None]) -> str:
    """`write(tmp)` then rename to `path`: a crash never leaves a partial file under the final name.
    The temporary name keeps the extension (matplotlib picks the image format from it)."""
    tmp = f"{path}.tmp{os.path.splitext(path)[1]}"
    write(tmp)
    os.replace(tmp, path)
    return path


def write_text_atomic(path: str, text: str) -> str:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, write)


def write_json_atomic(path: str, obj) -> str:
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_rows(path: str, rows: list[dict]) -> str:
    """Write rows atomically (tmp + rename), renumbering `extra_info.index` 0..n-1 so that verl's
    sample index and our per-item statistics agree. Rows with a `completion` column get the SFT schema."""
    schema = SFT_SCHEMA if rows and "completion" in rows[0] else SCHEMA
    out = [dict(r, extra_info=dict(r["extra_info"], index=i)) for i, r in enumerate(rows)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return atomic_write(path, lambda tmp: pq.write_table(pa.Table.from_pylist(out, schema=schema), tmp))
