"""A model's context window, and YaRN rope scaling beyond it: one implementation for training and evaluation.

A model's native window is its config.json `max_position_embeddings`. Longer sequences need rope scaling;
Qwen2.5's model cards prescribe static YaRN (factor 4 over 32,768 for 128K). Static YaRN costs some
short-text quality, so it is chosen from the lengths actually needed and never turned on for lengths the
native window covers:

    factor = the smallest power of two with factor x native window >= the longest sequence

(a power of two keeps the number of distinct settings small: 2 for ~64K on a 32K model, 4 for 128K). A model
whose config.json has rope scaling of its own keeps it as it is. Users: training's checks and verl overrides
(`loongrl.train.checks.rope_scaling_plan`, `verl_backend.rope_overrides`), evaluation's `--rope-scaling`
(`loongrl.eval.cli`) and `loongrl serve vllm --rope-scaling`.

The plan is applied as config overrides (`hf_overrides`): `rope_scaling` (transformers 4's name; transformers 5
maps it onto `rope_parameters` through a property, `configuration_utils.py` `rope_scaling.setter`) and
`max_position_embeddings` = factor x native (vLLM refuses a `max_model_len` above it).
"""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache


def model_file(model: str, filename: str) -> str | None:
    """`filename` of a model: in its folder when `model` is local, else from the hub cache (offline)."""
    if os.path.isdir(model):
        path = os.path.join(model, filename)
        return path if os.path.isfile(path) else None
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(model, filename)
    except Exception:  # noqa: BLE001 - not a valid repo id, no huggingface_hub: nothing cached
        return None
    return path if isinstance(path, str) and os.path.isfile(path) else None


@lru_cache(maxsize=16)
def _read_json(path: str, mtime_ns: int) -> dict:  # training's plan reads the config once per stage: read it once
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_model_config(model: str) -> tuple[dict | None, str]:
    """(config.json of `model`, where it was read) or (None, why it could not be read). A multimodal config's
    `text_config` is merged in (its window and heads are the language model's)."""
    path = model_file(model, "config.json")
    if path is None:
        where = "its folder has no config.json" if os.path.isdir(model) else \
            "not a local folder and not in the Hugging Face hub cache (checks never use the network)"
        return None, f"config.json of {model} could not be read: {where}"
    config = _read_json(path, os.stat(path).st_mtime_ns)
    text = config.get("text_config") if "num_attention_heads" not in config else None
    return {**config, **(text or {})}, f"{model} config.json"


def rope_scaling_of(config: dict) -> dict | None:
    """The rope scaling a config already has (transformers 4 `rope_scaling`, 5 `rope_parameters`), if any."""
    rs = config.get("rope_scaling") or config.get("rope_parameters")
    if isinstance(rs, dict) and (rs.get("rope_type") or rs.get("type") or "default") != "default":
        return rs
    return None


def model_window(config: dict) -> int:
    """The window the model runs with as it is: `max_position_embeddings`, or its own rope scaling's
    original window x factor when that is larger; 0 when the config has no `max_position_embeddings`."""
    native = int(config.get("max_position_embeddings") or 0)
    own = rope_scaling_of(config)
    if own is None or not native:
        return native
    return max(native, int(int(own.get("original_max_position_embeddings") or native) * float(own.get("factor") or 1)))


def yarn_plan(config: dict, length: int, factor: float | None = None) -> dict | None:
    """Static YaRN for sequences of up to `length` tokens on a model with no rope scaling of its own.

    `factor` None: the smallest power of two with factor x native window >= `length`, and None when the native
    window covers `length`. A given `factor` is used as it is (`--rope-scaling yarn:FACTOR`).
    Returns {"factor", "native", "length", "rope_scaling", "max_position_embeddings" (factor x native)}."""
    native = int(config["max_position_embeddings"])
    if factor is None:
        if length <= native:
            return None
        factor = 2 ** math.ceil(math.log2(length / native))
    rope = {"rope_type": "yarn", "factor": float(factor), "original_max_position_embeddings": native}
    # transformers 5 keeps rope_theta inside the rope parameters (SmolLM2's config.json has it only there)
    theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None:
        rope["rope_theta"] = theta
    return {"factor": factor, "native": native, "length": length, "rope_scaling": rope,
            "max_position_embeddings": int(factor * native)}


def hf_overrides(plan: dict) -> dict:
    """The config overrides a plan makes: vLLM `hf_overrides`, SGLang `json_model_override_args`, transformers
    `from_pretrained` config keywords."""
    return {"rope_scaling": plan["rope_scaling"], "max_position_embeddings": plan["max_position_embeddings"]}


def parse_rope_scaling(text: str) -> str | float:
    """`auto`, `off` or `yarn:FACTOR` (FACTOR > 1) -> "auto", "off" or the factor; ValueError otherwise."""
    if text in ("auto", "off"):
        return text
    kind, _, value = text.partition(":")
    try:
        factor = float(value)
    except ValueError:
        factor = 0.0
    if kind != "yarn" or not factor > 1:
        raise ValueError(f"--rope-scaling {text!r}: expected auto, off or yarn:FACTOR with FACTOR > 1 (e.g. yarn:4)")
    return int(factor) if factor.is_integer() else factor


def rope_plan(config: dict, where: str, length: int, mode: str | float) -> dict | None:
    """The YaRN plan for sequences of up to `length` tokens under `mode` (`parse_rope_scaling`), or None (the
    model runs as it is): `off`; `auto` when the native window covers `length` or the model has rope scaling of
    its own. A forced factor on a model with its own rope scaling, or with no `max_position_embeddings`, is a
    ValueError naming `where` the config was read."""
    if mode == "off":
        return None
    own = rope_scaling_of(config)
    if mode == "auto":
        return None if own is not None or not config.get("max_position_embeddings") else yarn_plan(config, length)
    if own is not None:
        raise ValueError(f"--rope-scaling yarn:{mode:g}: the model has rope scaling of its own "
                         f"({own.get('rope_type') or own.get('type')}, {where}); use auto or off")
    if not config.get("max_position_embeddings"):
        raise ValueError(f"--rope-scaling yarn:{mode:g}: {where} has no max_position_embeddings")
    return yarn_plan(config, length, factor=mode)


def describe(plan: dict | None) -> str:
    """"YaRN factor 2 (2 x 8192 = 16384 tokens)" or "none"."""
    if plan is None:
        return "none"
    return (f"YaRN factor {plan['factor']:g} ({plan['factor']:g} x {plan['native']} = "
            f"{plan['max_position_embeddings']} tokens)")
