"""Steps trained are a fact, and a crash costs only the steps since the last checkpoint (issue 19).

TRL: `loongrl train` of a tiny SFT -> GRPO recipe is SIGKILLed mid-stage, twice, and rerun; it continues from
each stage's last checkpoint and ends where an uninterrupted run of the same recipe ends. verl (its real
trainers on this CPU, through the preflight): an SFT stage whose pool is too small for its steps under
verl's default epoch cap trains them all; one held to fewer steps is not marked complete; one killed after
its first checkpoint resumes from it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from loongrl.demo import prepare_recipe
from loongrl.demo.task import make_demo_data
from loongrl.train.recipe import load_recipe

pytestmark = pytest.mark.slow  # TRL / verl training

# `loongrl train` as the CLI runs it, with two observers in TRL's step loop (transformers' DefaultFlowCallback,
# which every Trainer has): RECORD appends "<stage folder> <step>" for every optimiser step this process
# trains; PAUSE_AT=<stage folder>:<step> writes PAUSE_AT's marker after that step and waits to be killed.
DRIVER = r"""
import os, sys, time
from transformers import trainer_callback

step_end = trainer_callback.DefaultFlowCallback.on_step_end

def on_step_end(self, args, state, control, **kwargs):
    where = f"{os.path.basename(args.output_dir)}:{state.global_step}"
    if os.environ.get("RECORD"):
        with open(os.environ["RECORD"], "a") as f:
            f.write(where.replace(":", " ") + "\n")
    if where == os.environ.get("PAUSE_AT"):
        open(os.environ["MARKER"], "w").close()
        time.sleep(3600)
    return step_end(self, args, state, control, **kwargs)

trainer_callback.DefaultFlowCallback.on_step_end = on_step_end
from loongrl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _wait_for(path, proc: subprocess.Popen, ended: str) -> None:
    """Until `path` exists; `proc` exiting first fails with `ended` and its output. Not a timing: the wait ends
    at the file or at the exit."""
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"{ended}:\n{proc.stdout.read()[-3000:]}")
        try:
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture(scope="module")
def trl_recipe(tmp_path_factory):
    """SFT 10 steps (save every 3: checkpoints 3, 6, 9, 10; two kept), then GRPO 3 RL steps of 2 optimiser
    updates each (mini-batch 2 of 4 prompts; save every RL step = every 2 optimiser steps)."""
    d = tmp_path_factory.mktemp("resume")
    data = make_demo_data(str(d / "data"), seed=0, num_sft=24, num_rl=12, num_eval=4, num_chains=2, hops=1)
    rl = {"data": {"components": [{"path": data["rl"]}]}, "group_size": 2, "batch_size": 4, "mini_batch_size": 2,
          "steps": 3, "save_every": 1, "max_prompt_tokens": 400, "max_response_tokens": 16,
          "optim": {"learning_rate": 1e-3}, "reward_kwargs": {"word_boundary": True}}
    raw = {"name": "resume", "model": str(d / "model"), "seed": 0,
           "tiny_model": {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1},
           "eval": [{"name": "eval_1x", "path": data["eval_1x"], "max_new_tokens": 8}],
           "stages": [{"name": "sft", "sft": {"data": {"components": [{"path": data["sft"]}]}, "batch_size": 4,
                                              "micro_batch_size": 4, "steps": 10, "save_every": 3, "max_length": 256,
                                              "optim": {"learning_rate": 1e-2}}},
                      {"name": "grpo", "rl": rl}]}
    path = d / "resume.yaml"
    path.write_text(yaml.safe_dump(raw))
    prepare_recipe(load_recipe(str(path)))  # the tiny model, as `python -m loongrl.demo` makes it
    return d, str(path)


