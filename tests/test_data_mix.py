"""`loongrl data mix`: exact proportions, disjoint QA questions, math parts, a card, valid rows."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import INPUTS, QWEN, ascii_locale, read_rows

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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ---- issue 13: small mixes (a generic-JSONL slice of the shipped HotpotQA), rules checked one by one ----

@pytest.fixture(scope="module")
def hotpot_jsonl(tmp_path_factory):
    """The first 16 shipped HotpotQA items in the generic JSONL format (ids, questions in file order)."""
    import gzip

    with gzip.open(INPUTS["hotpotqa"], "rt", encoding="utf-8") as f:
        raw = json.load(f)[:16]
    path = tmp_path_factory.mktemp("hotpot16") / "hotpot16.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in raw:
            gold = {t for t, _ in r["supporting_facts"]}
            f.write(json.dumps({"id": r["_id"], "question": r["question"], "answers": [r["answer"]],
                                "passages": [{"title": t, "text": "".join(s), "supporting": t in gold}
                                             for t, s in r["context"]]}) + "\n")
    return str(path), [r["_id"] for r in raw], [r["question"] for r in raw]


def _mix(tmp_path, parts, **top) -> str:
    recipe = {"seed": 3, "tokenizer": QWEN, "max_prompt_tokens": 4096, "system_prompt": "none", "parts": parts, **top}
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_mix_exclude_list_ids_and_disjoint_questions(hotpot_jsonl, tmp_path):
    path, ids, questions = hotpot_jsonl
    exclude = tmp_path / "exclude.txt"
    exclude.write_text(f"{ids[0]}\n\n  {questions[1].upper()}  \n")       # an id, and a question in another case
    only = tmp_path / "ids.txt"
    only.write_text(f"{ids[12]}\n{ids[10]}\n{ids[14]}\n")
    part = {"kind": "qa", "source": "jsonl", "input": path, "size": 2}
    recipe = _mix(tmp_path, [{**part, "name": "kc", "kind": "keychain", "num_chains": 2}, {**part, "name": "qa"},
                             {**part, "name": "chosen", "ids": str(only)}], exclude=str(exclude))
    out = str(tmp_path / "m.parquet")
    card = build_mix(recipe, out)
    rows = read_rows(out)
    by_kind = {(row["extra_info"]["kind"], row["extra_info"]["id"]): row for row in rows}
    kinds = [row["extra_info"]["kind"] for row in rows]
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)          # parts shuffled together
    # items 0 (id) and 1 (question) are excluded; KeyChain takes 2 and 3, plain QA the next unused (4, 5);
    # the id list gives 10 and 12 (file order), never an excluded or already used item
    assert sorted(by_kind) == sorted([("keychain", ids[2]), ("keychain", ids[3]), ("qa", ids[4]), ("qa", ids[5]),
                                      ("qa", ids[10]), ("qa", ids[12])])
    assert card["qa_questions_disjoint"] and card["exclude"] == str(exclude)
    assert [(p["name"], p["requested"], p["rows"], p["share"]) for p in card["parts"]] == \
        [("kc", 2, 2, 0.333333), ("qa", 2, 2, 0.333333), ("chosen", 2, 2, 0.333333)]


def test_mix_card_records_inputs_and_lengths(hotpot_jsonl, tmp_path):
    from loongrl.data.io import file_sha256

    path, _, _ = hotpot_jsonl
    recipe = _mix(tmp_path, [{"name": "qa", "kind": "qa", "source": "jsonl", "input": path, "size": 3}])
    out = str(tmp_path / "m.parquet")
    card = build_mix(recipe, out)
    tokens = sorted(r["extra_info"]["prompt_tokens"] for r in read_rows(out))
    assert card["parts"] == [{"name": "qa", "kind": "qa", "requested": 3, "rows": 3, "share": 1.0, "input": path,
                              "input_sha256": file_sha256(path),
                              "prompt_tokens": {"min": tokens[0], "median": tokens[1], "max": tokens[2]}}]
    assert (card["recipe"], card["recipe_sha256"], card["seed"], card["tokenizer"], card["max_prompt_tokens"],
            card["rows"]) == (recipe, file_sha256(recipe), 3, QWEN, 4096, 3)
    assert 4096 - 100 < tokens[0] and tokens[2] <= 4096
    assert card["length_histograms"] == ["m.parquet.lengths.qa.png"]
    assert json.load(open(out + ".card.json")) == card
    build_mix(recipe, str(tmp_path / "again.parquet"))
    assert open(out, "rb").read() == open(tmp_path / "again.parquet", "rb").read()     # same seed, same bytes


MATHQA_USER = ("Question: what is 15 % of 80 ?\nChoices:(A) 8\n(B) 10\n(C) 12\n(D) 15\n(E) 20")
TRAIN_USER = ("Question: a train running at the speed of 60 km / hr crosses a pole in 9 seconds . what is the length "
              "of the train ?\nChoices:(A) 120 metres\n(B) 180 metres\n(C) 324 metres\n(D) 150 metres\n(E) none of these")


def test_mathqa_prompts_keep_each_option_under_its_letter(mix_inputs):
    from collections import Counter

    from loongrl.data.math import mathqa_rows

    d, _ = mix_inputs
    skipped = Counter()
    rows = dict(mathqa_rows(str(d / "mathqa.json"), skipped))
    assert rows["1"] == {"question": MATHQA[1]["Problem"], "user": TRAIN_USER, "answers": ["D"]}
    assert rows["2"] == {"question": "what is 15 % of 80 ?", "user": MATHQA_USER, "answers": ["C"]}
    assert rows["0"]["user"].endswith("Choices:(A) rs . 400\n(B) rs . 300\n(C) rs . 500\n(D) rs . 350\n(E) none of these")
    assert sorted(rows) == ["0", "1", "2"] and skipped == {"missing_options": 1}


@pytest.mark.parametrize("options, message", [
    ("a ) 1 , b ) 2 , c ) 3 , d ) 4", "field 'options': expected five options labelled a ) to e )"),
    ("b ) 1 , a ) 2 , c ) 3 , d ) 4 , e ) 5", "field 'options': expected five options labelled a ) to e )"),
    (["1", "2", "3", "4"], "field 'options': expected 5 non-empty options, got 4"),
    (["1", "2", "", "4", "5"], "field 'options': expected 5 non-empty options, got 5"),
])
def test_bad_mathqa_options_name_the_row(tmp_path, options, message):
    from loongrl.data.math import mathqa_rows
    from loongrl.data.sources import InputError

    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"Problem": "p", "options": options, "correct": "a"}) + "\n")
    with pytest.raises(InputError) as err:
        list(mathqa_rows(str(path), __import__("collections").Counter(), strict=True))
    assert str(err.value) == f"{path}: row 1: {message}" and err.value.reason == "bad_options"


def test_mathqa_correct_letter_and_dapo_rows_are_checked(tmp_path):
    from collections import Counter

    from loongrl.data.math import dapo_rows, mathqa_rows
    from loongrl.data.sources import InputError

    path = tmp_path / "m.jsonl"
    ok = {"Problem": "p", "options": "a ) 1 , b ) 2 , c ) 3 , d ) 4 , e ) 5"}
    path.write_text("\n".join(json.dumps({**ok, "correct": c, "id": f"m{c}"}) for c in ("e", "f", "B")) + "\n")
    skipped = Counter()
    assert [(rid, f["answers"]) for rid, f in mathqa_rows(str(path), skipped)] == [("me", ["E"]), ("mB", ["B"])]
    assert skipped == {"bad_correct": 1}
    rows = [dict(DAPO[0], extra_info={"index": 7}), dict(DAPO[1], reward_model={"ground_truth": ["48", "forty-eight"]}),
            dict(DAPO[2], reward_model={"ground_truth": ""}), dict(DAPO[0], prompt=[]), dict(DAPO[0], extra_info=None)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    skipped = Counter()
    got = list(dapo_rows(str(tmp_path / "d.jsonl"), skipped))
    assert [(rid, f["answers"]) for rid, f in got] == [("7", ["4"]), ("id-1", ["48", "forty-eight"]), ("4", ["4"])]
    assert got[0][1]["user"] == got[0][1]["question"] == DAPO[0]["prompt"][0]["content"]
    assert skipped == {"missing_ground_truth": 1, "bad_prompt": 1}
    for bad, field, problem in ((dict(DAPO[0], prompt=[{"role": "user", "content": ""}]), "prompt",
                                 "expected a chat list ending in a message"),
                                (dict(DAPO[0], reward_model={}), "reward_model.ground_truth", "missing"),
                                ({k: v for k, v in DAPO[0].items() if k != "prompt"}, "prompt", "missing"),
                                (dict(DAPO[0], reward_model="4"), "reward_model", "expected dict, got str")):
        (tmp_path / "bad.jsonl").write_text(json.dumps(DAPO[1]) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(InputError) as err:
            list(dapo_rows(str(tmp_path / "bad.jsonl"), Counter(), strict=True))
        assert str(err.value) == f"{tmp_path / 'bad.jsonl'}: row 1: field '{field}': {problem}"


def test_file_parts_count_skips_and_take_a_seeded_subset(mix_inputs, tmp_path):
    d, _ = mix_inputs
    part = {"name": "mathqa", "kind": "mathqa", "input": str(d / "mathqa.json"), "size": 2}
    out = str(tmp_path / "m.parquet")
    card = build_mix(_mix(tmp_path, [part], max_prompt_tokens=200), out)
    rows = read_rows(out)
    assert card["parts"][0]["rows"] == 2 and {r["extra_info"]["id"] for r in rows} <= {"0", "1", "2"}
    assert all(r["prompt"] == [{"role": "user", "content": r["prompt"][0]["content"]}] for r in rows)   # no system
    assert all(r["data_source"] == "mathqa_choice" and r["ability"] == "math_qa_choices" for r in rows)
    # every prompt is counted with the chat template: 15 template tokens around the user text (see the test of
    # transitions.prompt_token_counter), which Qwen renders with its default system prompt when none is given
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(QWEN)
    for r in rows:
        expected = len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False))
        assert r["extra_info"]["prompt_tokens"] == expected and r["extra_info"]["max_prompt_tokens"] == 200
    # a budget below the longest problem skips it, counted by reason
    longest = max(r["extra_info"]["prompt_tokens"] for r in rows)
    with pytest.raises(MixError, match=r"only [0-2] usable rows in .* for 3 requested \(skipped: .*'over_budget': [1-3]"):
        build_mix(_mix(tmp_path, [dict(part, size=3)], max_prompt_tokens=longest - 1), out)


def _load(tmp_path, recipe) -> dict:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return load_mix_recipe(str(path))


def _parts(*specs) -> list[dict]:
    return [{"name": f"p{i}", "kind": "qa", "source": "jsonl", "input": "f", **spec} for i, spec in enumerate(specs)]


@pytest.mark.parametrize("total, specs, sizes", [
    (10, [{"ratio": 0.5}, {"ratio": 0.3}, {"ratio": 0.2}], [5, 3, 2]),
    (7, [{"ratio": 1 / 3}] * 3, [3, 2, 2]),                          # 2.33 each: the one row left goes to the first
    (10, [{"ratio": 0.25}, {"ratio": 0.75}], [3, 7]),                 # 2.5 / 7.5: ties go to the first part
    (11, [{"size": 3}, {"ratio": 1}, {"ratio": 1}], [3, 4, 4]),       # fixed sizes first, ratios share the rest
    (10, [{"size": 3}, {"ratio": 2}, {"ratio": 1}], [3, 5, 2]),       # 14/3 = 4.67 and 2.33: the larger remainder
    (None, [{"size": 0}, {"size": 4}], [0, 4]),
    (1, [{"ratio": 1.0}], [1]),                                       # the smallest total (listed last: ids stay)
])
def test_ratios_become_exact_sizes_by_largest_remainder(tmp_path, total, specs, sizes):
    recipe = {"parts": _parts(*specs)} | ({"total": total} if total is not None else {})
    assert [p["size"] for p in _load(tmp_path, recipe)["parts"]] == sizes


@pytest.mark.parametrize("recipe, message", [
    ([1], "expected a mapping at the top level"),
    ({"parts": _parts({"size": 1}), "seeed": 1}, "unknown key(s) ['seeed']; allowed: ['exclude', 'max_prompt_tokens', "
                                                   "'out', 'parts', 'seed', 'system_prompt', 'tokenizer', 'total']"),
    ({"parts": []}, "'parts' must be a non-empty list"),
    ({"parts": {"a": 1}}, "'parts' must be a non-empty list"),
    ({"parts": [3]}, "parts[0]: expected a mapping"),
    ({"parts": [{"name": "x", "kind": "mathqa_v2", "size": 1}]},
     "parts[0]: 'kind' must be one of ['keychain', 'qa', 'mathqa', 'dapo', 'book_ruler_multikey', "
     "'book_ruler_multivalue'], got 'mathqa_v2'"),
    ({"parts": [{"name": "x", "kind": "mathqa", "input": "f", "size": 1, "needles": 3}]},
     "parts[0] (mathqa): unknown key(s) ['needles']"),
    ({"parts": [{"name": "x", "kind": "book_ruler_multikey", "size": 1, "num_chains": 3}]},
     "parts[0] (book_ruler_multikey): unknown key(s) ['num_chains']"),
    ({"parts": _parts({"size": 1}) + [{"name": "p0", "kind": "mathqa", "input": "f", "size": 1}]},
     "parts[0]: every part needs a unique 'name'"),
    ({"parts": [{"kind": "mathqa", "input": "f", "size": 1}]}, "parts[0]: every part needs a unique 'name'"),
    ({"parts": [{"name": "x", "kind": "dapo", "size": 1}]}, "parts[0]: 'input' is required"),
    ({"parts": [{"name": "x", "kind": "keychain", "input": "f", "size": 1}]},
     "parts[0]: 'source' is required for kind keychain"),
    ({"parts": _parts({})}, "parts[0]: give exactly one of 'size' or 'ratio'"),
    ({"parts": _parts({"size": 1, "ratio": 0.5})}, "parts[0]: give exactly one of 'size' or 'ratio'"),
    ({"parts": _parts({"ratio": 1.0})}, "'total' (a positive integer) is required when a part gives a ratio"),
    ({"parts": _parts({"ratio": 1.0}), "total": 0}, "'total' (a positive integer) is required when a part gives a ratio"),
    ({"parts": _parts({"ratio": 1.0}), "total": 2.5}, "'total' (a positive integer) is required when a part gives a ratio"),
    ({"parts": _parts({"ratio": 0.5}, {"ratio": 0.4}), "total": 10}, "ratios sum to 0.9, not 1"),
    ({"parts": _parts({"size": -1})}, "part p0: size must be a non-negative integer"),
    ({"parts": _parts({"size": 1.5})}, "part p0: size must be a non-negative integer"),
    ({"parts": _parts({"size": 0}, {"size": 0})}, "every part has size 0: the mix would have no rows"),
])
def test_mix_recipe_errors_name_the_key(tmp_path, recipe, message):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(MixError) as err:
        load_mix_recipe(str(path))
    assert str(err.value) == f"{path}: {message}"


def test_book_parts_pass_their_options(tmp_path):
    recipe = _mix(tmp_path, [{"name": "mv", "kind": "book_ruler_multivalue", "size": 1, "needles": 4}],
                  max_prompt_tokens=1024, system_prompt="loongrl")
    out = str(tmp_path / "m.parquet")
    build_mix(recipe, out)
    [row] = read_rows(out)
    assert len(row["reward_model"]["ground_truth"]) == 4 and row["data_source"] == "book_ruler_multivalue"
    assert row["prompt"][0]["role"] == "system" and 1024 - 100 < row["extra_info"]["prompt_tokens"] <= 1024


def _recipe(tmp_path, **recipe) -> str:
    """A recipe file with exactly the keys given (no defaults filled in, unlike `_mix`)."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_book_parts_default_to_the_papers_settings_and_read_the_book(tmp_path):
    from loongrl.data.prompts import LOONGRL_SYSTEM

    book = tmp_path / "book.txt"
    book.write_text("The zebra hums softly. " * 250)                   # 1,000 words, the least a book may have
    # no seed, budget, needles or system prompt: seed 0, 16,384 tokens, 20 needles, the LoongRL system prompt
    recipe = _recipe(tmp_path, tokenizer=QWEN, parts=[{"name": "mv", "kind": "book_ruler_multivalue", "size": 1,
                                                       "book": str(book)}])
    out = str(tmp_path / "m.parquet")
    card = build_mix(recipe, out)
    assert (card["seed"], card["max_prompt_tokens"]) == (0, 16384)
    [row] = read_rows(out)
    info = row["extra_info"]
    assert row["data_source"] == "book_ruler_multivalue" and len(row["reward_model"]["ground_truth"]) == 20
    assert row["prompt"][0] == {"role": "system", "content": LOONGRL_SYSTEM}
    assert (info["id"], info["seed"], info["max_prompt_tokens"]) == ("book_ruler_multivalue_0_0", 0, 16384)
    assert 16384 - 100 < info["prompt_tokens"] <= 16384
    user = row["prompt"][1]["content"]
    assert user.count("The zebra hums softly.") > 1000                 # the haystack is the book, not the essays


