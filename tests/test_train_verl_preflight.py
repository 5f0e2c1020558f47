"""verl for real, on this CPU: `loongrl train --backend verl --preflight` of demo-cpu (SFT -> GRPO -> hard
mining -> GRPO) plus a DAPO stage with the overlong buffer and group filtering (demo-cpu has none), each
through verl's own trainer, checked from verl's own logs and dumps.

A random model scores 0 everywhere, so GRPO's advantages are 0 and DAPO's filter never fills a batch; the
run starts from a tiny model taught the demo task's answer format with TRL first (a minute or two), so
rewards vary for real. Marked `verl_cpu`: about 6-8 minutes on the 2-core machine
(`pytest -m "not verl_cpu"` skips it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict

import pytest
import yaml

pytest.importorskip("verl", reason="verl is not installed (pip install '.[verl]')")

from loongrl.demo import prepare_recipe  # noqa: E402
from loongrl.rewards.router import compute_score  # noqa: E402
from loongrl.train.orchestrate import run_recipe  # noqa: E402
from loongrl.train.recipe import parse_recipe  # noqa: E402

pytestmark = pytest.mark.verl_cpu
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SFT_STEPS = 150  # TRL steps that teach the tiny model the answer format (accuracy a few %: rewards vary)
STAGES = ["sft", "stage1", "stage2", "dapo"]


def _recipe(demo_dir: str) -> dict:
    """demo-cpu as shipped (its placeholders resolved to `demo_dir`), smaller data, plus a DAPO stage."""
    text = open(os.path.join(REPO, "recipes", "demo-cpu.yaml")).read()
    text = text.replace("${LOONGRL_DEMO_DIR:-../demo_out/train}", demo_dir)
    raw = yaml.safe_load(re.sub(r"\$\{[A-Za-z_]\w*:-([^}]*)\}", r"\1", text))  # other placeholders: defaults
    raw["demo_data"].update(num_sft=8 * SFT_STEPS, num_rl=64, num_eval=8)
    # responses of the taught model are ~12 tokens: a 16-token cap with an 8-token buffer shapes most of them
    dapo = dict(raw["stages"][1]["rl"], algorithm="dapo", max_response_tokens=16,
                overlong_buffer={"length": 8, "penalty_factor": 1.0})
    raw["stages"].append({"name": "dapo", "rl": dapo})
    return raw


@pytest.fixture(scope="module")
def preflight_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("verl_preflight")
    raw = _recipe(str(d / "demo"))
    recipe_file = d / "demo-cpu-dapo.yaml"
    recipe_file.write_text(yaml.safe_dump(raw))
    # the starting model: demo-cpu's tiny model after SFT_STEPS of TRL on the gold traces
    teach = dict(raw, name="teach", eval=[], stages=[raw["stages"][0]])
    teach["stages"][0] = {"name": "sft", "sft": dict(raw["stages"][0]["sft"], epochs=1, batch_size=8, micro_batch_size=8,
                                                     optim={"learning_rate": 3.0e-3, "lr_scheduler": "constant"})}
    teach = parse_recipe(teach, "teach.yaml", str(d))
    prepare_recipe(teach)  # the demo's data and tiny model, as `python -m loongrl.demo` makes them
    run_recipe(teach, str(d / "teach"))
    model = str(d / "teach" / "00_sft" / "checkpoint")
    out = d / "preflight"
    cwd = d / "cwd"  # where the run is launched from: verl's loggers must write nothing here
    cwd.mkdir()
    proc = subprocess.run([sys.executable, "-m", "loongrl.cli", "train", str(recipe_file), "--backend", "verl",
                           "--preflight", "--preflight-model", model, "--out", str(out), "--stage-timeout", "600"],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=1500,
                          cwd=cwd)
    report = json.loads((out / "preflight.json").read_text()) if (out / "preflight.json").exists() else None
    return proc, report, out, model


def _reward_kwargs():
    """The scorer options of demo-cpu's RL stages (as verl received them)."""
    return _recipe("")["stages"][1]["rl"]["reward_kwargs"]


def _stage_dir(out, i):
    return out / "run" / f"{i:02d}_{STAGES[i]}"


def _jsonl(path):
    return [json.loads(line) for line in open(path)]


def _dumps(sdir):
    rows = []
    for f in sorted(os.listdir(sdir / "rollouts")):
        rows += _jsonl(sdir / "rollouts" / f)
    return rows


