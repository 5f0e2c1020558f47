"""Sample-and-score, the inference step of hard mining, retrospective sampling and evaluation.

K samples per row from any backend with ``generate(prompts, sampling)``, each scored by a ``score``
function the caller passes in (``loongrl.rewards.router.row_scorer``: the one shared scorer). The
scorer is injected so this floor never imports the rewards above it.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Sequence

from loongrl.generation.backends import SamplingConfig

Scorer = Callable[[Sequence[dict], Sequence[str]], list[dict]]
"""``score(rows, responses)``: one result dict per (row, response) pair, with at least ``score`` and ``acc``."""


def choose_backend(model_path: str, kind: str = "auto", batch_size: int = 8):
    """vLLM when `kind` is `vllm`, or `auto` and vLLM is importable; otherwise transformers."""
    from loongrl.generation import backends

    has_vllm = importlib.util.find_spec("vllm") is not None
    if kind == "vllm" and not has_vllm:
        raise RuntimeError("sampling backend 'vllm' requested but vllm is not installed")
    if kind == "vllm" or (kind == "auto" and has_vllm):
        return backends.VLLMBackend(model_path)
    return backends.TransformersBackend(model_path, batch_size=batch_size)


def _generate(rows: Sequence[dict], backend, sampling: SamplingConfig, desc: str) -> list[list[str]]:
    from tqdm import tqdm

    bar = tqdm(total=len(rows), desc=desc, unit="item", leave=False)
    try:
        return backend.generate([list(r["prompt"]) for r in rows], sampling, progress=bar.update)
    finally:
        bar.close()


def score_items(rows: Sequence[dict], backend, sampling: SamplingConfig, score: Scorer,
                desc: str = "sampling") -> list[dict]:
    """Generate `sampling.n` samples per row and score each with `score`.

    Returns one dict per row: `mean_reward` (mean `score`), `mean_acc` (mean `acc`), `mean_chars`
    (mean response length in characters) and `n`.
    """
    samples = _generate(rows, backend, sampling, desc)
    results = score([r for r, group in zip(rows, samples) for _ in group], [s for group in samples for s in group])
    out, i = [], 0
    for group in samples:
        res = results[i:i + len(group)]
        i += len(group)
        out.append({"n": len(group), "mean_reward": sum(r["score"] for r in res) / len(group),
                    "mean_acc": sum(r["acc"] for r in res) / len(group),
                    "mean_chars": sum(len(s) for s in group) / len(group)})
    return out


def evaluate(rows: Sequence[dict], backend, max_new_tokens: int, score: Scorer, seed: int = 0,
             desc: str = "eval") -> dict:
    """Greedy, one sample per row: `acc` is the scorer's accuracy; `exact` the mean of its `exact` field
    (the extracted answer equals a gold answer after normalisation: guards against substring inflation)."""
    sampling = SamplingConfig(n=1, temperature=0.0, max_new_tokens=max_new_tokens, seed=seed)
    texts = [g[0] for g in _generate(rows, backend, sampling, desc)]
    results = score(rows, texts)
    n = max(1, len(rows))
    return {"n": len(rows), "acc": sum(r["acc"] for r in results) / n,
            "exact": sum(r.get("exact", 0.0) for r in results) / n,
            "mean_chars": sum(len(t) for t in texts) / n, "example": texts[0] if texts else ""}
