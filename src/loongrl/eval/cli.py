"""`loongrl eval longbench|ruler|niah|rows`: generate through a backend, score, write reports.

Each run writes into ``--out``: ``samples*.jsonl`` (one line per finished item: every response,
its extracted answer and score; a rerun resumes from it), ``<name>.json`` (summary + all records),
``<name>.md`` (summary table) and ``<name>.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, dataclass, replace

from loongrl.data.sources import InputError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", required=True,
                   help="hf:MODEL_DIR | openai:BASE_URL#MODEL | vllm:MODEL_DIR (API key from $OPENAI_API_KEY "
                        "or --api-key-env)")
    p.add_argument("--out", required=True, help="output folder (a rerun with the same folder resumes)")
    p.add_argument("--tokenizer", default=None,
                   help="the model's tokenizer folder, for truncation, lengths and (openai:) prefilled prompts rendered "
                        "locally (default: the hf: model's, or the openai: MODEL when it is a local folder, else "
                        "../shared qwen2.5)")
    p.add_argument("--data-dir", default=None,
                   help="shared data folder (default $LOONGRL_SHARED/data, else ../shared/data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=None, help="samples per prompt")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight")
    p.add_argument("--timeout", type=float, default=600.0, help="openai: deadline of one whole request in seconds")
    p.add_argument("--max-retries", type=int, default=4, help="openai: retries per request")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="openai: NAME of the env var with the key")
    p.add_argument("--prefill", default="auto", choices=["auto", "extension", "completions"],
                   help="openai: how an answer prefix is sent: continue_final_message extension (vLLM/SGLang), "
                        "/completions with the chat template rendered locally (needs the tokenizer), or auto: the "
                        "extension until the server rejects it (default)")
    p.add_argument("--batch-size", type=int, default=4, help="hf: prompts per generate call")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="hf: weights dtype (auto: as saved; bfloat16 was 1.7x faster than float32 on this CPU, BENCHMARKS.md)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="items per write to samples.jsonl (default: max(8, --concurrency))")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--window", type=int, default=None,
                   help="the model's context window: every prompt + new tokens must fit it (default: hf:/vllm: the "
                        "model folder's max_position_embeddings, x the YaRN factor when rope scaling is on; openai: "
                        "the MODEL folder's, else 131072). hf:/vllm: at most the model's window; openai: state the "
                        "server's (e.g. one started with YaRN)")
    p.add_argument("--rope-scaling", default="auto",
                   help="hf:/vllm: rope scaling beyond the model's native window: auto (default: YaRN only when the "
                        "requested lengths exceed it, factor the smallest power of two covering them), off, or "
                        "yarn:FACTOR. openai: set where the server is started (docs/eval.md)")
    from loongrl.generation.memory_agent import MemoryAgentConfig

    p.add_argument("--memory-agent", action="store_true",
                   help="read each prompt's document chunk by chunk, rewriting a memory, then answer from the memory "
                        "(MemAgent's protocol; prompts may exceed the window; docs/eval.md \"Memory agent\")")
    # default None: given without --memory-agent they are refused, not ignored (_memory_config fills the defaults)
    p.add_argument("--memory-chunk-tokens", type=int,
                   help=f"memory agent: document tokens read per turn (default {MemoryAgentConfig.chunk_tokens}, "
                        "MemAgent's)")
    p.add_argument("--memory-tokens", type=int,
                   help="memory agent: new tokens of each memory update, so the memory's size (default "
                        f"{MemoryAgentConfig.memory_tokens})")
    p.add_argument("--memory-answer-tokens", type=int,
                   help="memory agent: new tokens of the final answer; replaces --max-new-tokens (default "
                        f"{MemoryAgentConfig.answer_tokens})")


def _model_tokenizer(args) -> str | None:
    """--tokenizer, else the model's own folder (hf:PATH, or openai:...#MODEL when MODEL is a folder)."""
    if args.tokenizer:
        return args.tokenizer
    if args.backend.startswith("hf:"):
        if not os.path.exists(args.backend[3:]) and args.backend[3:].startswith((".", "/")):  # as make_backend
            raise ValueError(f"backend spec {args.backend!r}: model folder {args.backend[3:]} does not exist")
        return args.backend[3:]
    model = args.backend.rpartition("#")[2]
    return model if args.backend.startswith("openai:") and os.path.isdir(model) else None


