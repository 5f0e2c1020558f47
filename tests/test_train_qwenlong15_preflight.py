"""QwenLong-L1.5's three options together through verl's real trainer on this CPU: `loongrl train --backend verl
--preflight` with the real SmolLM2-135M-Instruct, one RL stage of two tasks with `sampler: task_balanced`,
`advantage: task_normalized` and `aepo` on, two optimiser steps. The prompts ask the model to copy "The answer is <word>": SmolLM2
does so about 4 times in 10 (7 of 16 samples at T=1, measured), so rewards vary within groups.
Marked `verl_cpu` and `slow`: 4 min 54 s on the shared 2-core machine (one Ray start, one stage, its merge)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

pytest.importorskip("verl", reason="verl is not installed (pip install '.[verl]')")

from loongrl.data.io import write_rows  # noqa: E402

pytestmark = [pytest.mark.verl_cpu, pytest.mark.slow]
KEYCHAIN_WORDS = ("river", "apple", "stone", "tiger", "piano", "lemon", "ocean", "maple")
LONGQA_WORDS = ("cloud", "robot", "candle", "garden", "silver", "rocket", "forest", "violin")


def _rows(source: str, words) -> list[dict]:
    return [{"data_source": source, "ability": "longcontext_qa",
             "prompt": [{"role": "user", "content": f"Copy the following text word for word.\nText: The answer is {w}."}],
             "reward_model": {"style": "rule", "ground_truth": [w]}, "extra_info": {"index": i}}
            for i, w in enumerate(words)]


@pytest.fixture(scope="module")
def l15_preflight(tmp_path_factory, smollm2):
    d = tmp_path_factory.mktemp("l15_preflight")
    write_rows(str(d / "kc.parquet"), _rows("keychain_demo", KEYCHAIN_WORDS))
    write_rows(str(d / "qa.parquet"), _rows("longqa_demo", LONGQA_WORDS))
    recipe = {"name": "l15-options", "model": smollm2, "seed": 0, "cluster": {"nnodes": 1, "gpus_per_node": 1},
              "stages": [{"name": "l15", "rl": {
                  "data": {"components": [{"path": "kc.parquet"}, {"path": "qa.parquet"}]},
                  "sampler": "task_balanced", "advantage": "task_normalized",
                  "aepo": {"entropy_low": 0.0, "entropy_high": 100.0},  # always inside: AEPO acts every step
                  "group_size": 4, "kl_coef": 0.0, "max_prompt_tokens": 512, "max_response_tokens": 32,
                  "batch_size": 4, "steps": 2, "optim": {"learning_rate": 1.0e-6},
                  "reward_kwargs": {"require_think": False, "word_boundary": True, "faithful": False}}}]}
    (d / "l15.yaml").write_text(yaml.safe_dump(recipe))
    out = d / "out"
    proc = subprocess.run([sys.executable, "-m", "loongrl.cli", "train", str(d / "l15.yaml"), "--backend", "verl",
                           "--preflight", "--preflight-model", smollm2, "--out", str(out), "--stage-timeout", "900"],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=1200)
    return proc, out / "run" / "00_l15"


def _jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_all_three_options_take_optimiser_steps_through_verls_trainer(l15_preflight):
    proc, sdir = l15_preflight
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[preflight] stage l15 (rl): passed" in proc.stdout
    metrics = {r["step"]: r["data"] for r in _jsonl(sdir / "verl_metrics.jsonl")}
    assert sorted(metrics) == [1, 2] and all("actor/lr" in m and "actor/grad_norm" in m for m in metrics.values())

    # task_balanced: each step's 4 prompts are 2 of each task (verl's own rollout dump: 16 rollouts a step)
    for step in (1, 2):
        inputs = [r["input"] for r in _jsonl(sdir / "rollouts" / f"{step}.jsonl")]
        assert len(inputs) == 16
        assert sum(any(f"The answer is {w}." in x for w in KEYCHAIN_WORDS) for x in inputs) == 8
        assert sum(any(f"The answer is {w}." in x for w in LONGQA_WORDS) for x in inputs) == 8

    # task_normalized then AEPO, called by verl's trainer once per step; entropy is verl's own actor/entropy
    # (both token-means of the old policy's entropy over the batch's response tokens)
    records = _jsonl(sdir / "aepo.jsonl")
    assert [r["call"] for r in records] == [1, 2]
    for r, step in zip(records, (1, 2)):
        assert r["advantage"] == "task_normalized" and r["applied"] and r["rows"] == 16
        assert r["kept"] == r["positive"]  # one worker: nothing truncated
        assert r["entropy"] == pytest.approx(metrics[step]["actor/entropy"], rel=0.02)
    for r, step in zip(records, (1, 2)):
        if r["kept"] == 0:  # nothing kept: every advantage 0, the masks intact (no 0/0 in the token-mean)
            assert metrics[step]["actor/pg_loss"] == 0.0
    trained = [(r, metrics[s]) for r, s in zip(records, (1, 2)) if r["kept"] > 0]
    assert trained, f"no step had a positive-advantage sample to keep: {records}"
    for r, m in trained:
        # the dropped rows are out of the loss: verl's token-mean policy loss (ratio 1 on the first pass) is minus
        # the kept rows' token-mean advantage, not that sum spread over every row's tokens
        assert m["actor/pg_loss"] == pytest.approx(-r["kept_token_mean_advantage"], rel=0.05, abs=1e-4)
        assert r["kept_tokens"] < r["all_tokens"]
        assert m["actor/grad_norm"] > 0
