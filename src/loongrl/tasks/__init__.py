"""Synthetic task generators shared by training data and evaluation (RULER tasks, haystacks, needles).

A task is data (templates, word lists, a haystack) plus a generator; metrics and protocols live with
their users (``loongrl.eval``, ``loongrl.rewards``).
"""

from __future__ import annotations

import os
import sys

_NOTED = []  # the note about LOONGRL_DATA below is printed once per process


def shared_data_dir() -> str:
    """The shared data folder (prompt configs, RULER data, essays): ``$LOONGRL_SHARED/data``, else
    ``../shared/data``. ``$LOONGRL_DATA`` is the recipes' training-data folder and is not read here (it named
    this folder too until issue 20); when it is set and this folder is missing, a one-line note says so."""
    shared = os.environ.get("LOONGRL_SHARED")
    folder = os.path.join(shared, "data") if shared else os.path.join("..", "shared", "data")
    if not shared and os.environ.get("LOONGRL_DATA") and not os.path.isdir(folder) and not _NOTED:
        _NOTED.append(True)
        print(f"note: the shared data folder is $LOONGRL_SHARED/data (unset: {folder}, missing); LOONGRL_DATA names "
              "the recipes' training data and is no longer read for it", file=sys.stderr)
    return folder