@dataclass
class Window:
    """The context window an evaluation's requests are checked against before anything is generated."""

    tokens: int
    source: str
    """Where `tokens` came from (config.json, the YaRN factor, --window, the default), for messages and reports."""
    rope: dict | None = None
    """The YaRN plan an hf:/vllm: model is loaded with (`loongrl.generation.window.yarn_plan`), or None."""
    served: bool = False
    """An openai: endpoint: its rope scaling is the server's, unknown here."""
    memory_agent: bool = False
    """--memory-agent: prompts may exceed the window; each turn must fit it."""

    def settings(self) -> dict:
        """What goes into the run settings (and so the resume fingerprint)."""
        return {"window": self.tokens, "rope_scaling": self.rope["rope_scaling"] if self.rope else None}

    def report(self) -> dict:
        from loongrl.generation.window import describe

        rope = "the server's (set where it was started)" if self.served else describe(self.rope)
        return {"tokens": self.tokens, "source": self.source, "rope_scaling": rope}


def _window(args, needed: int) -> Window:
    """The window for requests of up to `needed` tokens (prompt + new tokens; RULER/NIAH: the longest length).

    hf:/vllm: the model folder's config.json window, with YaRN per --rope-scaling (auto: only when `needed`
    exceeds the native window; `loongrl.generation.window.rope_plan`, shared with training); --window may only
    lower it. openai: the server's rope scaling is not ours to set: --window as stated (a warning when it exceeds
    the local folder's config), else the MODEL folder's config.json, else 131072."""
    from loongrl.eval.ruler import DEFAULT_WINDOW
    from loongrl.generation.window import (describe, model_window, parse_rope_scaling, read_model_config, rope_plan,
                                          rope_scaling_of)

    memory_agent = getattr(args, "memory_agent", False)  # (tests build args without the flag)
    if memory_agent:  # the model sees one turn at a time: a chunk, a memory and its new tokens (+ the problem)
        config = _memory_config(args)
        needed = config.chunk_tokens + 2 * config.memory_tokens
    mode = parse_rope_scaling(args.rope_scaling)
    served = args.backend.startswith("openai:")
    folder = args.backend.rpartition("#")[2] if served else args.backend.partition(":")[2]
    config, where = read_model_config(folder) if os.path.isdir(folder) else (None, f"{folder} is not a local folder")
    native = model_window(config) if config else 0
    if served:
        if mode not in ("auto", "off"):
            raise ValueError(f"--rope-scaling {args.rope_scaling}: an openai: server's rope scaling is set where it "
                             "is started (vllm serve --hf-overrides ... --max-model-len N, or loongrl serve vllm "
                             "--rope-scaling; docs/eval.md \"Beyond the native window\"); state its window with --window")
        if args.window:
            if native and args.window > native:
                print(f"warning: --window {args.window} exceeds the {native}-token window of {where}: the server must "
                      "run the model with rope scaling (e.g. vllm serve --hf-overrides with YaRN), else long prompts "
                      "are refused or answered badly", file=sys.stderr)
            window = Window(args.window, "--window", served=True)
        elif native:
            window = Window(native, f"max_position_embeddings of {where}", served=True)
        else:
            window = Window(DEFAULT_WINDOW, f"the default ({where}; --window states the server's)", served=True)
    elif not native:
        if mode not in ("auto", "off"):
            raise ValueError(f"--rope-scaling {args.rope_scaling}: the model's config cannot be read ({where})")
        window = Window(args.window, "--window") if args.window else \
            Window(DEFAULT_WINDOW, f"the default ({where}; --window to state it)")
    else:
        plan = rope_plan(config, where, needed, mode)
        if plan is not None:
            window = Window(plan["max_position_embeddings"], f"{describe(plan)} over the native window of {where}, "
                                                             f"--rope-scaling {args.rope_scaling}", plan)
        else:
            own = rope_scaling_of(config)
            why = "off" if mode == "off" else "none needed (auto: the requests fit)" if own is None else \
                f"the model's own ({own.get('rope_type') or own.get('type')} x{float(own.get('factor') or 1):g}), kept"
            window = Window(native, f"max_position_embeddings of {where}; rope scaling {why}")
        if args.window and args.window > window.tokens:
            hint = "a larger YaRN factor (--rope-scaling yarn:FACTOR)" if plan else \
                "rope scaling (--rope-scaling auto, which turns YaRN on for requests longer than the native window, " \
                "or yarn:FACTOR)"
            raise ValueError(f"--window {args.window} exceeds the {window.tokens}-token window of the model "
                             f"({window.source}): it cannot attend that far; use {hint}")
        if args.window:
            window = Window(args.window, f"--window (the model's: {window.tokens}, {window.source})", plan)
    window.memory_agent = bool(memory_agent)
    print(f"note: window {window.tokens} tokens ({window.source})", file=sys.stderr)
    return window


