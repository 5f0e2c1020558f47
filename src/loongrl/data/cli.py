"""`loongrl data ...`: keychain, qa, filter, book-ruler, mix, validate, decontaminate."""

from __future__ import annotations

import argparse
import sys

from loongrl.progress import progress_bar

from loongrl.data.fill import PLACEMENTS
from loongrl.data.sources import SOURCES, InputError, read_id_list
from loongrl.data.tokens import ENGINES, default_tokenizer


def _add_synth_args(p: argparse.ArgumentParser, keychain: bool) -> None:
    p.add_argument("--source", required=True, choices=SOURCES, help="format of --input")
    p.add_argument("--input", required=True, help="source file (.json/.jsonl, optionally .gz) or hf:[OWNER/NAME[:CONFIG]]")
    p.add_argument("--out", required=True, help="output row file: .parquet (verl schema) or .jsonl")
    p.add_argument("--tokenizer", default=None, help="HF tokenizer folder or hub name (default: ../shared qwen2.5)")
    p.add_argument("--max-prompt-tokens", type=int, default=16384, help="budget for the final chat prompt")
    p.add_argument("--num", type=int, default=None, help="rows to write (default: all usable items)")
    p.add_argument("--start", type=int, default=0, help="first source item to use (file order)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--placement", choices=PLACEMENTS, default="uniform", help="where gold passages go")
    p.add_argument("--depth", type=float, default=0.5, help="gold depth for --placement fixed")
    p.add_argument("--sigma", type=float, default=0.3, help="spread for --placement gaussian")
    p.add_argument("--system-prompt", default="loongrl", help="loongrl | none | FILE | literal text")
    p.add_argument("--extra-pool", default=None, help="extra filler passages: JSON list of {title, text}")
    p.add_argument("--exclude", action="append", default=[], metavar="FILE",
                   help="leave out the items of FILE: an earlier output (.parquet/.jsonl rows) or a list of ids or "
                        "questions, one per line (repeatable; how to make disjoint sets: docs/data.md)")
    p.add_argument("--check-overlap", action="append", default=[], metavar="FILE",
                   help="after writing, warn if the output shares questions with FILE (repeatable)")
    p.add_argument("--ids", default=None, help="only these item ids, one per line (e.g. `data filter` output)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (output is identical for any N)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input row")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    if keychain:
        p.add_argument("--num-chains", type=int, default=None, help="chains per row (default 4*budget/1024)")
        p.add_argument("--hops", type=int, default=4, help="keys per chain")
        p.add_argument("--key-format", default="hex8",
                       help="hex8 | uuid36 | alnumN (N random letters and digits, 1 <= N <= 64); the format must make "
                            "at least twice the distinct keys a row needs (chains x hops)")


