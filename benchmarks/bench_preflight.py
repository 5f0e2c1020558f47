"""What the verl preflight costs (issue 10): wall time and peak memory per stage.

Usage: .venv/bin/python benchmarks/bench_preflight.py [RECIPE ...] [--repeats 1] [--out /tmp/bench_preflight]

Runs `loongrl train RECIPE --backend verl --preflight` (default: the three shipped recipes demo-cpu,
loongrl-7b and qwenlong-l1-32b) in fresh processes and reads each `preflight.json`: per stage the wall time
(transition included), the peak of the memory summed over every process of the run (Ray's included; RSS
counts shared pages once per process, so this overstates) and the process count, plus verl's own time for
the 2 training steps (`timing_s/step` in its metrics file). The baseline, measured in the same run, is those
2 steps: the ratio wall / steps says how much of a stage is start-up (Ray actors, TransferQueue, imports).
Figures are medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step_seconds(sdir: str) -> float | None:
    """verl's own time for the training steps: `timing_s/step` (RL metrics) or the SFT trainer's
    "Total time for train steps" line."""
    total = 0.0
    path = os.path.join(sdir, "verl_metrics.jsonl")
    if os.path.isfile(path):
        with open(path) as f:
            total = sum(json.loads(line)["data"].get("timing_s/step", 0.0) for line in f)
    if not total and os.path.isfile(os.path.join(sdir, "verl.log")):
        with open(os.path.join(sdir, "verl.log"), errors="replace") as f:
            m = re.findall(r"Total time for train steps: ([0-9.]+)s", f.read())
        total = float(m[-1]) if m else 0.0
    return total or None


def run_once(recipe: str, out: str, report_only: bool) -> dict:
    rc, wall = 0, None
    if not report_only:
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, "-m", "loongrl.cli", "train", recipe, "--backend", "verl", "--preflight",
                             "--out", out], capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1")).returncode
        wall = time.perf_counter() - t0
    report = json.load(open(os.path.join(out, "preflight.json")))
    stages = []
    for i, s in enumerate(report["stages"]):
        sdir = os.path.join(out, "run", f"{i:02d}_{s['stage']}")
        stages.append({"stage": s["stage"], "kind": s["kind"], "status": s["status"], "seconds": s["seconds"],
                       "peak_mb": s["peak_rss_mb"], "processes": s["peak_processes"], "steps_s": step_seconds(sdir)})
    return {"rc": rc, "wall": wall if wall is not None else report["seconds"], "stages": stages}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipes", nargs="*", default=[os.path.join(REPO, "recipes", f"{n}.yaml")
                                                  for n in ("demo-cpu", "loongrl-7b", "qwenlong-l1-32b")])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default="/tmp/bench_preflight")
    p.add_argument("--report-only", action="store_true", help="tabulate the runs already in --out")
    args = p.parse_args()
    print("| recipe | stage | kind | status | wall s | 2 steps s (verl) | wall / steps | peak MiB (all processes) | processes |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for recipe in args.recipes:
        name = os.path.splitext(os.path.basename(recipe))[0]
        runs = [run_once(recipe, os.path.join(args.out, f"{name}-{r}"), args.report_only) for r in range(args.repeats)]
        for i, s in enumerate(runs[0]["stages"]):
            med = lambda key: statistics.median(r["stages"][i][key] for r in runs if r["stages"][i][key] is not None)  # noqa: E731
            steps = [r["stages"][i]["steps_s"] for r in runs if r["stages"][i]["steps_s"]]
            steps_med = statistics.median(steps) if steps else None
            ratio = f"{med('seconds') / steps_med:.1f}x" if steps_med else "-"
            print(f"| {name} | {s['stage']} | {s['kind']} | {s['status']} | {med('seconds'):.0f} | "
                  f"{steps_med:.1f} | {ratio} | {med('peak_mb'):.0f} | {med('processes'):.0f} |"
                  if steps_med else
                  f"| {name} | {s['stage']} | {s['kind']} | {s['status']} | {med('seconds'):.0f} | - | - | "
                  f"{med('peak_mb'):.0f} | {med('processes'):.0f} |")
        walls = [r["wall"] for r in runs]
        print(f"| {name} | **all** | | rc {runs[0]['rc']} | {statistics.median(walls):.0f} | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
