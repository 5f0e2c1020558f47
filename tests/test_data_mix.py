"""`loongrl data mix`: exact proportions, disjoint QA questions, math parts, a card, valid rows."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import INPUTS, QWEN, read_rows

from loongrl.data import validate_file
from loongrl.data.mix import MixError, build_mix, load_mix_recipe

# MathQA rows in the published allenai/math_qa layout (options as one "a ) ... , b ) ..." string).
MATHQA = [
    {"Problem": "the banker ' s gain of a certain sum due 3 years hence at 10 % per annum is rs . 36 . what is the "
                "present worth ?", "options": "a ) rs . 400 , b ) rs . 300 , c ) rs . 500 , d ) rs . 350 , "
                "e ) none of these", "correct": "a", "category": "gain"},
    {"Problem": "a train running at the speed of 60 km / hr crosses a pole in 9 seconds . what is the length of "
                "the train ?", "options": "a ) 120 metres , b ) 180 metres , c ) 324 metres , d ) 150 metres , "
                "e ) none of these", "correct": "d", "category": "physics"},
    {"Problem": "what is 15 % of 80 ?", "options": ["8", "10", "12", "15", "20"], "correct": "c",
     "category": "general"},
    {"Problem": "broken row without options", "correct": "a"},
]
# DAPO-Math-17k rows in their published verl parquet layout.
DAPO_PROMPT = ("Solve the following math problem step by step. The last line of your response should be of the form "
               "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{p}\n\n"
               "Remember to put your answer on its own line after \"Answer:\".")
DAPO = [{"data_source": "math_dapo", "prompt": [{"content": DAPO_PROMPT.format(p=p), "role": "user"}],
         "ability": "MATH", "reward_model": {"ground_truth": a, "style": "rule-lighteval/MATH_v2"},
         "extra_info": {"index": f"id-{i}"}}
        for i, (p, a) in enumerate([("Find $x$ if $2x+3=11$.", "4"), ("Compute $7^2-1$.", "48"),
                                    ("How many primes are below 20?", "8")])]


@pytest.fixture(scope="module")
def mix_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixin")
    (d / "mathqa.json").write_text(json.dumps(MATHQA))
    pq.write_table(pa.Table.from_pylist(DAPO), d / "dapo.parquet")
    recipe = {
        "seed": 3, "tokenizer": QWEN, "max_prompt_tokens": 4096, "total": 16,
        "parts": [
            {"name": "kc_hotpot", "kind": "keychain", "source": "hotpotqa", "input": INPUTS["hotpotqa"],
             "ratio": 0.5},
            {"name": "qa_hotpot", "kind": "qa", "source": "hotpotqa", "input": INPUTS["hotpotqa"], "ratio": 0.5},
            {"name": "mathqa", "kind": "mathqa", "input": str(d / "mathqa.json"), "size": 2},
            {"name": "dapo", "kind": "dapo", "input": str(d / "dapo.parquet"), "size": 2},
            {"name": "ruler_mk", "kind": "book_ruler_multikey", "size": 1},
            {"name": "ruler_mv", "kind": "book_ruler_multivalue", "size": 1},
        ],
    }
    path = d / "mix.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return d, str(path)


def test_mix_has_exact_proportions_and_valid_rows(mix_inputs, tmp_path):
    d, recipe = mix_inputs
    out = str(tmp_path / "mix.parquet")
    card = build_mix(recipe, out)
    assert [(p["name"], p["rows"]) for p in card["parts"]] == [("kc_hotpot", 5), ("qa_hotpot", 5), ("mathqa", 2),
                                                               ("dapo", 2), ("ruler_mk", 1), ("ruler_mv", 1)]
    assert card["rows"] == 16 and card["qa_questions_disjoint"]
    assert [p["share"] for p in card["parts"]] == [5 / 16, 5 / 16, 2 / 16, 2 / 16, 1 / 16, 1 / 16]
    rows = read_rows(out)
    assert len(rows) == 16 and [r["extra_info"]["index"] for r in rows] == list(range(16))
    kinds = [r["extra_info"]["kind"] for r in rows]
    assert kinds != sorted(kinds, key=["keychain", "qa", "mathqa", "dapo", "book_ruler"].index)  # shuffled
    kc = {r["extra_info"]["question"] for r in rows if r["extra_info"]["kind"] == "keychain"}
    qa = {r["extra_info"]["question"] for r in rows if r["extra_info"]["kind"] == "qa"}
    assert len(kc) == len(qa) == 5 and not kc & qa
    math = [r for r in rows if r["extra_info"]["kind"] == "mathqa"]
    assert {r["reward_model"]["ground_truth"][0] for r in math} <= {"A", "D", "C"}
    user = next(r for r in math if r["reward_model"]["ground_truth"] == ["D"])["prompt"][-1]["content"] \
        if any(r["reward_model"]["ground_truth"] == ["D"] for r in math) else None
    if user:
        assert user.startswith("Question: a train running") and "\n(D) 150 metres\n(E) none of these" in user
    dapo = [r for r in rows if r["data_source"] == "math_dapo"]
    assert all(r["prompt"][-1]["content"].startswith("Solve the following math problem") for r in dapo)
    assert validate_file(out, QWEN).ok
    for png in [out + ".lengths.png"] + [str(tmp_path / f) for f in card["length_histograms"]]:
        assert open(png, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"
    assert card["length_histograms"] == [f"mix.parquet.lengths.{p['name']}.png" for p in card["parts"]]
    again = str(tmp_path / "again.parquet")
    build_mix(recipe, again)
    assert open(out, "rb").read() == open(again, "rb").read()


def test_mix_scores_through_the_shared_router(mix_inputs, tmp_path):
    from loongrl.rewards.router import compute_score

    out = str(tmp_path / "mix.parquet")
    build_mix(mix_inputs[1], out)
    for row in read_rows(out):
        gold = row["reward_model"]["ground_truth"]
        if row["extra_info"]["kind"] == "mathqa":
            response = f"<think>compute</think> \\boxed{{({gold[0]})}}"
        elif row["data_source"] == "math_dapo":
            response = f"<think>compute</think>\nAnswer: {gold[0]}"
        elif row["extra_info"]["kind"] == "book_ruler":
            response = "<think>found</think> \\boxed{" + ", ".join(gold) + "}"
        else:
            response = f"<think>follow the chain</think> \\boxed{{{gold[0]}}}"
        assert compute_score(row["data_source"], response, gold, row["extra_info"])["score"] == 1.0, row["data_source"]


def test_bad_recipes_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"parts": [{"name": "x", "kind": "qa", "source": "hotpotqa", "input": "f",
                                              "size": 2, "num_chain": 3}]}))
    with pytest.raises(MixError, match=r"bad.yaml: parts\[0\] \(qa\): unknown key\(s\) \['num_chain'\]"):
        load_mix_recipe(str(bad))
    bad.write_text(yaml.safe_dump({"parts": [{"name": "x", "kind": "qa", "source": "hotpotqa", "input": "f",
                                              "ratio": 1.0}]}))
    with pytest.raises(MixError, match="'total'"):
        load_mix_recipe(str(bad))


@pytest.mark.slow
def test_mix_cli_reports_unreachable_sizes(mix_inputs, tmp_path):
    d, _ = mix_inputs
    recipe = tmp_path / "big.yaml"
    recipe.write_text(yaml.safe_dump({"tokenizer": QWEN, "parts": [
        {"name": "mathqa", "kind": "mathqa", "input": str(d / "mathqa.json"), "size": 10}]}))
    r = subprocess.run([sys.executable, "-m", "loongrl.cli", "data", "mix", str(recipe), "--out",
                        str(tmp_path / "m.parquet")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "part mathqa: only 3 usable rows" in r.stderr and "'missing_options': 1" in r.stderr
    assert not (tmp_path / "m.parquet").exists()


@pytest.mark.slow
def test_shipped_recipes(tmp_path):
    """The paper-scale template loads; the shipped-sample mixture builds exactly and validates."""
    import os

    from conftest import REPO

    full = load_mix_recipe(os.path.join(REPO, "recipes", "mix", "loongrl-full.yaml"))
    assert sum(p["size"] for p in full["parts"]) == 21_024
    out = str(tmp_path / "sample.parquet")
    r = subprocess.run([sys.executable, "-m", "loongrl.cli", "data", "mix", "recipes/mix/shipped-sample.yaml",
                        "--out", out], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.load(open(out + ".card.json"))
    assert [p["rows"] for p in card["parts"]] == [10, 10, 10, 10, 10, 10, 2, 2] and card["rows"] == 64
    assert card["qa_questions_disjoint"]
    report = validate_file(out, QWEN)
    assert report.ok and report.rows == 64, report.errors[:3]
