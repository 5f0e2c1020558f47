"""`loongrl data mix RECIPE`: build one stage's training mixture from named parts.

A mix recipe (YAML) names the parts, each with a `size` (rows) or a `ratio` (of `total`):

    seed: 1
    tokenizer: ../shared/data/tokenizers/qwen2.5
    max_prompt_tokens: 16384
    total: 100                     # needed when a part gives a ratio
    exclude: decontam.txt          # optional: ids / questions to leave out of every QA part (a list, or rows)
    parts:
      - {name: keychain_hotpotqa, kind: keychain, source: hotpotqa, input: ..., ratio: 0.35, start: 50}
      - {name: qa_hotpotqa, kind: qa, source: hotpotqa, input: ..., ratio: 0.35}
      - {name: mathqa, kind: mathqa, input: mathqa.json, size: 15}
      - {name: dapo, kind: dapo, input: dapo.parquet, size: 15}
      - {name: ruler_mk, kind: book_ruler_multikey, size: 5}

Kinds: `keychain` and `qa` (any `SynthConfig` field may be given, plus `ids`: a file of item ids),
`mathqa` and `dapo` (both need `input`), `book_ruler_multikey` and `book_ruler_multivalue` (optional `book`:
a plain-text haystack; `needles`). KeyChain and plain QA parts never share a question: each QA-type part excludes the items (by id and question) of the QA-type parts
before it. The parts are shuffled together with the seed and written as one parquet, with a card
(`OUT.card.json`: counts per part, token lengths, seed, input hashes) and token-length histograms
(`OUT.lengths.png` with every part, `OUT.lengths.<part>.png` for each). A part that cannot deliver its rows
is an error: the card's proportions are exact.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
from collections import Counter

import yaml

from loongrl.data import math as math_parts
from loongrl.data.io import RowWriter, atomic_write, file_sha256, iter_rows, make_row, write_json_atomic
from loongrl.data.pipeline import synthesize
from loongrl.data.prompts import resolve_system_prompt
from loongrl.data.decontaminate import question_keys
from loongrl.data.sources import question_key, read_id_list
from loongrl.data.synth import SynthConfig
from loongrl.data.tokens import default_tokenizer, get_counter

SYNTH_KINDS = ("keychain", "qa")
FILE_KINDS = {"mathqa": (math_parts.mathqa_rows, "mathqa_choice", "math_qa_choices"),
              "dapo": (math_parts.dapo_rows, "math_dapo", "MATH")}
BOOK_KINDS = ("book_ruler_multikey", "book_ruler_multivalue")
TOP_KEYS = {"seed", "tokenizer", "max_prompt_tokens", "total", "exclude", "parts", "system_prompt", "out"}
PART_KEYS = {"name", "kind", "size", "ratio", "input", "source"}
# Per-part synthesis options: SynthConfig fields, plus `ids` (a file of item ids, e.g. the filter's output).
SYNTH_FIELDS = ({f.name for f in dataclasses.fields(SynthConfig)}
                - {"source", "input", "tokenizer", "keychain", "num", "seed", "exclude", "include", "system_prompt"}
                | {"ids"})


class MixError(ValueError):
    """A mix recipe problem; the message names the recipe file and the key."""


def load_mix_recipe(path: str) -> dict:
    """Read and check a mix recipe; sizes are resolved to exact row counts (largest remainder for ratios)."""
    with open(path, encoding="utf-8") as f:
        recipe = yaml.safe_load(f) or {}
    if not isinstance(recipe, dict):
        raise MixError(f"{path}: expected a mapping at the top level")
    bad = set(recipe) - TOP_KEYS
    if bad:
        raise MixError(f"{path}: unknown key(s) {sorted(bad)}; allowed: {sorted(TOP_KEYS)}")
    parts = recipe.get("parts")
    if not isinstance(parts, list) or not parts:
        raise MixError(f"{path}: 'parts' must be a non-empty list")
    names = Counter(p.get("name") for p in parts if isinstance(p, dict))
    for i, part in enumerate(parts):
        where = f"{path}: parts[{i}]"
        if not isinstance(part, dict):
            raise MixError(f"{where}: expected a mapping")
        kind = part.get("kind")
        kinds = list(SYNTH_KINDS) + list(FILE_KINDS) + list(BOOK_KINDS)
        if kind not in kinds:
            raise MixError(f"{where}: 'kind' must be one of {kinds}, got {kind!r}")
        allowed = PART_KEYS | (SYNTH_FIELDS if kind in SYNTH_KINDS else {"book", "needles"} if kind in BOOK_KINDS
                               else set())
        bad = set(part) - allowed
        if bad:
            raise MixError(f"{where} ({kind}): unknown key(s) {sorted(bad)}")
        if not part.get("name") or names[part["name"]] > 1:
            raise MixError(f"{where}: every part needs a unique 'name'")
        if not part.get("input") and kind not in BOOK_KINDS:
            raise MixError(f"{where}: 'input' is required")
        if kind in SYNTH_KINDS and not part.get("source"):
            raise MixError(f"{where}: 'source' is required for kind {kind}")
        if ("size" in part) == ("ratio" in part):
            raise MixError(f"{where}: give exactly one of 'size' or 'ratio'")
    ratios = [p for p in parts if "ratio" in p]
    if ratios:
        total = recipe.get("total")
        if not isinstance(total, int) or total <= 0:
            raise MixError(f"{path}: 'total' (a positive integer) is required when a part gives a ratio")
        fixed = sum(int(p["size"]) for p in parts if "size" in p)
        share = sum(float(p["ratio"]) for p in ratios)
        if abs(share - 1.0) > 1e-9 and fixed == 0:
            raise MixError(f"{path}: ratios sum to {share}, not 1")
        left = total - fixed
        raw = [float(p["ratio"]) / share * left for p in ratios]
        sizes = [int(x) for x in raw]
        for j in sorted(range(len(raw)), key=lambda j: raw[j] - sizes[j], reverse=True)[:left - sum(sizes)]:
            sizes[j] += 1
        for p, n in zip(ratios, sizes):
            p["size"] = n
    for p in parts:
        if not isinstance(p["size"], int) or p["size"] < 0:
            raise MixError(f"{path}: part {p['name']}: size must be a non-negative integer")
    if not any(p["size"] for p in parts):  # nothing to mix: refused before any file is written
        raise MixError(f"{path}: every part has size 0: the mix would have no rows")
    return recipe


def _synth_part(part: dict, recipe: dict, used: set[str], exclude: frozenset[str], tmp: str) -> list[dict]:
    options = {k: v for k, v in part.items() if k in SYNTH_FIELDS and k != "ids"}
    options.setdefault("max_prompt_tokens", recipe.get("max_prompt_tokens", 16384))
    cfg = SynthConfig(source=part["source"], input=part["input"], tokenizer=recipe["tokenizer"],
                      keychain=part["kind"] == "keychain", num=part["size"], seed=recipe.get("seed", 0),
                      system_prompt=recipe.get("system_prompt", "loongrl"), exclude=exclude | used,
                      include=read_id_list(part["ids"]) if part.get("ids") else None, **options)
    out = os.path.join(tmp, f"{part['name']}.parquet")
    summary = synthesize(cfg, out, progress=True)
    if summary.written < part["size"]:
        raise MixError(f"part {part['name']}: only {summary.written} of {part['size']} rows could be made "
                       f"({summary.line()})")
    rows = list(iter_rows(out))
    for row in rows:  # later QA-type parts must not reuse these questions
        used.update({row["extra_info"]["id"], question_key(row["extra_info"]["question"])})
    return rows


def _file_part(part: dict, recipe: dict, counter, system: str | None) -> list[dict]:
    read_rows, data_source, ability = FILE_KINDS[part["kind"]]
    skipped: Counter = Counter()
    rows = []
    budget = recipe.get("max_prompt_tokens", 16384)
    for rid, fields in read_rows(part["input"], skipped):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": fields["user"]}]
        tokens = counter.count_chat(messages)
        if tokens > budget:
            skipped["over_budget"] += 1
            continue
        rows.append(make_row(data_source, ability, messages, fields["answers"], split="train", id=rid,
                             source=part["kind"], kind=part["kind"], question=fields["question"],
                             prompt_tokens=tokens, max_prompt_tokens=budget, tokenizer=counter.name,
                             tokenizer_fingerprint=counter.fingerprint, seed=recipe.get("seed", 0)))
    if len(rows) < part["size"]:
        raise MixError(f"part {part['name']}: only {len(rows)} usable rows in {part['input']} for "
                       f"{part['size']} requested (skipped: {dict(skipped)})")
    random.Random(f"{recipe.get('seed', 0)}:{part['name']}").shuffle(rows)  # a random subset, as the paper's
    return rows[:part["size"]]


def _book_part(part: dict, recipe: dict) -> list[dict]:
    from loongrl.data.book_ruler import BookRulerConfig, book_ruler_rows

    cfg = BookRulerConfig(kind=part["kind"].removeprefix("book_ruler_"), tokenizer=recipe["tokenizer"],
                          num=part["size"], max_prompt_tokens=recipe.get("max_prompt_tokens", 16384),
                          needles=part.get("needles", 20), book=part.get("book"),
                          system_prompt=recipe.get("system_prompt", "loongrl"), seed=recipe.get("seed", 0))
    return list(book_ruler_rows(cfg))


def build_mix(recipe_path: str, out: str) -> dict:
    """Build the mixture of `recipe_path` into `out` (.parquet); returns the card."""
    recipe = load_mix_recipe(recipe_path)
    recipe.setdefault("tokenizer", default_tokenizer())
    counter = get_counter(recipe["tokenizer"])
    system = resolve_system_prompt(recipe.get("system_prompt", "loongrl"))
    exclude = frozenset()
    if recipe.get("exclude"):
        exclude = question_keys(recipe["exclude"])
    tmp = out + ".parts"
    os.makedirs(tmp, exist_ok=True)
    used: set[str] = set()
    parts_rows: dict[str, list[dict]] = {}
    try:
        for part in recipe["parts"]:
            if part["kind"] in SYNTH_KINDS:
                parts_rows[part["name"]] = _synth_part(part, recipe, used, exclude, tmp)
            elif part["kind"] in BOOK_KINDS:
                parts_rows[part["name"]] = _book_part(part, recipe)
            else:
                parts_rows[part["name"]] = _file_part(part, recipe, counter, system)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [r for name in parts_rows for r in parts_rows[name]]
    random.Random(recipe.get("seed", 0)).shuffle(rows)
    writer = RowWriter(out)
    try:
        for row in rows:
            writer.write(row)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    card = _card(recipe, recipe_path, parts_rows, len(rows))
    card["length_histograms"] = [os.path.basename(p) for p in plot_lengths(parts_rows, out + ".lengths.png")]
    write_json_atomic(out + ".card.json", card)
    return card


def _card(recipe: dict, recipe_path: str, parts_rows: dict[str, list[dict]], total: int) -> dict:
    parts = []
    for part in recipe["parts"]:
        tokens = sorted(r["extra_info"]["prompt_tokens"] for r in parts_rows[part["name"]])
        parts.append({
            "name": part["name"], "kind": part["kind"], "requested": part["size"], "rows": len(tokens),
            "share": round(len(tokens) / total, 6) if total else 0.0, "input": part.get("input") or part.get("book") or "essays (../shared)",
            "input_sha256": file_sha256(part.get("input") or part.get("book") or ""),
            "prompt_tokens": {"min": tokens[0], "median": tokens[len(tokens) // 2], "max": tokens[-1]}
            if tokens else None,
        })
    qa_questions = [question_key(r["extra_info"]["question"]) for name, rows in parts_rows.items()
                    for r in rows if r["extra_info"]["kind"] in SYNTH_KINDS]
    return {"recipe": recipe_path, "recipe_sha256": file_sha256(recipe_path), "seed": recipe.get("seed", 0),
            "tokenizer": recipe["tokenizer"], "max_prompt_tokens": recipe.get("max_prompt_tokens", 16384),
            "rows": total, "parts": parts, "exclude": recipe.get("exclude"),
            "qa_questions_disjoint": len(qa_questions) == len(set(qa_questions))}


def plot_lengths(parts_rows: dict[str, list[dict]], path: str) -> list[str]:
    """Token-length histograms: all parts in `path`, and one PNG per part beside it. Returns the per-part files."""
    import matplotlib

    matplotlib.use("Agg")  # pragma: no mutate (the figure: what a person looks at)
    import matplotlib.pyplot as plt

    def save(fig, target: str) -> None:
        fig.tight_layout()
        atomic_write(target, lambda tmp: fig.savefig(tmp, dpi=110))  # pragma: no mutate
        plt.close(fig)  # pragma: no mutate

    def draw(ax, name: str) -> None:
        ax.hist([r["extra_info"]["prompt_tokens"] for r in parts_rows[name]], bins=30, color="#3b6ea8")  # pragma: no mutate
        ax.set_title(f"{name} ({len(parts_rows[name])} rows)", fontsize=9, loc="left")  # pragma: no mutate
        ax.set_xlabel("prompt tokens (chat template included)", fontsize=8)  # pragma: no mutate
        ax.tick_params(labelsize=8)  # pragma: no mutate

    names = [n for n, rows in parts_rows.items() if rows]
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 1.9 * len(names) + 0.6), squeeze=False)  # pragma: no mutate
    for ax, name in zip(axes[:, 0], names):
        draw(ax, name)
    save(fig, path)
    per_part = []
    for name in names:
        fig, ax = plt.subplots(figsize=(6, 2.6))  # pragma: no mutate
        draw(ax, name)
        target = path.removesuffix(".png") + f".{name}.png"
        save(fig, target)
        per_part.append(target)
    return per_part
