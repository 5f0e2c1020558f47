"""Source loaders: HotpotQA, MuSiQue, 2WikiMultihopQA and a generic JSONL, in their published formats.

Every loader yields the same record type, and builds one de-duplicated passage pool per source.
Bad rows never vanish: each is reported with file, row and field, and counted by reason.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from loongrl.readers import InputError, iter_json_rows

SOURCES = ("hotpotqa", "musique", "2wikimqa", "jsonl")

# Hub datasets for users with network access: `--input hf:` picks the default below.
# Only HotpotQA has an official hub copy; pass `hf:OWNER/NAME` for the others.
HUB_DEFAULTS = {"hotpotqa": ("hotpotqa/hotpot_qa", "distractor")}


@dataclass
class Record:
    """One multi-hop QA item: its question, gold answers and its own passages (ids into the pool)."""

    id: str
    source: str
    question: str
    answers: list[str]
    passage_ids: list[int]  # the item's own passages: gold and the dataset's own distractors
    gold: list[bool]  # parallel to passage_ids: is this a supporting passage?


@dataclass
class PassagePool:
    """De-duplicated passages of one source. A passage is identified by its index here."""

    titles: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    _index: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, title: str, text: str) -> int:
        key = (title, text)
        idx = self._index.get(key)
        if idx is None:
            idx = len(self.texts)
            self._index[key] = idx
            self.titles.append(title)
            self.texts.append(text)
        return idx

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class LoadedSource:
    records: list[Record]
    pool: PassagePool
    read: int
    skipped: Counter
    pool_skipped: Counter = field(default_factory=Counter)  # extra-pool passages left out: not items, counted apart


def clean(text: str) -> str:
    """Collapse runs of whitespace and strip: passage and question text is one line of prose.
    (`str.split()` splits at exactly the characters `re`'s `\\s` matches, and is several times faster.)"""
    return " ".join(text.split())


def _iter_hub_rows(spec: str, source: str, split: str) -> Iterator[tuple[int, Any]]:
    """`hf:` or `hf:OWNER/NAME[:CONFIG]`: stream a hub dataset (needs network access)."""
    from datasets import load_dataset  # heavy import, only on this path

    name = spec[3:]
    if not name:
        if source not in HUB_DEFAULTS:
            raise ValueError(f"no default hub dataset for source '{source}': pass --input hf:OWNER/NAME")
        name, config = HUB_DEFAULTS[source]
    else:
        name, _, config = name.partition(":")
        config = config or None
    ds = load_dataset(name, config, split=split, streaming=True)
    yield from enumerate(ds)


def _require(row: Any, key: str, path: str, n: int, kind: type | tuple = str) -> Any:
    if not isinstance(row, dict):
        raise InputError(path, n, "<row>", "not a JSON object", "not_an_object")
    if key not in row or row[key] is None:
        raise InputError(path, n, key, "missing", f"missing_{key}")
    value = row[key]
    if not isinstance(value, kind):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise InputError(path, n, key, f"expected {expected}, got {type(value).__name__}", f"bad_{key}")
    return value


def _nonempty(value: str, key: str, path: str, n: int) -> str:
    value = clean(value)
    if not value:
        raise InputError(path, n, key, "empty", f"empty_{key}")
    return value


def _titled_sentences(context: Any, path: str, n: int, joiner: str) -> list[tuple[str, str]]:
    """HotpotQA / 2Wiki context: official `[[title, [sentences]]]` or HF `{title: [], sentences: [[]]}`."""
    if isinstance(context, dict) and "title" in context and "sentences" in context:
        context = list(zip(context["title"], context["sentences"]))
    if not isinstance(context, list) or not context:
        raise InputError(path, n, "context", "expected a non-empty list of [title, sentences]", "bad_context")
    out = []
    for item in context:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], list)):
            raise InputError(path, n, "context", "entry is not [title, [sentences]]", "bad_context")
        out.append((clean(str(item[0])), clean(joiner.join(str(s) for s in item[1]))))
    return out