def test_book_parts_take_the_recipes_seed_and_system_prompt(tmp_path):
    recipe = _recipe(tmp_path, tokenizer=QWEN, seed=7, max_prompt_tokens=1024, system_prompt="none",
                     parts=[{"name": "mk", "kind": "book_ruler_multikey", "size": 1}])
    out = str(tmp_path / "m.parquet")
    build_mix(recipe, out)
    [row] = read_rows(out)
    assert [m["role"] for m in row["prompt"]] == ["user"]
    assert (row["extra_info"]["id"], row["extra_info"]["seed"]) == ("book_ruler_multikey_7_0", 7)


@functools.cache
def _qwen():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(QWEN)


def _chat_tokens(messages) -> int:
    """Prompt tokens as the trainer sees them: Qwen's own chat template, generation prompt included."""
    return len(_qwen().apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


def test_file_part_rows_by_hand_with_the_recipe_defaults(mix_inputs, tmp_path):
    from loongrl.data.prompts import LOONGRL_SYSTEM
    from loongrl.data.tokens import get_counter

    d, _ = mix_inputs
    # no seed, budget or system prompt: seed 0, 16,384 tokens, the LoongRL system prompt; all 3 usable rows asked
    recipe = _recipe(tmp_path, tokenizer=QWEN, parts=[{"name": "mq", "kind": "mathqa", "input": str(d / "mathqa.json"),
                                                       "size": 3}])
    out = str(tmp_path / "m.parquet")
    build_mix(recipe, out)
    rows = {r["extra_info"]["id"]: r for r in read_rows(out)}
    assert sorted(rows) == ["0", "1", "2"]
    row = rows["2"]
    messages = [{"role": "system", "content": LOONGRL_SYSTEM}, {"role": "user", "content": MATHQA_USER}]
    assert (row["data_source"], row["ability"], row["prompt"], row["reward_model"]) == \
        ("mathqa_choice", "math_qa_choices", messages, {"style": "rule", "ground_truth": ["C"]})
    expected = {"split": "train", "id": "2", "source": "mathqa", "kind": "mathqa", "question": "what is 15 % of 80 ?",
                "answers": ["C"], "prompt_tokens": _chat_tokens(messages), "max_prompt_tokens": 16384,
                "tokenizer": QWEN, "tokenizer_fingerprint": get_counter(QWEN).fingerprint, "seed": 0}
    assert {k: row["extra_info"][k] for k in expected} == expected


def _sums_file(tmp_path) -> tuple[str, int]:
    """Ten MathQA rows q0..q9: eight short sums and two long problems (q0 and q5). Returns the path and the
    prompt tokens of a short row (no system prompt)."""
    long = "a train running at the speed of 60 km / hr crosses a pole in 9 seconds . how long is the train ?"
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "Problem": long if i in (0, 5) else f"what is {i} + {i} ?",
                                        "options": "a ) 1 , b ) 2 , c ) 3 , d ) 4 , e ) 5", "correct": "b"}) + "\n"
                            for i in range(10)))
    short = "Question: what is 1 + 1 ?\nChoices:(A) 1\n(B) 2\n(C) 3\n(D) 4\n(E) 5"
    return str(path), _chat_tokens([{"role": "user", "content": short}])


