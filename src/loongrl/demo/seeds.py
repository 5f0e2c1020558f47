"""The demo over several seeds: held-out accuracy after each stage, mean and spread, as a table and a plot.

Each run is a `loongrl train` output folder (its report.json); runs differ only in their seed (the demo
recipe takes it from $DEMO_SEED: data, model initialisation and training all follow it).

    python -m loongrl.demo.seeds RUN_DIR [RUN_DIR ...] --out DIR   # prints the table; DIR/seeds.{md,json,png}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from loongrl.data.io import atomic_write, write_json_atomic, write_text_atomic


def collect(run_dirs: list[str]) -> dict:
    """Per-stage accuracies of every run, in stage order: {"seeds", "evals", "n_items", "stages": [{after, kind,
    steps, rows, kept (mining; else None): [per seed], mined_from, acc: {eval: [per seed]}}]}."""
    reports, seeds = [], []
    for d in run_dirs:
        with open(os.path.join(d, "report.json"), encoding="utf-8") as f:
            reports.append(json.load(f))
        with open(os.path.join(d, "recipe.json"), encoding="utf-8") as f:
            seeds.append(json.load(f)["seed"])
    names = [[s["after"] for s in r["stages"]] for r in reports]
    if any(n != names[0] for n in names):
        raise ValueError(f"runs have different stages: {names}")
    evals = list(reports[0]["stages"][0]["eval"])
    stages = []
    for i, first in enumerate(reports[0]["stages"]):
        runs = [r["stages"][i] for r in reports]
        tr = [s.get("transition") for s in runs]
        stages.append({"after": first["after"], "kind": first["kind"], "steps": [s["steps"] for s in runs],
                       "rows": [s["rows"] for s in runs],
                       "kept": [t["kept"] for t in tr] if all(t and "kept" in t for t in tr) else None,
                       "mined_from": tr[0]["input"] if tr[0] and "input" in tr[0] else None,
                       "acc": {e: [s["eval"][e]["acc"] for s in runs] for e in evals}})
    return {"seeds": seeds, "evals": evals, "n_items": {e: reports[0]["stages"][0]["eval"][e]["n"] for e in evals},
            "stages": stages}


def _cell(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f} [{min(values):.3f}, {max(values):.3f}]"


def _label(stage: dict) -> str:
    if stage["after"] == "init":
        return "init (random model)"
    steps = stage["steps"]
    steps = str(steps[0]) if len(set(steps)) == 1 else "/".join(map(str, steps))
    label = f"{stage['after']} ({stage['kind']}, {steps} steps)"
    if stage["kept"] is not None:
        label += f"; mining kept {', '.join(map(str, stage['kept']))} of {stage['mined_from']}"
    return label


def markdown(summary: dict) -> str:
    evals = summary["evals"]
    sizes = [summary["n_items"][e] for e in evals]
    n = f"{sizes[0]} items per set" if len(set(sizes)) == 1 else ", ".join(f"{e}: {k} items" for e, k in zip(evals, sizes))
    lines = [f"Held-out accuracy over seeds {', '.join(map(str, summary['seeds']))} ({n}; greedy): "
             "mean ± standard deviation [min, max]", "",
             "| after | " + " | ".join(evals) + " |", "|---|" + "---:|" * len(evals)]
    for s in summary["stages"]:
        lines.append(f"| {_label(s)} | " + " | ".join(_cell(s["acc"][e]) for e in evals) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = summary["stages"]
    x = list(range(len(stages)))
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, e in enumerate(summary["evals"]):
        accs = [s["acc"][e] for s in stages]
        means = [statistics.fmean(a) for a in accs]
        color = f"C{k}"
        for j in range(len(summary["seeds"])):
            ax.plot([xi + 0.06 * (k - 0.5) for xi in x], [a[j] for a in accs], "o", color=color, alpha=0.35, ms=4)
        ax.errorbar(x, means, yerr=[[m - min(a) for m, a in zip(means, accs)], [max(a) - m for m, a in zip(means, accs)]],
                    color=color, marker="s", capsize=4, label=f"{e} (mean, min-max)")
    ax.set_xticks(x, [s["after"] for s in stages])
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("held-out accuracy")
    ax.set_xlabel("after stage")
    ax.set_title(f"held-out accuracy after each stage, seeds {', '.join(map(str, summary['seeds']))}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="loongrl train output folders, one per seed")
    ap.add_argument("--out", required=True, help="folder for seeds.md, seeds.json and seeds.png")
    args = ap.parse_args(argv)
    summary = collect(args.runs)
    os.makedirs(args.out, exist_ok=True)
    text = markdown(summary)
    write_text_atomic(os.path.join(args.out, "seeds.md"), text)
    write_json_atomic(os.path.join(args.out, "seeds.json"), summary)
    png = plot(summary, os.path.join(args.out, "seeds.png"))
    print(text, end="")
    print(f"\nplot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
