"""Sample-and-score: the inference step of the difficulty filter, hard mining, retrospective sampling
and evaluation.

``sample_and_score`` draws ``sampling.n`` samples per item from any backend with
``generate(prompts, sampling)`` and scores them with a ``score`` function the caller passes in (for
rows of the parquet schema: ``grouped(loongrl.rewards.router.row_scorer(...))``, the one shared
scorer). The scorer is injected so this floor never imports the rewards above it.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Sequence

from loongrl.generation.backends import SamplingConfig

Scorer = Callable[[Sequence[dict], Sequence[str]], list[dict]]
"""``score(rows, responses)``: one result dict per (row, response) pair, with at least ``score`` and ``acc``."""
GroupScorer = Callable[[Sequence, list[list[str]]], list[list[dict]]]
"""``score(items, responses per item)``: per item, one result dict per sample."""


def grouped(score: Scorer) -> GroupScorer:
    """A per-(row, response) scorer applied to every sample of every item in one call."""

    def run(items, groups: list[list[str]]) -> list[list[dict]]:
        flat = score([it for it, group in zip(items, groups) for _ in group], [t for group in groups for t in group])
        out, i = [], 0
        for group in groups:
            out.append(flat[i:i + len(group)])
            i += len(group)
        return out

    return run


def choose_backend(model_path: str, kind: str = "auto", batch_size: int = 8):
    """vLLM when `kind` is `vllm`, or `auto` and vLLM is importable; otherwise transformers."""
    from loongrl.generation import backends

    has_vllm = importlib.util.find_spec("vllm") is not None
    if kind == "vllm" and not has_vllm:
        raise RuntimeError("sampling backend 'vllm' requested but vllm is not installed")
    if kind == "vllm" or (kind == "auto" and has_vllm):
        return backends.VLLMBackend(model_path)
    return backends.TransformersBackend(model_path, batch_size=batch_size)


def sample_and_score(items: Sequence, backend, sampling: SamplingConfig, score: GroupScorer,
                     prompt: Callable[[object], list[dict]] = lambda row: list(row["prompt"]),
                     desc: str | None = "sampling") -> list[list[dict]]:
    """``sampling.n`` samples per item, scored: per item, per sample ``{"response": text, **result}``.

    ``prompt(item)`` gives the chat messages (default: a parquet row's ``prompt``); ``desc`` names the
    progress bar (None: no bar).
    """
    from loongrl.progress import progress_bar

    prompts = [prompt(it) for it in items]
    if desc is None:
        texts = backend.generate(prompts, sampling)
    else:
        with progress_bar(total=len(items), desc=desc, unit="item", leave=False) as bar:
            texts = backend.generate(prompts, sampling, progress=bar.update)
    # a memory agent's record of each sample (chunks, tokens read, memories: MemoryAgentBackend.traces)
    traces = getattr(backend, "traces", None) or [[{}] * len(group) for group in texts]
    return [[{"response": t, **r, **({"memory_agent": trace} if trace else {})}
             for t, r, trace in zip(group, results, item_traces)]
            for group, results, item_traces in zip(texts, score(items, texts), traces, strict=True)]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / max(1, len(values))


def score_items(rows: Sequence[dict], backend, sampling: SamplingConfig, score: Scorer,
                desc: str = "sampling") -> list[dict]:
    """Generate `sampling.n` samples per row and score each with `score` (hard mining, retrospective sampling).

    Returns one dict per row: `mean_reward` (mean `score`), `mean_acc` (mean `acc`), `mean_chars`
    (mean response length in characters) and `n`.
    """
    return [{"n": len(group), "mean_reward": _mean(s["score"] for s in group), "mean_acc": _mean(s["acc"] for s in group),
             "mean_chars": _mean(len(s["response"]) for s in group)}
            for group in sample_and_score(rows, backend, sampling, grouped(score), desc=desc)]


def evaluate(rows: Sequence[dict], backend, max_new_tokens: int, score: Scorer, seed: int = 0,
             desc: str = "eval") -> dict:
    """Greedy, one sample per row: `acc` is the scorer's accuracy; `exact` the mean of its `exact` field
    (the extracted answer equals a gold answer after normalisation: guards against substring inflation)."""
    sampling = SamplingConfig(n=1, temperature=0.0, max_new_tokens=max_new_tokens, seed=seed)
    samples = [group[0] for group in sample_and_score(rows, backend, sampling, grouped(score), desc=desc)]
    return {"n": len(rows), "acc": _mean(s["acc"] for s in samples), "exact": _mean(s.get("exact", 0.0) for s in samples),
            "mean_chars": _mean(len(s["response"]) for s in samples),
            "example": samples[0]["response"] if samples else ""}
