"""`loongrl reproduce`: an experiment's fixed sequence of steps, each cached by a hash of its settings.

    data -> filter -> synthesis -> mix -> train -> evaluate -> report

Each step calls the library functions the floor below's commands call, and prints the command that does the
same by hand. Its hash covers its own settings (input files by sha256) and the hash of the step before it, so
a changed setting reruns that step and every later one, never an earlier one. A step that finishes writes a
stamp, `WORK/stamps/<step>.json` (atomically, last): a rerun whose hash matches the stamp skips the step and
says so. A step that was interrupted has no stamp and runs again: the filter resumes from its count cache,
training from its last checkpoint (`loongrl train`'s own resume), evaluation from its samples files.

Layout of WORK (default `runs/<name>`)::

    experiment.json           the validated experiment
    sources/                  data: the first `max_items` rows of each local source; sources.json
    filter/ids_<source>.txt   filter: the kept item ids (+ .stats.json, .cache.jsonl)
    data/<part>.parquet       synthesis: one file per part; data/<mix>.parquet: the mixture (+ card, lengths)
    train/                    train: `loongrl train RECIPE --out WORK/train`
    eval/<base|trained>/<benchmark>/   evaluate: `loongrl eval ... --out` folders
    report/                   report: report.md, report.json, PNG figures
    stamps/<step>.json        what each finished step was run with
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass

from loongrl.data.io import file_sha256, write_json_atomic, write_text_atomic
from loongrl.train.recipe import to_dict

from .config import Experiment, ExperimentError

STEPS = ("data", "filter", "synthesis", "mix", "train", "evaluate", "report")


class StepError(RuntimeError):
    """A step that failed; the message names the step."""


@dataclass
class Paths:
    """Where the steps of one experiment read and write."""

    work: str

    def __post_init__(self):
        self.work = os.path.abspath(self.work)
        self.sources, self.filter, self.data = (os.path.join(self.work, d) for d in ("sources", "filter", "data"))
        self.train, self.eval, self.report = (os.path.join(self.work, d) for d in ("train", "eval", "report"))
        self.stamps = os.path.join(self.work, "stamps")

    def part(self, name: str) -> str:
        return os.path.join(self.data, f"{name}.parquet")

    def ids(self, source: str) -> str:
        return os.path.join(self.filter, f"ids_{source}.txt")


def default_work_dir(exp: Experiment) -> str:
    return exp.work_dir or os.path.join("runs", exp.name)


def _q(path: str) -> str:
    """A path as printed in a command: relative to the current folder when under it (shorter to read)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _sha(path: str | None) -> str | None:
    if path is None or path.startswith("hf:"):
        return path
    return file_sha256(path) or "missing"


# --------------------------------------------------------------------------------------------------- data
def source_file(exp: Experiment, paths: Paths, name: str) -> tuple[str, str]:
    """(format, file) of a source as the later steps read it: the data step's copy when it keeps a prefix."""
    s = next(s for s in exp.sources if s.name == name)
    if s.max_items is None or s.input.startswith("hf:"):
        return s.format, s.input
    ext = ".jsonl" if s.format in ("musique", "jsonl") else ".json"
    return s.format, os.path.join(paths.sources, f"{s.name}{ext}")


def data_settings(exp: Experiment, paths: Paths) -> dict:
    return {"sources": [dict(to_dict(s), sha256=_sha(s.input)) for s in exp.sources], "models": exp.models}


def data_commands(exp: Experiment, paths: Paths) -> list[str]:
    lines = [f"loongrl model fetch {m}" for m in exp.models]
    for s in exp.sources:
        fmt, path = source_file(exp, paths, s.name)
        if path != s.input:
            lines.append(f"# the first {s.max_items} rows of {_q(s.input)} -> {_q(path)}")
    return lines or ["# nothing to do: the sources are read where they are"]


