"""`loongrl train RECIPE`: run a recipe's stages in order, each in its own folder with a manifest.

Layout of an output folder::

    recipe.json                 the validated recipe
    init_eval.json              held-out accuracy of the starting model
    NN_<stage>/stage.json       written first: the stage's config hash (whose run the folder holds)
    NN_<stage>/data.parquet     the rows the stage trained on (after mixture, transition, length filter)
    NN_<stage>/data_stats.json  mixture parts, length-filter and transition counts (kept/dropped by reason)
    NN_<stage>/checkpoint-N/    TRL's checkpoints every `save_every` steps (weights, optimiser, scheduler, RNG)
    NN_<stage>/metrics.csv      per-step metrics of the stage
    NN_<stage>/checkpoint/      the trained model (HF format)
    NN_<stage>/manifest.json    written last: config, input hashes, steps asked and trained, metrics summary,
                                mining stats, eval
    metrics.csv, tb/            per-step reward, pass rate, response length, KL of all stages
    report.md, report.json, curves.png

A stage whose manifest says `completed` (with the same config and inputs) is skipped on a rerun. A stage
that was interrupted resumes: its folder is kept when its stage.json has the same config hash (else it is
cleared), its prepared data is reused, and training continues from its last checkpoint. A stage is
`completed` only when it trained the steps it asked for (`StageIncomplete` otherwise).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time

from loongrl.data.io import atomic_write, file_sha256, write_json_atomic, write_text_atomic
from loongrl.generation.backends import SamplingConfig
from loongrl.generation.sample import choose_backend, evaluate, score_items
from loongrl.rewards.router import row_scorer

from . import report, transitions
from .recipe import Recipe, RecipeError, Stage, config_hash, to_dict

METRIC_COLUMNS = ("reward", "pass_rate", "response_length", "kl", "entropy", "loss", "zero_std_groups",
                  "learning_rate", "token_accuracy", "judge_errors")


class StageIncomplete(RuntimeError):
    """A stage that trained fewer steps than it asked for: not marked complete, the next stage not started."""


def stage_dir(out_dir: str, index: int, stage: Stage) -> str:
    return os.path.join(out_dir, f"{index:02d}_{stage.name}")


def tb_dir(sdir: str) -> str:
    """A stage's TensorBoard folder (both backends): `tensorboard --logdir OUT/tb` shows every stage."""
    return os.path.join(os.path.dirname(sdir), "tb", os.path.basename(sdir))


