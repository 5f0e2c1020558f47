"""End to end on CPU with a tiny model: SFT -> GRPO -> hard mining -> GRPO -> retrospective GRPO, a few
steps each, then resume: a data file missing at first stops the run before any stage trains (checks before
launch); the stages before it run, and the rerun with the file skips them."""

from __future__ import annotations

import csv
import json
import os

import pytest

from conftest import read_rows

from loongrl.demo import prepare_recipe
from loongrl.demo.task import make_demo_data
from loongrl.train.checks import CheckError
from loongrl.train.orchestrate import run_recipe
from loongrl.train.recipe import parse_recipe

pytestmark = pytest.mark.slow  # TRL training: left out of mutation runs


def _recipe(data: dict, model: str, late_file: str) -> dict:
    rl = {"data": {"components": [{"path": data["rl"]}]}, "group_size": 2, "kl_coef": 0.001, "batch_size": 2,
          "steps": 2, "max_prompt_tokens": 400, "max_response_tokens": 32, "temperature": 1.0,
          "optim": {"learning_rate": 1e-3}, "reward_kwargs": {"word_boundary": True}}
    sampling = {"k": 2, "temperature": 1.0, "max_new_tokens": 32, "backend": "transformers", "batch_size": 16}
    return {
        "name": "mini", "model": model, "seed": 0,
        "tiny_model": {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1},
        "eval": [{"name": "eval_1x", "path": data["eval_1x"], "max_new_tokens": 8}],
        "stages": [
            {"name": "sft", "sft": {"data": {"components": [{"path": data["sft"]}]}, "batch_size": 4,
                                    "micro_batch_size": 4, "steps": 120, "max_length": 256,
                                    "optim": {"learning_rate": 1e-2}}},
            {"name": "grpo1", "rl": rl},
            {"name": "grpo2", "rl": {**rl, "data": {"components": []},
                                     "transition": {"hard_mining": {"sampling": sampling}}}},
            {"name": "phase2", "rl": {**rl, "data": {"components": [{"path": late_file}]},
                                      "transition": {"retrospective": {"sampling": sampling, "hard_threshold": 0.5,
                                                                       "carry_share": 0.5}}}},
        ],
    }


ALWAYS = "<think>a</think> \\boxed{river}"


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """Demo rows where the SFT stage teaches one fixed answer, "river", and half the RL items (the even
    rows) have that gold: the model then solves exactly those, so mining has something to drop."""
    from loongrl.data.io import iter_rows, write_rows

    d = tmp_path_factory.mktemp("demo")
    data = make_demo_data(str(d / "data"), seed=0, num_sft=24, num_rl=12, num_eval=6, num_chains=2, hops=1)
    write_rows(data["sft"], [dict(r, completion=[{"role": "assistant", "content": ALWAYS}]) for r in iter_rows(data["sft"])])
    rl = list(iter_rows(data["rl"]))
    for i, row in enumerate(rl):
        row["reward_model"]["ground_truth"] = ["river" if i % 2 == 0 else "stone"]
    write_rows(data["rl"], rl)
    return data, d, {r["extra_info"]["id"] for i, r in enumerate(rl) if i % 2 == 0}