def test_file_part_keeps_prompts_at_the_budget_and_counts_each_skip(tmp_path):
    path, budget = _sums_file(tmp_path)          # every short prompt has exactly `budget` tokens, the long ones more
    part = {"name": "sums", "kind": "mathqa", "input": path}
    out = str(tmp_path / "m.parquet")
    build_mix(_mix(tmp_path, [dict(part, size=8)], max_prompt_tokens=budget), out)
    rows = read_rows(out)
    assert sorted(r["extra_info"]["id"] for r in rows) == [f"q{i}" for i in (1, 2, 3, 4, 6, 7, 8, 9)]
    assert {r["extra_info"]["prompt_tokens"] for r in rows} == {budget}
    with pytest.raises(MixError) as err:
        build_mix(_mix(tmp_path, [dict(part, size=9)], max_prompt_tokens=budget), out)
    assert str(err.value) == f"part sums: only 8 usable rows in {path} for 9 requested (skipped: {{'over_budget': 2}})"


def test_file_part_subset_is_fixed_by_the_seed(tmp_path):
    path, _ = _sums_file(tmp_path)
    part = {"name": "sums", "kind": "mathqa", "input": path, "size": 3}

    def drawn(**seed) -> list[tuple[str, int]]:
        recipe = _recipe(tmp_path, tokenizer=QWEN, system_prompt="none", parts=[part], **seed)
        build_mix(recipe, str(tmp_path / "m.parquet"))
        return sorted((r["extra_info"]["id"], r["extra_info"]["seed"]) for r in read_rows(str(tmp_path / "m.parquet")))

    three = drawn(seed=3)
    assert len(three) == 3 and {s for _, s in three} == {3}
    assert drawn(seed=3) == three                                                 # same seed, same rows
    assert [i for i, _ in drawn(seed=4)] != [i for i, _ in three]                 # the seed picks the rows
    assert drawn() == drawn(seed=0)                                               # no seed is seed 0