def run_data(exp: Experiment, paths: Paths) -> dict:
    from loongrl.data.sources import load_source
    from loongrl.generation.models import fetch
    from loongrl.readers import iter_json_rows

    for m in exp.models:
        fetch(m)
    os.makedirs(paths.sources, exist_ok=True)
    out = {}
    for s in exp.sources:
        fmt, path = source_file(exp, paths, s.name)
        if path != s.input:
            rows = []
            for _, row in iter_json_rows(s.input):
                if len(rows) == s.max_items:
                    break
                rows.append(row)  # a bad row is copied as it is: the loader below counts it
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) if path.endswith(".jsonl") \
                else json.dumps(rows, ensure_ascii=False)
            write_text_atomic(path, text)
        data = load_source(fmt, path)
        out[s.name] = {"format": fmt, "file": path, "read": data.read, "items": len(data.records),
                       "skipped": dict(data.skipped)}
        print(f"  {s.name}: {len(data.records)} items from {_q(path)} ({data.read} rows read)")
    write_json_atomic(os.path.join(paths.sources, "sources.json"), out)
    return out


# ------------------------------------------------------------------------------------------------- filter
def _filter_sources(exp: Experiment) -> list[str]:
    return exp.filter.sources or [s.name for s in exp.sources]


def filter_settings(exp: Experiment, paths: Paths) -> dict | None:
    return None if exp.filter is None else to_dict(exp.filter)


def _filter_config(exp: Experiment):
    from loongrl.data.filter import FilterConfig

    f = exp.filter
    return FilterConfig(k=f.k, temperature=f.temperature, max_new_tokens=f.max_new_tokens, keep_min=f.keep_min,
                        keep_max=f.keep_max, batch_size=f.batch_size, seed=f.seed)


def filter_commands(exp: Experiment, paths: Paths) -> list[str]:
    if exp.filter is None:
        return ["# no filter in this experiment"]
    f, cfg = exp.filter, _filter_config(exp)
    lines, model = [], f.model
    if f.server != "none":
        port = filter_port(exp)
        lines.append(f"loongrl serve {f.server} {_q(f.model)} --port {port} &   # for this step only")
        model = f"openai:http://127.0.0.1:{port}/v1#{f.model}"
    for name in _filter_sources(exp):
        fmt, path = source_file(exp, paths, name)
        lines.append(f"loongrl data filter --source {fmt} --input {_q(path)} --model {model} --out "
                     f"{_q(paths.ids(name))} --k {cfg.k} --temperature {cfg.temperature:g} --max-new-tokens "
                     f"{cfg.max_new_tokens} --keep-min {cfg.keep_min} --keep-max {cfg.keep_max} --batch-size "
                     f"{cfg.batch_size} --concurrency {f.concurrency} --seed {cfg.seed}")
    return lines


def filter_port(exp: Experiment) -> int:
    """The filter server's port: stable across runs (the count cache is keyed by the endpoint)."""
    if exp.filter.port is not None:
        return exp.filter.port
    return 20000 + int(hashlib.sha256(exp.name.encode()).hexdigest(), 16) % 20000


@contextmanager
def _served(exp: Experiment, log_dir: str):
    """The filter's backend spec: `model` as given, or a server started on `model` for the step."""
    f = exp.filter
    if f.server == "none":
        yield f.model
        return
    from loongrl.generation.serve import transformers_serve, vllm_serve

    log, port = os.path.join(log_dir, f"{f.server}-serve.log"), filter_port(exp)
    server = vllm_serve(f.model, log, port=port) if f.server == "vllm" else transformers_serve(f.model, log, port=port)
    with server as base_url:
        yield f"openai:{base_url}#{f.model}"