def _train(recipe: str, out: str, env: dict, pause_marker: str | None = None) -> subprocess.CompletedProcess:
    """Run the driver in its own process group; with `pause_marker`, SIGKILL the group once the marker exists."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **env)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, "train", recipe, "--out", out], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    if pause_marker is None:
        stdout, _ = proc.communicate(timeout=1800)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout)
    try:
        _wait_for(pause_marker, proc, "the run ended before pausing")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout)


def _recorded(path) -> list[tuple[str, int]]:
    return [(s, int(n)) for s, n in (line.split() for line in open(path))]


def _rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _manifest(out, stage) -> dict:
    return json.load(open(os.path.join(out, stage, "manifest.json")))


def test_killed_trl_stages_resume_from_their_checkpoints_and_end_like_an_uninterrupted_run(trl_recipe):
    d, recipe = trl_recipe
    ref = str(d / "uninterrupted")
    done = _train(recipe, ref, {})
    assert done.returncode == 0, done.stdout[-3000:]

    out = str(d / "killed")
    # 1. killed at SFT step 8, after checkpoint-6 (cluster.max_checkpoints: the last 2 kept)
    _train(recipe, out, {"PAUSE_AT": "00_sft:8", "MARKER": str(d / "m1")}, str(d / "m1"))
    sft = os.path.join(out, "00_sft")
    assert sorted(f for f in os.listdir(sft) if f.startswith("checkpoint-")) == ["checkpoint-3", "checkpoint-6"]
    assert not os.path.exists(os.path.join(sft, "manifest.json"))
    assert not os.path.exists(os.path.join(sft, "metrics.csv"))  # its rows died with the process

    # 2. rerun: SFT continues from checkpoint-6, then the run is killed in GRPO's RL step 3 (optimiser step 5,
    # after checkpoint-4 = RL step 2)
    second = _train(recipe, out, {"PAUSE_AT": "01_grpo:5", "MARKER": str(d / "m2"), "RECORD": str(d / "r2")},
                    str(d / "m2"))
    assert "[sft] resuming from checkpoint-6 (step 6 of 10)" in second.stdout
    assert "[sft] reusing the 24 rows prepared before the interruption" in second.stdout
    assert [n for s, n in _recorded(d / "r2") if s == "00_sft"] == [7, 8, 9, 10]  # steps 1-6 not trained again
    m = _manifest(out, "00_sft")
    assert (m["status"], m["steps"]) == ("completed", {"asked": 10, "trained": 10, "checkpoint": 10, "resumed_from": 6})
    assert [int(r["step"]) for r in _rows(os.path.join(sft, "metrics.csv"))] == list(range(1, 11))  # 1-6: run 1's

    # 3. rerun: SFT is complete, GRPO continues from checkpoint-4 (RL step 2 of 3) and trains optimiser steps 5, 6
    third = _train(recipe, out, {"RECORD": str(d / "r3")})
    assert third.returncode == 0, third.stdout[-3000:]
    assert "[sft] completed earlier: skipping" in third.stdout
    assert "[grpo] resuming from checkpoint-4 (step 2 of 3)" in third.stdout
    assert _recorded(d / "r3") == [("01_grpo", 5), ("01_grpo", 6)]
    assert _manifest(out, "01_grpo")["steps"] == {"asked": 3, "trained": 3, "checkpoint": 3, "optimiser_steps": 6,
                                                  "resumed_from": 2}

    # the same run as the uninterrupted one: every step's metrics once, the same numbers, the same weights
    rows, ref_rows = _rows(os.path.join(out, "metrics.csv")), _rows(os.path.join(ref, "metrics.csv"))
    assert [(r["stage"], r["global_step"]) for r in rows] == [(r["stage"], r["global_step"]) for r in ref_rows]
    assert len({(r["stage"], r["step"]) for r in rows}) == len(rows) == 10 + 6
    assert rows == ref_rows
    for stage in ("00_sft", "01_grpo"):
        a, b = (open(os.path.join(o, stage, "checkpoint", "model.safetensors"), "rb").read() for o in (out, ref))
        assert a == b, stage
        assert _manifest(out, stage)["eval"] == _manifest(ref, stage)["eval"]


# ------------------------------------------------------------------------------------ verl, for real on CPU
# The preflight runs verl's own SFT trainer here (torchrun, FSDP2 on gloo) on a tiny model of the demo's
# family. 4 rows of batch 4: one step per epoch, so verl's default total_epochs (4) would end a stage of
# more steps early. Each preflight run takes under a minute on a quiet 2-core machine.
VERL_SFT_STEPS = 6

PREFLIGHT = r"""
import sys
from loongrl.train.preflight import preflight
from loongrl.train.recipe import load_recipe
reports = preflight(load_recipe(sys.argv[1]), sys.argv[2], rows=4, steps=int(sys.argv[3]), resume=True,
                    timeout=900)
