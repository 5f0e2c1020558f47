"""The tiny local model builder and the transformers backend on it."""

from __future__ import annotations

import pytest

from loongrl.generation.backends import SamplingConfig, TransformersBackend
from loongrl.demo.tiny import build_tiny_model

pytestmark = pytest.mark.slow  # a tiny transformers model: left out of mutation runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import INPUTS

    from loongrl.data.sources import load_source

    texts = load_source("2wikimqa", INPUTS["2wikimqa"]).pool.texts[:2000]
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny")), texts, vocab_size=512)


def test_tokenizer_is_small_and_chat_formatted(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    assert len(tok) <= 512
    text = tok.apply_chat_template([{"role": "user", "content": "Who?"}], add_generation_prompt=True,
                                   tokenize=False)
    assert text == "<|im_start|>user\nWho?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(tok("Paris, 1889.")["input_ids"]) == "Paris, 1889."


def test_transformers_backend_samples_n_and_repeats_with_seed(tiny):
    backend = TransformersBackend(tiny, batch_size=2)
    prompts = [[{"role": "user", "content": q}] for q in ("Who built it?", "When?", "Where is Paris?")]
    cfg = SamplingConfig(n=3, temperature=1.0, top_p=0.95, max_new_tokens=8, seed=7)
    first = backend.generate(prompts, cfg)
    assert [len(x) for x in first] == [3, 3, 3]
    assert first == backend.generate(prompts, cfg)
    assert len({s for x in first for s in x}) > 1  # sampling, not one repeated string
    greedy = backend.generate(prompts[:1], SamplingConfig(n=2, temperature=0.0, max_new_tokens=8))
    assert greedy[0][0] == greedy[0][1]