def run_filter(exp: Experiment, paths: Paths) -> dict:
    from loongrl.data.filter import difficulty_filter
    from loongrl.generation.backends import make_backend

    if exp.filter is None:
        return {}
    os.makedirs(paths.filter, exist_ok=True)
    cfg, out = _filter_config(exp), {}
    with _served(exp, paths.filter) as spec:
        backend = make_backend(spec, concurrency=exp.filter.concurrency, batch_size=exp.filter.batch_size)
        for name in _filter_sources(exp):
            fmt, path = source_file(exp, paths, name)
            stats = difficulty_filter(fmt, path, backend, cfg, paths.ids(name))
            out[name] = {k: stats[k] for k in ("items", "kept", "dropped", "first_pass_correct_histogram")}
            print(f"  {name}: kept {stats['kept']} of {stats['items']} items; correct counts "
                  f"{stats['first_pass_correct_histogram']}")
    return out


# ---------------------------------------------------------------------------------------------- synthesis
def synthesis_settings(exp: Experiment, paths: Paths) -> dict:
    return {"tokenizer": exp.tokenizer, "parts": [dict(to_dict(p), input_sha256=_sha(p.input)) for p in exp.parts]}


def _earlier(exp: Experiment, i: int, paths: Paths) -> list[str]:
    """The files part `i` must not share questions with: every QA-type part before it (unless it may)."""
    p = exp.parts[i]
    if p.reuse_questions or p.kind not in ("keychain", "qa"):
        return []
    return [paths.part(q.name) for q in exp.parts[:i] if q.kind in ("keychain", "qa", "rows")]


def synthesis_commands(exp: Experiment, paths: Paths) -> list[str]:
    lines = []
    for i, p in enumerate(exp.parts):
        out = _q(paths.part(p.name))
        if p.kind == "rows":
            lines.append(f"cp {_q(p.input)} {out}")
        elif p.kind.startswith("book_ruler"):
            book = f" --book {_q(p.input)}" if p.input else ""
            lines.append(f"loongrl data book-ruler --kind {p.kind.removeprefix('book_ruler_')} --out {out} --num "
                         f"{p.num} --max-prompt-tokens {p.max_prompt_tokens} --needles {p.needles} --tokenizer "
                         f"{_q(exp.tokenizer)} --seed {p.seed}{book}")
        else:
            fmt, path = source_file(exp, paths, p.source)
            extra = ""
            if p.kind == "keychain":
                extra += f" --hops {p.hops}" + (f" --num-chains {p.num_chains}" if p.num_chains else "")
            if p.filtered:
                extra += f" --ids {_q(paths.ids(p.source))}"
            extra += "".join(f" --exclude {_q(e)}" for e in _earlier(exp, i, paths))
            lines.append(f"loongrl data {p.kind} --source {fmt} --input {_q(path)} --out {out} --tokenizer "
                         f"{_q(exp.tokenizer)} --max-prompt-tokens {p.max_prompt_tokens} --num {p.num} --start "
                         f"{p.start} --seed {p.seed}{extra}" + ("   # rows marked split=test" if p.split == "test" else ""))
    return lines


