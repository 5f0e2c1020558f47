"""The CPU miniature that `make demo` trains: a toy KeyChain task (``task``), a tiny model built locally
(``tiny``), and ``prepare_recipe``, what a demo recipe (``demo_data``, ``tiny_model``) needs made before
``loongrl train`` runs it: ``python -m loongrl.demo RECIPE``.

Nothing in the library depends on it: the demo prepares its own files, then calls the library.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loongrl.train.recipe import Recipe


def prepare_recipe(recipe: "Recipe") -> bool:
    """Demo recipes only (`demo_data`, `tiny_model`): the demo's task files and tiny model, made if missing
    (``prepare``). Returns whether the recipe is a demo recipe."""
    if recipe.demo_data is None and recipe.tiny_model is None:
        return False
    paths = [c.path for s in recipe.stages for c in s.spec.data.components] + [e.path for e in recipe.eval]
    prepare(recipe.demo_data, recipe.tiny_model, recipe.model, paths, recipe.seed)
    return True


def prepare(demo_data: Mapping | None, tiny_model: Mapping | None, model_path: str, data_paths: Sequence[str],
            seed: int) -> None:
    """Write the demo task files (`demo_data`: `dir` plus `make_demo_data` arguments) and build the tiny
    model at `model_path` (`tiny_model`: `build_tiny_model` arguments). Each is made again only when missing
    or made with other arguments (recorded in `demo_data.json` / `tiny_model.json` beside it), so a rerun
    reuses them and an edited recipe does not. The tiny tokenizer is trained on the texts of every file in
    `data_paths` that exists."""
    from loongrl.data.io import write_json_atomic

    made_data = False
    if demo_data is not None:
        from loongrl.demo.task import make_demo_data

        args = dict(demo_data)
        out = args.pop("dir")
        if _recorded(os.path.join(out, "demo_data.json")) != args:
            make_demo_data(out, **args)
            write_json_atomic(os.path.join(out, "demo_data.json"), args)
            made_data = True
    if tiny_model is None:
        return
    marker = os.path.join(model_path, "tiny_model.json")
    wanted = {"tiny_model": dict(tiny_model), "seed": seed, "demo_data": demo_data}
    if not made_data and _recorded(marker) == wanted:
        return
    from loongrl.data.io import iter_rows
    from loongrl.demo.tiny import build_tiny_model

    texts = []
    for path in dict.fromkeys(p for p in data_paths if os.path.isfile(p)):  # a missing file fails in its stage
        for row in iter_rows(path):
            texts += [m["content"] for m in row["prompt"]]
            texts += [m["content"] for m in row.get("completion") or []]
    build_tiny_model(model_path, texts, seed=seed, **tiny_model)
    write_json_atomic(marker, wanted)


def _recorded(path: str):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