OPTIONS = "a ) 1 , b ) 2 , c ) 3 , d ) 4 , e ) 5"


@pytest.mark.parametrize("row, field, problem, reason", [
    ({"options": OPTIONS, "correct": "a"}, "Problem", "missing", "missing_Problem"),
    ({"Problem": "p", "options": 5, "correct": "a"}, "options", "expected str or list, got int", "bad_options"),
    ({"Problem": "p", "options": OPTIONS}, "correct", "missing", "missing_correct"),
    ({"Problem": "p", "options": OPTIONS, "correct": 1}, "correct", "expected str, got int", "bad_correct"),
    ({"Problem": "p", "options": OPTIONS, "correct": " f "}, "correct", "'F' is not a letter a-e", "bad_correct"),
])
def test_bad_mathqa_rows_name_the_file_row_and_field(tmp_path, row, field, problem, reason):
    from collections import Counter

    from loongrl.data.math import mathqa_rows
    from loongrl.data.sources import InputError

    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"Problem": "p", "options": OPTIONS, "correct": "a"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError) as err:
        list(mathqa_rows(str(path), Counter(), strict=True))
    assert str(err.value) == f"{path}: row 2: field '{field}': {problem}" and err.value.reason == reason  # JSONL line
    skipped = Counter()
    assert [rid for rid, _ in mathqa_rows(str(path), skipped)] == ["1"] and skipped == {reason: 1}


