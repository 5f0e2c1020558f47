"""Inference backends behind one interface: chat prompts in, n sampled completions per prompt out.

`generate(prompts, sampling)` takes prompts as chat message lists (the `prompt` column of the
parquet schema) and returns, for each prompt, a list of `sampling.n` completion strings.
Used by evaluation, hard mining and difficulty filtering alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

Messages = list[dict]


@dataclass
class SamplingConfig:
    """Generation settings every backend understands.

    Args:
        n: Completions per prompt (LoongRL mining and evaluation: 8).
        temperature: 0 means greedy decoding.
        top_p: Nucleus sampling mass (LoongRL / QwenLong-L1: 0.95).
        max_new_tokens: Cap on each completion's length in tokens.
        seed: Base seed; a backend derives per-batch seeds from it so reruns repeat.
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0


class TransformersBackend:
    """Hugging Face `generate` on the local machine (CPU or one GPU): small models and tests.

    Prompts are rendered with the model's chat template (generation prompt added), left-padded and
    batched; `batch_size` counts prompts, each expanded to `n` sequences.
    """

    def __init__(self, model_path: str, batch_size: int = 8, device: str = "cpu", dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = f"hf:{model_path}"
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(device)
        self.model.eval()
        self.device = device
        self.batch_size = batch_size

    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, prompts: Sequence[Messages], sampling: SamplingConfig,
                 progress: Callable[[int], None] | None = None) -> list[list[str]]:
        import torch

        out: list[list[str]] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = [self.render(m) for m in prompts[start:start + self.batch_size]]
            enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            torch.manual_seed(sampling.seed + start)  # same seed and batching: same samples
            sample = sampling.temperature > 0
            per_prompt = sampling.n if sample else 1  # greedy samples are all the same: decode once
            kwargs = dict(do_sample=sample, max_new_tokens=sampling.max_new_tokens,
                          num_return_sequences=per_prompt, pad_token_id=self.tokenizer.pad_token_id)
            if sample:
                kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
            with torch.no_grad():
                ids = self.model.generate(**enc, **kwargs)
            texts = self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [texts[i * per_prompt:(i + 1) * per_prompt] * (sampling.n // per_prompt)
                    for i in range(len(batch))]
            if progress:
                progress(len(batch))
        return out
