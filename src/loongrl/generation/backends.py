"""Inference backends behind one interface: chat prompts in, n sampled completions per prompt out.

`generate(prompts, sampling)` takes prompts as chat message lists (the `prompt` column of the
parquet schema) and returns, for each prompt, a list of `sampling.n` completion strings.
Used by evaluation, hard mining and difficulty filtering alike.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
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


def ends_with_prefill(messages: Messages) -> bool:
    """A trailing assistant message is a prefill the reply continues (RULER's answer prefix)."""
    return bool(messages) and messages[-1]["role"] == "assistant"


def render_chat(tokenizer, messages: Messages) -> str:
    """The prompt string: chat template with the generation prompt, or continuing a trailing
    assistant prefill (``continue_final_message``) so the reply follows it directly."""
    if ends_with_prefill(messages):
        return tokenizer.apply_chat_template(messages, continue_final_message=True, tokenize=False)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class BackendError(RuntimeError):
    """Generation failed for good (after retries); the message names the prompt."""


DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


class TransformersBackend:
    """Hugging Face `generate` on the local machine (CPU or one GPU): small models and tests.

    Prompts are rendered with the model's chat template (generation prompt added), left-padded and
    batched; `batch_size` counts prompts, each expanded to `n` sequences. `dtype`: `auto` (the dtype
    the weights were saved in), `float32`, `bfloat16` (on this project's CPU 1.7x faster than float32
    end to end, BENCHMARKS.md) or `float16`. `rope`: a YaRN plan (`loongrl.generation.window.yarn_plan`)
    the model is loaded with (its config's `rope_scaling` and `max_position_embeddings` overridden), or None.
    """

    def __init__(self, model_path: str, batch_size: int = 8, device: str = "cpu", dtype: str = "auto",
                 rope: dict | None = None):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from loongrl.generation.window import hf_overrides

        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
        # The name keys resumable outputs and caches: another dtype or rope scaling is another run.
        self.name = f"hf:{model_path}" + ("" if dtype == "auto" else f" ({dtype})") + \
            ("" if rope is None else f" (YaRN x{rope['factor']:g})")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # from_pretrained's keywords override config.json's values (rope_scaling: transformers 5 maps it onto
        # rope_parameters)
        config = AutoConfig.from_pretrained(model_path, **(hf_overrides(rope) if rope else {}))
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, config=config, dtype=dtype if dtype == "auto" else getattr(torch, dtype)).to(device)
        self.model.eval()
        self.device = device
        self.batch_size = batch_size

    def render(self, messages: Messages) -> str:
        return render_chat(self.tokenizer, messages)

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


PREFILL_MODES = ("auto", "extension", "completions")


def rejects_extension(err) -> bool:
    """A 4xx whose explanation names the prefill extension (transformers serve: HTTP 422 "Unexpected
    fields in the request: {..., 'continue_final_message'}"; OpenAI: 400 "Unrecognized request argument")."""
    return err.status in (400, 422) and "continue_final_message" in err.detail