def _mtimes(folder):
    return {os.path.join(r, f): os.path.getmtime(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs}


def test_multi_stage_run_and_resume(demo_files):
    data, d, river = demo_files
    late = str(d / "late.parquet")  # phase2's data: absent on the first run, so phase2 fails for real
    raw = _recipe(data, str(d / "model"), late)
    recipe = parse_recipe(raw, "mini.yaml", str(d))
    prepare_recipe(recipe)  # the tiny model, as `python -m loongrl.demo` makes it before training
    out = str(d / "run")
    with pytest.raises(CheckError, match=r"phase2: data file not found: .*late.parquet"):
        run_recipe(recipe, out)  # refused before any stage trains (checks before launch)
    assert not os.path.exists(os.path.join(out, "00_sft"))
    run_recipe(parse_recipe(dict(raw, stages=raw["stages"][:3]), "mini.yaml", str(d)), out)  # the stages before it
    names = ["00_sft", "01_grpo1", "02_grpo2"]
    for n in names:
        assert json.load(open(os.path.join(out, n, "manifest.json")))["status"] == "completed"
    assert not os.path.exists(os.path.join(out, "03_phase2", "manifest.json"))
    before = {n: _mtimes(os.path.join(out, n)) for n in names}

    # mining: grpo2 trained on the grpo1 rows not solved in both samples, with counts by reason
    m1 = json.load(open(os.path.join(out, "01_grpo1", "manifest.json")))
    m2 = json.load(open(os.path.join(out, "02_grpo2", "manifest.json")))
    tr = m2["data_stats"]["transition"]
    assert tr["kind"] == "hard_mining" and tr["input"] == m1["data"]["rows"] == 12
    assert tr["kept"] + tr["dropped_solved"] == 12 and m2["data"]["rows"] == tr["kept"]
    # the model answers "river" to everything: the six "river" items are solved 2/2 and dropped, the rest kept
    items = [json.loads(line) for line in open(os.path.join(out, "02_grpo2", "transition_items.jsonl"))]
    assert {i["id"] for i in items if i["mean_acc"] == 1.0} == river and {i["mean_acc"] for i in items} == {0.0, 1.0}
    assert (tr["kept"], tr["dropped_solved"]) == (6, 6)
    mined = read_rows(os.path.join(out, "02_grpo2", "data.parquet"))
    assert len(mined) == 6 and not {r["extra_info"]["id"] for r in mined} & river
    assert os.path.isfile(os.path.join(out, "02_grpo2", "transition_stats.json"))
    assert m2["inputs"]["model"] == m1["checkpoint"]  # sampled and trained from the previous checkpoint
    assert m1["metrics"]["steps"] == 2 and "reward" in m1["metrics"] and "kl" in m1["metrics"]

    os.link(data["rl"], late)  # the missing input appears; the whole recipe resumes at phase2
    report = run_recipe(parse_recipe(raw, "mini.yaml", str(d)), out)
    for n in names:
        assert _mtimes(os.path.join(out, n)) == before[n], f"{n} was re-run"
    m3 = json.load(open(os.path.join(out, "03_phase2", "manifest.json")))
    tr3 = m3["data_stats"]["transition"]
    assert tr3["kind"] == "retrospective" and tr3["new"] == 12 and m3["data"]["rows"] == 12 + tr3["carried"]
    assert tr3["hard"] == tr3["carried"] == 6                     # grpo2's items all score 0: all hard, all carried
    assert [s["after"] for s in report["stages"]] == ["init", "sft", "grpo1", "grpo2", "phase2"]
    assert all("eval_1x" in s["eval"] for s in report["stages"])
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {r["stage"] for r in rows} == {"sft", "grpo1", "grpo2", "phase2"}
    steps = [int(float(r["global_step"])) for r in rows]
    assert steps == sorted(steps)  # one global step axis across stages
    assert os.path.isfile(os.path.join(out, "curves.png")) and os.path.isdir(os.path.join(out, "tb"))

    # a changed stage config invalidates that stage and the later ones only
    raw["stages"][3]["rl"]["steps"] = 1
    run_recipe(parse_recipe(raw, "mini.yaml", str(d)), out)
    assert _mtimes(os.path.join(out, "02_grpo2")) == before["02_grpo2"]
    assert json.load(open(os.path.join(out, "03_phase2", "manifest.json")))["metrics"]["steps"] == 1


def test_cli_resumes_unless_told_not_to(demo_files, tmp_path):
    import yaml

    from loongrl.cli import main
    from loongrl.demo.__main__ import main as demo_main

    data, d, _ = demo_files
    recipe = {"name": "one", "model": str(d / "model_cli"), "seed": 0,
              "tiny_model": {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1},
              "stages": [{"name": "sft", "sft": {"data": {"components": [{"path": data["sft"]}]}, "batch_size": 4,
                                                 "micro_batch_size": 4, "steps": 1, "max_length": 256}}]}
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = str(tmp_path / "run")
    assert main(["train", str(path), "--out", out]) == 2       # no model yet: the demo makes it, not training
    assert demo_main([str(path)]) == 0
    manifest = os.path.join(out, "00_sft", "manifest.json")
    assert main(["train", str(path), "--out", out]) == 0
    first = os.stat(manifest).st_mtime_ns
    assert main(["train", str(path), "--out", out]) == 0 and os.stat(manifest).st_mtime_ns == first   # resumed
    assert main(["train", str(path), "--out", out, "--no-resume"]) == 0
    assert os.stat(manifest).st_mtime_ns != first                                                   # trained again


def test_same_seed_same_numbers(demo_files):
    """Two runs of the same recipe and seed on this machine: identical per-step metrics, held-out accuracy and
    weights after every stage (mining included: its samples are seeded too)."""
    data, d, _ = demo_files
    raw = _recipe(data, str(d / "model_det"), data["rl"])
    raw["stages"] = raw["stages"][:3]  # sft, grpo1, mining + grpo2
    outs = [str(d / f"det{i}") for i in range(2)]
    prepare_recipe(parse_recipe(raw, "mini.yaml", str(d)))
    reports = [run_recipe(parse_recipe(raw, "mini.yaml", str(d)), out, resume=False) for out in outs]
    assert [s["eval"] for s in reports[0]["stages"]] == [s["eval"] for s in reports[1]["stages"]]
    assert open(os.path.join(outs[0], "metrics.csv")).read() == open(os.path.join(outs[1], "metrics.csv")).read()
    for stage in ("00_sft", "01_grpo1", "02_grpo2"):
        a, b = (open(os.path.join(o, stage, "checkpoint", "model.safetensors"), "rb").read() for o in outs)
        assert a == b, stage
    # the multi-seed summary of `make demo` over these two runs: spread 0, a row per stage, the plot
    from loongrl.demo import seeds

    assert seeds.main([*outs, "--out", str(d / "seeds")]) == 0
    table = open(d / "seeds" / "seeds.md").read().splitlines()
    acc = reports[0]["stages"][-1]["eval"]["eval_1x"]["acc"]
    assert table[-1].startswith("| grpo2 (rl, 2 steps); mining kept ")
    assert table[-1].endswith(f"| {acc:.3f} ± 0.000 [{acc:.3f}, {acc:.3f}] |")
    assert len(table) == 4 + 4 and (d / "seeds" / "seeds.png").stat().st_size > 10_000
