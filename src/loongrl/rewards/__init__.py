"""Rewards and verifiers: one scoring module for training (verl, TRL), hard mining and evaluation.

- ``extract``: answer extraction (boxed, ``</think>``, "the answer is", QwenLong-L1 forms)
- ``scorers``: rule scorers (sub-EM, F1, RULER, choice, numeric, math-verify)
- ``judge``: OpenAI-compatible LLM judge with cache, retries and the hybrid score
- ``router``: data_source/ability routing, ``compute_score`` (verl) and ``trl_reward`` (TRL)
"""

from loongrl.rewards.router import compute_score, make_trl_reward, resolve_task, score_batch, trl_reward

__all__ = ["compute_score", "make_trl_reward", "resolve_task", "score_batch", "trl_reward"]
