"""Run report: held-out accuracy after each stage (markdown + JSON) and reward / response length curves."""

from __future__ import annotations

import os

from loongrl.data.io import atomic_write, write_json_atomic, write_text_atomic


def plot_curves(rows: list[dict], path: str) -> str | None:
    """Reward, pass rate and response length per global step, stage boundaries dashed. None without
    matplotlib or RL metrics."""
    rl = [r for r in rows if "reward" in r]
    if not rl:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for stage in dict.fromkeys(r["stage"] for r in rl):
        pts = [r for r in rl if r["stage"] == stage]
        x = [r["global_step"] for r in pts]
        axes[0].plot(x, [r["reward"] for r in pts], label=f"{stage} reward")
        if all("pass_rate" in r for r in pts):
            axes[0].plot(x, [r["pass_rate"] for r in pts], ":", label=f"{stage} pass rate")
        axes[1].plot(x, [r.get("response_length", float("nan")) for r in pts], label=stage)
        for ax in axes:
            ax.axvline(x[0], color="grey", linestyle="--", linewidth=0.8)
    axes[0].set_ylabel("reward / pass rate")
    axes[1].set_ylabel("response length (tokens)")
    axes[1].set_xlabel("global step (optimiser steps, SFT included)")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return path


def write_report(out_dir: str, recipe, init: dict, manifests: list[dict], rows: list[dict]) -> dict:
    """report.md / report.json / curves.png from the stage manifests and the run's per-step rows. The eval
    columns are the sets that ran (the verl backend evaluates none between stages); a manifest written
    before steps were recorded shows `?`."""
    table = [{"after": "init", "kind": "-", "steps": 0, "rows": 0, "eval": init.get("eval", {})}]
    for m in manifests:
        table.append({"after": m["stage"], "kind": m["kind"], "steps": m.get("metrics", {}).get("steps", "?"),
                      "rows": m["data"]["rows"], "eval": m.get("eval", {}),
                      "transition": m["data_stats"].get("transition"), "seconds": m.get("seconds")})
    names = [e.name for e in recipe.eval if any(e.name in t["eval"] for t in table)]
    head = ([f"# {recipe.name}: held-out accuracy after each stage", "",
             "acc = shared scorer (`loongrl.rewards.router`), greedy, one sample; exact = extracted answer equals "
             "the gold after normalisation."] if names else
            [f"# {recipe.name}: stages", "", "No held-out evaluation ran (the verl backend evaluates none between "
             "stages: `loongrl eval` a stage's `checkpoint/`)."])
    lines = head + ["",
             "| " + " | ".join(["after stage", "kind", "steps", "train rows"] +
                               [f"{n} {m}" for n in names for m in ("acc", "exact")]) + " |",
             "|" + "---|" * (4 + 2 * len(names))]
    for t in table:
        cells = []
        for n in names:
            ev = t["eval"].get(n)
            cells += [f"{ev['acc']:.3f}", f"{ev['exact']:.3f}"] if ev else ["-", "-"]
        lines.append("| " + " | ".join(map(str, [t["after"], t["kind"], t["steps"], t["rows"], *cells])) + " |")
    for t in table:
        tr = t.get("transition")
        if tr:
            detail = ", ".join(f"{k}={tr[k]}" for k in ("input", "kept", "dropped_solved", "hard", "carried", "pool")
                               if k in tr)
            lines += ["", f"Transition before `{t['after']}` ({tr['kind']}): {detail}; "
                          f"mean accuracy of the sampled items {tr['mean_acc_before']:.3f}."]
    png = plot_curves(rows, os.path.join(out_dir, "curves.png"))
    if png:
        lines += ["", f"![reward and response length per step]({os.path.basename(png)})"]
    text = "\n".join(lines) + "\n"
    write_text_atomic(os.path.join(out_dir, "report.md"), text)
    out = {"recipe": recipe.name, "stages": table, "curves": png}
    write_json_atomic(os.path.join(out_dir, "report.json"), out)
    print(text)
    return out