def test_mathqa_options_of_another_type_are_named():
    from loongrl.data.math import parse_mathqa_options
    from loongrl.data.sources import InputError

    with pytest.raises(InputError) as err:
        parse_mathqa_options({"a": "1"}, "mathqa.json", 4)
    assert str(err.value) == "mathqa.json: row 4: field 'options': expected a string or list, got dict"
    assert err.value.reason == "bad_options"


def test_synthesis_summary_line():
    from collections import Counter

    from loongrl.data.pipeline import Summary

    assert Summary(read=4, written=4).line() == "read 4 / written 4 / skipped 0: none"
    s = Summary(read=9, written=5, skipped=Counter(excluded=1, beyond_num=3),
                fit=Counter(verified=5, trimmed=2, topped_up=1))
    assert s.line() == ("read 9 / written 5 / skipped 4: beyond_num=3, excluded=1; "
                        "5 prompts counted whole (2 trimmed, 1 topped up)")


def test_synth_parts_default_to_the_papers_budget_seed_and_system_prompt(tmp_path, monkeypatch):
    from loongrl.data.prompts import LOONGRL_SYSTEM

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    recipe = _recipe(tmp_path, tokenizer=QWEN, parts=[{"name": "qa", "kind": "qa", "source": "hotpotqa",
                                                       "input": INPUTS["hotpotqa"], "size": 1}])
    out = str(tmp_path / "m.parquet")
    build_mix(recipe, out)
    [row] = read_rows(out)
    info = row["extra_info"]
    assert row["prompt"][0] == {"role": "system", "content": LOONGRL_SYSTEM}
    assert (info["seed"], info["max_prompt_tokens"]) == (0, 16384) and 16384 - 100 < info["prompt_tokens"] <= 16384
    assert list(work.iterdir()) == []                                   # the part's own file went to a scratch folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "m.parquet", "m.parquet.card.json",
                                                          "m.parquet.lengths.png", "m.parquet.lengths.qa.png",
                                                          "recipe.yaml"]