def run_synthesis(exp: Experiment, paths: Paths) -> dict:
    from loongrl.data.book_ruler import BookRulerConfig, book_ruler_rows
    from loongrl.data.decontaminate import question_keys
    from loongrl.data.io import RowWriter, iter_rows
    from loongrl.data.pipeline import synthesize
    from loongrl.data.sources import read_id_list
    from loongrl.data.synth import SynthConfig

    os.makedirs(paths.data, exist_ok=True)
    out = {}
    for i, p in enumerate(exp.parts):
        target = paths.part(p.name)
        if p.kind == "rows":
            shutil.copyfile(p.input, target + ".tmp")
            os.replace(target + ".tmp", target)
        elif p.kind.startswith("book_ruler"):
            cfg = BookRulerConfig(kind=p.kind.removeprefix("book_ruler_"), tokenizer=exp.tokenizer, num=p.num,
                                  max_prompt_tokens=p.max_prompt_tokens, needles=p.needles, book=p.input, seed=p.seed)
            writer = RowWriter(target)
            try:
                for row in book_ruler_rows(cfg):
                    writer.write(row)
                writer.close()
            except BaseException:
                writer.abort()
                raise
        else:
            fmt, path = source_file(exp, paths, p.source)
            exclude = frozenset().union(*(question_keys(e) for e in _earlier(exp, i, paths)))
            cfg = SynthConfig(source=fmt, input=path, tokenizer=exp.tokenizer, max_prompt_tokens=p.max_prompt_tokens,
                              keychain=p.kind == "keychain", num_chains=p.num_chains, hops=p.hops, seed=p.seed,
                              num=p.num, start=p.start, exclude=exclude, split=p.split,
                              include=read_id_list(paths.ids(p.source)) if p.filtered else None)
            summary = synthesize(cfg, target, progress=False)
            if summary.written < p.num:
                raise StepError(f"synthesis: part {p.name}: only {summary.written} of {p.num} rows could be made "
                                f"({summary.line()})")
        out[p.name] = sum(1 for _ in iter_rows(target))
        print(f"  {p.name}: {out[p.name]} rows -> {_q(target)}")
    return out


# ---------------------------------------------------------------------------------------------------- mix
def mix_recipe(exp: Experiment, paths: Paths) -> dict:
    """The `loongrl data mix` recipe the mix step writes: the experiment's sources and filter lists filled in,
    every part's questions excluded."""
    m = exp.mix
    parts = []
    for p in m.parts:
        p = dict(p)
        if p["kind"] in ("keychain", "qa"):
            name = p["source"]
            p["source"], p["input"] = source_file(exp, paths, name)
            if p.pop("filtered", False):
                p["ids"] = paths.ids(name)
        parts.append(p)
    recipe = {"seed": m.seed, "tokenizer": exp.tokenizer, "max_prompt_tokens": m.max_prompt_tokens, "parts": parts,
              "exclude": os.path.join(paths.data, f"{m.name}.exclude.txt")}
    if m.total is not None:
        recipe["total"] = m.total
    return recipe


def mix_settings(exp: Experiment, paths: Paths) -> dict | None:
    if exp.mix is None:
        return None
    inputs = {p[k]: _sha(p[k]) for p in exp.mix.parts for k in ("input", "book") if k in p}
    return {"mix": to_dict(exp.mix), "tokenizer": exp.tokenizer, "inputs": inputs}


def mix_commands(exp: Experiment, paths: Paths) -> list[str]:
    if exp.mix is None:
        return ["# no mixture in this experiment"]
    yaml_path = os.path.join(paths.data, f"{exp.mix.name}.yaml")
    return [f"# {_q(yaml_path)}: the mix recipe (sources filled in; the exclude list holds every part's questions)",
            f"loongrl data mix {_q(yaml_path)} --out {_q(paths.part(exp.mix.name))}"]


def run_mix(exp: Experiment, paths: Paths) -> dict:
    import yaml

    from loongrl.data.decontaminate import question_keys
    from loongrl.data.mix import build_mix

    if exp.mix is None:
        return {}
    recipe = mix_recipe(exp, paths)
    keys = set()
    for p in exp.parts:
        if p.kind in ("keychain", "qa", "rows"):
            keys |= question_keys(paths.part(p.name))
    write_text_atomic(recipe["exclude"], "".join(k + "\n" for k in sorted(keys)))
    yaml_path = os.path.join(paths.data, f"{exp.mix.name}.yaml")
    write_text_atomic(yaml_path, yaml.safe_dump(recipe, sort_keys=False))
    card = build_mix(yaml_path, paths.part(exp.mix.name))
    for p in card["parts"]:
        print(f"  {p['name']:<24} {p['rows']:>6} rows  {100 * p['share']:6.2f}%")
    return {"rows": card["rows"], "parts": {p["name"]: p["rows"] for p in card["parts"]}}


