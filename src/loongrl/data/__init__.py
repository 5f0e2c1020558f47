"""Data synthesis: source loaders, context filling, KeyChain insertion, validation.

Library entry points:
    from loongrl.data import SynthConfig, synthesize, validate_file

They are imported on first use, so that `loongrl` subcommands that only parse arguments here (and the
other packages' commands) do not pay for pyarrow.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"SynthConfig": "loongrl.data.synth", "Summary": "loongrl.data.pipeline",
            "synthesize": "loongrl.data.pipeline", "validate_file": "loongrl.data.validate"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'loongrl.data' has no attribute {name!r}")
