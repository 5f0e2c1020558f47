"""Source loaders on the real shipped subsets, and their handling of bad rows."""

from __future__ import annotations

import gzip
import json

import pytest
from conftest import INPUTS

from loongrl.data.sources import InputError, load_source


def _raw(source):
    path = INPUTS[source]
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f) if source != "musique" else [json.loads(line) for line in f]


def test_hotpotqa_records_passages_and_gold():
    data = load_source("hotpotqa", INPUTS["hotpotqa"])
    raw = _raw("hotpotqa")
    assert data.read == 1768 and len(data.records) == 1768 and not data.skipped
    rec, row = data.records[0], raw[0]
    assert rec.id == row["_id"] and rec.answers == [row["answer"]] and rec.question == row["question"]
    # Sentences keep their leading spaces in HotpotQA: joined with "", whitespace collapsed.
    title, sents = row["context"][0]
    pid = rec.passage_ids[0]
    assert data.pool.titles[pid] == title
    assert data.pool.texts[pid] == " ".join("".join(sents).split())
    gold_titles = {t for t, _ in row["supporting_facts"]}
    assert {data.pool.titles[p] for p, g in zip(rec.passage_ids, rec.gold) if g} == gold_titles
    # The pool is de-duplicated and covers every record's passages.
    assert len(set(zip(data.pool.titles, data.pool.texts))) == len(data.pool)
    assert 17_000 < len(data.pool) < 17_200  # SOURCE.md: 17,167 unique paragraphs


def test_musique_answer_aliases_and_supporting_flags():
    data = load_source("musique", INPUTS["musique"])
    raw = _raw("musique")
    assert len(data.records) == 300
    with_aliases = next(i for i, r in enumerate(raw) if r["answer_aliases"])
    rec, row = data.records[with_aliases], raw[with_aliases]
    assert rec.answers[0] == row["answer"] and set(row["answer_aliases"]) <= set(rec.answers)
    support = [p["is_supporting"] for p in row["paragraphs"]]
    assert sum(rec.gold) == sum(support) and len(rec.passage_ids) <= 20


def test_2wiki_sentences_join_with_spaces():
    data = load_source("2wikimqa", INPUTS["2wikimqa"])
    raw = _raw("2wikimqa")
    assert len(data.records) == 164
    title, sents = raw[0]["context"][0]
    pid = data.records[0].passage_ids[0]
    assert data.pool.texts[pid] == " ".join(" ".join(sents).split())


def test_plain_and_gz_inputs_load_the_same(tmp_path):
    plain = tmp_path / "musique.jsonl"
    with gzip.open(INPUTS["musique"], "rt", encoding="utf-8") as f:
        plain.write_text(f.read(), encoding="utf-8")
    a, b = load_source("musique", INPUTS["musique"]), load_source("musique", str(plain))
    assert [r.question for r in a.records] == [r.question for r in b.records]


def test_generic_jsonl(tmp_path):
    raw = _raw("hotpotqa")[:5]
    path = tmp_path / "generic.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in raw:
            f.write(json.dumps({"id": r["_id"], "question": r["question"], "answers": [r["answer"]],
                                "passages": [{"title": t, "text": "".join(s)} for t, s in r["context"]]}) + "\n")
    data = load_source("jsonl", str(path))
    assert [r.id for r in data.records] == [r["_id"] for r in raw]
    assert all(len(r.passage_ids) == 10 for r in data.records)


def _write_bad_musique(tmp_path):
    rows = _raw("musique")[:6]
    rows[1]["answerable"] = False
    del rows[2]["question"]
    rows[3]["paragraphs"] = "not a list"
    lines = [json.dumps(r) for r in rows]
    lines.insert(4, "{broken json")
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_bad_rows_are_counted_by_reason(tmp_path):
    data = load_source("musique", _write_bad_musique(tmp_path))
    assert data.read == 7 and len(data.records) == 3
    assert dict(data.skipped) == {"unanswerable": 1, "missing_question": 1, "bad_paragraphs": 1, "invalid_json": 1}


def test_strict_names_file_row_and_field(tmp_path):
    path = _write_bad_musique(tmp_path)
    with pytest.raises(InputError) as e:
        load_source("musique", path, strict=True)
    assert str(e.value) == f"{path}: row 2: field 'answerable': false (MuSiQue keeps answerable rows only)"
    rows = _raw("hotpotqa")[:3]
    del rows[2]["answer"]
    bad = tmp_path / "hp.json"
    bad.write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(InputError, match=r"hp.json: row 2: field 'answer': missing"):
        load_source("hotpotqa", str(bad), strict=True)


def test_missing_file_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="input file not found: /nope.json"):
        load_source("hotpotqa", "/nope.json")