# -------------------------------------------------------------------------------------------------- train
@contextmanager
def _data_env(paths: Paths):
    """LOONGRL_DATA = the experiment's data folder while the recipe is read (and nowhere else: evaluation reads
    LOONGRL_DATA as the shared-data folder)."""
    before = os.environ.get("LOONGRL_DATA")
    os.environ["LOONGRL_DATA"] = paths.data
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LOONGRL_DATA", None)
        else:
            os.environ["LOONGRL_DATA"] = before


def load_training_recipe(exp: Experiment, paths: Paths):
    """The recipe with LOONGRL_DATA set to the data folder; every file it trains on must be one a step writes."""
    from loongrl.train.recipe import RecipeError, load_recipe

    with _data_env(paths):
        try:
            recipe = load_recipe(exp.train.recipe)
        except RecipeError as e:
            raise ExperimentError(f"{exp.path}: train.recipe: {e}") from None
    produced = {paths.part(p.name) for p in exp.parts} | ({paths.part(exp.mix.name)} if exp.mix else set())
    for stage in recipe.stages:
        for c in stage.spec.data.components:
            if c.path not in produced:
                raise ExperimentError(
                    f"{exp.path}: train.recipe: stage {stage.name!r} trains on {c.path}, which no step writes "
                    f"(the parts and the mixture write {', '.join(sorted(_q(p) for p in produced))}; name the file "
                    "${LOONGRL_DATA}/<part>.parquet)")
    return recipe


def trained_model(exp: Experiment, paths: Paths) -> str:
    """The last stage's trained model (both backends write it to `NN_<stage>/checkpoint`)."""
    from loongrl.train.orchestrate import stage_dir

    recipe = load_training_recipe(exp, paths)
    last = len(recipe.stages) - 1
    return os.path.join(stage_dir(paths.train, last, recipe.stages[last]), "checkpoint")


def train_settings(exp: Experiment, paths: Paths) -> dict:
    recipe = load_training_recipe(exp, paths)
    return {"recipe": to_dict(recipe), "recipe_sha256": _sha(exp.train.recipe), "backend": exp.train.backend}


def train_commands(exp: Experiment, paths: Paths) -> list[str]:
    return [f"LOONGRL_DATA={_q(paths.data)} loongrl train {_q(exp.train.recipe)} --backend {exp.train.backend} "
            f"--out {_q(paths.train)}"]


def run_train(exp: Experiment, paths: Paths) -> dict:
    recipe = load_training_recipe(exp, paths)
    if exp.train.backend == "verl":
        from loongrl.train import verl_backend

        if verl_backend.run(recipe, paths.train, dry_run=False, resume=True) != 0:
            raise StepError("train: the verl backend failed (see its output above)")
    else:
        from loongrl.train.orchestrate import run_recipe

        run_recipe(recipe, paths.train, resume=True)
    return {"model": trained_model(exp, paths)}


