"""`loongrl reproduce`: the shipped experiments' plans, validation errors that name file and field, and the CPU
miniature end to end on real parts (SmolLM2-135M-Instruct, shipped sources, TRL, our eval), sliced to the suite's
budget: a first run does every step, a second finds every step cached, a changed evaluation setting reruns only
evaluate and report."""

from __future__ import annotations

import glob
import os
import re

import pytest
import yaml

from conftest import REPO, read_rows

from loongrl.cli import main
from loongrl.experiment.config import ExperimentError, load_experiment
from loongrl.experiment.steps import STEPS, Paths, load_training_recipe, reproduce

EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "*.yaml")))
MINI = os.path.join(REPO, "experiments", "cpu-mini.yaml")


def test_shipped_experiments_exist():
    names = {os.path.basename(p) for p in EXPERIMENTS}
    assert {"loongrl-7b.yaml", "qwenlong-l1-32b.yaml", "cpu-mini.yaml"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_dry_run_lists_every_step_and_every_training_file_is_produced(path, tmp_path, capsys):
    work = str(tmp_path / "work")
    assert main(["reproduce", path, "--dry-run", "--work", work]) == 0
    out = capsys.readouterr().out
    headers = re.findall(r"^\[reproduce\] (\w+): (would run|not in this experiment)", out, re.M)
    assert [h[0] for h in headers] == list(STEPS)
    assert not os.path.exists(work)  # a dry run writes nothing
    # every file the recipe trains on is the output of a command the synthesis or mix step prints
    blocks = dict(re.findall(r"^\[reproduce\] (\w+): [^\n]*\n((?:    [^\n]*\n)*)", out, re.M))
    made = blocks["synthesis"] + blocks["mix"]
    recipe = load_training_recipe(load_experiment(path), Paths(work))
    files = [c.path for s in recipe.stages for c in s.spec.data.components]
    assert files
    for f in files:
        shown = "|".join(re.escape(p) for p in (f, os.path.relpath(f)))  # printed relative when under the cwd
        assert re.search(rf"(--out|^    cp \S+) ({shown})(\s|$)", made, re.M), (f, made)


def test_until_stops_after_a_step_and_only_needs_the_steps_before_it_done(tmp_path, capsys):
    work = str(tmp_path / "work")
    assert main(["reproduce", MINI, "--dry-run", "--until", "mix", "--work", work]) == 0
    assert re.findall(r"^\[reproduce\] (\w+):", capsys.readouterr().out, re.M) == ["data", "filter", "synthesis", "mix"]
    assert main(["reproduce", MINI, "--only", "evaluate", "--work", work]) == 2
    assert re.search(r"--only evaluate: step data before it is not done with these settings", capsys.readouterr().err)
    assert not os.path.exists(os.path.join(work, "stamps", "evaluate.json"))


def test_a_recipe_reading_a_file_no_step_writes_is_refused(tmp_path):
    exp = load_experiment(os.path.join(REPO, "experiments", "loongrl-7b.yaml"),
                          {"train.recipe": os.path.join(REPO, "recipes", "loongrl-7b.yaml")})
    with pytest.raises(ExperimentError, match=r"loongrl-7b.yaml: train.recipe: stage 'stage1' trains on "
                                              r".*keychain_hotpotqa.parquet, which no step writes"):
        reproduce(exp, str(tmp_path), dry_run=True)


@pytest.mark.parametrize("edit, message", [
    (lambda raw: raw["parts"][0].update(kind="kc"), r"parts\[0\]\.kind: 'kc' is not one of"),
    (lambda raw: raw["evaluate"].update(nia={}), r"evaluate\.nia: unknown key"),
    (lambda raw: raw["parts"][1].update(source="squad"), r"parts\[1\]\.source: 'squad' is not one of the sources"),
    (lambda raw: raw["evaluate"].update(rows=["nope"]), r"evaluate\.rows\[0\]: 'nope' is not a part"),
])
def test_validation_errors_name_the_file_and_the_field(tmp_path, edit, message):
    with open(MINI, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    edit(raw)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ExperimentError, match=rf"^{re.escape(str(bad))}: {message}"):
        load_experiment(str(bad))


# ------------------------------------------------------------------------------------ the miniature, sliced
SLICE = {  # tiny counts, one training step, a tiny evaluation; no filter (its server is tested elsewhere)
    "filter": None,
    "parts": [
        {"name": "heldout_keychain_1536", "kind": "keychain", "source": "hotpotqa", "num": 2, "max_prompt_tokens": 1536,
         "hops": 2, "num_chains": 2, "split": "test", "seed": 1},
        {"name": "heldout_keychain_2048", "kind": "keychain", "source": "hotpotqa", "num": 2, "max_prompt_tokens": 2048,
         "hops": 2, "num_chains": 2, "split": "test", "seed": 1},
        {"name": "heldout_qa_2048", "kind": "qa", "source": "hotpotqa", "num": 2, "max_prompt_tokens": 2048,
         "split": "test", "seed": 1},
    ],
    "mix.total": 2,
    "mix.parts": [
        {"name": "keychain_hotpotqa", "kind": "keychain", "source": "hotpotqa", "ratio": 0.5, "hops": 2, "num_chains": 2},
        {"name": "qa_2wikimqa", "kind": "qa", "source": "2wikimqa", "ratio": 0.5},
    ],
    "evaluate.rows": ["heldout_keychain_1536", "heldout_keychain_2048"],  # heldout_qa_2048: disjointness only
    "evaluate.ruler": None,  # its path is `loongrl eval ruler`'s, tested there; the full miniature runs it
    "evaluate.niah": {"min_len": 600, "max_len": 600, "num_lengths": 1, "num_depths": 2},
    "evaluate.max_new_tokens": 8,
    "evaluate.rows_max_new_tokens": 8,
}


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory, smollm2):
    """The first run of the sliced miniature: (work folder, overrides, messages, results)."""
    import torch

    d = tmp_path_factory.mktemp("mini")
    with open(os.path.join(REPO, "recipes", "reproduce-cpu-mini.yaml"), encoding="utf-8") as f:
        recipe = yaml.safe_load(f)
    recipe["model"] = smollm2
    recipe["stages"][0]["rl"].update(steps=1, save_every=1, max_response_tokens=8)
    (d / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    overrides = dict(SLICE, tokenizer=smollm2, **{"train.recipe": str(d / "recipe.yaml")})
    work, messages = str(d / "work"), []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores
    try:
        results = reproduce(load_experiment(MINI, overrides), work, log=messages.append)
    finally:
        torch.set_num_threads(threads)
    return work, overrides, messages, results


def _statuses(results) -> dict:
    return {r.step: r.status for r in results}


def test_miniature_runs_end_to_end_and_writes_the_report(mini_run):
    work, _, messages, results = mini_run
    assert _statuses(results) == {"data": "ran", "filter": "skipped", "synthesis": "ran", "mix": "ran",
                                  "train": "ran", "evaluate": "ran", "report": "ran"}
    for step in ("data", "synthesis", "mix", "train", "evaluate", "report"):
        assert os.path.isfile(os.path.join(work, "stamps", f"{step}.json"))
    report = open(os.path.join(work, "report", "report.md"), encoding="utf-8").read()
    # base and trained side by side: a held-out table row per part, NIAH rows for both models
    for part in SLICE["evaluate.rows"]:
        assert re.search(rf"^\| {part} \| \w+ \| \d+ \| [\d.]+ \| [\d.]+ \|$", report, re.M), part
    for model in ("base", "trained"):
        assert re.search(rf"^\| {model} \(cpu-mini\) \| ours \| [\d.]+ \|", report, re.M), model
        assert os.path.isfile(os.path.join(work, "report", f"niah_{model}.png"))
    assert os.path.isfile(os.path.join(work, "report", "heldout_by_length.png"))
    assert "Questions shared between parts: none" in report
    # the trained model is the TRL checkpoint of the recipe's one stage
    assert os.path.isfile(os.path.join(work, "train", "00_grpo", "checkpoint", "config.json"))


def test_no_question_shared_between_parts_and_lengths(mini_run):
    """Read independently of the overlap check the report uses: every row's id and normalised question."""
    work = mini_run[0]
    files = sorted(glob.glob(os.path.join(work, "data", "*.parquet")))
    assert len(files) == 4  # three held-out parts and the mixture
    seen: dict[str, str] = {}
    for path in files:
        rows = [r for r in read_rows(path) if r["extra_info"]["kind"] in ("keychain", "qa")]
        assert rows, path
        for r in rows:
            for key in (r["extra_info"]["id"], " ".join(r["extra_info"]["question"].split()).lower()):
                assert seen.setdefault(key, path) == path, f"{key!r} in {seen[key]} and {path}"


def test_second_run_is_cached_and_an_eval_setting_reruns_only_evaluate_and_report(mini_run, capsys):
    work, overrides, _, _ = mini_run
    messages = []
    results = reproduce(load_experiment(MINI, overrides), work, log=messages.append)
    assert set(_statuses(results).values()) == {"cached", "skipped"}
    assert [m for m in messages if "cached (hash" in m] == [
        f"[reproduce] {s}: cached (hash {r.hash})" for s, r in zip(STEPS, results) if s != "filter"]
    assert not any("running" in m for m in messages)

    changed = dict(overrides, **{"evaluate.niah": dict(overrides["evaluate.niah"], num_depths=3)})
    capsys.readouterr()
    results = reproduce(load_experiment(MINI, changed), work, log=messages.append)
    printed = capsys.readouterr().out
    assert _statuses(results) == {"data": "cached", "filter": "skipped", "synthesis": "cached", "mix": "cached",
                                  "train": "cached", "evaluate": "ran", "report": "ran"}
    # within evaluate only the NIAH jobs ran again, on the new grid (3 depths)
    import json

    for model in ("base", "trained"):
        assert f"{model} niah: loongrl eval niah" in printed
        assert f"{model} rows_heldout_keychain_2048: finished earlier" in printed
        niah = json.load(open(os.path.join(work, "eval", model, "niah", "niah.json")))["summary"]
        assert len(niah["depths"]) == 3
