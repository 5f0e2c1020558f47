"""Data synthesis: source loaders, context filling, KeyChain insertion, validation.

Library entry points:
    from loongrl.data import SynthConfig, synthesize, validate_file
"""

from loongrl.data.pipeline import Summary, synthesize
from loongrl.data.synth import SynthConfig
from loongrl.data.validate import validate_file

__all__ = ["SynthConfig", "Summary", "synthesize", "validate_file"]