# ----------------------------------------------------------------------------------------------- evaluate
def eval_jobs(exp: Experiment, paths: Paths) -> list[tuple[str, str, list[str]]]:
    """(model label, benchmark, `loongrl eval` argv) for every evaluation of the base and the trained model."""
    ev = exp.evaluate
    recipe = load_training_recipe(exp, paths)
    models = {"base": recipe.model, "trained": trained_model(exp, paths)}
    jobs = []
    for label, model in models.items():
        common = ["--backend", f"{ev.backend}:{model}", "--seed", str(ev.seed), "--batch-size", str(ev.batch_size),
                  "--rope-scaling", ev.rope_scaling, "--quiet"]
        new = ["--max-new-tokens", str(ev.max_new_tokens)] if ev.max_new_tokens else []
        think = [] if ev.require_think else ["--no-require-think"]
        out = os.path.join(paths.eval, label)
        for part in ev.rows:
            jobs.append((label, f"rows_{part}", ["eval", "rows", *common, "--out", os.path.join(out, f"rows_{part}"),
                                                 "--max-new-tokens", str(ev.rows_max_new_tokens), *think,
                                                 paths.part(part)]))
        if ev.longbench is not None:
            lb = ev.longbench
            for preset in lb.presets:
                jobs.append((label, f"longbench_{preset}",
                             ["eval", "longbench", *common, *new, "--out", os.path.join(out, f"longbench_{preset}"),
                              "--data", lb.data, "--preset", preset]
                             + (["--datasets", *lb.datasets] if lb.datasets else [])
                             + (["--limit", str(lb.limit)] if lb.limit else [])))
        if ev.ruler is not None:
            r = ev.ruler
            jobs.append((label, "ruler", ["eval", "ruler", *common, *new, *think, "--out", os.path.join(out, "ruler"),
                                          "--data-dir", ev.data_dir, "--lengths", ",".join(map(str, r.lengths)),
                                          "--num-samples", str(r.num_samples)]
                         + (["--tasks", *r.tasks] if r.tasks else [])))
        if ev.niah is not None:
            n = ev.niah
            jobs.append((label, "niah", ["eval", "niah", *common, *new, *think, "--out", os.path.join(out, "niah"),
                                         "--data-dir", ev.data_dir, "--min-len", str(n.min_len), "--max-len",
                                         str(n.max_len), "--num-lengths", str(n.num_lengths), "--num-depths",
                                         str(n.num_depths)]))
    return jobs


def evaluate_settings(exp: Experiment, paths: Paths) -> dict:
    return {"evaluate": to_dict(exp.evaluate), "jobs": [argv for _, _, argv in eval_jobs(exp, paths)]}


def evaluate_commands(exp: Experiment, paths: Paths) -> list[str]:
    return ["loongrl " + " ".join(_q(a) if os.path.isabs(a) else a for a in argv) for _, _, argv in eval_jobs(exp, paths)]


def run_evaluate(exp: Experiment, paths: Paths) -> dict:
    """Every job through `loongrl eval`'s own functions. A job folder whose `job.json` holds other arguments is
    cleared first (an eval folder resumes only the run it was made by); one that finished is kept."""
    from loongrl.cli import build_parser

    done = {}
    for label, bench, argv in eval_jobs(exp, paths):
        out = argv[argv.index("--out") + 1]
        stamp = os.path.join(out, "job.json")
        recorded = _read_json(stamp)
        if recorded is not None and recorded.get("argv") != argv:
            shutil.rmtree(out)
        elif recorded is not None and recorded.get("finished"):
            print(f"  {label} {bench}: finished earlier ({_q(out)})")
            done[f"{label}/{bench}"] = out
            continue
        os.makedirs(out, exist_ok=True)
        write_json_atomic(stamp, {"argv": argv, "finished": False})
        print(f"  {label} {bench}: loongrl {' '.join(argv[:2])} ...", flush=True)
        args = build_parser(argv).parse_args(argv)
        if args.func(args) != 0:
            raise StepError(f"evaluate: `loongrl {' '.join(argv)}` failed (see its error above)")
        write_json_atomic(stamp, {"argv": argv, "finished": True})
        done[f"{label}/{bench}"] = out
    return done


# ------------------------------------------------------------------------------------------------- report
def report_settings(exp: Experiment, paths: Paths) -> dict:
    return {"reference": to_dict(exp.reference), "experiment": to_dict(exp)}


def report_commands(exp: Experiment, paths: Paths) -> list[str]:
    return [f"# {_q(os.path.join(paths.report, 'report.md'))}: our numbers beside the references, curves, heatmaps"]


def run_report(exp: Experiment, paths: Paths) -> dict:
    from .report import write_report

    return write_report(exp, paths, eval_jobs(exp, paths), trained_model(exp, paths))


