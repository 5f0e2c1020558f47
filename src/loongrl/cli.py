"""The `loongrl` command line: a thin layer over the library API.

Each pipeline package registers its own subcommands; this file only wires them.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from loongrl.data import cli as data_cli
    from loongrl.eval import cli as eval_cli
    from loongrl.generation import cli as model_cli
    from loongrl.rewards import cli as rewards_cli
    from loongrl.train import cli as train_cli

    parser = argparse.ArgumentParser(prog="loongrl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for package_cli in (model_cli, data_cli, rewards_cli, train_cli, eval_cli):  # pipeline order
        package_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
