"""End to end on CPU with the project's tiny local model through the transformers backend; plus
decontamination."""

from __future__ import annotations

import json
import os

import pytest
from conftest import DATA, INPUTS
from longbench_rows import rows, write

from loongrl.cli import main
from loongrl.demo.tiny import build_tiny_model

pytestmark = pytest.mark.slow  # a tiny transformers model: left out of mutation runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from loongrl.data.sources import load_source

    texts = load_source("hotpotqa", INPUTS["hotpotqa"]).pool.texts[:2000]
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny")), texts, vocab_size=512)


@pytest.fixture(scope="module")
def lb_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("lb"))
    write(folder, "musique", rows("musique", "musique", 3))
    return folder


def _longbench(backend: str, folder: str, out: str, tokenizer: str) -> dict:
    assert main(["eval", "longbench", "--backend", backend, "--data", folder, "--datasets", "musique",
                 "--max-input-tokens", "600", "--max-new-tokens", "6", "--tokenizer", tokenizer, "--out", out,
                 "--quiet", "--concurrency", "1"]) == 0
    return json.load(open(os.path.join(out, "longbench.json")))


def test_longbench_tiny_model(tiny, lb_folder, tmp_path):
    direct = _longbench(f"hf:{tiny}", lb_folder, str(tmp_path / "hf"), tiny)
    for record in direct["records"]:
        [sample] = record["samples"]
        assert record["meta"]["truncated"] and record["meta"]["input_tokens"] > 600
        assert isinstance(sample["response"], str) and 0.0 <= sample["score"] <= 1.0
    # Scoring itself is checked on scripted answers (test_eval_longbench.py); here the plumbing is. The
    # same evaluation through a real server is in test_real_model.py (SmolLM2 under transformers serve).


def test_niah_and_ruler_tiny_model(tiny, tmp_path):
    out = str(tmp_path / "niah")
    assert main(["eval", "niah", "--backend", f"hf:{tiny}", "--min-len", "600", "--max-len", "900", "--num-lengths", "2",
                 "--num-depths", "2", "--max-new-tokens", "4", "--out", out, "--quiet"]) == 0
    report = json.load(open(os.path.join(out, "niah.json")))
    assert len(report["records"]) == 4 and report["summary"]["lengths"] == [600, 900]
    assert sorted((r["meta"]["length"], r["meta"]["depth"]) for r in report["records"]) == [
        (600, 0.0), (600, 100.0), (900, 0.0), (900, 100.0)]
    out = str(tmp_path / "ruler")
    assert main(["eval", "ruler", "--backend", f"hf:{tiny}", "--tasks", "niah_single_1", "vt", "--lengths", "1024",
                 "--num-samples", "1", "--max-new-tokens", "4", "--out", out, "--quiet"]) == 0
    summary = json.load(open(os.path.join(out, "ruler.json")))["summary"]
    assert set(summary["scores"]) == {"niah_single_1", "vt"}


def test_decontaminate_flags_dev_questions_and_feeds_exclude(tmp_path, capsys):
    dev = os.path.join(DATA, "musique", "musique_ans_v1.0_dev_questions.jsonl.gz")
    excl = str(tmp_path / "exclude.txt")
    assert main(["data", "decontaminate", "--train", INPUTS["musique"], "--source", "musique", "--eval", dev,
                 "--out", excl]) == 0
    printed = capsys.readouterr().out  # SOURCE.md: the 200 MIGRES rows are MuSiQue dev rows, the 100 others not
    assert "300 training items checked against" in printed and ": 200 flagged" in printed
    lines = open(excl).read().splitlines()
    assert len(lines) == 400 and lines[0].startswith("2hop__")          # id + question per flagged item
    # the LongBench rows themselves are an evaluation file too (field "input"); case/punctuation ignored
    lb = str(tmp_path / "lb.jsonl")
    write(str(tmp_path), "lb", [dict(r, input=r["input"].upper().rstrip("?")) for r in rows("musique", "musique", 2)])
    os.replace(str(tmp_path / "lb.jsonl"), lb)
    assert main(["data", "decontaminate", "--train", INPUTS["musique"], "--source", "musique", "--eval", lb,
                 "--out", str(tmp_path / "e2.txt")]) == 0
    assert ": 2 flagged" in capsys.readouterr().out
    out = str(tmp_path / "qa.jsonl")
    assert main(["data", "qa", "--source", "musique", "--input", INPUTS["musique"], "--out", out, "--num", "2",
                 "--max-prompt-tokens", "4096", "--exclude", excl, "--quiet"]) == 0
    ids = [json.loads(line)["extra_info"]["id"] for line in open(out)]
    assert len(ids) == 2 and not set(ids) & set(lines)
    assert "excluded" in capsys.readouterr().out