def _supporting_titles(row: dict) -> set[str]:
    sf = row.get("supporting_facts") or []
    if isinstance(sf, dict):  # HF layout: {title: [...], sent_id: [...]}
        return {clean(t) for t in sf.get("title", [])}
    return {clean(str(f[0])) for f in sf if isinstance(f, (list, tuple)) and f}


def _parse_titled(row: Any, path: str, n: int, joiner: str) -> tuple[str, str, list[str], list[tuple[str, str, bool]]]:
    """HotpotQA and 2Wiki share a layout; HotpotQA sentences keep their leading spaces (join with ""),
    2Wiki sentences have none (join with " ")."""
    rid = str(_require(row, "_id" if isinstance(row, dict) and "_id" in row else "id", path, n, (str, int)))
    question = _nonempty(_require(row, "question", path, n), "question", path, n)
    answer = _nonempty(_require(row, "answer", path, n), "answer", path, n)
    passages = _titled_sentences(_require(row, "context", path, n, (list, dict)), path, n, joiner)
    gold = _supporting_titles(row)
    return rid, question, [answer], [(t, x, t in gold) for t, x in passages]


def parse_hotpotqa(row: Any, path: str, n: int) -> tuple[str, str, list[str], list[tuple[str, str, bool]]]:
    return _parse_titled(row, path, n, "")


def parse_2wikimqa(row: Any, path: str, n: int) -> tuple[str, str, list[str], list[tuple[str, str, bool]]]:
    return _parse_titled(row, path, n, " ")


def parse_musique(row: Any, path: str, n: int) -> tuple[str, str, list[str], list[tuple[str, str, bool]]]:
    rid = str(_require(row, "id", path, n, (str, int)))
    if isinstance(row, dict) and row.get("answerable") is False:
        raise InputError(path, n, "answerable", "false (MuSiQue keeps answerable rows only)", "unanswerable")
    question = _nonempty(_require(row, "question", path, n), "question", path, n)
    answer = _nonempty(_require(row, "answer", path, n), "answer", path, n)
    aliases = row.get("answer_aliases") or []
    if not isinstance(aliases, list):
        raise InputError(path, n, "answer_aliases", "expected a list", "bad_answer_aliases")
    answers = [answer] + [clean(str(a)) for a in aliases if clean(str(a)) and clean(str(a)) != answer]
    paragraphs = _require(row, "paragraphs", path, n, list)
    passages = []
    for p in paragraphs:
        if not isinstance(p, dict) or "paragraph_text" not in p:
            raise InputError(path, n, "paragraphs", "entry lacks paragraph_text", "bad_paragraphs")
        passages.append((clean(str(p.get("title", ""))), clean(str(p["paragraph_text"])), bool(p.get("is_supporting"))))
    return rid, question, answers, passages


def parse_jsonl(row: Any, path: str, n: int) -> tuple[str, str, list[str], list[tuple[str, str, bool]]]:
    """Generic format: {id, question, answers: [str], passages: [{title, text, supporting?}]}."""
    rid = str(_require(row, "id", path, n, (str, int)))
    question = _nonempty(_require(row, "question", path, n), "question", path, n)
    answers = _require(row, "answers", path, n, (list, str))
    answers = [answers] if isinstance(answers, str) else answers
    answers = [clean(str(a)) for a in answers if clean(str(a))]
    if not answers:
        raise InputError(path, n, "answers", "no non-empty answer", "empty_answers")
    passages = []
    for p in _require(row, "passages", path, n, list):
        if not isinstance(p, dict) or "text" not in p:
            raise InputError(path, n, "passages", "entry lacks text", "bad_passages")
        passages.append((clean(str(p.get("title", ""))), clean(str(p["text"])), bool(p.get("supporting", True))))
    return rid, question, answers, passages