def test_synth_parts_take_the_recipes_seed_and_system_prompt(hotpot_jsonl, tmp_path):
    path, ids, _ = hotpot_jsonl
    recipe = _recipe(tmp_path, tokenizer=QWEN, seed=3, max_prompt_tokens=2048, system_prompt="none",
                     parts=[{"name": "qa", "kind": "qa", "source": "jsonl", "input": path, "size": 1}])
    build_mix(recipe, str(tmp_path / "m.parquet"))
    [row] = read_rows(str(tmp_path / "m.parquet"))
    assert [m["role"] for m in row["prompt"]] == ["user"]
    assert (row["extra_info"]["id"], row["extra_info"]["seed"], row["extra_info"]["max_prompt_tokens"]) == \
        (ids[0], 3, 2048)


def test_a_later_part_skips_a_question_asked_before_in_another_case(hotpot_jsonl, tmp_path):
    path, ids, questions = hotpot_jsonl
    copy = tmp_path / "copy.jsonl"                        # the same items under new ids, questions in upper case
    copy.write_text("".join(json.dumps(dict(json.loads(line), id=f"copy-{i}", question=questions[i].upper())) + "\n"
                            for i, line in enumerate(open(path).read().splitlines()[:4])))
    recipe = _mix(tmp_path, [{"name": "first", "kind": "qa", "source": "jsonl", "input": path, "size": 2},
                             {"name": "copy", "kind": "qa", "source": "jsonl", "input": str(copy), "size": 2}])
    card = build_mix(recipe, str(tmp_path / "m.parquet"))
    assert sorted(r["extra_info"]["id"] for r in read_rows(str(tmp_path / "m.parquet"))) == \
        sorted([ids[0], ids[1], "copy-2", "copy-3"])
    assert card["qa_questions_disjoint"]


