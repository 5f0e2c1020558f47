"""`python -m loongrl.demo RECIPE`: make what a demo recipe trains on (its task files and tiny model), then
`loongrl train RECIPE` runs it. `make demo` (scripts/demo.sh) does both; a rerun reuses what is made."""

from __future__ import annotations

import argparse
import sys

from loongrl.demo import prepare_recipe
from loongrl.train.recipe import RecipeError, load_recipe


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loongrl.demo", description=__doc__.splitlines()[0])
    p.add_argument("recipe", help="a demo recipe (with `demo_data` and/or `tiny_model`), e.g. recipes/demo-cpu.yaml")
    args = p.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not prepare_recipe(recipe):
        print(f"error: {args.recipe} has neither `demo_data` nor `tiny_model`: nothing for the demo to make",
              file=sys.stderr)
        return 2
    print(f"demo files ready for {args.recipe}: model {recipe.model}"
          + (f", data {recipe.demo_data['dir']}" if recipe.demo_data else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
