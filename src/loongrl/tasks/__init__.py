"""Synthetic task generators shared by training data and evaluation (RULER tasks, haystacks, needles).

A task is data (templates, word lists, a haystack) plus a generator; metrics and protocols live with
their users (``loongrl.eval``, ``loongrl.rewards``).
"""

from __future__ import annotations

import os


def shared_data_dir() -> str:
    """``$LOONGRL_DATA``, else ``../shared/data`` (prompt configs, RULER data, essays)."""
    return os.environ.get("LOONGRL_DATA") or os.path.join("..", "shared", "data")
