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


def run(*args, cwd=None):
    return subprocess.run([*LOONGRL, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


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
