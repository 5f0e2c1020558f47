"""Source loaders on the real shipped subsets, and their handling of bad rows."""

from __future__ import annotations

import gzip
import json

import pytest
from conftest import INPUTS, ascii_locale

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


# ---- issue 13: every unusable row, with its reason and its whole message ---------------------------

def _write_rows(tmp_path, rows, name="rows.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


HOTPOT_ROW = {"_id": "h1", "question": "Q?", "answer": "A", "context": [["T1", ["One. ", "Two."]], ["T2", ["Three."]]],
              "supporting_facts": [["T2", 0]]}
MUSIQUE_ROW = {"id": "m1", "question": "Q?", "answer": "A", "answer_aliases": ["a1", "A", " "], "answerable": True,
               "paragraphs": [{"title": "T1", "paragraph_text": "P one", "is_supporting": True},
                              {"title": "T2", "paragraph_text": "P two"}]}
JSONL_ROW = {"id": 7, "question": "Q?", "answers": "A", "passages": [{"title": "T", "text": "x"}, {"text": "y"}]}


@pytest.mark.parametrize("source, row, field, problem, reason", [
    ("hotpotqa", "a string", "<row>", "not a JSON object", "not_an_object"),
    ("hotpotqa", {**HOTPOT_ROW, "question": None}, "question", "missing", "missing_question"),
    ("hotpotqa", {**HOTPOT_ROW, "question": 3}, "question", "expected str, got int", "bad_question"),
    ("hotpotqa", {**HOTPOT_ROW, "answer": " \t"}, "answer", "empty", "empty_answer"),
    ("hotpotqa", {**HOTPOT_ROW, "context": []}, "context", "expected a non-empty list of [title, sentences]", "bad_context"),
    ("hotpotqa", {**HOTPOT_ROW, "context": [["T1", "not a list"]]}, "context", "entry is not [title, [sentences]]",
     "bad_context"),
    ("hotpotqa", {**HOTPOT_ROW, "context": [["T1", [""]]]}, "context", "no non-empty passage", "no_passages"),
    ("2wikimqa", {k: v for k, v in HOTPOT_ROW.items() if k != "_id"}, "id", "missing", "missing_id"),
    ("musique", {**MUSIQUE_ROW, "answerable": False}, "answerable", "false (MuSiQue keeps answerable rows only)",
     "unanswerable"),
    ("musique", {**MUSIQUE_ROW, "answer_aliases": "a1"}, "answer_aliases", "expected a list", "bad_answer_aliases"),
    ("musique", {**MUSIQUE_ROW, "paragraphs": [{"title": "T"}]}, "paragraphs", "entry lacks paragraph_text",
     "bad_paragraphs"),
    ("jsonl", {**JSONL_ROW, "answers": ["", " "]}, "answers", "no non-empty answer", "empty_answers"),
    ("jsonl", {**JSONL_ROW, "passages": [{"title": "T"}]}, "passages", "entry lacks text", "bad_passages"),
    ("jsonl", {**JSONL_ROW, "id": 1.5}, "id", "expected str or int, got float", "bad_id"),
    ("jsonl", {k: v for k, v in JSONL_ROW.items() if k != "question"}, "question", "missing", "missing_question"),
    ("jsonl", {**JSONL_ROW, "question": " \n "}, "question", "empty", "empty_question"),
    ("jsonl", {k: v for k, v in JSONL_ROW.items() if k != "answers"}, "answers", "missing", "missing_answers"),
    ("jsonl", {k: v for k, v in JSONL_ROW.items() if k != "passages"}, "passages", "missing", "missing_passages"),
    ("musique", {**MUSIQUE_ROW, "answer": " "}, "answer", "empty", "empty_answer"),
    ("musique", {**MUSIQUE_ROW, "paragraphs": "P one"}, "paragraphs", "expected list, got str", "bad_paragraphs"),
])
def test_each_bad_row_is_named_and_counted(tmp_path, source, row, field, problem, reason):
    path = _write_rows(tmp_path, [json.dumps(row)])
    with pytest.raises(InputError) as err:
        load_source(source, path, strict=True)
    assert str(err.value) == f"{path}: row 1: field '{field}': {problem}" and err.value.reason == reason
    data = load_source(source, path)
    assert (data.read, len(data.records), dict(data.skipped)) == (1, 0, {reason: 1})


def test_good_rows_of_each_format_by_hand(tmp_path):
    hot = load_source("hotpotqa", _write_rows(tmp_path, [HOTPOT_ROW], "h.jsonl"))
    [rec] = hot.records
    assert (rec.id, rec.source, rec.question, rec.answers, rec.gold) == ("h1", "hotpotqa", "Q?", ["A"], [False, True])
    assert hot.pool.titles == ["T1", "T2"] and hot.pool.texts == ["One. Two.", "Three."]   # HotpotQA: joined with ""
    wiki = load_source("2wikimqa", _write_rows(tmp_path, [{**HOTPOT_ROW, "context": [["T1", ["One.", "Two."]]]}], "w.jsonl"))
    assert wiki.pool.texts == ["One. Two."]                                                  # 2Wiki: joined with " "
    hf = {**HOTPOT_ROW, "context": {"title": ["T1", "T2"], "sentences": [["a"], ["b"]]},
          "supporting_facts": {"title": ["T1"], "sent_id": [0]}}                             # the hub layout
    assert load_source("hotpotqa", _write_rows(tmp_path, [hf], "hf.jsonl")).records[0].gold == [True, False]
    mus = load_source("musique", _write_rows(tmp_path, [MUSIQUE_ROW], "m.jsonl"))
    assert mus.records[0].answers == ["A", "a1"] and mus.records[0].gold == [True, False]   # aliases deduplicated
    gen = load_source("jsonl", _write_rows(tmp_path, [JSONL_ROW], "g.jsonl"))
    assert (gen.records[0].id, gen.records[0].answers, gen.records[0].gold) == ("7", ["A"], [True, True])
    assert gen.pool.titles == ["T", ""]


def test_duplicates_pools_and_extra_passages(tmp_path):
    second = {**HOTPOT_ROW, "_id": "h2", "context": [["T2", ["Three."]], ["T2", ["Three."]], ["T3", ["Four."]]]}
    path = _write_rows(tmp_path, [HOTPOT_ROW, second, {**HOTPOT_ROW, "question": "again"}])
    extra = tmp_path / "pool.json"
    extra.write_text(json.dumps([{"title": "E", "text": "Extra  one"}, {"title": "E2"}, {"text": "Three."}]))
    data = load_source("hotpotqa", path, extra_pool=str(extra))
    assert [r.id for r in data.records] == ["h1", "h2"] and dict(data.skipped) == {"duplicate_id": 1}
    assert dict(data.pool_skipped) == {"bad_pool_passage": 1}          # a passage, not an item: counted apart
    assert data.records[1].passage_ids == [1, 2]                       # "Three." once, shared with h1's pool entry
    assert data.pool.texts == ["One. Two.", "Three.", "Four.", "Extra one", "Three."]
    with pytest.raises(InputError, match=r"pool.json: row 1: field 'text': missing or empty"):
        load_source("hotpotqa", _write_rows(tmp_path, [HOTPOT_ROW], "one.jsonl"), extra_pool=str(extra), strict=True)
    with pytest.raises(InputError, match=r"row 3: field 'id': duplicate id 'h1'"):
        load_source("hotpotqa", path, strict=True)


@pytest.mark.parametrize("content, rows", [('{"a": 1}', 1), ('[{"title": 1}]', 1), ('["One.", "Two."]', 2),
                                           ("[]", 0), ("", 0)])
def test_an_extra_pool_without_any_passage_is_refused(tmp_path, content, rows):
    # these were taken, each row counted as a bad passage, and the run went on without the pool
    extra = tmp_path / "pool.json"
    extra.write_text(content)
    with pytest.raises(ValueError) as err:
        load_source("hotpotqa", _write_rows(tmp_path, [HOTPOT_ROW]), extra_pool=str(extra))
    assert str(err.value) == (f"extra pool {extra}: no passage with a non-empty text among its {rows} rows; "
                              "expected a JSON list of {title, text} objects")


def test_broken_json_is_named(tmp_path):
    lines = _write_rows(tmp_path, ["", json.dumps(JSONL_ROW), "{broken"], "l.jsonl")
    data = load_source("jsonl", lines)
    assert (data.read, len(data.records), dict(data.skipped)) == (2, 1, {"invalid_json": 1})
    with pytest.raises(InputError) as err:
        load_source("jsonl", lines, strict=True)
    assert str(err.value).startswith(f"{lines}: row 3: field '<line>': invalid JSON (Expecting property name")
    listing = tmp_path / "list.json"
    listing.write_text("\n\n[" + json.dumps(JSONL_ROW) + ",\n{]")
    with pytest.raises(InputError) as err:
        load_source("jsonl", str(listing))
    assert str(err.value).startswith(f"{listing}: row 0: field '<file>': invalid JSON list (") and "at line 4)" in str(err.value)
    assert err.value.reason == "invalid_json"
    with pytest.raises(ValueError, match="unknown source 'squad' \\(choose from hotpotqa, musique, 2wikimqa, jsonl\\)"):
        load_source("squad", lines)


def test_id_lists(tmp_path):
    from loongrl.data.sources import read_id_list

    path = tmp_path / "ids.txt"
    path.write_text("  A1 \n\nWho  is X?\n")
    assert read_id_list(str(path)) == {"A1", "Who is X?"}
    assert read_id_list(str(path), fold=True) == {"A1", "a1", "Who is X?", "who is x?"}


def test_id_lists_are_utf8_whatever_the_locale(tmp_path):
    """An exclude list of questions with accents, read on a machine whose locale is plain C (ASCII)."""
    from loongrl.data.sources import read_id_list

    path = tmp_path / "exclude.txt"
    path.write_bytes("Who painted the Café Terrace?\nÉdith Piaf\n".encode("utf-8"))
    with ascii_locale():   # open() without encoding="utf-8" could not read the accents
        ids = read_id_list(str(path), fold=True)
    assert ids == {"Who painted the Café Terrace?", "who painted the café terrace?", "Édith Piaf", "édith piaf"}


def test_hub_inputs_stream_a_dataset_folder(tmp_path):
    # `hf:NAME[:CONFIG]` goes to datasets.load_dataset (streaming): a local dataset folder works offline
    folder = tmp_path / "my_hotpot"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps(HOTPOT_ROW) + "\n" + json.dumps({**HOTPOT_ROW, "_id": "h2"}) + "\n")
    data = load_source("hotpotqa", f"hf:{folder}")
    assert [r.id for r in data.records] == ["h1", "h2"] and data.read == 2
    # a named configuration (`hf:NAME:CONFIG`): declared in the folder's README, as on the hub
    for config in ("first", "second"):
        (folder / config).mkdir()
        (folder / config / "train.jsonl").write_text(json.dumps({**HOTPOT_ROW, "_id": f"{config}-1"}) + "\n")
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: first\n  data_files: first/*.jsonl\n"
                                      "- config_name: second\n  data_files: second/*.jsonl\n---\n")
    assert [r.id for r in load_source("hotpotqa", f"hf:{folder}:second").records] == ["second-1"]
    with pytest.raises(ValueError, match="no default hub dataset for source 'musique': pass --input hf:OWNER/NAME"):
        load_source("musique", "hf:")


def test_bare_hf_input_reads_the_default_hotpotqa_dataset(tmp_path, monkeypatch):
    # `hf:` alone means hotpotqa/hotpot_qa, configuration "distractor"; load_dataset looks for a local folder of
    # that name first, so a folder laid out like the hub dataset stands in for it offline
    folder = tmp_path / "hotpotqa" / "hotpot_qa"
    for config in ("fullwiki", "distractor"):
        (folder / config).mkdir(parents=True)
        (folder / config / "train.jsonl").write_text(json.dumps({**HOTPOT_ROW, "_id": f"{config}-1"}) + "\n")
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: fullwiki\n  data_files: fullwiki/*.jsonl\n"
                                      "- config_name: distractor\n  data_files: distractor/*.jsonl\n---\n")
    monkeypatch.chdir(tmp_path)
    assert [r.id for r in load_source("hotpotqa", "hf:").records] == ["distractor-1"]


def test_generic_rows_keep_a_one_string_answer_whole_and_the_supporting_flags(tmp_path):
    row = {"id": "g1", "question": "Capital of France?", "answers": "Paris",
           "passages": [{"title": "France", "text": "Its capital is Paris.", "supporting": True},
                        {"title": "Spain", "text": "Its capital is Madrid.", "supporting": False},
                        {"title": "Italy", "text": "Its capital is Rome."}]}          # no flag: counted as supporting
    [rec] = load_source("jsonl", _write_rows(tmp_path, [row])).records
    assert (rec.answers, rec.gold) == (["Paris"], [True, False, True])


@pytest.mark.parametrize("name", ["items.jsonl", "items.jsonl.gz"])
def test_inputs_are_utf8_whatever_the_locale(tmp_path, name):
    """A plain and a gzipped input with accents, read on a machine whose locale is plain C (ASCII)."""
    row = {**JSONL_ROW, "question": "Who painted the Café Terrace?", "answers": ["Vincent van Gogh"],
           "passages": [{"title": "Café Terrace at Night", "text": "A painting by Van Gogh, Arles, 1888."}]}
    path = tmp_path / name
    data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with ascii_locale():
        loaded = load_source("jsonl", str(path))
    assert loaded.records[0].question == "Who painted the Café Terrace?"
    assert loaded.pool.titles == ["Café Terrace at Night"]


def test_an_indented_json_list_is_read_as_a_list(tmp_path):
    path = tmp_path / "indented.json"
    path.write_text("\n  [\n  " + json.dumps(JSONL_ROW) + ",\n  " + json.dumps({**JSONL_ROW, "id": 8}) + "\n  ]\n")
    data = load_source("jsonl", str(path))
    assert [r.id for r in data.records] == ["7", "8"] and data.read == 2 and not data.skipped
