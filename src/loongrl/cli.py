"""The `loongrl` command line: a thin layer over the library API.

Each pipeline package registers its own subcommands; this file only wires them.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from loongrl.data import cli as data_cli

    parser = argparse.ArgumentParser(prog="loongrl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    data_cli.register(sub)
    try:  # rewards CLI lands with the rewards package
        from loongrl.rewards import cli as rewards_cli
    except ImportError:
        rewards_cli = None
    if rewards_cli is not None:
        rewards_cli.register(sub)
    from loongrl.train import cli as train_cli
    train_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