def parse_rows(rows: Iterator[tuple[int, Any]], parse: Callable, path: str, strict: bool,
               skipped: Counter) -> Iterator[tuple[int, Any]]:
    """(row number, parse(row, path, n)) for each usable row. An unusable row raises with `strict`,
    else it is counted in `skipped` under its reason."""
    for n, row in rows:
        try:
            if isinstance(row, InputError):
                raise row
            yield n, parse(row, path, n)
        except InputError as e:
            if strict:
                raise
            skipped[e.reason] += 1


PARSERS: dict[str, Callable] = {
    "hotpotqa": parse_hotpotqa,
    "musique": parse_musique,
    "2wikimqa": parse_2wikimqa,
    "jsonl": parse_jsonl,
}


def load_source(source: str, path: str, *, strict: bool = False, hub_split: str = "train",
                extra_pool: str | None = None) -> LoadedSource:
    """Load every record of `path` (local file, `.gz` or plain, or `hf:` hub spec) and its passage pool.

    Rows that cannot be used are skipped and counted by reason, or raise with `strict=True`.
    `extra_pool` adds passages (JSON list of {title, text}, e.g. the 2Wiki HippoRAG corpus) to the
    filler pool only.
    """
    if source not in PARSERS:
        raise ValueError(f"unknown source '{source}' (choose from {', '.join(SOURCES)})")
    parse = PARSERS[source]
    if path.startswith("hf:"):
        rows = _iter_hub_rows(path, source, hub_split)
    else:
        if not os.path.exists(path):
            raise FileNotFoundError(f"input file not found: {path}")
        rows = iter_json_rows(path)
    pool = PassagePool()
    records: list[Record] = []
    seen: set[str] = set()
    skipped: Counter = Counter()
    read = 0

    def counted(rows):
        nonlocal read
        for item in rows:
            read += 1
            yield item

    def parse_unique(row: Any, path: str, n: int):
        rid, question, answers, passages = parse(row, path, n)
        if rid in seen:
            raise InputError(path, n, "id", f"duplicate id {rid!r}", "duplicate_id")
        passages = [(t, x, g) for t, x, g in passages if x]
        if not passages:
            raise InputError(path, n, "context", "no non-empty passage", "no_passages")
        return rid, question, answers, passages

    for _, (rid, question, answers, passages) in parse_rows(counted(rows), parse_unique, path, strict, skipped):
        seen.add(rid)
        ids, gold = [], []
        for title, text, is_gold in passages:
            pid = pool.add(title, text)
            if pid not in ids:  # an item listing the same paragraph twice keeps it once
                ids.append(pid)
                gold.append(is_gold)
        records.append(Record(rid, source, question, answers, ids, gold))
    pool_skipped: Counter = Counter()
    if extra_pool:
        added = 0
        for n, p in iter_json_rows(extra_pool):
            if isinstance(p, dict) and clean(str(p.get("text", ""))):
                pool.add(clean(str(p.get("title", ""))), clean(str(p["text"])))
                added += 1
            elif strict:
                raise InputError(extra_pool, n, "text", "missing or empty", "bad_pool_passage")
            else:
                pool_skipped["bad_pool_passage"] += 1
        if not added:  # a file of the wrong shape (e.g. one object, not a list), not a few bad passages
            raise ValueError(f"extra pool {extra_pool}: no passage with a non-empty text among its "
                             f"{pool_skipped.total()} rows; expected a JSON list of {{title, text}} objects")
    return LoadedSource(records, pool, read, skipped, pool_skipped)


def question_key(text: str) -> str:
    """How questions are compared when sets are kept apart (exclusions, disjoint parts): `clean`, lower case."""
    return clean(text).lower()


def read_id_list(path: str, fold: bool = False) -> frozenset[str]:
    """Non-empty lines of a file, whitespace-collapsed (and also as `question_key` with `fold`)."""
    with open(path, encoding="utf-8") as f:
        lines = [clean(line) for line in f]
    return frozenset(x for line in lines if line for x in ((line, question_key(line)) if fold else (line,)))