def test_every_stage_passes_through_verls_trainer(preflight_run):
    proc, report, out, model = preflight_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [s["stage"] for s in report["stages"]] == STAGES
    assert [s["status"] for s in report["stages"]] == ["passed"] * 4, report  # DAPO ran its steps, not the cap
    for line in ("stage sft (sft): passed", "stage dapo (rl): passed", "demo-cpu: PASSED"):
        assert line in proc.stdout
    for i, stage in enumerate(STAGES):
        metrics = _jsonl(_stage_dir(out, i) / "verl_metrics.jsonl")  # verl's own file logger
        assert [m["step"] for m in metrics] == [1, 2], stage
        # verl's Hydra apps write their run folder into the stage folder, not outputs/ in the caller's cwd
        assert (_stage_dir(out, i) / "hydra" / ".hydra" / "config.yaml").is_file(), stage


def test_rewards_reached_the_trainer(preflight_run):
    _, _, out, _ = preflight_run
    for i in (1, 2):  # GRPO stages, naive reward manager: verl's score is our scorer's, sample by sample
        sdir = _stage_dir(out, i)
        dumps = _dumps(sdir)
        assert len(dumps) == 2 * 4 * 8  # 2 steps x 4 prompts x group of 8
        for row in dumps:
            ours = compute_score("keychain_demo", row["output"], row["gts"], **_reward_kwargs())
            assert row["score"] == pytest.approx(ours["score"]), row
        metrics = _jsonl(sdir / "verl_metrics.jsonl")
        per_step = defaultdict(list)
        for row in dumps:
            per_step[row["step"]].append(row["score"])
        for m in metrics:
            assert m["data"]["critic/score/mean"] == pytest.approx(sum(per_step[m["step"]]) / len(per_step[m["step"]]))
    assert any(row["score"] == 1.0 for i in (1, 2) for row in _dumps(_stage_dir(out, i)))  # rewards vary for real


def test_dapo_trained_only_on_groups_with_reward_variance_and_the_overlong_penalty(preflight_run):
    _, _, out, _ = preflight_run
    sdir = _stage_dir(out, 3)
    config = json.loads((sdir / "verl_config.json").read_text())
    fg = {k: v for k, v in config["algorithm"]["filter_groups"].items() if k != "_target_"}
    assert fg == {"enable": True, "metric": "acc", "max_num_gen_batches": 0, "max_inflight_gen_batches": 3}
    assert config["trainer"]["v1"]["sampler"]["custom_sampler"]["name"] == "CappedDAPOReplayBuffer"
    assert config["reward"]["reward_manager"]["name"] == "dapo"
    groups = defaultdict(list)
    penalised = 0
    for row in _dumps(sdir):
        rule = compute_score("keychain_demo", row["output"], row["gts"], **_reward_kwargs())
        groups[(row["step"], row["uid"].rsplit("_", 2)[0])].append(rule["acc"])
        # DAPO's overlong shaping: min(-(length - (16 - 8)) / 8, 0), so 0 down to -1 in steps of 1/8
        penalty = row["score"] - rule["score"]
        assert -1.0 - 1e-6 <= penalty <= 1e-6 and abs(penalty * 8 - round(penalty * 8)) < 1e-4, row
        penalised += penalty < 0
    assert len(groups) == 2 * 4 and all(len(g) == 8 for g in groups.values())
    assert all(0 < sum(g) < len(g) for g in groups.values()), groups  # the filter kept only mixed groups
    assert penalised > 0  # responses ran into the overlong buffer and were penalised
    metrics = _jsonl(sdir / "verl_metrics.jsonl")
    assert sum(m["data"].get("training/filter_groups/evicted_samples", 0) for m in metrics) > 0  # filtered for real


def test_each_stage_started_from_the_previous_merged_checkpoint(preflight_run):
    _, _, out, model = preflight_run
    previous = model
    for i, stage in enumerate(STAGES):
        sdir = _stage_dir(out, i)
        config = json.loads((sdir / "verl_config.json").read_text())
        path = config["model"]["path"] if stage == "sft" else config["actor_rollout_ref"]["model"]["path"]
        assert path == str(previous), stage
        assert (sdir / "checkpoint" / "model.safetensors").is_file()  # verl.model_merger's HF output
        previous = sdir / "checkpoint"


def test_hard_mining_ran_between_the_grpo_stages(preflight_run):
    _, _, out, _ = preflight_run
    stats = json.loads((_stage_dir(out, 2) / "transition_stats.json").read_text())
    stage1 = json.loads((_stage_dir(out, 1) / "manifest.json").read_text())
    stage2 = json.loads((_stage_dir(out, 2) / "manifest.json").read_text())
    assert stats["kind"] == "hard_mining" and stats["model"] == stage1["checkpoint"]
    assert stats["input"] == stage1["data"]["rows"] == stats["kept"] + stats["dropped_solved"]
    assert stage2["data"]["rows"] == stats["kept"]