_MEMORY_FLAGS = {"memory_chunk_tokens": "chunk_tokens", "memory_tokens": "memory_tokens",
                 "memory_answer_tokens": "answer_tokens"}


def _memory_config(args):
    from loongrl.generation.memory_agent import MemoryAgentConfig

    return MemoryAgentConfig(**{field: getattr(args, flag) for flag, field in _MEMORY_FLAGS.items()
                                if getattr(args, flag, None) is not None})


def _check_memory_flags(args) -> None:
    """The memory agent's settings without --memory-agent would be ignored: refuse them."""
    given = [f"--{flag.replace('_', '-')}" for flag in _MEMORY_FLAGS if getattr(args, flag, None) is not None]
    if given and not getattr(args, "memory_agent", False):
        raise ValueError(f"{', '.join(given)} set the memory agent: add --memory-agent, or leave them out")


def _check_flags(args) -> None:
    """Refuse, before any tokenizer or model is loaded, a --backend that is not a spec and flags out of range."""
    from loongrl.generation.backends import parse_backend_spec

    parse_backend_spec(args.backend)
    if getattr(args, "eval_command", None) in ("longbench", "ruler", "niah"):  # they read the shared data folder
        from loongrl.tasks import shared_data_dir

        folder = args.data_dir or shared_data_dir()
        if not os.path.isdir(folder):  # else a missing file, named only after the model has loaded
            where = "--data-dir" if args.data_dir else "$LOONGRL_SHARED/data" if os.environ.get("LOONGRL_SHARED") \
                else "the default ../shared/data, relative to this directory"
            raise FileNotFoundError(f"shared data folder {folder} ({where}) does not exist: pass --data-dir DIR "
                                    "(LongBench prompts, RULER data, essays) or set $LOONGRL_SHARED to the folder "
                                    "holding data/")
    at_least_one = ["n", "max_new_tokens", "batch_size", "chunk_size", "window", "limit",  # (None: the default)
                    "num_samples", "num_lengths", "num_depths", "min_len", "max_len"]
    for flag in at_least_one:
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if getattr(args, "min_len", None) is not None and args.min_len > args.max_len:
        raise ValueError(f"--min-len {args.min_len} exceeds --max-len {args.max_len}")
    lengths = getattr(args, "lengths", None)
    if lengths is not None and (not lengths or min(lengths) < 1):
        bad = ", ".join(str(n) for n in lengths if n < 1) or "none given"
        raise ValueError(f"--lengths must be positive token counts: {bad}")
    if args.temperature is not None and not args.temperature >= 0:
        raise ValueError(f"--temperature must be >= 0 (0: greedy), got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
    from loongrl.eval.longbench import PRESETS

    preset = PRESETS.get(getattr(args, "preset", None))  # LongBench's preset samples; the others are greedy, n=1
    n = args.n if args.n is not None else preset.sampling.n if preset else 1
    temperature = args.temperature if args.temperature is not None else preset.sampling.temperature if preset else 0
    if n > 1 and temperature == 0:
        given = f"--n {n}" if args.n is not None else f"--preset {preset.name}'s {n} samples"
        raise ValueError(f"{given} with temperature 0 (greedy) would be {n} identical samples: set --temperature > 0 "
                         "(e.g. 0.6), or --n 1")


def memory_templates():
    """The user templates of the project's prompts, so the memory agent finds their document exactly: the
    rows' (QA and KeyChain: intro + context + blank line + tail), NIAH's and the QwenLong LongBench preset's.
    A benchmark adds its own (LongBench's per-dataset prompts, RULER's tasks)."""
    from loongrl.data.prompts import row_context_templates
    from loongrl.eval import longbench, niah
    from loongrl.generation.memory_agent import ContextTemplate

    return row_context_templates() + [ContextTemplate("niah", niah.USER),
                                      ContextTemplate("longbench qwenlong", longbench.QWENLONG_TEMPLATE)]


def _check_fits(requests: list[tuple[str, int]], window: Window, what: str = "prompt + new tokens") -> None:
    """Refuse, before anything is generated, every request (name, tokens) longer than the window: all named.
    A memory agent reads longer prompts in turns that fit: MemoryAgentBackend checks each item's turns instead."""
    if window.memory_agent:
        return
    over = [(name, n) for name, n in requests if n > window.tokens]
    if not over:
        return
    shown = "; ".join(f"{name}: {n} tokens" for name, n in over[:5]) + \
        (f"; and {len(over) - 5} more" if len(over) > 5 else "")
    fix = "--rope-scaling auto (YaRN sized to the requests) or yarn:FACTOR" if window.rope is None else \
        "a larger --rope-scaling yarn:FACTOR"
    raise ValueError(f"{len(over)} request(s) exceed the {window.tokens}-token window ({window.source}) "
                     f"({what}): {shown}; nothing was generated. Use {fix} for hf:/vllm: backends, or --window to "
                     "state an openai: server's window")


def _backend(args, window: Window, templates=()):
    """The backend of --backend; with --memory-agent, wrapped in a MemoryAgentBackend that knows the project's
    prompt templates (``memory_templates``) and ``templates`` (the benchmark's own)."""
    from loongrl.generation.backends import make_backend

    args.resolved_window = window  # reported by _finish
    backend = make_backend(args.backend, concurrency=args.concurrency, timeout_s=args.timeout,
                           max_retries=args.max_retries, api_key_env=args.api_key_env, batch_size=args.batch_size,
                           dtype=args.dtype, prefill=args.prefill, tokenizer=args.tokenizer, rope=window.rope)
    if not getattr(args, "memory_agent", False):
        return backend
    from loongrl.generation.memory_agent import MemoryAgentBackend

    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        folder = _model_tokenizer(args)
        if folder is None:
            raise ValueError(f"--memory-agent needs the model's own tokenizer (chunks are its tokens, turns are "
                             f"measured with its chat template): {args.backend} names no local folder; give "
                             "--tokenizer DIR")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
    return MemoryAgentBackend(backend, tokenizer, _memory_config(args), [*templates, *memory_templates()],
                              window.tokens)


def _counter(args):
    from loongrl.data.tokens import default_tokenizer, get_counter

    return get_counter(_model_tokenizer(args) or default_tokenizer())


def _model_label(args) -> str:
    """A short model name for plot titles: the last part of the model path or name."""
    return os.path.basename(args.backend.split("#")[-1].rstrip("/")) or args.backend


def _chunk(args) -> int:
    """Items per write to samples.jsonl: at least --concurrency, so that many requests can be in flight."""
    return args.chunk_size or max(8, args.concurrency)


def _sampling(base, args):
    fields = {k: getattr(args, k) for k in ("n", "temperature", "top_p", "max_new_tokens") if getattr(args, k) is not None}
    return replace(base, seed=args.seed, **fields)


def _finish(args, name: str, records, summary: dict, header, rows, plot) -> int:
    from loongrl.eval.report import markdown_table, write_reports

    window = args.resolved_window.report()
    summary["window"] = window
    memory = ""
    if getattr(args, "memory_agent", False):  # the report says how the model read: chunk by chunk
        config = _memory_config(args)
        summary["memory_agent"] = {field: getattr(config, field) for field in _MEMORY_FLAGS.values()}
        memory = (f"; memory agent: chunks of {config.chunk_tokens} tokens, memory {config.memory_tokens}, answer "
                  f"{config.answer_tokens} new tokens")
    md = (f"# {name} ({args.backend})\n\nWindow: {window['tokens']} tokens ({window['source']}); rope scaling: "
          f"{window['rope_scaling']}{memory}\n\n" + markdown_table(header, rows))
    statuses = [s["judge"] for r in records for s in r["samples"] if s.get("judge", "off") != "off"]
    if statuses:  # a failing judge leaves the rule score in place: say how often it failed
        from loongrl.rewards.judge import status_counts

        summary["judge"] = counts = status_counts(statuses)
        md += (f"\nLLM judge: {counts.get('error', 0)} errors in {len(statuses) - counts.get('skipped', 0)} "
               f"verdicts asked ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})\n")
    paths = write_reports(args.out, name, records, summary, md)
    png = plot(os.path.join(args.out, f"{name}.png"))
    print(md, end="")
    print(f"wrote {paths['json']}, {paths['md']}, {png}")
    return 0


def _run_longbench(args) -> int:
    from loongrl.eval import longbench as lb
    from loongrl.eval.report import bar_plot
    from loongrl.eval.run import run_eval

    preset = lb.get_preset(args.preset, max_input_tokens=args.max_input_tokens, strip_think=args.strip_think or None)
    judge = None
    if args.judge_url:
        from loongrl.rewards.judge import JudgeConfig, LLMJudge

        judge = LLMJudge(JudgeConfig(**_judge_config(args)))
    counter = _counter(args)
    planned = []  # every dataset's items and sampling, built and measured before the model is loaded
    for dataset in args.datasets:
        rows = lb.load_rows(dataset, args.data, args.limit)
        items = lb.build_items(dataset, rows, preset, counter.tokenizer, args.data_dir)
        planned.append((dataset, items, _sampling(lb.sampling_for(dataset, preset, args.data_dir), args)))
    requests = [(f"{dataset} {it.id}", counter.count_chat(it.messages) + sampling.max_new_tokens)
                for dataset, items, sampling in planned for it in items]
    window = _window(args, max((n for _, n in requests), default=0))
    _check_fits(requests, window)
    from loongrl.generation.memory_agent import ContextTemplate

    prompts = lb.load_configs(args.data_dir)[0]
    backend = _backend(args, window, [ContextTemplate(f"longbench {d}", preset.template or prompts[d])
                                      for d in args.datasets])
    scorer = lb.make_scorer(preset, judge)
    records = []
    for dataset, items, sampling in planned:
        settings = {"bench": "longbench", "dataset": dataset, "preset": asdict(preset), "data": args.data,
                    "tokenizer": counter.name, "judge": args.judge_model if judge else None, **window.settings()}
        records += run_eval(items, backend, sampling, scorer, os.path.join(args.out, f"samples_{dataset}.jsonl"),
                            settings, chunk_size=_chunk(args), progress=not args.quiet, desc=dataset)
    summary, rows = lb.summarize(records)
    summary["preset"] = preset.name
    if "narrativeqa_buckets" in summary:
        rows += [[f"narrativeqa {b}", v["items"], v["score"]] for b, v in summary["narrativeqa_buckets"].items()]
    return _finish(args, "longbench", records, summary, ["task", "items", "score"], rows,
                   lambda path: bar_plot(path, [r[0] for r in rows], [r[2] for r in rows],
                                         f"LongBench ({preset.name})"))


def _run_ruler(args) -> int:
    from loongrl.eval import ruler
    from loongrl.generation.backends import SamplingConfig
    from loongrl.eval.report import line_plot
    from loongrl.eval.run import run_eval

    data = ruler.RulerData(args.data_dir, squad_path=args.squad)
    registry = ruler.tasks(data)
    names = args.tasks or list(registry)
    unknown = [t for t in names if t not in registry]
    if unknown:
        print(f"error: unknown RULER tasks {unknown} (known: {', '.join(registry)})", file=sys.stderr)
        return 2
    skipped = []
    if "qa_1" in names and not args.squad and not args.tasks:
        names.remove("qa_1")
        skipped.append("qa_1")
        print("note: qa_1 skipped: it needs SQuAD v2 dev, pass --squad PATH", file=sys.stderr)
    counter = _counter(args)
    window = _window(args, max(args.lengths))
    _check_fits([(f"RULER length {n}", n) for n in args.lengths], window, "the length, answer tokens included")
    # the prompts are built for the window; a memory agent reads prompts of the full length in turns
    args.window = window.tokens if not args.memory_agent else \
        max(args.lengths) + (args.max_new_tokens or ruler.REASONING_MAX_NEW_TOKENS)
    # Every task at every length is built before anything is generated: one that cannot fit (qa_2's gold
    # documents alone exceed 1K) is reported with all the others at once, not after hours of the tasks before it.
    planned, problems = [], []
    for name in names:
        items = []
        for length in args.lengths:
            try:
                items += [ruler.generate(registry[name], length, i, data, counter, args.seed, args.reasoning,
                                         args.window, args.max_new_tokens) for i in range(args.num_samples)]
            except ValueError as err:
                problems.append(str(err))
        planned.append((name, items))
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"error: {len(problems)} task/length pairs cannot be built; nothing was generated", file=sys.stderr)
        return 2
    _check_fits([(it.id, it.meta["prompt_tokens"] + it.meta["max_new_tokens"]) for _, items in planned
                 for it in items], window)
    from loongrl.generation.memory_agent import ContextTemplate
    from loongrl.tasks.ruler import singular_niah_template

    niah_template = data.templates["tasks"]["niah"]["template"]
    backend = _backend(args, window, [ContextTemplate(f"RULER {kind}", spec["template"])
                                      for kind, spec in data.templates["tasks"].items()]
                       + [ContextTemplate("RULER niah (singular)", singular_niah_template(niah_template))])
    records = []
    for name, items in planned:
        task = registry[name]
        new_tokens = items[0].meta["max_new_tokens"]
        sampling = _sampling(SamplingConfig(n=1, temperature=0.0, max_new_tokens=new_tokens), args)
        settings = {"bench": "ruler", "task": name, "lengths": args.lengths, "num_samples": args.num_samples,
                    "reasoning": args.reasoning, "require_think": not args.no_require_think, "seed": args.seed,
                    "squad": args.squad, "data_dir": args.data_dir, "tokenizer": counter.name, **window.settings()}
        records += run_eval(items, backend, sampling, ruler.make_scorer({name: task.kind}, args.reasoning,
                                                                        not args.no_require_think),
                            os.path.join(args.out, f"samples_{name}.jsonl"), settings,
                            chunk_size=_chunk(args), progress=not args.quiet, desc=name)
    summary, rows = ruler.summarize(records)
    summary["skipped_tasks"] = skipped
    lengths = summary["lengths"]
    series = {r[0]: [v if v != "" else float("nan") for v in r[1:]] for r in rows}
    return _finish(args, "ruler", records, summary, ["task"] + [str(n) for n in lengths], rows,
                   lambda path: line_plot(path, lengths, series, "RULER", "length (tokens)"))