def _read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _tokenizer(model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


class StageMetrics:
    """Per-step metrics of one stage, in our column names: CSV in the stage folder, the manifest's summary
    and, with a `tb_dir`, TensorBoard scalars. TRL stages feed it as they log; verl stages after training,
    from verl's file logger (`verl_backend.read_verl_metrics`; verl writes its own TensorBoard)."""

    def __init__(self, sdir: str, tb_dir: str | None, stage: str, step_offset: int):
        self.rows: list[dict] = []
        self.path = os.path.join(sdir, "metrics.csv")
        self.stage, self.offset = stage, step_offset
        self.tb = None
        if tb_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            shutil.rmtree(tb_dir, ignore_errors=True)
            self.tb = SummaryWriter(tb_dir)
        except ImportError:  # tensorboard not installed: CSV only
            pass

    def __call__(self, row: dict) -> None:
        row = {"stage": self.stage, "global_step": self.offset + row["step"], **row}
        self.rows.append(row)
        if self.tb is not None:
            for key in METRIC_COLUMNS:
                if key in row:
                    self.tb.add_scalar(f"train/{key}", row[key], row["global_step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        write_csv(self.path, self.rows)

    def summary(self) -> dict:
        out = {"steps": len(self.rows)}
        for key in METRIC_COLUMNS:
            vals = [r[key] for r in self.rows if key in r]
            if vals:
                k = max(1, len(vals) // 5)  # mean of the first and last fifth
                out[key] = {"first": sum(vals[:k]) / k, "last": sum(vals[-k:]) / k}
        return out


def write_csv(path: str, rows: list[dict]) -> None:
    cols = ["stage", "global_step", "step"] + [c for c in METRIC_COLUMNS if any(c in r for r in rows)]
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    atomic_write(path, write)


def read_csv(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [{k: (v if k == "stage" else float(v)) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def run_evals(recipe: Recipe, model_path: str, rewards: dict) -> dict:
    if not recipe.eval:
        return {}
    backend = choose_backend(model_path, "transformers", batch_size=32)
    out = {}
    for ev in recipe.eval:
        rows = transitions.read_rows(ev.path)[: ev.max_items]
        out[ev.name] = evaluate(rows, backend, ev.max_new_tokens, row_scorer(rewards, judge=False), seed=recipe.seed, desc=f"eval {ev.name}")
        print(f"  eval {ev.name}: acc={out[ev.name]['acc']:.3f} exact={out[ev.name]['exact']:.3f} (n={len(rows)})")
    return out


def prepare_data(recipe: Recipe, index: int, stage: Stage, model_path: str, prev: dict | None, sdir: str,
                 count) -> tuple[str, dict]:
    """Build the stage's rows: mixture, then the transition (sampling with `model_path`, the previous stage's
    checkpoint), then the length filter; writes data.parquet and data_stats.json."""
    spec = stage.spec
    budget = spec.max_prompt_tokens if stage.rl is not None else spec.max_length
    seed = recipe.seed + index
    stats: dict = {}
    rows: list[dict] = []
    if spec.data.components:
        rows, stats["mixture"] = transitions.build_mixture(spec.data, seed, count, budget)
    t = stage.rl.transition if stage.rl is not None else None
    if t is not None:
        cfg = t.hard_mining or t.retrospective
        sp = cfg.sampling
        sampling = SamplingConfig(n=sp.k, temperature=sp.temperature, top_p=sp.top_p,
                                  max_new_tokens=sp.max_new_tokens, seed=seed)
        mine_own = t.hard_mining is not None and t.hard_mining.source == "mixture"
        candidates = rows if mine_own else transitions.read_rows(prev["data"]["path"])
        backend = choose_backend(model_path, sp.backend, sp.batch_size)
        t0 = time.time()
        items = score_items(candidates, backend, sampling, row_scorer(stage.rl.reward_kwargs), desc=f"{stage.name} sampling")
        if t.hard_mining is not None:
            kept, tstats = transitions.hard_mine(candidates, items, t.hard_mining.solved_threshold)
            rows = kept if mine_own else kept + rows
            kind = "hard_mining"
        else:
            rows, tstats = transitions.retrospective_sample(candidates, items, rows, t.retrospective.hard_threshold,
                                                            t.retrospective.carry_share, seed)
            kind = "retrospective"
        tstats.update(kind=kind, model=model_path, sampling=to_dict(sp), seconds=round(time.time() - t0, 1),
                      mean_acc_before=sum(i["mean_acc"] for i in items) / max(1, len(items)))
        stats["transition"] = tstats
        if count is not None:  # carried/mined rows meet this stage's budget too
            rows, stats["transition_length_filter"] = transitions.length_filter(
                rows, count, spec.data.min_prompt_tokens,
                spec.data.max_prompt_tokens if spec.data.max_prompt_tokens is not None else budget)
        write_json_atomic(os.path.join(sdir, "transition_stats.json"), tstats)
        write_text_atomic(os.path.join(sdir, "transition_items.jsonl"), "".join(
            json.dumps({"id": row["extra_info"].get("id"), "source": row["data_source"], **item}) + "\n"
            for row, item in zip(candidates, items)))
    if not rows:
        raise RecipeError(f"{recipe.source}: stage {stage.name!r} has no rows left to train on: {json.dumps(stats)}")
    path = transitions.write_rows(os.path.join(sdir, "data.parquet"), rows)
    stats["rows"] = len(rows)
    write_json_atomic(os.path.join(sdir, "data_stats.json"), stats)
    return path, stats


def start_stage(stage: Stage, sdir: str, chash: str, resume: bool) -> bool:
    """Keep `sdir` when it holds an interrupted run of this very stage (its stage.json has the config hash
    `chash`), to resume it; otherwise clear it and write stage.json. Returns whether it was kept."""
    path = os.path.join(sdir, "stage.json")
    if resume and os.path.isfile(path):
        try:
            if _read_json(path).get("config_hash") == chash:
                return True
        except ValueError:  # cut short: not ours to trust
            pass
        print(f"[{stage.name}] {sdir} holds a run of another configuration: cleared")
    shutil.rmtree(sdir, ignore_errors=True)
    os.makedirs(sdir)
    write_json_atomic(path, {"stage": stage.name, "config_hash": chash})
    return False


def stage_data(recipe: Recipe, index: int, stage: Stage, model_path: str, prev: dict | None, sdir: str,
               kept: bool) -> tuple[str, dict]:
    """The stage's rows: in a kept folder, those its interrupted run prepared (data_stats.json is written
    after data.parquet, both atomically: it marks them complete); else `prepare_data`. Reusing them matters
    beyond the cost of a transition: a resumed trainer's data position indexes these very rows."""
    path, stats_path = os.path.join(sdir, "data.parquet"), os.path.join(sdir, "data_stats.json")
    if kept and os.path.isfile(path) and os.path.isfile(stats_path):
        import pyarrow.parquet as pq

        stats = _read_json(stats_path)
        if pq.ParquetFile(path).metadata.num_rows == stats.get("rows"):
            print(f"[{stage.name}] reusing the {stats['rows']} rows prepared before the interruption")
            return path, stats
    # SFT's max_length bounds prompt + completion: longer rows are dropped and counted, never truncated.
    count = transitions.prompt_token_counter(_tokenizer(model_path), with_completion=stage.sft is not None)
    return prepare_data(recipe, index, stage, model_path, prev, sdir, count)


def finish_stage(stage: Stage, sdir: str, man: dict, checkpoint: str) -> dict:
    """Write the stage's manifest: `completed` when its `steps` show it trained what it asked for (or it
    stopped short by design, `steps.short_by_design`), else `incomplete`, and raise `StageIncomplete`."""
    steps = man["steps"]
    short = steps["trained"] < steps["asked"] or steps["checkpoint"] < steps["asked"]
    man["status"] = "incomplete" if short and not steps.get("short_by_design") else "completed"
    man["manifest_hash"] = config_hash(man)
    write_json_atomic(os.path.join(sdir, "manifest.json"), man)
    if man["status"] != "completed":
        raise StageIncomplete(f"{stage.name} trained {steps['trained']} of {steps['asked']} steps (last checkpoint "
                              f"{checkpoint}): not marked complete")
    return man


def _inputs(recipe: Recipe, stage: Stage, model_path: str, prev: dict | None) -> dict:
    return {"model": model_path, "previous_manifest_hash": prev["manifest_hash"] if prev else None,
            "data": {c.path: file_sha256(c.path) or "missing"
                     for c in stage.spec.data.components}}


def completed_stage(recipe: Recipe, stage: Stage, sdir: str, model_path: str, prev: dict | None,
                    resume: bool) -> tuple[dict, str, dict | None]:
    """(inputs, config hash, manifest): the manifest only if the stage completed earlier with the same
    config and inputs (any backend); a changed stage is redone, and so is everything after it."""
    inputs = _inputs(recipe, stage, model_path, prev)
    chash = config_hash({"stage": to_dict(stage), "seed": recipe.seed, "inputs": inputs})
    mpath = os.path.join(sdir, "manifest.json")
    if resume and os.path.isfile(mpath):
        man = _read_json(mpath)
        if man.get("status") == "completed" and man.get("config_hash") == chash:
            print(f"[{stage.name}] completed earlier: skipping ({sdir})")
            return inputs, chash, man
        if man.get("config_hash") != chash:
            print(f"[{stage.name}] manifest does not match the recipe or inputs any more: redoing the stage")
    return inputs, chash, None


def run_recipe(recipe: Recipe, out_dir: str, resume: bool = True) -> dict:
    """Run (or resume) every stage with the TRL backend; returns the report dict. The checks before launch that
    apply to TRL (data files, context window; `checks.py`) run first: a problem raises `CheckError`."""
    from . import checks, trl_backend

    checks.require(recipe, "trl")
    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(os.path.join(out_dir, "recipe.json"), to_dict(recipe))
    eval_rewards = next((s.rl.reward_kwargs for s in recipe.stages if s.rl is not None), {})
    init_path = os.path.join(out_dir, "init_eval.json")
    if not (resume and os.path.isfile(init_path)):
        print(f"[init] evaluating {recipe.model}")
        write_json_atomic(init_path, {"model": recipe.model, "eval": run_evals(recipe, recipe.model, eval_rewards)})
    model_path, prev, step_offset = recipe.model, None, 0
    manifests = []
    for i, stage in enumerate(recipe.stages):
        sdir = stage_dir(out_dir, i, stage)
        inputs, chash, man = completed_stage(recipe, stage, sdir, model_path, prev, resume)
        if man is not None:
            manifests.append(man)
            model_path, prev, step_offset = man["checkpoint"], man, step_offset + man["metrics"]["steps"]
            continue
        kept = start_stage(stage, sdir, chash, resume)
        t0 = time.time()
        print(f"[{stage.name}] {stage.kind} stage from {model_path}")
        data_path, data_stats = stage_data(recipe, i, stage, model_path, prev, sdir, kept)
        print(f"[{stage.name}] {data_stats['rows']} rows")
        # RL: TRL counts optimiser steps (save_steps, max_steps, global_step); the manifest counts RL steps
        unit = trl_backend.optimiser_steps_per_rl_step(stage.rl) if stage.rl is not None else 1
        if stage.rl is not None and data_stats["rows"] < stage.rl.batch_size:  # TRL's RepeatSampler drops it
            raise RecipeError(f"{recipe.source}: stage {stage.name!r}: {data_stats['rows']} rows make no full batch "
                              f"of batch_size {stage.rl.batch_size}: 0 steps per epoch")
        resume_from = trl_backend.last_checkpoint(sdir) if kept else None
        metrics = StageMetrics(sdir, tb_dir(sdir) if "tensorboard" in recipe.logger else None,
                               stage.name, step_offset)
        if resume_from is not None:
            done, planned = trl_backend.checkpoint_step(resume_from), _read_json(
                os.path.join(resume_from, "trainer_state.json"))["max_steps"]
            print(f"[{stage.name}] resuming from {os.path.basename(resume_from)} (step {done // unit} of "
                  f"{planned // unit})")
            for row in trl_backend.logged_rows(resume_from):  # the steps before it, logged by the killed run
                metrics(row)
        try:
            train = trl_backend.train_sft if stage.sft is not None else trl_backend.train_grpo
            result = train(stage.spec, model_path, data_path, sdir, recipe.seed + i, metrics, recipe.logger,
                           recipe.cluster.max_checkpoints, resume_from)
        finally:
            metrics.close()
        ckpt = result["checkpoint"]
        steps = {"asked": stage.spec.steps or result["max_steps"] // unit, "trained": result["global_step"] // unit,
                 "checkpoint": result["global_step"] // unit}
        if unit > 1:
            steps["optimiser_steps"] = result["global_step"]
        if resume_from is not None:
            steps["resumed_from"] = trl_backend.checkpoint_step(resume_from) // unit
        man = {"stage": stage.name, "index": i, "kind": stage.kind, "backend": "trl",
               "config": to_dict(stage), "config_hash": chash, "inputs": inputs,
               "data": {"path": data_path, "rows": data_stats["rows"], "sha256": file_sha256(data_path)},
               "data_stats": data_stats, "steps": steps, "metrics": metrics.summary(), "checkpoint": ckpt}
        if steps["trained"] < steps["asked"]:
            finish_stage(stage, sdir, man, f"step {steps['checkpoint']}")  # raises
        man["eval"] = run_evals(recipe, ckpt, eval_rewards)
        man["seconds"] = round(time.time() - t0, 1)
        man = finish_stage(stage, sdir, man, f"step {steps['checkpoint']}")
        manifests.append(man)
        model_path, prev, step_offset = ckpt, man, step_offset + man["metrics"]["steps"]
    return write_run_report(out_dir, recipe, _read_json(init_path), manifests)


def write_run_report(out_dir: str, recipe: Recipe, init: dict, manifests: list[dict]) -> dict:
    """The run's metrics.csv (every stage's rows) and report.md / report.json / curves.png (both backends)."""
    all_rows = []
    for i, stage in enumerate(recipe.stages):
        path = os.path.join(stage_dir(out_dir, i, stage), "metrics.csv")
        if os.path.isfile(path):
            all_rows += read_csv(path)
        else:  # a stage completed by an older loongrl, which wrote no metrics for verl stages
            print(f"[report] no {path}: stage {stage.name} has no per-step rows in the run's metrics.csv")
    write_csv(os.path.join(out_dir, "metrics.csv"), all_rows)
    return report.write_report(out_dir, recipe, init, manifests, all_rows)
