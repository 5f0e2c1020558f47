"""`loongrl score`: grouping, accuracy, unbiased pass@k and bad-row handling."""

import argparse
import gzip
import json
from math import comb
from pathlib import Path

import pytest
from conftest import INPUTS, ascii_locale

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


@pytest.mark.parametrize("k, part", [("abc", "abc"), ("-1", "-1"), ("0", "0"), ("1,0", "0"), ("1,,2", ""),
                                     ("2.5", "2.5")])
def test_k_must_be_integers_of_at_least_one(hotpot_items, tmp_path, capsys, k, part):
    """--k abc was a ValueError traceback; --k -1 printed pass@-1 = -0.75 and --k 0 a pass@0 column."""
    a = hotpot_items[0]
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps({"id": a["_id"], "response": response(a["answer"]), "answers": [a["answer"]],
                                "data_source": "longqa_hotpotqa"}) + "\n")
    assert run([str(path), "--k", k]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: --k {k}: {part!r} is not an integer >= 1 (comma-separated k values of pass@k, "
                            "e.g. 1,2,4)\n")
    assert captured.out == ""


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


# ---- issue 13: the options and the judge reach the scorer; the summary, field by field -----------

SCORED_ROWS = [  # (row, default acc, acc with --word-boundary --no-require-think --faithful)
    ({"id": "a", "response": r"</think>\boxed{no}", "answers": ["Norway"]}, 1.0, 0.0),
    ({"id": "b", "response": r"\boxed{Paris}", "answers": ["Paris"]}, 0.0, 1.0),
    ({"id": "c", "response": "</think>So the answer is Paris.", "answers": ["Paris"]}, 1.0, 0.0),
    ({"id": "d", "response": r"</think>\boxed{JFK}", "answers": ["John F. Kennedy"],
      "question": "Who was the 35th president?"}, 1.0, 0.0),          # the judge says yes
    ({"id": "e", "response": r"</think>\boxed{Nixon}", "answers": ["John F. Kennedy"]}, 0.0, 0.0),  # judge: HTTP 400
    ({"id": "f", "response": r"</think>\boxed{(B)}", "answers": "B", "data_source": "mathqa",
      "ability": "math_qa_choices"}, 1.0, 1.0),                       # routed by ability
]


def test_score_options_judge_and_summary(server, tmp_path, monkeypatch, capsys):
    server.reset()
    server.fixed_delay_s = 0.2                          # concurrent requests would overlap in the server
    server.verdicts["JFK"] = "[[YES]]"
    server.script["Nixon"] = [("status", 400)]
    monkeypatch.setenv("LOONGRL_TEST_SCORE_KEY", "sk-score")
    path = tmp_path / "p.jsonl"
    lines = [json.dumps({"data_source": "keychain_x", **row}) for row, _, _ in SCORED_ROWS]
    path.write_text("\n".join(lines[:3] + ["  "] + lines[3:]) + "\n")   # a blank line is skipped, not the end
    out, cache = tmp_path / "s.json", tmp_path / "verdicts.sqlite"
    assert run([str(path), "--summary-out", str(out), "--judge-url", server.base_url, "--judge-model", "judge-s",
                "--judge-api-key-env", "LOONGRL_TEST_SCORE_KEY", "--judge-cache", str(cache),
                "--judge-concurrency", "1"]) == 0
    summary = json.loads(out.read_text())
    keychain = {"items": 5, "samples": 5, "accuracy": 0.6, "mean_score": 0.6, "pass_at_k": {"1": 0.6}}
    assert summary == {
        "predictions": str(path), "rows_scored": 6, "rows_skipped": {},
        "overall": {"items": 6, "samples": 6, "accuracy": 4 / 6, "mean_score": 4 / 6, "pass_at_k": {"1": 4 / 6}},
        "by_data_source": {"keychain_x": keychain,
                           "mathqa": {"items": 1, "samples": 1, "accuracy": 1.0, "mean_score": 1.0,
                                      "pass_at_k": {"1": 1.0}}},
        "judge_status": {"skipped": 4, "yes": 1, "error": 1},
        "judge_stats": {"requests": 2, "errors": 1}}
    assert out.read_text().startswith('{\n  "predictions": ')
    assert server.max_in_flight == 1                   # --judge-concurrency 1
    assert capsys.readouterr().out.splitlines() == [
        "data_source  items  samples  accuracy  mean    pass@1",
        "keychain_x   5      5        0.6000    0.6000  0.6000",
        "mathqa       1      1        1.0000    1.0000  1.0000",
        "OVERALL      6      6        0.6667    0.6667  0.6667"]
    requests = {r["answer"]: r for r in server.requests}
    assert requests["JFK"]["body"]["model"] == "judge-s"
    assert requests["JFK"]["headers"]["Authorization"] == "Bearer sk-score"
    assert "\nProblem: Who was the 35th president?\n" in requests["JFK"]["body"]["messages"][-1]["content"]
    assert cache.exists()
    assert run([str(path), "--summary-out", str(out), "--word-boundary", "--no-require-think", "--faithful"]) == 0
    again = json.loads(out.read_text())
    assert again["overall"]["accuracy"] == sum(flag for _, _, flag in SCORED_ROWS) / 6 == 2 / 6
    assert again["judge_status"] == {"off": 6} and again["judge_stats"] is None
    capsys.readouterr()
    assert run([str(path), "--k", "1,2"]) == 0                       # no judge: 3 of 6; one sample each: no pass@2
    assert capsys.readouterr().out.splitlines()[-1] == "OVERALL      6      6        0.5000    0.5000  0.5000  nan   "


def test_every_bad_row_is_named(tmp_path, capsys):
    rows = ["[1]", json.dumps({"response": "x", "answers": ["a"], "data_source": "keychain_x"}),
            json.dumps({"id": 1, "response": 5, "answers": ["a"], "data_source": "keychain_x"}),
            json.dumps({"id": 1, "response": "x", "answers": [1], "data_source": "keychain_x"}),
            json.dumps({"id": 1, "response": "x", "answers": ["a"]})]
    expected = [("not_an_object", "row is not a JSON object"),
                ("missing_id", "missing field 'id' (or 'item_id')"),
                ("missing_response", "field 'response' (or 'prediction'/'completion') must be a string"),
                ("bad_ground_truth", "field 'ground_truth' (or 'answers') must be a string or non-empty list of strings"),
                ("missing_data_source", "missing field 'data_source' (or pass --data-source)")]
    for line, (reason, message) in zip(rows, expected):
        with pytest.raises(cli.RowError) as err:
            cli.parse_row(json.loads(line), None)
        assert (err.value.reason, str(err.value)) == (reason, message)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(rows + rows[:2]) + "\n")
    assert run([str(path)]) == 2                                             # nothing left to score
    assert f"error: no scorable rows in {path} (skipped: " in capsys.readouterr().err
    assert cli.read_rows(str(path), None, strict=False) == ([], {"not_an_object": 2, "missing_id": 2,
                                                                 "missing_response": 1, "bad_ground_truth": 1,
                                                                 "missing_data_source": 1})
    with pytest.raises(cli.RowError) as err:
        cli.read_rows(str(path), None, strict=True)
    assert (err.value.reason, str(err.value)) == ("not_an_object", f"{path}:1: row is not a JSON object")
    # a row with a reward_model but an answers field keeps the answers
    row = {"id": 1, "response": "x", "answers": ["a"], "reward_model": {"ground_truth": "b"}, "data_source": "keychain_x"}
    assert cli.parse_row(row, None)["ground_truth"] == ["a"]


def test_predictions_are_read_as_utf8_whatever_the_locale(tmp_path):
    rows = [{"id": "q1", "response": r"</think>\boxed{Zürich}", "answers": ["Zürich"], "data_source": "keychain_x"},
            {"id": "q2", "response": r"</think>\boxed{Genève}", "answers": ["Zürich"], "data_source": "keychain_x"}]
    path, out = tmp_path / "p.jsonl", tmp_path / "s.json"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with ascii_locale():   # open() without encoding="utf-8" could not read the accents
        assert run([str(path), "--summary-out", str(out)]) == 0
    assert json.loads(out.read_text())["overall"]["accuracy"] == 0.5
