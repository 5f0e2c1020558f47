"""loongrl: long-context reasoning RL (LoongRL KeyChain data, QwenLong-L1 recipes)."""

__version__ = "0.1.0"