def test_no_emitted_key_was_ignored_overridden_or_warned_about(preflight_run):
    from loongrl.train import preflight

    _, _, out, _ = preflight_run
    for i, stage in enumerate(STAGES):
        sdir = _stage_dir(out, i)
        cmds = json.loads((sdir / "manifest.json").read_text())["commands"]
        cpu = json.loads((sdir / "preflight_overrides.json").read_text())["cpu_overrides"]
        dumped = json.loads((sdir / "verl_config.json").read_text())
        assert preflight.contract_violations(cmds, cpu, dumped, str(sdir / "verl.log")) == [], stage
        # verl's DAPO knobs that v1 ignores or overrides are not among what we emit
        assert not any("max_num_gen_batches" in o or "gen_batch_size" in o for o in cmds["overrides"])


def test_no_ray_process_left_behind(preflight_run):
    import psutil

    _, report, _, _ = preflight_run
    assert report["processes"], "the preflight recorded no processes"
    alive = []
    for pid, started in report["processes"]:
        try:
            if psutil.Process(pid).create_time() == started:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    assert alive == []


def _csv(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_each_stage_writes_our_metrics_from_verls_log(preflight_run):
    """NN_stage/metrics.csv in our column names, from verl's file logger; the rewards are the mean score of
    the stage's rollout dumps (verl's own record of each sample), steps numbered across the stages."""
    _, _, out, _ = preflight_run
    for i, stage in enumerate(STAGES):
        sdir = _stage_dir(out, i)
        rows = _csv(sdir / "metrics.csv")
        assert [(r["stage"], r["step"], r["global_step"]) for r in rows] == [
            (stage, "1", str(2 * i + 1)), (stage, "2", str(2 * i + 2))], stage
        summary = json.loads((sdir / "manifest.json").read_text())["metrics"]
        assert summary["steps"] == 2, stage
        if stage == "sft":
            assert "reward" not in rows[0] and all(0 < float(r["loss"]) < 20 for r in rows)
            assert float(rows[0]["learning_rate"]) > 0 and summary["loss"]["first"] == float(rows[0]["loss"])
            continue
        per_step = defaultdict(list)
        for row in _dumps(sdir):
            per_step[row["step"]].append(row["score"])
        for r in rows:
            scores = per_step[int(r["step"])]
            assert float(r["reward"]) == pytest.approx(sum(scores) / len(scores)), (stage, r)
            assert 0 < float(r["response_length"]) <= 32 and float(r["learning_rate"]) > 0, (stage, r)
            assert {"kl", "entropy", "loss"} <= set(r), (stage, r)
        assert summary["reward"]["last"] == pytest.approx(float(rows[-1]["reward"]))


def test_tensorboard_logs_land_in_the_run_folder_not_the_launch_directory(preflight_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, out, _ = preflight_run
    launch = out.parent / "cwd"
    assert list(launch.iterdir()) == []  # no ./tensorboard_log (verl's default) nor any other file
    events = sorted(out.rglob("events.out.tfevents*"))
    assert {p.parent for p in events} == {out / "run" / "tb" / f"{i:02d}_{s}" for i, s in enumerate(STAGES)}
    for i, stage in enumerate(STAGES):
        acc = EventAccumulator(str(out / "run" / "tb" / f"{i:02d}_{stage}")).Reload()
        key = "train/loss" if stage == "sft" else "critic/score/mean"  # verl's own names, its own writer
        assert [e.step for e in acc.Scalars(key)] == [1, 2], stage


def test_the_recipe_gets_the_run_metrics_and_report(preflight_run):
    _, _, out, _ = preflight_run
    run = out / "run"
    rows = _csv(run / "metrics.csv")
    assert [float(r["global_step"]) for r in rows] == list(range(1, 9))
    assert [r["stage"] for r in rows] == [s for s in STAGES for _ in range(2)]
    report = (run / "report.md").read_text()
    assert "No held-out evaluation ran" in report and "![reward and response length per step](curves.png)" in report
    for stage in STAGES:
        assert f"| {stage} | {'sft' if stage == 'sft' else 'rl'} | 2 |" in report
    assert "Transition before `stage2` (hard_mining)" in report
    assert (run / "curves.png").stat().st_size > 10_000
    assert [s["steps"] for s in json.loads((run / "report.json").read_text())["stages"]] == [0, 2, 2, 2, 2]
