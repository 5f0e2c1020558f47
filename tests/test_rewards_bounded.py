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


def test_a_closed_pool_stops_its_workers_and_refuses_calls():
    pool = WorkerPool("math:factorial", max_workers=1)
    assert pool.call(3, timeout_s=30) == 6
    [pid] = pool.pids()
    pool.close()
    assert pool.pids() == [] and _gone(pid)                  # the idle worker stopped and reaped
    with pytest.raises(WorkerError, match=r"^worker pool is closed$"):
        pool.call(4, timeout_s=30)
    assert pool.pids() == []                                  # no worker started for the refused call


def test_close_does_not_wait_for_a_worker_stuck_in_its_warm_up():
    """A worker that never finishes its warm-up (here: a 600 s sleep) has not read its closed stdin: close
    kills it after a short grace instead of waiting for it."""
    import signal

    pool = WorkerPool("time:sleep", max_workers=1, startup_timeout_s=0.3, warmup=[600])
    with pytest.raises(WorkerStartError, match=r"^scoring worker not ready after 0.3 s$"):
        pool.call(0, timeout_s=5)
    [replacement] = pool.pids()                               # started at once, still in its warm-up
    closing = threading.Thread(target=pool.close, daemon=True)
    closing.start()
    closing.join(20)
    try:
        assert not closing.is_alive() and _gone(replacement) and pool.pids() == []
    finally:
        if not _gone(replacement):                            # a close that hangs must not leave the sleeper
            os.kill(replacement, signal.SIGKILL)


def test_a_call_past_its_budget_is_stopped_and_its_worker_replaced():
    """The pool's contract without the clock: a call that overruns raises ScoringTimeout, its worker is
    killed and reaped at once (not left to finish its 60 s), a warm successor takes its place, and the
    pool counts each timeout (the timed version is test_timeout_kills_and_replaces_the_worker)."""
    pool = WorkerPool("time:sleep", max_workers=1)
    errors: list[str] = []

    def overrun() -> None:
        try:
            pool.call(60, timeout_s=0.3)
        except ScoringTimeout as err:
            errors.append(str(err))

    try:
        assert pool.call(0, timeout_s=30) is None and pool.timeouts == 0
        for count in (1, 2):
            [before] = pool.pids()
            caller = threading.Thread(target=overrun, daemon=True)
            caller.start()
            caller.join(20)                                   # 60 s if the runaway worker were waited for
            assert not caller.is_alive() and errors == ["no answer within 0.3 s"] * count
            assert pool.timeouts == count and _gone(before)
            [after] = pool.pids()                             # replaced at once, the pool's size unchanged
            assert after != before
        assert pool.call(0.01, timeout_s=30) is None          # the replacement answers
    finally:
        pool.close()


def test_a_budget_under_one_second_is_a_budget_not_a_timeout():
    pool = WorkerPool("math:factorial", max_workers=1)
    try:
        assert pool.call(5, timeout_s=0.9) == 120
    finally:
        pool.close()


def test_the_warm_up_runs_before_ready_and_its_failure_is_a_start_error():
    good = WorkerPool("math:sqrt", max_workers=1, warmup=[4.0])
    try:
        assert good.call(9.0, timeout_s=30) == 3.0
    finally:
        good.close()
    broken = WorkerPool("math:sqrt", max_workers=1, warmup=[-1.0])
    try:
        with pytest.raises(WorkerStartError, match=r"^scoring worker failed to start: ValueError: math domain error$"):
            broken.call(4.0, timeout_s=30)
    finally:
        broken.close()


def test_a_worker_that_dies_is_reported_with_its_exit_code_and_replaced():
    pool = WorkerPool("os:_exit", max_workers=1)
    try:
        with pytest.raises(WorkerError, match=r"^scoring worker exited with code 3$"):
            pool.call(3, timeout_s=30)                        # the function ends its own process
        [successor] = pool.pids()
        assert not _gone(successor)                           # a live successor, not the dead worker kept
        with pytest.raises(WorkerError, match=r"^scoring worker exited with code 5$"):
            pool.call(5, timeout_s=30)                        # the dead one was not kept as idle
        assert _gone(successor) and len(pool.pids()) == 1 and pool.pids() != [successor]
    finally:
        pool.close()
    dies_starting = WorkerPool("os:_exit", max_workers=1, warmup=[4])
    try:
        with pytest.raises(WorkerStartError, match=r"^scoring worker exited with code 4$"):
            dies_starting.call(0, timeout_s=30)
    finally:
        dies_starting.close()


def test_workers_import_this_loongrl_before_the_callers_python_path(monkeypatch):
    import loongrl

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(loongrl.__file__)))
    monkeypatch.setenv("PYTHONPATH", "/nonexistent/loongrl-extra")
    pool = WorkerPool("os:getenv", max_workers=1)
    try:
        assert pool.call("PYTHONPATH", timeout_s=30) == package_root + os.pathsep + "/nonexistent/loongrl-extra"
    finally:
        pool.close()
    monkeypatch.delenv("PYTHONPATH")
    pool = WorkerPool("os:getenv", max_workers=1)
    try:
        assert pool.call("PYTHONPATH", timeout_s=30) == package_root
    finally:
        pool.close()


def test_workers_do_not_inherit_the_callers_descriptors():
    """A descriptor the caller made inheritable (a lock file, a pipe to another child) is not held open by
    the scoring workers: a worker holding a pipe's write end would keep its reader from ever seeing EOF."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    pool = WorkerPool("os:get_inheritable", max_workers=1)
    try:
        with pytest.raises(WorkerError, match=r"^OSError: \[Errno 9\] Bad file descriptor$"):
            pool.call(write_end, timeout_s=30)
    finally:
        pool.close()
        os.close(read_end)
        os.close(write_end)


def test_a_reply_longer_than_one_read_arrives_whole():
    pool = WorkerPool("operator:mul", max_workers=1)
    try:
        assert pool.call("ab", 50_000, timeout_s=30) == "ab" * 50_000      # ~100 KB: more than one 64 KiB read
    finally:
        pool.close()


def test_max_workers_defaults_to_the_default_thread_pool_and_bounds_concurrent_calls():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor() as executor:
        assert WorkerPool("math:sqrt").max_workers == executor._max_workers  # verl calls from this pool
    assert WorkerPool("math:sqrt", max_workers=3).max_workers == 3
    pool = WorkerPool("time:sleep", max_workers=1)
    try:
        busy = threading.Thread(target=pool.call, args=(0.5,), kwargs={"timeout_s": 30}, daemon=True)
        busy.start()
        deadline = time.monotonic() + 20
        while not pool.pids() and time.monotonic() < deadline:  # the first caller holds the only worker
            time.sleep(0.01)
        [only] = pool.pids()
        assert pool.call(0, timeout_s=30) is None             # waits for that worker, starts no second one
        busy.join(20)
        assert pool.pids() == [only]
    finally:
        pool.close()


def test_an_interrupt_mid_call_replaces_the_worker():
    """Ctrl-C (KeyboardInterrupt) while a call waits: its worker may still answer later, so it is killed and
    replaced rather than reused, and the interrupt reaches the caller."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    pool = WorkerPool("time:sleep", max_workers=1)
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        assert pool.call(0, timeout_s=30) is None
        [first] = pool.pids()
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            pool.call(60, timeout_s=30)
        assert _gone(first)
        [second] = pool.pids()
        assert second != first and pool.call(0, timeout_s=30) is None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        pool.close()
