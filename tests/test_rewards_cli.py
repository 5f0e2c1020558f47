"""`loongrl score`: grouping, accuracy, unbiased pass@k and bad-row handling."""

import argparse
import gzip
import json
from math import comb
from pathlib import Path

import pytest
from conftest import INPUTS

from loongrl.rewards import cli

HOTPOT = Path(INPUTS["hotpotqa"])


def run(argv):
    parser = argparse.ArgumentParser(prog="loongrl")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["score", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def hotpot_items():
    with gzip.open(HOTPOT, "rt", encoding="utf-8") as handle:
        return json.load(handle)[:3]


def response(answer):
    return f"<think>reading the passages</think> The answer is \\boxed{{{answer}}}."


def test_pass_at_k_matches_combinatorial_definition():
    for n, c, k in [(4, 2, 1), (4, 2, 2), (8, 3, 4), (8, 0, 2), (8, 8, 3), (5, 4, 2)]:
        assert cli.pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_score_groups_items_and_reports_pass_at_k(hotpot_items, tmp_path, capsys):
    a, b, c = hotpot_items
    rows = []
    # item a: 2 of 4 correct; item b: 0 of 4; item c: 4 of 4 (verl-style reward_model field)
    for i, ok in enumerate([True, False, True, False]):
        rows.append({"id": a["_id"], "response": response(a["answer"] if ok else "Senator"),
                     "answers": [a["answer"]], "data_source": "longqa_hotpotqa", "question": a["question"]})
    for _ in range(4):
        rows.append({"id": b["_id"], "prediction": response("Zanzibar"), "ground_truth": b["answer"],
                     "data_source": "longqa_hotpotqa"})
    for _ in range(4):
        rows.append({"item_id": c["_id"], "completion": response(c["answer"]),
                     "reward_model": {"ground_truth": [c["answer"]]}})
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "summary.json"
    assert run([str(path), "--k", "1,2,4", "--data-source", "keychain_hotpotqa", "--summary-out", str(out)]) == 0
    summary = json.loads(out.read_text())
    overall = summary["overall"]
    assert (overall["items"], overall["samples"]) == (3, 12)
    assert overall["accuracy"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert overall["pass_at_k"]["1"] == pytest.approx(0.5)
    assert overall["pass_at_k"]["2"] == pytest.approx((1 - 1 / 6 + 0 + 1) / 3)   # item a: 1 - C(2,2)/C(4,2)
    assert overall["pass_at_k"]["4"] == pytest.approx(2 / 3)
    assert summary["by_data_source"]["keychain_hotpotqa"]["accuracy"] == 1.0     # --data-source filled item c
    assert summary["by_data_source"]["longqa_hotpotqa"]["items"] == 2
    assert summary["rows_skipped"] == {} and summary["judge_stats"] is None
    printed = capsys.readouterr()
    assert "OVERALL" in printed.out and "pass@2" in printed.out
    assert "note: pass@" not in printed.err  # every item has 4 samples


def test_pass_at_k_says_which_items_it_leaves_out(hotpot_items, tmp_path, capsys):
    a, b, _ = hotpot_items
    rows = [{"id": a["_id"], "response": response(a["answer"]), "answers": [a["answer"]],
             "data_source": "longqa_hotpotqa"}] * 8 + \
           [{"id": b["_id"], "response": response(b["answer"]), "answers": [b["answer"]],
             "data_source": "longqa_hotpotqa"}] * 2
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "summary.json"
    assert run([str(path), "--k", "2,8,16", "--summary-out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "note: pass@8 leaves out 1 of 2 items with fewer than 8 samples\n" in err
    assert "note: pass@16 leaves out 2 of 2 items with fewer than 16 samples (all of them: nan)" in err
    assert "pass@2 " not in err
    assert json.loads(out.read_text())["overall"]["pass_at_k"] == {"2": 1.0, "8": 1.0}


def test_bad_rows_are_counted_by_reason_or_stop_in_strict_mode(tmp_path, capsys):
    good = {"id": "q1", "response": response("Paris"), "answers": ["Paris"], "data_source": "keychain_x"}
    lines = [json.dumps(good), "{not json", json.dumps({"id": "q2", "answers": ["x"], "data_source": "keychain_x"}),
             json.dumps({**good, "data_source": "gsm8k"}), json.dumps({**good, "answers": []}), ""]
    path = tmp_path / "preds.jsonl"
    path.write_text("\n".join(lines))
    out = tmp_path / "s.json"
    assert run([str(path), "--summary-out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["rows_skipped"] == {"invalid_json": 1, "missing_response": 1, "unknown_data_source": 1,
                                       "bad_ground_truth": 1}
    assert summary["overall"]["accuracy"] == 1.0
    capsys.readouterr()
    assert run([str(path), "--strict"]) == 2
    assert f"{path}:2: invalid JSON" in capsys.readouterr().err


def test_strict_error_names_the_field(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "q", "response": "x", "answers": ["y"], "data_source": "gsm8k"}) + "\n")
    assert run([str(path), "--strict"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1: field 'data_source'" in err and "gsm8k" in err