def _run_niah(args) -> int:
    from loongrl.eval import niah
    from loongrl.generation.backends import SamplingConfig
    from loongrl.eval.report import heatmap
    from loongrl.eval.run import run_eval

    counter = _counter(args)
    lengths, depths = niah.grid(args.min_len, args.max_len, args.num_lengths, args.num_depths)
    window = _window(args, max(lengths))
    # a cell's length is its prompt's, cut to leave room for the new tokens at the window's edge (niah.py)
    _check_fits([(f"NIAH length {n}", n) for n in lengths], window, "the prompt length")
    new_tokens = args.max_new_tokens or (8192 if args.reasoning else 64)
    # a memory agent reads cells longer than the window in turns: they are built at their full length
    items = niah.build_grid(counter, lengths, depths, args.needle, args.seed, args.data_dir, max_new_tokens=new_tokens,
                            window=window.tokens if not args.memory_agent else max(lengths) + new_tokens)
    _check_fits([(it.id, it.meta["prompt_tokens"] + new_tokens) for it in items], window)
    backend = _backend(args, window)
    sampling = _sampling(SamplingConfig(n=1, temperature=0.0, max_new_tokens=new_tokens), args)
    settings = {"bench": "niah", "lengths": lengths, "depths": depths, "needle": args.needle,
                "reasoning": args.reasoning, "require_think": not args.no_require_think, "seed": args.seed,
                "data_dir": args.data_dir, "tokenizer": counter.name, **window.settings()}
    records = run_eval(items, backend, sampling, niah.make_scorer(args.reasoning, not args.no_require_think),
                       os.path.join(args.out, "samples.jsonl"), settings, chunk_size=_chunk(args),
                       progress=not args.quiet, desc="niah")
    summary, rows, matrix, lengths, depths = niah.summarize(records)
    return _finish(args, "niah", records, summary, ["depth"] + [str(n) for n in lengths], rows,
                   lambda path: heatmap(path, matrix, [f"{n / 1000:g}K" for n in lengths], [f"{d:g}" for d in depths],
                                        f"Needle in a haystack ({_model_label(args)})"))