def test_a_synth_part_short_of_rows_is_named_with_its_skips(hotpot_jsonl, tmp_path):
    path, ids, _ = hotpot_jsonl
    only = tmp_path / "ids.txt"
    only.write_text(f"{ids[3]}\n{ids[7]}\n")
    recipe = _mix(tmp_path, [{"name": "picked", "kind": "qa", "source": "jsonl", "input": path, "size": 3,
                              "ids": str(only)}])
    with pytest.raises(MixError) as err:
        build_mix(recipe, str(tmp_path / "m.parquet"))
    assert str(err.value) == ("part picked: only 2 of 3 rows could be made "
                              "(read 16 / written 2 / skipped 14: not_in_ids=14)")


def test_synth_parts_show_a_progress_bar_on_a_terminal(hotpot_jsonl, tmp_path):
    import contextlib
    import os
    import termios

    path, _, _ = hotpot_jsonl
    recipe = _mix(tmp_path, [{"name": "qa", "kind": "qa", "source": "jsonl", "input": path, "size": 1}])
    terminal, screen = os.openpty()                  # stderr on a (pseudo-)terminal 100 columns wide
    termios.tcsetwinsize(screen, (24, 100))
    try:
        with open(screen, "w", closefd=False) as tty, contextlib.redirect_stderr(tty):
            build_mix(recipe, str(tmp_path / "m.parquet"))
        os.set_blocking(terminal, False)
        shown = os.read(terminal, 1 << 16).decode()
    finally:
        os.close(terminal)
        os.close(screen)
    assert "qa jsonl: 100%" in shown and "1/1" in shown