class OpenAIBackend:
    """Any OpenAI-compatible endpoint: vLLM, SGLang, ``transformers serve`` or a hosted API.

    One request per (prompt, sample) with ``n=1`` and ``seed = sampling.seed + sample index`` (many
    hosted APIs reject ``n > 1``; per-sample seeds keep vLLM reruns repeatable). Up to
    ``concurrency`` requests are in flight, each bounded by ``timeout_s`` for the whole request and
    retried on timeouts, connection errors, 429, 5xx and malformed bodies (``loongrl.generation.http``,
    shared with the judge); a request that still fails raises ``BackendError`` naming the prompt and
    carrying the server's detail, so nothing is dropped silently: the harness stops and a rerun
    resumes from its output file. The API key is read from the environment variable named by
    ``api_key_env`` and never logged.

    A trailing assistant message is a prefill the reply continues (RULER's answer prefix). ``prefill``:
    ``extension`` sends it to ``/chat/completions`` with vLLM/SGLang's ``continue_final_message``;
    ``completions`` renders the chat template locally (``tokenizer``: the served model's tokenizer
    folder, by default ``model`` itself when it is a local folder) and sends the text to
    ``/completions``; ``auto`` (default) tries the extension and, the first time the server rejects it
    by name, switches this backend to ``completions``.
    """

    def __init__(self, base_url: str, model: str, concurrency: int = 8, timeout_s: float = 600.0,
                 max_retries: int = 4, backoff_s: float = 1.0, backoff_max_s: float = 30.0,
                 api_key_env: str = "OPENAI_API_KEY", extra_body: dict | None = None, prefill: str = "auto",
                 tokenizer: str | None = None):
        if prefill not in PREFILL_MODES:
            raise ValueError(f"prefill mode {prefill!r}: expected one of {', '.join(PREFILL_MODES)}")
        from loongrl.generation.http import check_max_retries

        check_max_retries(max_retries)
        self.name = f"openai:{base_url}#{model}"
        self.base_url, self.model = base_url, model
        self.concurrency, self.timeout_s = max(1, concurrency), timeout_s
        self.max_retries, self.backoff_s, self.backoff_max_s = max_retries, backoff_s, backoff_max_s
        self.api_key_env = api_key_env
        self.extra_body = dict(extra_body or {})
        self.prefill = prefill
        self.why_completions = "--prefill completions"
        self.tokenizer_path = tokenizer or (model if os.path.isdir(model) else None)
        self._tokenizer = None
        self._lock = threading.Lock()

    def render(self, messages: Messages) -> str:
        """The chat template rendered locally with the served model's tokenizer (for ``/completions``)."""
        with self._lock:
            if self._tokenizer is None:
                if self.tokenizer_path is None:
                    raise BackendError(f"{self.name}: a prefilled prompt goes to /completions ({self.why_completions}) "
                                       "and needs the chat template rendered locally: give the served model's "
                                       "tokenizer folder (--tokenizer DIR)")
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        return render_chat(self._tokenizer, messages)

    def _send(self, post, body: dict) -> dict:
        from loongrl.generation.http import with_retries

        return with_retries(lambda: post(self.base_url, body, self.api_key_env, self.timeout_s)["choices"][0],
                            self.max_retries, self.backoff_s, self.backoff_max_s)

    def _one(self, messages: Messages, sampling: SamplingConfig, sample: int) -> str:
        from loongrl.generation.http import NoRetry, post_chat, post_completion

        body = {"model": self.model, "n": 1, "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_new_tokens, "seed": sampling.seed + sample, **self.extra_body}
        if not ends_with_prefill(messages):
            return self._send(post_chat, {**body, "messages": messages})["message"]["content"]
        if self.prefill != "completions":
            try:
                return self._send(post_chat, {**body, "messages": messages, "add_generation_prompt": False,
                                              "continue_final_message": True})["message"]["content"]
            except NoRetry as err:
                if self.prefill == "extension" or not rejects_extension(err):
                    raise
                with self._lock:
                    if self.prefill == "auto":
                        self.prefill, self.why_completions = "completions", f"the server rejected the extension: {err}"
                        print(f"note: {self.name}: {self.why_completions}; prefilled prompts go to /completions with "
                              "the chat template rendered locally", file=sys.stderr)
        return self._send(post_completion, {**body, "prompt": self.render(messages)})["text"]

    def generate(self, prompts: Sequence[Messages], sampling: SamplingConfig,
                 progress: Callable[[int], None] | None = None) -> list[list[str]]:
        from loongrl.generation.http import NoRetry, RequestError, ServerGone

        jobs = [(i, j) for i in range(len(prompts)) for j in range(sampling.n)]
        out: list[list[str]] = [[""] * sampling.n for _ in prompts]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._one, prompts[i], sampling, j): (i, j) for i, j in jobs}
            try:
                for future, (i, j) in futures.items():
                    try:
                        out[i][j] = future.result()
                    except ServerGone as err:  # the server, not this request, failed: say that first
                        raise BackendError(f"{self.name}: {err} (at prompt {i} sample {j})") from None
                    except RequestError as err:
                        retried = "" if isinstance(err, NoRetry) else f" after {self.max_retries} retries"
                        raise BackendError(f"{self.name}: prompt {i} sample {j}: request failed{retried}: "
                                           f"{err}") from None
                    if progress and j == sampling.n - 1:
                        progress(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return out


def cpu_engine_defaults() -> dict:
    """``vllm.LLM`` settings on vLLM's CPU build (empty on a GPU): the ones ``loongrl.generation.serve`` starts
    its CPU server with (``CPU_ENGINE``). Without them vLLM-CPU sizes its KV cache as a share of the machine's
    memory (``gpu_memory_utilization``, 0.92) and refuses to start when less than that is free
    (vllm/v1/worker/cpu_worker.py:73-91); ``VLLM_CPU_KVCACHE_SPACE`` set by the user wins over our size."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    from loongrl.generation.serve import CPU_ENGINE, CPU_KV_CACHE_GIB

    kv = {} if os.environ.get("VLLM_CPU_KVCACHE_SPACE") else {"kv_cache_memory_bytes": CPU_KV_CACHE_GIB << 30}
    return {**CPU_ENGINE, **kv}


class VLLMBackend:
    """vLLM offline (``vllm.LLM.chat``) where vLLM is importable (a GPU install; here its CPU build in
    .venv-vllm, which the project's venv cannot import: tests/test_vllm_server.py runs it with that
    interpreter and checks it against vLLM's server). On vLLM's CPU build the engine gets ``cpu_engine_defaults``
    unless ``llm_kwargs`` say otherwise. ``rope``: a YaRN plan
    (``loongrl.generation.window.yarn_plan``), passed as ``hf_overrides`` with ``max_model_len`` = its window."""

    def __init__(self, model_path: str, rope: dict | None = None, **llm_kwargs):
        try:
            from vllm import LLM
        except ImportError as err:
            raise BackendError(f"vllm:{model_path}: vLLM is not installed ({err}); use an openai: endpoint "
                               "or hf: instead") from None
        from loongrl.generation.window import hf_overrides

        self.name = f"vllm:{model_path}" + ("" if rope is None else f" (YaRN x{rope['factor']:g})")
        llm_kwargs = {**cpu_engine_defaults(), **llm_kwargs}
        if rope is not None:
            llm_kwargs = {"hf_overrides": hf_overrides(rope), "max_model_len": rope["max_position_embeddings"],
                          **llm_kwargs}
        self.llm = LLM(model=model_path, **llm_kwargs)

    def generate(self, prompts: Sequence[Messages], sampling: SamplingConfig,
                 progress: Callable[[int], None] | None = None) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_new_tokens, seed=sampling.seed)
        prefill = [ends_with_prefill(m) for m in prompts]
        out: list[list[str]] = [[] for _ in prompts]
        for flag in (False, True):  # vLLM takes one continue_final_message setting per call
            idx = [i for i, p in enumerate(prefill) if p == flag]
            if not idx:
                continue
            results = self.llm.chat([list(prompts[i]) for i in idx], params, use_tqdm=False,
                                    add_generation_prompt=not flag, continue_final_message=flag)
            for i, result in zip(idx, results):
                out[i] = [o.text for o in result.outputs]
        if progress:
            progress(len(prompts))
        return out


def parse_backend_spec(spec: str) -> tuple[str, tuple[str, ...]]:
    """(kind, the backend's positional arguments) of a spec string: ("openai", (BASE_URL, MODEL)), ("hf", (PATH,))
    or ("vllm", (PATH,)). Loads nothing, so a CLI can refuse a bad spec before any other work; ValueError
    naming the spec otherwise (an hf: path that looks like a folder must exist)."""
    kind, _, rest = spec.partition(":")
    if kind == "openai":
        base_url, sep, model = rest.rpartition("#")
        if not sep or not base_url or not model:
            raise ValueError(f"backend spec {spec!r}: expected openai:BASE_URL#MODEL")
        return kind, (base_url, model)
    if kind in ("hf", "vllm") and rest:
        if kind == "hf" and not os.path.exists(rest) and rest.startswith((".", "/")):
            raise ValueError(f"backend spec {spec!r}: model folder {rest} does not exist")
        return kind, (rest,)
    raise ValueError(f"backend spec {spec!r}: expected hf:PATH, openai:BASE_URL#MODEL or vllm:PATH")


def make_backend(spec: str, **options):
    """A backend from a spec string.

    - ``hf:PATH`` - ``TransformersBackend`` (options: batch_size, device, dtype)
    - ``openai:BASE_URL#MODEL`` - ``OpenAIBackend`` (options: concurrency, timeout_s, max_retries, prefill,
      tokenizer, ...); e.g. ``openai:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-7B-Instruct``
    - ``vllm:PATH`` - ``VLLMBackend`` (options: rope; ``vllm_kwargs``: a dict passed to ``vllm.LLM``)
    ``rope`` (hf and vllm): a YaRN plan the model is loaded with (``loongrl.generation.window``).
    Options a backend does not take are ignored, so one CLI can pass them all.
    """
    import inspect

    kind, args = parse_backend_spec(spec)
    cls = {"openai": OpenAIBackend, "hf": TransformersBackend, "vllm": VLLMBackend}[kind]
    if cls is VLLMBackend:
        return cls(*args, rope=options.get("rope"), **(options.get("vllm_kwargs") or {}))
    accepted = inspect.signature(cls.__init__).parameters
    return cls(*args, **{k: v for k, v in options.items() if k in accepted and v is not None})
