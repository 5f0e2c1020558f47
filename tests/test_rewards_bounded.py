"""Bounded scoring (issue 11, item 1): a runaway check is stopped from any thread, its worker killed
and replaced, no process left behind; and verl's own reward loop survives a pathological answer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import QWEN

from loongrl.rewards import compute_score
from loongrl.rewards.bounded import ScoringTimeout, WorkerError, WorkerPool, WorkerStartError
from loongrl.rewards.router import __file__ as ROUTER_PATH

# The field report's answer: 7^(7^(7^7)) is a number no computer can hold; math-verify's
# comparison never returns and holds the GIL while it tries.
PATHOLOGICAL = ("<think>x</think>\nAnswer: \\dfrac{7^{\\left(7^{\\left(7^{\\left(7^7\\right)}\\right)} - 3\\right)} - 7}"
                "{12}")
RUNAWAY = 10 ** 9  # math.factorial(10**9): one C call that holds the GIL for hours


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.split()[1] == "Z" for line in f if line.startswith("State:"))  # unreaped zombie
    except FileNotFoundError:
        return True


@pytest.mark.timing
def test_timeout_kills_and_replaces_the_worker():
    pool = WorkerPool("math:factorial", max_workers=1)
    try:
        assert pool.call(5, timeout_s=30) == 120              # 5! (the first call waits for start-up)
        [first] = pool.pids()
        start = time.perf_counter()
        with pytest.raises(ScoringTimeout):
            pool.call(RUNAWAY, timeout_s=0.5)
        assert 0.5 <= time.perf_counter() - start < 3.0      # the budget, plus a kill (on a busy machine)
        assert _gone(first) and pool.timeouts == 1
        [second] = pool.pids()                                # replaced at once, pool size unchanged
        assert second != first
        assert pool.call(4, timeout_s=30) == 24               # the replacement works
    finally:
        pool.close()
    assert _gone(second) and pool.pids() == []


def test_errors_in_the_function_keep_the_worker_and_start_errors_raise():
    pool = WorkerPool("math:sqrt", max_workers=1)
    try:
        assert pool.call(16.0, timeout_s=30) == 4.0
        [pid] = pool.pids()
        with pytest.raises(WorkerError, match="ValueError: math domain error"):
            pool.call(-1.0, timeout_s=30)
        assert pool.pids() == [pid]                           # the function raised; the process is fine
    finally:
        pool.close()
    broken = WorkerPool("no_such_module_for_loongrl:f", max_workers=1)
    try:
        with pytest.raises(WorkerStartError, match="ModuleNotFoundError"):
            broken.call(timeout_s=30)
    finally:
        broken.close()


@pytest.mark.slow
def test_pathological_answer_from_many_threads_returns_within_budget():
    budget = 1.0
    compute_score("math_dapo", "</think>Answer: 1", "1")      # start-up is not part of the budget
    cases = [(PATHOLOGICAL, "5", 0.0), ("</think>Answer: 5", "5", 1.0), ("</think>Answer: \\frac{1}{2}", "0.5", 1.0)] * 2
    results: dict[int, tuple[float, float]] = {}

    def score(i, response, gold):
        start = time.perf_counter()
        result = compute_score("math_dapo", response, gold, math_timeout_s=budget)
        results[i] = (result["score"], time.perf_counter() - start)

    threads = [threading.Thread(target=score, args=(i, r, g)) for i, (r, g, _) in enumerate(cases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert [results[i][0] for i in range(len(cases))] == [expected for _, _, expected in cases]
    # each call: its budget, plus start-up when its thread had to start a worker (6 callers here)
    assert max(elapsed for _, elapsed in results.values()) < budget + 10


def _run(script: str, timeout: float) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_workers_exit_with_the_interpreter():
    out = _run("""
        from loongrl.rewards import compute_score
        from loongrl.rewards.scorers import math_pool
        print(compute_score("math_dapo", "</think>Answer: 2", "2")["score"], *math_pool().pids())
    """, timeout=120)
    score, *pids = out.split()
    assert score == "1.0" and pids
    assert all(_gone(int(p)) for p in pids)


@pytest.mark.slow
def test_an_orphaned_runaway_worker_stops_itself():
    # the parent dies mid-call (SIGKILL: no atexit); the worker's CPU limit (budget + 2 s) ends it
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os, signal, threading, time
        from loongrl.rewards.bounded import WorkerPool
        pool = WorkerPool("math:factorial", max_workers=1)
        pool.call(3, timeout_s=60)
        print(*pool.pids(), flush=True)
        threading.Thread(target=lambda: pool.call(10 ** 9, timeout_s=1.0), daemon=True).start()
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    """)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    [pid] = map(int, proc.stdout.split())
    deadline = time.monotonic() + 90  # ~3 CPU-seconds, on a machine other jobs share
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gone(pid)


