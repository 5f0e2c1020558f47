"""The `loongrl data` commands as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import INPUTS, QWEN

pytestmark = pytest.mark.slow  # CLI subprocesses: left out of mutation runs

LOONGRL = [sys.executable, "-m", "loongrl.cli"]


def run(*args, cwd=None, env=None, timeout=300):
    return subprocess.run([*LOONGRL, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


def test_keychain_then_validate(tmp_path):
    out = str(tmp_path / "kc.parquet")
    r = run("data", "keychain", "--source", "hotpotqa", "--input", INPUTS["hotpotqa"], "--tokenizer", QWEN,
            "--max-prompt-tokens", "16384", "--num", "4", "--seed", "1", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "read 1768 / written 4 / skipped 1764: beyond_num=1764" in r.stdout
    summary = json.load(open(out + ".summary.json"))
    assert summary["written"] == 4 and summary["exact_fast_counting"] is True
    v = run("data", "validate", out, "--tokenizer", QWEN)
    assert v.returncode == 0 and "4 rows checked, 0 failed" in v.stdout


@pytest.mark.parametrize("key_format, message", [
    ("alnum1", "error: key-format: alnum1 makes 62 distinct keys, fewer than twice the 64 a row needs (16 chains x 4 "
               "hops); use longer keys (e.g. alnum8), hex8 or uuid36"),   # never finished
    ("alnum0", "error: key-format: unknown key format 'alnum0' (hex8, uuid36, alnumN with 1 <= N <= 64)"),
    ("alnumx", "error: key-format: unknown key format 'alnumx' (hex8, uuid36, alnumN with 1 <= N <= 64)"),
])
def test_keychain_refuses_a_key_format_at_once(tmp_path, key_format, message):
    out = tmp_path / "x.jsonl"
    r = run("data", "keychain", "--source", "hotpotqa", "--input", INPUTS["hotpotqa"], "--tokenizer", QWEN,
            "--max-prompt-tokens", "4096", "--num", "1", "--key-format", key_format, "--out", str(out), "--quiet",
            timeout=60)
    assert (r.returncode, r.stderr.strip(), r.stdout, out.exists()) == (2, message, "", False)


def test_qa_jsonl_and_validate_with_tighter_budget(tmp_path):
    out = str(tmp_path / "qa.jsonl")
    r = run("data", "qa", "--source", "2wikimqa", "--input", INPUTS["2wikimqa"], "--tokenizer", QWEN,
            "--max-prompt-tokens", "8192", "--num", "3", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(open(out).read().splitlines()) == 3
    ok = run("data", "validate", out, "--tokenizer", QWEN, "--quiet")
    assert ok.returncode == 0, ok.stdout
    bad = run("data", "validate", out, "--tokenizer", QWEN, "--max-prompt-tokens", "4000", "--quiet")
    assert bad.returncode == 1 and "row 0: prompt has" in bad.stdout and "3 rows checked, 3 failed" in bad.stdout


def test_strict_stops_at_bad_row_with_location(tmp_path):
    rows = json.load(open(INPUTS["2wikimqa"]))[:5]
    rows[3]["question"] = 42
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rows))
    out = str(tmp_path / "x.parquet")
    common = ["data", "qa", "--source", "2wikimqa", "--input", str(bad), "--tokenizer", QWEN, "--out", out,
              "--max-prompt-tokens", "4096", "--quiet"]
    strict = run(*common, "--strict")
    assert strict.returncode == 2
    assert f"error: {bad}: row 3: field 'question': expected str, got int" in strict.stderr
    assert not os.path.exists(out)
    lenient = run(*common)
    assert lenient.returncode == 0 and "skipped 1: bad_question=1" in lenient.stdout


def test_mistyped_paths_are_one_line_errors_naming_the_path(tmp_path):
    out = str(tmp_path / "kc.parquet")
    base = ["data", "keychain", "--source", "hotpotqa", "--input", INPUTS["hotpotqa"], "--max-prompt-tokens", "2048",
            "--num", "2", "--out", out, "--quiet"]
    cases = [
        (["data", "validate", str(tmp_path / "missing.parquet")], "missing.parquet"),
        ([*base, "--tokenizer", str(tmp_path / "no-tokenizer")], f"tokenizer {tmp_path}/no-tokenizer: no such folder"),
        # a path that does not exist is not taken as the system prompt's text
        ([*base, "--tokenizer", QWEN, "--system-prompt", str(tmp_path / "sys.txt")],
         f"system prompt '{tmp_path}/sys.txt': no such file"),
        (["score", str(tmp_path / "preds.jsonl")], "preds.jsonl"),
    ]
    (tmp_path / "empty-folder").mkdir()  # a tokenizer folder with nothing in it: transformers' 5 lines, no name
    cases += [([*base, "--tokenizer", str(tmp_path / "empty-folder")],
               f"error: tokenizer {tmp_path}/empty-folder: no tokenizer files in this folder (tokenizer.json, or"),
              (["data", "validate", str(tmp_path / "missing.jsonl"), "--tokenizer", str(tmp_path / "empty-folder")],
               f"error: tokenizer {tmp_path}/empty-folder: no tokenizer files in this folder")]
    torn = tmp_path / "torn.jsonl"  # a row file cut off mid-line
    torn.write_text('{"data_source": "hotpotqa", "prompt": []}\n{"data_source": "hot\n')
    cases += [
        (["data", "validate", str(torn), "--tokenizer", QWEN],
         f"{torn}: line 2: invalid JSON (Unterminated string starting at: column 17)"),
        # a hub id without network (HF_HUB_OFFLINE below, as on a cluster's compute nodes)
        ([*base, "--tokenizer", "Qwen/Qwen2.5-7B-Instruct"],
         "tokenizer Qwen/Qwen2.5-7B-Instruct: not a local folder, and not loadable from the hub"),
    ]
    for args, message in cases:
        r = run(*args, env={"HF_HUB_OFFLINE": "1"})
        assert r.returncode == 2, (args, r.stderr)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]  # after any progress line
        assert errors and message in errors[0] and "Traceback" not in r.stderr, r.stderr
    assert not os.path.exists(out)
    (tmp_path / "sys.txt").write_text("Answer briefly.\n")
    r = run(*base, "--tokenizer", QWEN, "--system-prompt", str(tmp_path / "sys.txt"))
    assert r.returncode == 0, r.stderr
    import pyarrow.parquet as pq

    rows = pq.read_table(out).to_pylist()
    assert [m["content"] for m in rows[0]["prompt"]][0] == "Answer briefly."


def test_validate_reports_rows_of_a_wrong_shape_and_refuses_files_without_rows(tmp_path):
    row = {"data_source": "x", "prompt": [{"role": "user", "content": "What?"}], "ability": "qa",
           "reward_model": {"style": "rule", "ground_truth": ["a"]}, "extra_info": {"kind": "qa"}}
    typed = tmp_path / "typed.jsonl"  # a string prompt raised AttributeError; extra_info a string too (no --tokenizer)
    rows = [row, dict(row, prompt="What?"), dict(row, extra_info="qa")]
    typed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    v = run("data", "validate", str(typed), "--quiet", env={"LOONGRL_TOKENIZER": QWEN})
    assert v.returncode == 1 and "Traceback" not in v.stderr, v.stderr
    assert v.stdout.splitlines() == [f"{typed}: row 1: prompt: expected a list of {{role, content}} messages, got str",
                                     f"{typed}: row 2: extra_info: expected an object, got str",
                                     "3 rows checked, 2 failed"]
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "garbage.parquet").write_text("not parquet\n")
    (tmp_path / "folder").mkdir()
    for name, message in [("empty.jsonl", "holds no rows"),
                          ("folder", "is a folder, not a row file (.parquet or .jsonl)"),
                          ("garbage.parquet", "not a readable parquet file (Parquet magic bytes not found in footer.")]:
        r = run("data", "validate", str(tmp_path / name), "--tokenizer", QWEN, "--quiet")
        assert r.returncode == 2 and r.stderr.startswith(f"error: {tmp_path / name}: {message}"), r.stderr
        assert len(r.stderr.splitlines()) == 1 and r.stdout == ""


def test_extra_pool_of_the_wrong_shape_is_refused_and_bad_passages_are_counted_apart(tmp_path):
    out = tmp_path / "qa.jsonl"
    base = ["data", "qa", "--source", "hotpotqa", "--input", INPUTS["hotpotqa"], "--tokenizer", QWEN,
            "--max-prompt-tokens", "2048", "--num", "1", "--out", str(out), "--quiet"]
    pool = tmp_path / "pool.json"
    for content in ('{"a": 1}', '[{"title": 1}]'):   # were taken: rc 0, and 'skipped' counted the pool's row
        pool.write_text(content)
        r = run(*base, "--extra-pool", str(pool))
        assert r.returncode == 2 and r.stderr == (f"error: extra pool {pool}: no passage with a non-empty text among "
                                                  "its 1 rows; expected a JSON list of {title, text} objects\n")
        assert not out.exists()
    pool.write_text('[{"title": "Extra", "text": "An extra filler passage."}, {"title": 1}]')
    r = run(*base, "--extra-pool", str(pool))
    # read = written + skipped: the pool's bad passage is not one of the items
    assert r.returncode == 0 and r.stdout.splitlines()[0] == ("read 1768 / written 1 / skipped 1767: beyond_num=1767; "
                                                              "extra pool: bad_pool_passage=1"), r.stdout
    summary = json.load(open(f"{out}.summary.json"))
    assert (summary["skipped"], summary["extra_pool_skipped"]) == ({"beyond_num": 1767}, {"bad_pool_passage": 1})


def test_validate_counts_with_the_tokenizer_the_rows_record(tmp_path, smollm2):
    out = str(tmp_path / "qa.parquet")
    r = run("data", "qa", "--source", "hotpotqa", "--input", INPUTS["hotpotqa"], "--tokenizer", smollm2,
            "--max-prompt-tokens", "2048", "--num", "3", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    v = run("data", "validate", out, "--quiet")  # no --tokenizer: SmolLM2's, as the rows record
    assert v.returncode == 0 and "3 rows checked, 0 failed" in v.stdout and "note:" not in v.stderr
    q = run("data", "validate", out, "--quiet", "--tokenizer", QWEN)
    assert "note: 3 rows were made with another tokenizer than" in q.stderr


def test_filter_refuses_a_keep_band_that_k_cannot_hold(tmp_path):
    r = run("data", "filter", "--source", "hotpotqa", "--input", INPUTS["hotpotqa"], "--model", "hf:unused",
            "--out", str(tmp_path / "ids.txt"), "--k", "4", "--keep-max", "4")
    assert r.returncode == 2, r.stderr
    assert "keep_max (4) < k (4)" in r.stderr and "solved 4 of 4 times is never kept" in r.stderr


def test_filter_band_follows_k():
    from loongrl.data.filter import FilterConfig

    assert (FilterConfig().keep_max, FilterConfig().rescue_max) == (6, 7)  # the reference's 1..6 and 1..7 of 8
    assert (FilterConfig(k=4).keep_max, FilterConfig(k=4).rescue_max) == (3, 3)
    assert FilterConfig(k=2).keep_max == 1


def test_settings_that_cannot_make_a_row_are_refused_up_front(tmp_path):
    base = ["data", "keychain", "--source", "hotpotqa", "--input", INPUTS["hotpotqa"], "--tokenizer", QWEN,
            "--num", "2", "--out", str(tmp_path / "kc.parquet"), "--quiet"]
    for extra, message in ((["--hops", "0"], "hops: must be >= 1, got 0"),
                           (["--num-chains", "0"], "num-chains: must be >= 1, got 0"),
                           (["--max-prompt-tokens", "-5"], "max-prompt-tokens: must be >= 1, got -5")):
        r = run(*base, *extra)
        assert r.returncode == 2 and f"error: {message}" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run(*base, "--max-prompt-tokens", "300")  # no item's own passages fit 300 tokens
    assert r.returncode == 1 and "error: no row could be made" in r.stderr and "wrote" not in r.stdout


def _questions(path) -> list[str]:
    import pyarrow.parquet as pq

    return [r["extra_info"]["question"] for r in pq.read_table(path).to_pylist()]


def test_two_lengths_from_one_source_share_no_question_with_exclude(tmp_path):
    """QwenLong-L1's phase 1 / phase 2 (or 4K / 8K) from the same source: the obvious commands share questions,
    `--check-overlap` says so, `--exclude` of the earlier output (plus a text list) makes the sets disjoint."""
    first, second, third = (str(tmp_path / f"{n}.parquet") for n in ("qa4k", "qa8k", "kc8k"))
    common = ["--source", "hotpotqa", "--input", INPUTS["hotpotqa"], "--tokenizer", QWEN, "--num", "4", "--quiet"]
    assert run("data", "qa", *common, "--max-prompt-tokens", "4096", "--out", first).returncode == 0
    r = run("data", "qa", *common, "--max-prompt-tokens", "8192", "--out", second, "--check-overlap", first)
    assert r.returncode == 0, r.stderr  # a warning, not an error: the file is written
    shared = set(_questions(first)) & set(_questions(second))
    assert len(shared) == 4
    assert f"warning: {second} shares 4 question(s) with {first}" in r.stderr
    assert f"pass --exclude {first}" in r.stderr
    import gzip

    with gzip.open(INPUTS["hotpotqa"], "rt") as f:   # items 4 and 5, the next the 8K KeyChain set would take
        held_out = [item["question"] for item in json.load(f)[4:6]]
    listed = tmp_path / "held_out.txt"     # a text exclude list (e.g. `data decontaminate --out`) beside it
    listed.write_text("".join(q.upper() + "\n" for q in held_out))
    r = run("data", "keychain", *common, "--max-prompt-tokens", "8192", "--out", third, "--exclude", first,
            "--exclude", str(listed), "--check-overlap", first, "--check-overlap", second)
    assert r.returncode == 0, r.stderr
    assert "excluded=6" in r.stdout       # the 4 items of qa4k and the list's 2
    assert not set(_questions(third)) & {*_questions(first), *held_out} and len(_questions(third)) == 4
    assert "warning" not in r.stderr       # qa8k holds the same 4 questions as qa4k


def test_bad_exclude_files_name_the_file_row_and_field(tmp_path):
    out = str(tmp_path / "qa.parquet")
    base = ["data", "qa", "--source", "2wikimqa", "--input", INPUTS["2wikimqa"], "--tokenizer", QWEN,
            "--max-prompt-tokens", "2048", "--num", "2", "--out", out, "--quiet"]
    garbled = tmp_path / "garbled.parquet"
    garbled.write_text("not a parquet file\n")
    no_question = tmp_path / "rows.jsonl"
    no_question.write_text(json.dumps({"extra_info": {"id": "a", "question": "Who?"}}) + "\n"
                           + json.dumps({"extra_info": {"id": "b"}}) + "\n")
    cases = [(str(tmp_path / "missing.parquet"), f"file not found: {tmp_path}/missing.parquet"),
             (str(garbled), f"{garbled}: row 0: field '<file>': not a readable parquet file"),
             (str(no_question), f"{no_question}: row 2: field 'question': no question field")]
    for flag in ("--exclude", "--check-overlap"):
        for path, message in cases:
            r = run(*base, flag, path)
            assert r.returncode == 2, (flag, path, r.stderr)
            assert r.stderr.startswith("error: ") and message in r.stderr and "Traceback" not in r.stderr, r.stderr
            assert not os.path.exists(out)