def _run_rows(args) -> int:
    from loongrl.eval import rows as rows_eval
    from loongrl.eval.report import breakdown_plot
    from loongrl.generation.backends import SamplingConfig

    reward = {"require_think": not args.no_require_think, "word_boundary": args.word_boundary}
    if args.judge_url:
        reward["judge_config"] = _judge_config(args)
    sampling = _sampling(SamplingConfig(n=1, temperature=0.0, max_new_tokens=1024), args)
    loaded = rows_eval.load_files(args.files, args.limit)  # measured before the model is loaded
    counter = _counter(args)
    requests = [(f"{path} row {it.meta['row']}", counter.count_chat(it.messages) + sampling.max_new_tokens)
                for path, _, items, _ in loaded for it in items]
    window = _window(args, max(n for _, n in requests))
    _check_fits(requests, window)
    backend = _backend(args, window)
    if hasattr(backend, "check_turns"):  # a memory agent: every file's rows, before the first file is generated
        backend.check_turns([it.messages for _, _, items, _ in loaded for it in items],
                            [f"{path} row {it.meta['row']}" for path, _, items, _ in loaded for it in items])
    records = rows_eval.evaluate(args.files, backend, sampling, args.out, reward, args.limit,
                                 chunk_size=_chunk(args), progress=not args.quiet, loaded=loaded,
                                 settings=window.settings())
    summary, table = rows_eval.summarize(records)
    summary["files"] = args.files
    panels = {rows_eval.BREAKDOWNS[k]: groups for k, groups in summary["breakdowns"].items()}
    names = ", ".join(os.path.basename(f) for f in args.files)
    return _finish(args, "rows", records, summary, ["group", "items", *rows_eval.METRICS], table,
                   lambda path: breakdown_plot(path, panels, ["acc", "f1"],
                                               f"{_model_label(args)} on {names}"))


