"""`loongrl train RECIPE`: run a multi-stage recipe (TRL embedded) or launch / print its verl commands.

Every launch, dry run and preflight first runs the checks before launch (`checks.py`): any problem is printed
as an `error:` line, all of them at once, and the command exits 2 before a stage starts."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from .preflight import ROWS, TIMEOUT

    p = sub.add_parser("train", help="run a multi-stage SFT/GRPO/DAPO recipe (recipes/*.yaml)",
                       description=__doc__)
    p.add_argument("recipe", help="recipe YAML (e.g. recipes/demo-cpu.yaml)")
    p.add_argument("--out", help="output folder (default: runs/<recipe name>)")
    p.add_argument("--backend", choices=("trl", "verl"), default="trl",
                   help="trl: train here with TRL (default); verl: launch verl.trainer.main_ppo per stage")
    p.add_argument("--dry-run", action="store_true",
                   help="run the checks before launch and print them (verl: and each stage's commands), then exit "
                        "(2 on any problem); nothing is trained")
    p.add_argument("--preflight", action="store_true",
                   help="verl: run every stage through verl's real trainer on this CPU for 2 steps (tiny model, "
                        "short data, CPU plugin; verl's vLLM rollout where vLLM imports beside verl, else an hf "
                        "rollout) before renting GPUs; exit 1 if a stage fails")
    p.add_argument("--preflight-model", help="preflight: start from this small HF model instead of a random one")
    p.add_argument("--preflight-rows", type=int, default=ROWS, help="preflight: rows taken from each data file")
    p.add_argument("--stage-timeout", type=float, default=TIMEOUT, help="preflight: watchdog per stage, seconds")
    p.add_argument("--no-resume", action="store_true", help="redo every stage even if completed earlier")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from .checks import CheckError
    from .orchestrate import StageIncomplete

    try:
        return _main(args)
    except CheckError:  # its lines are printed already
        return 2
    except StageIncomplete as e:  # the manifest says `incomplete`; a rerun resumes from the last checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace) -> int:
    from .recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", recipe.name)
    if args.preflight:
        if args.backend != "verl" or args.dry_run:
            print("error: --preflight applies to --backend verl (without --dry-run)", file=sys.stderr)
            return 2
        from .preflight import PreflightError, preflight

        try:
            reports = preflight(recipe, args.out or os.path.join("runs", recipe.name + "-preflight"),
                                model=args.preflight_model, rows=args.preflight_rows, timeout=args.stage_timeout)
        except PreflightError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0 if all(r.status.startswith("passed") for r in reports) else 1
    if args.backend == "verl":
        from . import verl_backend

        return verl_backend.run(recipe, out, dry_run=args.dry_run, resume=not args.no_resume)
    if args.dry_run:  # TRL: the checks before launch that apply to it (data files, context window), nothing run
        from .checks import run_checks

        report = run_checks(recipe, "trl")
        report.print()
        print(f"# {len(recipe.stages)} stages would train with TRL in {out}: " + ", ".join(
            f"{s.name} ({s.kind}, {s.spec.steps or s.spec.epochs} {'steps' if s.spec.steps else 'epochs'})"
            for s in recipe.stages))
        return 0 if report.ok else 2
    from .orchestrate import run_recipe

    run_recipe(recipe, out, resume=not args.no_resume)
    return 0