def _run_synth(args: argparse.Namespace) -> int:
    from loongrl.data.decontaminate import overlap, question_keys
    from loongrl.data.pipeline import synthesize
    from loongrl.data.synth import SynthConfig

    keychain = args.data_command == "keychain"
    try:
        cfg = SynthConfig(
            source=args.source, input=args.input, tokenizer=args.tokenizer or default_tokenizer(),
            max_prompt_tokens=args.max_prompt_tokens, keychain=keychain,
            num_chains=getattr(args, "num_chains", None), hops=getattr(args, "hops", 4),
            key_format=getattr(args, "key_format", "hex8"), placement=args.placement, depth=args.depth,
            sigma=args.sigma, system_prompt=args.system_prompt, seed=args.seed, num=args.num, start=args.start,
            exclude=frozenset().union(*(question_keys(path) for path in args.exclude)),
            include=read_id_list(args.ids) if args.ids else None, extra_pool=args.extra_pool, strict=args.strict,
        )
        for path in args.check_overlap:  # a bad file is found before the rows are made, not after
            question_keys(path)
        summary = synthesize(cfg, args.out, workers=args.workers, progress=not args.quiet)
    except (InputError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.line())
    if not summary.written:
        print(f"error: no row could be made; {args.out} holds none (skip reasons above)", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    for found in overlap([*args.check_overlap, args.out]):
        if found.second == args.out:  # the checked files among themselves are not this command's business
            print(f"warning: {found.line()}; pass --exclude {found.first} to leave them out", file=sys.stderr)
    return 0


def _run_validate(args: argparse.Namespace) -> int:
    from loongrl.data.validate import recorded_tokenizer, validate_file

    try:
        tokenizer = args.tokenizer or recorded_tokenizer(args.file) or default_tokenizer()
        with progress_bar(unit="row", desc="validate", disable=args.quiet) as bar:
            report = validate_file(args.file, tokenizer, args.max_prompt_tokens, progress=bar.update,
                                   engine=args.engine)
    except ValueError as e:  # a JSONL line that is not JSON: iter_rows names the file and line
        print(f"error: {e}", file=sys.stderr)
        return 2
    if report.other_tokenizer:
        print(f"note: {report.other_tokenizer} rows were made with another tokenizer than {tokenizer}: their budget "
              "was checked with it, their recorded token counts were not", file=sys.stderr)
    for e in report.errors[: args.max_errors]:
        print(e)
    if len(report.errors) > args.max_errors:
        print(f"... {len(report.errors) - args.max_errors} more problems")
    print(f"{report.rows} rows checked, {report.failed_rows} failed")
    return 0 if report.ok else 1


def _run_filter(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from loongrl.data.filter import FilterConfig, difficulty_filter
    from loongrl.generation.backends import BackendError, make_backend

    options = {"concurrency": args.concurrency, "batch_size": args.batch_size}
    try:
        cfg = FilterConfig(**{f.name: getattr(args, f.name) for f in fields(FilterConfig)})
        backend = make_backend(args.model, **options)
        rescue = make_backend(args.rescue_model, **options) if args.rescue_model else None
        with progress_bar(unit="item", desc="filter", disable=args.quiet) as bar:
            stats = difficulty_filter(args.source, args.input, backend, cfg, args.out, rescue_backend=rescue,
                                      progress=bar.update)
    except (InputError, FileNotFoundError, ValueError, BackendError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{stats['items']} items: kept {stats['kept_first_pass']} in the first pass, rescued "
          f"{stats['rescued']}, dropped {stats['dropped']}; correct counts {stats['first_pass_correct_histogram']}")
    print(f"wrote {args.out} and {args.out}.stats.json")
    return 0


def _run_mix(args: argparse.Namespace) -> int:
    from loongrl.data.mix import MixError, build_mix

    try:
        card = build_mix(args.recipe, args.out)
    except (MixError, InputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in card["parts"]:
        print(f"{p['name']:<24} {p['rows']:>6} rows  {100 * p['share']:6.2f}%  tokens {p['prompt_tokens']}")
    print(f"wrote {args.out} ({card['rows']} rows), {args.out}.card.json, {args.out}.lengths.png")
    return 0


def _run_book_ruler(args: argparse.Namespace) -> int:
    from loongrl.data.book_ruler import BookRulerConfig, book_ruler_rows
    from loongrl.data.io import RowWriter

    cfg = BookRulerConfig(kind=args.kind, tokenizer=args.tokenizer or default_tokenizer(), num=args.num,
                          max_prompt_tokens=args.max_prompt_tokens, needles=args.needles, book=args.book,
                          system_prompt=args.system_prompt, seed=args.seed)
    writer = RowWriter(args.out)
    try:
        with progress_bar(total=cfg.num, unit="row", desc=f"book ruler {cfg.kind}", disable=args.quiet) as bar:
            for row in book_ruler_rows(cfg):
                writer.write(row)
                bar.update(1)
        writer.close()
    except (ValueError, FileNotFoundError) as e:
        writer.abort()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseException:
        writer.abort()
        raise
    print(f"wrote {writer.count} rows to {args.out}")
    return 0


def _run_decontaminate(args: argparse.Namespace) -> int:
    from loongrl.data.decontaminate import decontaminate
    from loongrl.data.io import write_text_atomic

    try:
        report = decontaminate(args.train, args.eval, args.source)
    except (InputError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_text_atomic(args.out, "".join(line + "\n" for line in report.exclude_lines()))
    for f in report.flagged[: args.max_print]:
        print(f"{f.id}\t{f.question}\t(in {f.eval_file})")
    print(f"{report.checked} training items checked against {report.eval_questions} evaluation questions: "
          f"{len(report.flagged)} flagged; exclude list written to {args.out} (use --exclude {args.out})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="synthesise and check training data")
    dsub = data.add_subparsers(dest="data_command", required=True)
    kc = dsub.add_parser("keychain", help="long-context QA with the question hidden behind a key chain (LoongRL)")
    _add_synth_args(kc, keychain=True)
    kc.set_defaults(func=_run_synth)
    qa = dsub.add_parser("qa", help="plain long-context multi-hop QA filled to a token budget")
    _add_synth_args(qa, keychain=False)
    qa.set_defaults(func=_run_synth)
    flt = dsub.add_parser("filter", help="difficulty filter: keep questions a strong model solves sometimes")
    flt.add_argument("--source", required=True, choices=SOURCES)
    flt.add_argument("--input", required=True, help="source file")
    flt.add_argument("--model", required=True, help="backend: hf:PATH | openai:BASE_URL#MODEL | vllm:PATH")
    flt.add_argument("--rescue-model", default=None, help="second model for the all-wrong items (optional)")
    flt.add_argument("--out", required=True, help="id list to write (plus .stats.json and .cache.jsonl)")
    flt.add_argument("--k", type=int, default=8, help="samples per question")
    flt.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    flt.add_argument("--top-p", dest="top_p", type=float, default=1.0, help="nucleus mass")
    flt.add_argument("--max-new-tokens", type=int, default=2048, help="cap per sample")
    flt.add_argument("--keep-min", type=int, default=1, help="keep items solved at least this many of k times")
    flt.add_argument("--keep-max", type=int, default=None, help="... and at most this many (< k; None: min(6, k-1))")
    flt.add_argument("--rescue-min", type=int, default=1, help="rescue pass (all-wrong items): at least")
    flt.add_argument("--rescue-max", type=int, default=None, help="rescue pass: at most (< k; None: min(7, k-1))")
    flt.add_argument("--batch-size", type=int, default=16, help="items per generation call and cache write")
    flt.add_argument("--concurrency", type=int, default=8, help="requests in flight (OpenAI backend)")
    flt.add_argument("--seed", type=int, default=0)
    flt.add_argument("--quiet", action="store_true")
    flt.set_defaults(func=_run_filter)
    br = dsub.add_parser("book-ruler", help="Book RULER retrieval rows (multi-key / multi-value needles in a book)")
    br.add_argument("--kind", required=True, choices=["multikey", "multivalue"])
    br.add_argument("--out", required=True, help="output .parquet or .jsonl")
    br.add_argument("--num", type=int, default=512)
    br.add_argument("--max-prompt-tokens", type=int, default=16384)
    br.add_argument("--needles", type=int, default=20, help="keys (multikey) or values (multivalue)")
    br.add_argument("--book", default=None, help="plain-text haystack (e.g. a PG19 book); default: the essays")
    br.add_argument("--tokenizer", default=None)
    br.add_argument("--system-prompt", default="loongrl")
    br.add_argument("--seed", type=int, default=0)
    br.add_argument("--quiet", action="store_true")
    br.set_defaults(func=_run_book_ruler)
    mix = dsub.add_parser("mix", help="build a stage's training mixture from named parts (see docs/data.md)")
    mix.add_argument("recipe", help="mix recipe YAML")
    mix.add_argument("--out", required=True, help="output .parquet (plus .card.json and .lengths.png)")
    mix.set_defaults(func=_run_mix)
    val = dsub.add_parser("validate", help="re-check every row: chains, keys, token budget")
    val.add_argument("file", help=".parquet or .jsonl row file")
    val.add_argument("--tokenizer", default=None,
                     help="HF tokenizer to count with (default: the one the rows record, if it is a local folder "
                          "here, else ../shared qwen2.5)")
    val.add_argument("--max-prompt-tokens", type=int, default=None, help="budget (default: each row's own)")
    val.add_argument("--max-errors", type=int, default=50, help="problems to print")
    val.add_argument("--engine", choices=ENGINES, default="auto",
                     help="count with tokenizers + jinja2 (auto: whenever that equals transformers) or transformers")
    val.add_argument("--quiet", action="store_true")
    val.set_defaults(func=_run_validate)
    dec = dsub.add_parser("decontaminate", help="flag training items whose question is in an evaluation set")
    dec.add_argument("--train", required=True, help="training rows (.parquet/.jsonl) or, with --source, a source file")
    dec.add_argument("--source", default=None, choices=SOURCES, help="read --train as this source's raw format")
    dec.add_argument("--eval", nargs="+", required=True,
                     help="evaluation question files: LongBench .jsonl (input), dev question .jsonl(.gz)/.json (question)")
    dec.add_argument("--out", required=True, help="exclude list to write (ids and questions, one per line)")
    dec.add_argument("--max-print", type=int, default=20, help="flagged items to print")
    dec.set_defaults(func=_run_decontaminate)
