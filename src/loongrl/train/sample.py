"""The inference step of hard mining, retrospective sampling and evaluation: K samples per item from any
backend with `generate(prompts, sampling)` (`loongrl.eval.backends`), scored with the shared scorer."""

from __future__ import annotations

import importlib.util
from typing import Sequence

from loongrl.eval.backends import SamplingConfig
from loongrl.rewards import scorers
from loongrl.rewards.router import get_judge, score_batch, score_input


def choose_backend(model_path: str, kind: str = "auto", batch_size: int = 8):
    """vLLM when `kind` is `vllm`, or `auto` and vLLM is importable (and the eval package provides a vLLM
    backend); otherwise transformers."""
    from loongrl.eval import backends

    has_vllm = importlib.util.find_spec("vllm") is not None and hasattr(backends, "VLLMBackend")
    if kind == "vllm" and not has_vllm:
        raise RuntimeError("sampling backend 'vllm' requested but vllm (or loongrl.eval.backends.VLLMBackend) "
                           "is not available")
    if kind == "vllm" or (kind == "auto" and has_vllm):
        return backends.VLLMBackend(model_path)
    return backends.TransformersBackend(model_path, batch_size=batch_size)


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", leave=False)


def score_items(rows: Sequence[dict], backend, sampling: SamplingConfig, reward_kwargs: dict | None = None,
                desc: str = "sampling") -> list[dict]:
    """Generate `sampling.n` samples per row and score each with the shared scorer.

    Returns one dict per row: `mean_reward` (mean scorer `score`), `mean_acc` (mean of `acc`, i.e.
    score >= 1), `mean_chars` (mean response length in characters) and `n`.
    """
    kw = dict(reward_kwargs or {})
    judge = get_judge(kw.pop("judge_config", None))
    bar = _progress_bar(len(rows), desc)
    try:
        samples = backend.generate([list(r["prompt"]) for r in rows], sampling, progress=bar.update)
    finally:
        bar.close()
    flat = [score_input(r, s) for r, group in zip(rows, samples) for s in group]
    results = score_batch(flat, require_think=kw.get("require_think", True),
                          word_boundary=kw.get("word_boundary", False), judge=judge)
    out, i = [], 0
    for group in samples:
        res = results[i:i + len(group)]
        i += len(group)
        out.append({"n": len(group), "mean_reward": sum(r["score"] for r in res) / len(group),
                    "mean_acc": sum(r["acc"] for r in res) / len(group),
                    "mean_chars": sum(len(s) for s in group) / len(group)})
    return out


def evaluate(rows: Sequence[dict], backend, max_new_tokens: int, reward_kwargs: dict | None = None,
             seed: int = 0, desc: str = "eval") -> dict:
    """Greedy, one sample per row: `acc` is the shared scorer's accuracy; `exact` requires the extracted
    answer to equal a gold answer after normalisation (guards against substring-match inflation)."""
    kw = dict(reward_kwargs or {})
    sampling = SamplingConfig(n=1, temperature=0.0, max_new_tokens=max_new_tokens, seed=seed)
    bar = _progress_bar(len(rows), desc)
    try:
        texts = [g[0] for g in backend.generate([list(r["prompt"]) for r in rows], sampling, progress=bar.update)]
    finally:
        bar.close()
    results = score_batch([score_input(r, t) for r, t in zip(rows, texts)],
                          require_think=kw.get("require_think", True), word_boundary=kw.get("word_boundary", False))
    # The prediction each row's own task extracted, held to exact match (no judge: eval is rule-only).
    exact = sum(scorers.exact_match(res["pred"] or None, r["reward_model"]["ground_truth"])
                for r, res in zip(rows, results))
    n = max(1, len(rows))
    return {"n": len(rows), "acc": sum(r["acc"] for r in results) / n, "exact": exact / n,
            "mean_chars": sum(len(t) for t in texts) / n, "example": texts[0] if texts else ""}