def test_card_names_each_parts_input_and_its_token_median(tmp_path):
    import hashlib

    book = tmp_path / "book.txt"
    book.write_text("The zebra hums softly. " * 250)
    path = tmp_path / "sums.jsonl"                         # four prompts of four lengths (Qwen splits digits)
    sums = [f"what is {n} + {n} ?" for n in ("1", "12", "123", "1234")]
    path.write_text("".join(json.dumps({"id": f"s{i}", "Problem": p, "options": OPTIONS, "correct": "a"}) + "\n"
                            for i, p in enumerate(sums)))
    tokens = [_chat_tokens([{"role": "user", "content": f"Question: {p}\nChoices:(A) 1\n(B) 2\n(C) 3\n(D) 4\n(E) 5"}])
              for p in sums]
    assert tokens == sorted(set(tokens))
    recipe = _mix(tmp_path, [{"name": "bk", "kind": "book_ruler_multikey", "size": 1, "book": str(book)},
                             {"name": "essays", "kind": "book_ruler_multivalue", "size": 1},
                             {"name": "sums", "kind": "mathqa", "input": str(path), "size": 4},
                             {"name": "empty", "kind": "mathqa", "input": str(path), "size": 0}], max_prompt_tokens=1024)
    card = build_mix(recipe, str(tmp_path / "m.parquet"))
    ruler = {r["extra_info"]["kind"] + r["data_source"]: r["extra_info"]["prompt_tokens"]
             for r in read_rows(str(tmp_path / "m.parquet"))}
    bk, essays = ruler["book_rulerbook_ruler_multikey"], ruler["book_rulerbook_ruler_multivalue"]
    assert card["parts"] == [
        {"name": "bk", "kind": "book_ruler_multikey", "requested": 1, "rows": 1, "share": 0.166667, "input": str(book),
         "input_sha256": hashlib.sha256(book.read_bytes()).hexdigest(),
         "prompt_tokens": {"min": bk, "median": bk, "max": bk}},
        {"name": "essays", "kind": "book_ruler_multivalue", "requested": 1, "rows": 1, "share": 0.166667,
         "input": "essays (../shared)", "input_sha256": None,
         "prompt_tokens": {"min": essays, "median": essays, "max": essays}},
        {"name": "sums", "kind": "mathqa", "requested": 4, "rows": 4, "share": 0.666667, "input": str(path),
         "input_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
         "prompt_tokens": {"min": tokens[0], "median": tokens[2], "max": tokens[3]}},     # the upper median of 4
        {"name": "empty", "kind": "mathqa", "requested": 0, "rows": 0, "share": 0.0, "input": str(path),
         "input_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "prompt_tokens": None},
    ]
    assert card["length_histograms"] == ["m.parquet.lengths.bk.png", "m.parquet.lengths.essays.png",
                                         "m.parquet.lengths.sums.png"]


def test_mix_rows_are_shuffled_by_the_recipe_seed(hotpot_jsonl, tmp_path):
    path, ids, _ = hotpot_jsonl                      # a QA part makes its rows in file order, whatever the seed

    def order(**seed) -> list[str]:
        recipe = _recipe(tmp_path, tokenizer=QWEN, max_prompt_tokens=4096, system_prompt="none",
                         parts=[{"name": "qa", "kind": "qa", "source": "jsonl", "input": path, "size": 4}], **seed)
        build_mix(recipe, str(tmp_path / "m.parquet"))
        return [r["extra_info"]["id"] for r in read_rows(str(tmp_path / "m.parquet"))]

    three = order(seed=3)
    assert sorted(three) == sorted(ids[:4]) and three != ids[:4]
    assert order(seed=4) != three and order() == order(seed=0)                   # no seed is seed 0


def test_mix_defaults_its_tokenizer_and_reuses_a_leftover_scratch_folder(tmp_path):
    from loongrl.data.tokens import default_tokenizer

    path, _ = _sums_file(tmp_path)
    out = tmp_path / "m.parquet"
    (tmp_path / "m.parquet.parts").mkdir()                   # left behind by an interrupted run
    recipe = _recipe(tmp_path, system_prompt="none", parts=[{"name": "sums", "kind": "mathqa", "input": path, "size": 1}])
    card = build_mix(recipe, str(out))
    assert card["tokenizer"] == default_tokenizer() and card["rows"] == 1
    assert not (tmp_path / "m.parquet.parts").exists()


def test_question_disjointness_covers_the_qa_and_keychain_parts_only(tmp_path):
    """Two MathQA parts drawn from one file repeat problems: that is not a QA question asked twice."""
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "Problem": f"what is {i} + {i} ?", "options": OPTIONS,
                                        "correct": "a"}) + "\n" for i in range(3)))
    recipe = _mix(tmp_path, [{"name": "a", "kind": "mathqa", "input": str(path), "size": 3},
                             {"name": "b", "kind": "mathqa", "input": str(path), "size": 3}], max_prompt_tokens=1024)
    card = build_mix(recipe, str(tmp_path / "m.parquet"))
    assert card["rows"] == 6 and card["qa_questions_disjoint"]


def test_mix_recipes_are_read_as_utf8_whatever_the_locale(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("# Teile: Zürich, 東京\n" + yaml.safe_dump({"parts": _parts({"size": 2})}), encoding="utf-8")
    with ascii_locale():   # open() without encoding="utf-8" could not read the accents
        recipe = load_mix_recipe(str(path))
    assert [p["size"] for p in recipe["parts"]] == [2]
