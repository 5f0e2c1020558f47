"""`loongrl reproduce EXPERIMENT`: from raw data to the paper's table, one cached step after another
(data -> filter -> synthesis -> mix -> train -> evaluate -> report; docs/reproduce.md)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from .steps import STEPS

    p = sub.add_parser("reproduce", help="run an experiment (experiments/*.yaml) from raw data to its report",
                       description=__doc__)
    p.add_argument("experiment", help="experiment YAML (e.g. experiments/cpu-mini.yaml)")
    p.add_argument("--work", default=None, help="work folder (default: the file's work_dir, else runs/<name>)")
    p.add_argument("--dry-run", action="store_true",
                   help="print each step, the commands that do it by hand and whether it is cached; run nothing")
    p.add_argument("--until", choices=STEPS, default=None, help="stop after this step")
    p.add_argument("--only", choices=STEPS, default=None,
                   help="run this step alone (the steps before it must be done already)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one field of the experiment, YAML value (e.g. evaluate.niah.num_depths=3)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import signal

    import yaml

    from .config import ExperimentError, load_experiment
    from .steps import StepError, reproduce

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --set {item}: expected FIELD=VALUE", file=sys.stderr)
            return 2
        overrides[key] = yaml.safe_load(value)
    # SIGTERM ends the run like Ctrl-C: a server the filter step started is stopped with it, not left behind
    before = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        exp = load_experiment(args.experiment, overrides)
        reproduce(exp, args.work, dry_run=args.dry_run, until=args.until, only=args.only)
    except ExperimentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, before)
    return 0