@pytest.mark.slow
def test_verl_reward_loop_survives_a_pathological_answer():
    """verl 0.9.1's RewardLoopWorker.compute_score_batch -> NaiveRewardManager.run_single ->
    loop.run_in_executor(None, compute_score): our reward runs on the executor's worker threads."""
    pytest.importorskip("verl", reason="verl not installed (make setup installs verl==0.9.1)")
    # A subprocess: if the bound ever broke, the hang would hold the GIL and no in-process timeout could fire.
    out = _run(f"""
        import time
        import numpy as np, torch
        from omegaconf import OmegaConf
        from verl import DataProto
        from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

        config = OmegaConf.create({{
            "actor_rollout_ref": {{"model": {{"path": {QWEN!r}, "tokenizer_path": {QWEN!r}}}}},
            "reward": {{"reward_model": {{"enable": False}}, "reward_manager": {{"source": "register", "name": "naive"}},
                       "custom_reward_function": {{"path": {ROUTER_PATH!r}, "name": "compute_score",
                                                  "reward_kwargs": {{"math_timeout_s": 2.0}}}}}}}})
        worker = RewardLoopWorker(config)
        tok = worker.input_tokenizer
        cases = [({PATHOLOGICAL!r}, "5"), ("<think>x</think>\\nAnswer: 5", "5"),
                 ("<think>x</think>\\nAnswer: \\\\frac{{1}}{{2}}", "0.5")]
        prompt = tok("q", return_tensors="pt")["input_ids"][0]
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t, _ in cases]
        width = max(map(len, ids))
        responses = torch.full((len(cases), width), tok.pad_token_id)
        mask = torch.zeros((len(cases), len(prompt) + width), dtype=torch.long)
        for i, r in enumerate(ids):
            responses[i, :len(r)] = torch.tensor(r)
            mask[i, :len(prompt) + len(r)] = 1
        data = DataProto.from_dict(
            tensors={{"prompts": prompt.repeat(len(cases), 1), "responses": responses, "attention_mask": mask}},
            non_tensors={{"data_source": np.array(["math_dapo"] * len(cases), dtype=object),
                         "reward_model": np.array([{{"ground_truth": g}} for _, g in cases], dtype=object),
                         "extra_info": np.array([{{}} for _ in cases], dtype=object)}})
        start = time.perf_counter()
        out = worker.loop.run_until_complete(worker.compute_score_batch(data))
        print([o["reward_score"] for o in out], time.perf_counter() - start)
    """, timeout=300)
    scores, elapsed = out.strip().rsplit(" ", 1)
    assert scores == "[0.0, 1.0, 1.0]"
    assert float(elapsed) < 2.0 + 20  # the budget, plus starting three workers on a shared 2-core machine


def test_a_worker_killed_while_idle_is_replaced_without_losing_the_call():
    import signal

    pool = WorkerPool("math:factorial", max_workers=1)
    try:
        assert pool.call(3, timeout_s=30) == 6
        [pid] = pool.pids()
        os.kill(pid, signal.SIGKILL)                          # e.g. the OOM killer, between two calls
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.call(4, timeout_s=30) == 24               # delivered to a fresh worker instead
        assert pool.pids() != [pid]
    finally:
        pool.close()