# ---------------------------------------------------------------------------------------------- the runner
STEP_FUNCTIONS = {
    "data": (data_settings, data_commands, run_data),
    "filter": (filter_settings, filter_commands, run_filter),
    "synthesis": (synthesis_settings, synthesis_commands, run_synthesis),
    "mix": (mix_settings, mix_commands, run_mix),
    "train": (train_settings, train_commands, run_train),
    "evaluate": (evaluate_settings, evaluate_commands, run_evaluate),
    "report": (report_settings, report_commands, run_report),
}


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):  # missing, or cut short: not a finished step
        return None


def step_hash(settings, previous: str | None) -> str:
    text = json.dumps({"settings": settings, "previous": previous}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class StepResult:
    step: str
    hash: str
    status: str  # cached | ran | would run | skipped (not in the experiment) | not run (--only)
    commands: list[str]
    seconds: float = 0.0


def reproduce(exp: Experiment, work: str | None = None, dry_run: bool = False, until: str | None = None,
              only: str | None = None, log=print) -> list[StepResult]:
    """Run the experiment's steps in order (see the module docstring); returns what each step did.

    `until`: stop after this step. `only`: run this step alone (the steps before it must be done: they are
    checked against their stamps, not run). `dry_run`: print each step, its commands and whether it is cached.
    """
    paths = Paths(work or default_work_dir(exp))
    for name in (until, only):
        if name is not None and name not in STEPS:
            raise ExperimentError(f"unknown step {name!r}; the steps are {', '.join(STEPS)}")
    last = STEPS.index(until) if until else len(STEPS) - 1
    if not dry_run:
        os.makedirs(paths.stamps, exist_ok=True)
        write_json_atomic(os.path.join(paths.work, "experiment.json"), {"file": exp.path, **to_dict(exp)})
    results, previous = [], None
    for i, step in enumerate(STEPS[: last + 1]):
        settings_of, commands_of, run = STEP_FUNCTIONS[step]
        settings = settings_of(exp, paths)
        h = step_hash(settings, previous)
        previous = h
        if settings is None:  # a step the experiment leaves out (no filter, no mixture)
            log(f"[reproduce] {step}: not in this experiment")
            results.append(StepResult(step, h, "skipped", []))
            continue
        stamp_path = os.path.join(paths.stamps, f"{step}.json")
        stamp = _read_json(stamp_path)
        cached = stamp is not None and stamp.get("hash") == h
        commands = commands_of(exp, paths)
        if only is not None and step != only:
            if STEPS.index(step) < STEPS.index(only) and not cached and not dry_run:
                raise ExperimentError(f"--only {only}: step {step} before it is not done with these settings "
                                      f"(run `loongrl reproduce {exp.path} --until {step}` first)")
            results.append(StepResult(step, h, "cached" if cached else "not run", commands))
            continue
        if cached:
            log(f"[reproduce] {step}: cached (hash {h})")
            results.append(StepResult(step, h, "cached", commands))
            continue
        if dry_run:
            log(f"[reproduce] {step}: would run (hash {h})")
            for line in commands:
                log(f"    {line}")
            results.append(StepResult(step, h, "would run", commands))
            continue
        why = "settings changed" if stamp is not None else "not done yet"
        log(f"[reproduce] {step}: running ({why}; hash {h})")
        for line in commands:
            log(f"    $ {line}")
        if stamp is not None:
            os.remove(stamp_path)  # from here on the step's outputs are not those of any stamp
        t0 = time.time()
        try:
            summary = run(exp, paths)
        except (ExperimentError, StepError):
            raise
        except Exception as e:
            raise StepError(f"{step}: {type(e).__name__}: {e}") from e
        seconds = round(time.time() - t0, 1)
        write_json_atomic(stamp_path, {"step": step, "hash": h, "seconds": seconds, "summary": summary,
                                       "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        log(f"[reproduce] {step}: done in {seconds:g} s")
        results.append(StepResult(step, h, "ran", commands, seconds))
    return results
