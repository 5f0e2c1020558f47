"""The `loongrl` command line: a thin layer over the library API.

Each pipeline package registers its own subcommands; this file only wires them. Only the package of
the command being run is imported (a data command never imports the evaluation or training code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command -> the module that registers it, in pipeline order.
COMMANDS = {"model": "loongrl.generation.cli", "serve": "loongrl.generation.cli", "data": "loongrl.data.cli",
            "score": "loongrl.rewards.cli", "train": "loongrl.train.cli", "eval": "loongrl.eval.cli",
            "reproduce": "loongrl.experiment.cli"}


class Parser(argparse.ArgumentParser):
    """Shows each option's default in --help; subcommand parsers inherit the class (add_subparsers)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: with all commands registered, or only the one `argv` names."""
    parser = Parser(prog="loongrl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    command = next((a for a in argv if not a.startswith("-")), None) if argv else None
    registered = set()
    for name, module in COMMANDS.items():
        if command in COMMANDS and module != COMMANDS[command]:
            sub.add_parser(name, help=f"(see `loongrl {name} --help`)")  # keeps the usage line complete
        elif module not in registered:  # a module registers all of its commands at once
            importlib.import_module(module).register(sub)
            registered.add(module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        # a path the user gave: one line, not a traceback (each command handles its own input errors)
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