sys.exit(0 if all(r.status.startswith("passed") for r in reports) else 1)
"""


@pytest.fixture(scope="module")
def verl_sft(tmp_path_factory):
    """A one-stage SFT recipe on the demo's data, checkpointing every step; returns a writer of variants."""
    pytest.importorskip("verl", reason="verl is not installed (pip install '.[verl]')")
    d = tmp_path_factory.mktemp("verl_steps")
    data = make_demo_data(str(d / "data"), seed=0, num_sft=8, num_rl=4, num_eval=1, num_chains=2, hops=1)

    def recipe(name: str, **cluster) -> str:
        # one GPU: the checks before launch would refuse SFT batch 4 over the default 8 GPUs' data parallelism
        raw = {"name": name, "model": str(d / "model"), "seed": 0, "cluster": {"gpus_per_node": 1, **cluster},
               "tiny_model": {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                              "num_kv_heads": 1},
               "stages": [{"name": "sft", "sft": {"data": {"components": [{"path": data["sft"]}]}, "batch_size": 4,
                                                  "micro_batch_size": 4, "save_every": 1, "max_length": 512}}]}
        path = d / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        prepare_recipe(load_recipe(str(path)))  # the tiny model (made once, reused by the later variants)
        return str(path)

    return d, recipe


@pytest.mark.verl_cpu
def test_verl_stage_held_below_its_steps_is_not_marked_complete(verl_sft):
    """`trainer.total_epochs=1` (appended last, as a user's extra override would be) stops verl after 1 of the
    stage's 2 steps, exit code 0: the stage is refused, named with both numbers, and nothing is merged."""
    d, recipe = verl_sft
    out = d / "held"
    proc = subprocess.run([sys.executable, "-m", "loongrl.cli", "train",
                           recipe("held", extra_overrides=["trainer.total_epochs=1"]), "--backend", "verl",
                           "--preflight", "--preflight-rows", "4", "--out", str(out)],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=1800)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stage sft (sft): FAILED: sft trained 1 of 2 steps (last checkpoint global_step_1): not marked complete" \
        in proc.stdout
    sdir = out / "run" / "00_sft"
    assert [json.loads(line)["step"] for line in open(sdir / "verl_metrics.jsonl")] == [1]  # verl's own log
    manifest = json.loads((sdir / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["steps"] == {"asked": 2, "trained": 1, "checkpoint": 1}
    assert not (sdir / "checkpoint").exists()


@pytest.mark.verl_cpu
def test_verl_sft_stage_killed_after_a_checkpoint_resumes_from_it_and_trains_all_its_steps(verl_sft):
    """The trainer (torchrun and its worker) is SIGKILLed once a checkpoint is written; the rerun resumes
    from the newest checkpoint and trains only the later steps, all 6 of them in the end: more than verl's
    default epoch cap (4 epochs of 1 step) allowed, and with one epoch spent on the exhausted dataloader
    after a resume at an epoch's end."""
    import psutil

    d, recipe = verl_sft
    path, out = recipe("killed"), d / "killed"
    sdir = out / "run" / "00_sft"
    tracker = sdir / "verl_ckpt" / "latest_checkpointed_iteration.txt"
    cmd = [sys.executable, "-c", PREFLIGHT, path, str(out), str(VERL_SFT_STEPS)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        _wait_for(tracker, first, "the preflight ended before a checkpoint")  # verl writes it after a checkpoint
        torchrun = next(p for p in psutil.Process(first.pid).children(recursive=True)
                        if "torch.distributed.run" in " ".join(p.cmdline()))
        trainer = [torchrun, *torchrun.children(recursive=True)]  # its worker runs in a session of its own
        for p in trainer:
            p.send_signal(signal.SIGKILL)
        psutil.wait_procs(trainer)
        stdout, _ = first.communicate(timeout=900)
    finally:
        if first.poll() is None:  # a failed assertion above: stop the preflight and all it started
            for p in [*psutil.Process(first.pid).children(recursive=True), psutil.Process(first.pid)]:
                p.kill()
    killed_at = int(tracker.read_text())
    assert first.returncode == 1 and "stage sft (sft): FAILED: the trainer was killed by signal 9" in stdout, stdout
    assert 1 <= killed_at < VERL_SFT_STEPS and not (sdir / "manifest.json").exists()

    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"[sft] resuming from verl's checkpoint global_step_{killed_at} (step {killed_at} of 6)" in second.stdout
    log = (sdir / "verl.log").read_text()  # the rerun's
    assert f"global_step_{killed_at} (step {killed_at})" in log  # verl: "Found latest checkpoint: ..."
    trained = [json.loads(line)["step"] for line in open(sdir / "verl_metrics.jsonl")]
    assert trained == list(range(killed_at + 1, VERL_SFT_STEPS + 1))  # only the steps after the checkpoint
    manifest = json.loads((sdir / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["steps"] == {"asked": 6, "trained": 6, "checkpoint": 6, "resumed_from": killed_at}
    assert (sdir / "checkpoint" / "config.json").is_file()  # merged from global_step_6