def _guard(fn):
    def run(args) -> int:
        from loongrl.generation.backends import BackendError
        from loongrl.eval.run import ResumeError

        try:
            _check_memory_flags(args)
            _check_flags(args)
            return fn(args)
        except (InputError, FileNotFoundError, ValueError, BackendError, ResumeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return run


def _judge_arguments(parser: argparse.ArgumentParser, url_help: str) -> None:
    from loongrl.rewards.judge import JudgeConfig

    parser.add_argument("--judge-url", default=None, help=url_help)
    parser.add_argument("--judge-model", default="deepseek-chat")
    parser.add_argument("--judge-key-env", default="JUDGE_API_KEY", help="NAME of the variable holding the API key")
    parser.add_argument("--judge-timeout", type=float, default=JudgeConfig.timeout_s,
                        help="seconds for one whole judge request (default %(default)s)")
    parser.add_argument("--judge-retries", type=int, default=JudgeConfig.max_retries,
                        help="retries after a failed judge request (default %(default)s)")


def _judge_config(args) -> dict:
    """JudgeConfig fields from the judge flags; verdicts are cached in the output folder (reruns pay nothing)."""
    from loongrl.generation.http import check_max_retries

    check_max_retries(args.judge_retries, "--judge-retries: ")
    if not args.judge_timeout > 0:
        raise ValueError(f"--judge-timeout must be > 0, got {args.judge_timeout}")
    return {"base_url": args.judge_url, "model": args.judge_model, "api_key_env": args.judge_key_env,
            "timeout_s": args.judge_timeout, "max_retries": args.judge_retries,
            "cache_path": os.path.join(args.out, "judge_cache.sqlite")}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def register(sub: argparse._SubParsersAction) -> None:
    from loongrl.eval.longbench import DATASETS, PRESETS

    ev = sub.add_parser("eval", help="evaluate a model: LongBench v1, RULER, needle in a haystack, the project's rows")
    esub = ev.add_subparsers(dest="eval_command", required=True)

    lb = esub.add_parser("longbench", help="LongBench v1 reasoning subsets")
    _common(lb)
    lb.add_argument("--data", required=True,
                    help="folder with the official {dataset}.jsonl files, one .jsonl file, or hf:THUDM/LongBench")
    lb.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    lb.add_argument("--preset", default="official", choices=list(PRESETS))
    lb.add_argument("--max-input-tokens", type=int, default=None,
                    help="middle-truncation limit (default: official 31500, loongrl 120000)")
    lb.add_argument("--limit", type=int, default=None, help="first N rows per dataset")
    lb.add_argument("--strip-think", action="store_true", help="official preset: score the text after </think>")
    _judge_arguments(lb, "loongrl preset: OpenAI-compatible judge endpoint")
    lb.set_defaults(func=_guard(_run_longbench))

    ru = esub.add_parser("ruler", help="RULER synthetic tasks")
    _common(ru)
    ru.add_argument("--tasks", nargs="+", default=None, help="task names (default: all 13; qa_1 needs --squad)")
    ru.add_argument("--lengths", type=_ints, default=[4096], help="comma-separated, e.g. 4096,8192,16384")
    ru.add_argument("--num-samples", type=int, default=10, help="samples per task and length")
    ru.add_argument("--squad", default=None, help="SQuAD v2 dev json for qa_1")
    ru.add_argument("--reasoning", action="store_true",
                    help="reasoning models: no answer prefix, 8192 new tokens, answer after </think>")
    ru.add_argument("--no-require-think", action="store_true",
                    help="reasoning: score the whole output when there is no </think> (default: score 0)")
    ru.set_defaults(func=_guard(_run_ruler))

    ni = esub.add_parser("niah", help="needle in a haystack grid and heatmap")
    _common(ni)
    ni.add_argument("--min-len", type=int, default=1000)
    ni.add_argument("--max-len", type=int, default=128000)
    ni.add_argument("--num-lengths", type=int, default=15)
    ni.add_argument("--num-depths", type=int, default=10)
    ni.add_argument("--needle", default="magic-number", choices=["magic-number", "kamradt"])
    ni.add_argument("--reasoning", action="store_true", help="8192 new tokens, answer after </think>")
    ni.add_argument("--no-require-think", action="store_true")
    ni.set_defaults(func=_guard(_run_niah))

    ro = esub.add_parser("rows", help="the project's own row files (KeyChain, QA, Book RULER...), shared scorer")
    _common(ro)
    ro.add_argument("files", nargs="+", help=".parquet or .jsonl row files in the canonical schema")
    ro.add_argument("--limit", type=int, default=None, help="first N rows per file")
    ro.add_argument("--no-require-think", action="store_true",
                    help="score the whole response when there is no </think> (default: as training, score 0)")
    ro.add_argument("--word-boundary", action="store_true", help="two-way match on word boundaries")
    _judge_arguments(ro, "OpenAI-compatible LLM judge endpoint (hybrid reward)")
    ro.set_defaults(func=_guard(_run_rows))
