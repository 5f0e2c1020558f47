"""Reports: a JSON file with every sample, a Markdown summary table, PNG plots.

Scores in tables are 100 x the mean item score, rounded to 2 decimals (LongBench/RULER style);
an item's score is the mean over its samples (average pass@1 when n > 1).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Sequence

from loongrl.data.io import atomic_write, write_text_atomic


def mean100(values: Sequence[float]) -> float:
    return round(100.0 * sum(values) / len(values), 2) if values else float("nan")


def group_scores(records: Sequence[dict], key: Callable[[dict], object]) -> dict:
    """key(record) -> [item scores], in first-seen order."""
    groups: dict = defaultdict(list)
    for r in records:
        groups[key(r)].append(r["score"])
    return dict(groups)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(v) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_reports(out_dir: str, name: str, records: Sequence[dict], summary: dict, markdown: str) -> dict:
    """``{name}.json`` (summary + every record with its samples) and ``{name}.md``; returns paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, f"{name}.json"), "md": os.path.join(out_dir, f"{name}.md")}
    write_text_atomic(paths["json"], json.dumps({"summary": summary, "records": list(records)}, ensure_ascii=False,
                                         indent=1) + "\n")
    write_text_atomic(paths["md"], markdown)
    return paths


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "loongrl"  # deterministic output
    return plt


def _save(fig, path: str) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", metadata={"Software": None}))


def bar_plot(path: str, labels: Sequence[str], values: Sequence[float], title: str, ylabel: str = "score") -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 1.5), 3.5))
    ax.bar(range(len(labels)), values, color="#4c72b0")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for i, v in enumerate(values):
        ax.text(i, min(v, 95) + 1, f"{v:.1f}", ha="center", fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def line_plot(path: str, xs: Sequence, series: dict[str, Sequence[float]], title: str, xlabel: str) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, ys in series.items():
        ax.plot(range(len(xs)), ys, marker="o", label=label)
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_ylim(-2, 102)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)
    plt.close(fig)
    return path


def heatmap(path: str, matrix: Sequence[Sequence[float]], xlabels: Sequence[str], ylabels: Sequence[str],
            title: str, xlabel: str = "Context length (tokens)", ylabel: str = "Depth percent") -> str:
    """Needle-in-a-haystack heatmap: rows = depths, columns = lengths, red (0) to green (100),
    the colour map of the NIAH/MInference figures."""
    plt = _pyplot()
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("niah", ["#F0496E", "#EBB839", "#0CD79F"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(xlabels) + 2), max(3.5, 0.4 * len(ylabels) + 1.5)))
    image = ax.imshow(matrix, cmap=cmap, vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(xlabels)), xlabels, rotation=45, ha="right")
    ax.set_yticks(range(len(ylabels)), ylabels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="score")
    _save(fig, path)
    plt.close(fig)
    return path


def breakdown_plot(path: str, panels: dict[str, dict[str, dict]], metrics: Sequence[str], title: str) -> str:
    """One bar panel per breakdown (e.g. by source, length, depth): ``panels[name][group][metric]``
    (0-100) as side-by-side bars per group, with the item count under each group."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    width = 0.8 / len(metrics)
    colors = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")
    for ax, (name, groups) in zip(axes[0], panels.items()):
        labels = list(groups)
        for k, metric in enumerate(metrics):
            ax.bar([i + (k - (len(metrics) - 1) / 2) * width for i in range(len(labels))],
                   [groups[g][metric] for g in labels], width, label=metric, color=colors[k % len(colors)])
        ax.set_xticks(range(len(labels)), [f"{g}\n(n={groups[g]['items']})" for g in labels], rotation=30,
                      ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(f"by {name}", fontsize=10)
    axes[0][0].set_ylabel("score")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)
    return path

