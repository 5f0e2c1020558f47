"""The experiment's report, one folder (`WORK/report/`): report.md and report.json with our numbers beside the
reference rows and the base model's, per benchmark and subset; the training curves (`train/report.py`'s
curves.png); held-out accuracy by length; the NIAH heatmaps (`loongrl eval niah`'s); the settings and versions.
Figures are those the floors below draw, copied in; only the held-out-by-length plot is drawn here."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from importlib import metadata

from loongrl.data.io import write_json_atomic, write_text_atomic
from loongrl.eval.report import line_plot, markdown_table
from loongrl.train.recipe import to_dict

MODELS = ("base", "trained")


def _summary(path: str) -> dict | None:
    """The `summary` of a `loongrl eval` output file, or None when that evaluation did not run."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)["summary"]
    except OSError:
        return None


def _shown(path: str) -> str:
    """A path as the report prints it: relative to the current folder when under it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _cell(v) -> str:
    return "-" if v is None else f"{v:.1f}" if isinstance(v, (int, float)) else str(v)


def _table(columns: list[str], rows: list[tuple[str, str, dict]]) -> str:
    """A Markdown table: one row per (model, where from, {column: score})."""
    return markdown_table(["model", "numbers from", *columns],
                          [[m, src, *[_cell(scores.get(c)) for c in columns]] for m, src, scores in rows])


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("loongrl", "torch", "transformers", "trl", "verl", "vllm"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out["git_commit"] = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _copy(src: str, dst: str) -> str | None:
    if not os.path.isfile(src):
        return None
    shutil.copyfile(src, dst)
    return os.path.basename(dst)


def write_report(exp, paths, jobs: list[tuple[str, str, list[str]]], trained: str) -> dict:
    """Write `paths.report/report.md`, `report.json` and the figures; returns the report's path and the number
    of file pairs that share questions."""
    from loongrl.data.decontaminate import overlap

    from .steps import STEPS

    out = paths.report
    os.makedirs(out, exist_ok=True)
    outs = {(label, bench): argv[argv.index("--out") + 1] for label, bench, argv in jobs}
    refs = exp.reference
    md = [f"# {exp.name}: reproduction report", "",
          f"Experiment `{_shown(exp.path)}`, run in `{_shown(paths.work)}`; written "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Base model: the recipe's `model`; trained: "
          f"`{_shown(trained)}`. Scores are 100 x the mean item score.", ""]
    data: dict = {"experiment": exp.name}

    # -- data: sizes and the disjointness check
    files = [paths.part(p.name) for p in exp.parts if p.kind in ("keychain", "qa", "rows")]
    if exp.mix is not None:
        files.append(paths.part(exp.mix.name))
    shared = overlap([f for f in files if os.path.isfile(f)])
    data["overlaps"] = [o.line() for o in shared]
    listed = ", ".join(f"`{p.name}` ({p.kind}, {p.num} rows, {p.max_prompt_tokens} tokens)" if p.kind != "rows"
                       else f"`{p.name}` (rows of {os.path.basename(p.input)})" for p in exp.parts)
    md += ["## Data", "", f"Parts: {listed}" + (f"; mixture `{exp.mix.name}`." if exp.mix else "."), "",
           "Questions shared between parts: " + ("none (checked with `loongrl.data.decontaminate.overlap`)."
                                                 if not shared else "; ".join(data["overlaps"])), ""]

    # -- training
    md += ["## Training", ""]
    train_report = os.path.join(paths.train, "report.json")
    if os.path.isfile(train_report):
        with open(train_report, encoding="utf-8") as f:
            stages = json.load(f)["stages"]
        md += [markdown_table(["after stage", "kind", "steps", "train rows"],
                              [[s["after"], s["kind"], s["steps"], s["rows"]] for s in stages])]
    curves = _copy(os.path.join(paths.train, "curves.png"), os.path.join(out, "training_curves.png"))
    md += [f"![reward and response length per step]({curves})" if curves else
           "No training curves (no RL stage logged a reward).", ""]
    data["training_curves"] = curves

    # -- held-out rows by length
    if exp.evaluate.rows:
        parts = {p.name: p for p in exp.parts}
        by_part = {name: {m: _summary(os.path.join(outs[(m, f"rows_{name}")], "rows.json")) for m in MODELS}
                   for name in exp.evaluate.rows}
        rows = [[name, parts[name].kind, parts[name].max_prompt_tokens,
                 *[_cell((by_part[name][m] or {}).get("overall", {}).get("acc")) for m in MODELS]]
                for name in exp.evaluate.rows]
        md += ["## Held-out rows (shared scorer, greedy)", "",
               markdown_table(["part", "kind", "length (tokens)", "base acc", "trained acc"], rows)]
        series, lengths = {}, sorted({parts[n].max_prompt_tokens for n in exp.evaluate.rows})
        for kind in dict.fromkeys(parts[n].kind for n in exp.evaluate.rows):
            for m in MODELS:
                acc = {parts[n].max_prompt_tokens: (by_part[n][m] or {}).get("overall", {}).get("acc")
                       for n in exp.evaluate.rows if parts[n].kind == kind}
                series[f"{m} {kind}"] = [acc.get(n) if acc.get(n) is not None else float("nan") for n in lengths]
        png = line_plot(os.path.join(out, "heldout_by_length.png"), lengths, series,
                        "Held-out accuracy by length", "prompt tokens")
        md += [f"![held-out accuracy by length]({os.path.basename(png)})", ""]
        data["heldout"] = {n: {m: (by_part[n][m] or {}).get("overall") for m in MODELS} for n in exp.evaluate.rows}

    def ours(bench: str, pick) -> list[tuple[str, str, dict]]:
        found = []
        for m in MODELS:
            s = _summary(os.path.join(outs.get((m, bench), ""), f"{bench.split('_')[0]}.json"))
            if s is not None:
                found.append((f"{m} ({exp.name})", "ours", pick(s)))
        return found

    def theirs(benchmark: str) -> list[tuple[str, str, dict]]:
        return [(r.model, r.source, r.scores) for r in refs if r.benchmark == benchmark]

    # -- LongBench v1 and its NarrativeQA buckets
    lb = exp.evaluate.longbench
    for preset in (lb.presets if lb else []):
        mine = ours(f"longbench_{preset}", lambda s: dict(s["scores"], average=s["average"]))
        columns = list(dict.fromkeys([c for _, _, s in mine for c in s] + [c for _, _, s in theirs("longbench") for c in s]))
        columns = [c for c in columns if c != "average"] + ["average"]
        md += [f"## LongBench v1 ({preset} preset)", "", _table(columns, theirs("longbench") + mine)]
        data[f"longbench_{preset}"] = mine
        buckets = ours(f"longbench_{preset}", lambda s: {b: v["score"] for b, v in s.get("narrativeqa_buckets", {}).items()})
        if any(s for _, _, s in buckets):
            cols = list(dict.fromkeys(c for _, _, s in theirs("narrativeqa_buckets") + buckets for c in s))
            md += [f"NarrativeQA by context length ({preset} preset):", "",
                   _table(cols, theirs("narrativeqa_buckets") + buckets)]

    # -- RULER
    if exp.evaluate.ruler is not None:
        mine = ours("ruler", lambda s: dict(s["average"]))
        cols = list(dict.fromkeys([c for _, _, s in theirs("ruler") + mine for c in s]))
        md += ["## RULER (average over tasks, by length)", "", _table(cols, theirs("ruler") + mine)]
        data["ruler"] = mine

    # -- NIAH
    if exp.evaluate.niah is not None:
        mine = ours("niah", lambda s: {"average": s["average"]})
        md += ["## Needle in a haystack", "", _table(["average"], theirs("niah") + mine)]
        for m in MODELS:
            png = _copy(os.path.join(outs.get((m, "niah"), ""), "niah.png"), os.path.join(out, f"niah_{m}.png"))
            if png:
                md += [f"![NIAH, {m} model]({png})", ""]
        data["niah"] = mine

    # -- settings and versions
    versions = _versions()
    stamps = {}
    for step in STEPS:  # the steps finished before this one
        path = os.path.join(paths.stamps, f"{step}.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                stamp = json.load(f)
            stamps[step] = {"hash": stamp["hash"], "seconds": stamp["seconds"]}
    md += ["## Settings and versions", "",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v), "",
           "Steps (hash, seconds): " + ", ".join(f"{k} {v['hash']} ({v['seconds']:g} s)" for k, v in stamps.items()), "",
           "Commands that redo each step by hand: `loongrl reproduce " + _shown(exp.path) + " --dry-run`.", "",
           "<details><summary>The experiment, as validated</summary>", "", "```json",
           json.dumps(to_dict(exp), indent=1), "```", "</details>", ""]
    data.update(versions=versions, steps=stamps)
    write_text_atomic(os.path.join(out, "report.md"), "\n".join(md))
    write_json_atomic(os.path.join(out, "report.json"), data)
    print(f"  wrote {_shown(os.path.join(out, 'report.md'))}")
    return {"report": os.path.join(out, "report.md"), "overlaps": len(shared)}
