"""Training recipes: YAML files of stages (SFT or RL), their data mixtures and the transitions
between them, validated on load.

A recipe names the starting model, the held-out evaluation sets and an ordered list of stages.
Every mapping is checked against the dataclass below it: an unknown or mistyped key, a wrong type or
an out-of-range value raises `RecipeError` naming the file and the dotted path of the field
(`recipes/x.yaml: stages[2].rl.clip_hgh: unknown key; known keys: ...`).

Paths inside a recipe are relative to the recipe file unless absolute; `${VAR}` and `${VAR:-default}`
are expanded from the environment first, so one recipe serves a laptop and a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the field."""


# ---------------------------------------------------------------------------------------------- data
@dataclass
class DataComponent:
    """One part of a stage's data mixture.

    Args:
        path: A parquet file in the project's RL schema (`loongrl data keychain|qa` output), relative to
            the recipe. SFT stages need a `completion` chat column (the gold response) as well.
        max_items: Keep at most this many rows of the part (a seeded random subset); null keeps all.
        repeat: Include the (subset of the) part this many times, to up-weight it in the mixture.
    """

    path: str
    max_items: int | None = None
    repeat: int = 1


@dataclass
class DataMixture:
    """The rows one stage trains on: parts concatenated, length-filtered, shuffled with the recipe seed.

    Args:
        components: The parts. May be empty only when the stage's transition supplies the rows
            (hard mining with `source: previous`).
        min_prompt_tokens: Length filter for progressive context scaling: keep prompts with more than
            this many tokens (chat template applied, counted with the stage model's tokenizer).
            QwenLong-L1 phase k holds lengths in (L_{k-1}, L_k]; 0 keeps short prompts too.
        max_prompt_tokens: Keep prompts with at most this many tokens. Defaults to the stage's
            `max_prompt_tokens`. Longer prompts are dropped and counted, never truncated (TRL does not
            truncate prompts; verl would drop them anyway with `filter_overlong_prompts`).
    """

    components: list[DataComponent] = field(default_factory=list)
    min_prompt_tokens: int = 0
    max_prompt_tokens: int | None = None


# ------------------------------------------------------------------------------------------ transitions
@dataclass
class SamplingPass:
    """The inference pass behind a transition: K samples per item from the previous stage's model,
    each scored with the shared scorer (`loongrl.rewards.router`).

    Args:
        k: Samples per item (LoongRL mining: 8).
        temperature: Sampling temperature (LoongRL mining: 0.6).
        top_p: Nucleus mass (LoongRL: 0.95).
        max_new_tokens: Cap on each sample (LoongRL mining: 4096).
        backend: `auto` (vLLM when importable, else transformers), `vllm` or `transformers`.
        batch_size: Prompts per generation batch for the transformers backend.
    """

    k: int = 8
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 4096
    backend: Literal["auto", "vllm", "transformers"] = "auto"
    batch_size: int = 8


@dataclass
class HardMining:
    """LoongRL's hard mining (paper §3.2.2): sample the previous stage's training items with the previous
    stage's model and drop those solved in every sample; everything else (0/K included) is kept.

    Args:
        sampling: The K-sample pass.
        solved_threshold: An item is dropped when its mean accuracy over the K samples is >= this
            (1.0 = solved in all K, the paper's rule).
        source: `previous`: mine the rows the previous stage trained on (the paper); `mixture`: mine this
            stage's own mixture instead.
    """

    sampling: SamplingPass = field(default_factory=SamplingPass)
    solved_threshold: float = 1.0
    source: Literal["previous", "mixture"] = "previous"


@dataclass
class Retrospective:
    """QwenLong-L1's difficulty-aware retrospective sampling, applied when moving from one phase to the
    next. The previous phase's items are sampled with the previous phase's model; difficulty is
    1 - mean reward (the paper's 1/mean is unbounded at 0, and only the order matters); items with mean
    reward <= `hard_threshold` are hard, and hard items are drawn (without replacement, probability
    proportional to difficulty) until they make up `carry_share` of the new pool. The paper gives no
    proportions or thresholds: both are engineering choices (qwenlong-l1.md §3).

    Args:
        sampling: The K-sample pass.
        hard_threshold: Mean reward at or below which an item counts as hard.
        carry_share: Share of the next phase's pool made of carried hard items (0 <= share < 1).
    """

    sampling: SamplingPass = field(default_factory=SamplingPass)
    hard_threshold: float = 0.5
    carry_share: float = 0.25


@dataclass
class Transition:
    """What happens to the data before a stage starts. At most one of the two may be set.

    Args:
        hard_mining: LoongRL's between-stage hard mining.
        retrospective: QwenLong-L1's retrospective sampling between context phases.
    """

    hard_mining: HardMining | None = None
    retrospective: Retrospective | None = None


# ------------------------------------------------------------------------------------------------ stages
@dataclass
class Optim:
    """Optimiser settings shared by SFT and RL stages.

    Args:
        learning_rate: Peak learning rate.
        lr_scheduler: `constant`, `cosine` or `linear` decay after warm-up.
        warmup_ratio: Share of the stage's optimiser steps spent warming up linearly.
        min_lr_ratio: Final learning rate as a share of the peak (verl cosine only; TRL decays to 0).
        weight_decay: AdamW weight decay.
        grad_clip: Gradient-norm clip.
    """

    learning_rate: float = 1e-6
    lr_scheduler: Literal["constant", "cosine", "linear"] = "constant"
    warmup_ratio: float = 0.0
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    grad_clip: float = 1.0


@dataclass
class SFTStage:
    """Supervised warm-up on gold responses (QwenLong-L1 §2); loss on the completion only.

    Args:
        data: The mixture (rows need a `completion` column).
        optim: Optimiser settings.
        batch_size: Sequences per optimiser step.
        micro_batch_size: Sequences per forward pass (gradient accumulation = batch / micro).
        epochs: Passes over the data (ignored when `steps` is set).
        steps: Optimiser steps; null trains for `epochs`.
        max_length: Longest prompt + completion in tokens; longer rows are dropped and counted.
        save_every: Checkpoint every this many optimiser steps (TRL `save_steps`, verl `trainer.save_freq`;
            the last step is always saved): a crashed stage resumes from its last checkpoint.
    """

    data: DataMixture = field(default_factory=DataMixture)
    optim: Optim = field(default_factory=lambda: Optim(learning_rate=1e-5))
    batch_size: int = 64
    micro_batch_size: int = 1
    epochs: float = 1.0
    steps: int | None = None
    max_length: int = 32768
    save_every: int = 50


@dataclass
class OverlongBuffer:
    """DAPO soft overlong punishment (Eq. 13), added to the reward.

    Args:
        length: Buffer length L_cache: the penalty ramps from 0 to -penalty_factor over the last
            `length` tokens before `max_response_tokens`.
        penalty_factor: Penalty at the cap.
    """

    length: int = 4096
    penalty_factor: float = 1.0


@dataclass
class Aepo:
    """QwenLong-L1.5's Adaptive Entropy-controlled Policy Optimization (arXiv 2512.12967; Qwen-Doc README
    snippet): while the batch's entropy lies strictly between the bounds, only samples with positive advantage
    and positive reward are trained on, truncated to a multiple of the GPUs (verl only; docs/train.md says
    which entropy and what the paper leaves open). The paper gives no values for the bounds.

    Args:
        entropy_low: Lower bound (exclusive) of the batch's token-mean entropy (old policy, response tokens).
        entropy_high: Upper bound (exclusive).
    """

    entropy_low: float
    entropy_high: float


@dataclass
class MemoryAgentTraining:
    """MemAgent's RL (arXiv 2507.02259; syr-cn/MemAgent `recurrent/impls/memory.py`, `run_memory_7B.sh`): each
    sample reads the row's document chunk by chunk, one conversation per chunk whose reply replaces a memory,
    then answers from the memory in a final conversation (`loongrl.generation.memory_agent`'s protocol and
    templates). The final answer is scored by the shared reward, and that reward, and the GRPO advantage of the
    final answer within its group, is given to every conversation of the sample; every conversation is trained
    on (verl only: `loongrl.train.memory_agent_verl`, docs/train.md "Training the memory agent").

    With it, the stage's `max_prompt_tokens` bounds the whole row (document and problem: the data filter, as
    MemAgent's max_chunks x chunk_size), and verl's per-conversation lengths come from here: prompt
    `problem_tokens + chunk_tokens + memory_tokens + TEMPLATE_ROOM`, response max(memory_tokens, answer_tokens);
    `max_response_tokens` is not used.

    Args:
        chunk_tokens: Document tokens read per conversation (MemAgent `chunk_size` 5000).
        memory_tokens: New tokens of each memory update, hence the memory's size (MemAgent
            `max_memorization_length` 1024).
        answer_tokens: New tokens of the final answer (MemAgent `max_final_response_length` 1024).
        problem_tokens: Room for the problem (system prompt, instructions, question) in a conversation's prompt
            (MemAgent `max_prompt_length` 1024); a longer problem fails its sample, named in verl's log.
    """

    chunk_tokens: int = 5000
    memory_tokens: int = 1024
    answer_tokens: int = 1024
    problem_tokens: int = 1024


# The update template's own text (~100 tokens), the chat template's (a default system prompt: ~30) and a margin
# for the memory, whose text is tokenized again in the next prompt (its count may differ by a few tokens).
TEMPLATE_ROOM = 256


def memory_agent_lengths(m: MemoryAgentTraining) -> tuple[int, int]:
    """(prompt, response) tokens of one memory-agent conversation: verl's data.max_prompt_length and
    data.max_response_length.

    Example:
        >>> memory_agent_lengths(MemoryAgentTraining())  # 1024 + 5000 + 1024 + 256; max(1024, 1024)
        (7304, 1024)
    """
    return m.problem_tokens + m.chunk_tokens + m.memory_tokens + TEMPLATE_ROOM, max(m.memory_tokens, m.answer_tokens)


@dataclass
class RLStage:
    """One GRPO/DAPO stage.

    Args:
        data: The mixture.
        transition: Hard mining or retrospective sampling applied before this stage.
        algorithm: `grpo` or `dapo`. `dapo` turns on dynamic sampling (verl `filter_groups` on `acc`);
            TRL has no resampling, so there zero-variance groups only get zero advantage (logged).
        inflight_gen_batches: DAPO (verl): prompt batches (of `batch_size`) generated at once while groups
            without reward variance are being replaced (verl `max_inflight_gen_batches`; QwenLong-L1
            generated 3x the batch per round).
        max_gen_batches: DAPO (verl): cap on the prompts generated for one step, in batches of `batch_size`
            (the first one included); reaching it fails the stage with the counts instead of sampling
            forever (QwenLong-L1: 10 rounds of 3 batches).
        group_size: Rollouts per prompt (G).
        kl_coef: KL coefficient as a loss term (0 disables it and the reference model).
        kl_type: KL estimator: `low_var_kl` (k3; the only one TRL implements), `kl`, `mse`, `abs`.
        clip_low: PPO clip epsilon below 1.
        clip_high: PPO clip epsilon above 1 (DAPO clip-higher: 0.28).
        loss_agg: `token-mean` (DAPO, LoongRL code), `seq-mean-token-mean` (GRPO paper) or
            `seq-mean-token-sum-norm` (Dr. GRPO).
        norm_adv_by_std: Divide advantages by the group std (False = Dr. GRPO).
        entropy_coef: Entropy bonus coefficient (LoongRL: 0).
        temperature: Rollout temperature.
        top_p: Rollout nucleus mass.
        max_prompt_tokens: Prompt budget; longer prompts are filtered out before training.
        max_response_tokens: Rollout length cap.
        overlong_buffer: DAPO overlong shaping; null disables it.
        optim: Optimiser settings.
        batch_size: Prompts per RL step (each with `group_size` rollouts).
        mini_batch_size: Prompts per optimiser update (batch / mini = updates per step); null = batch.
        ppo_epochs: Passes over each rollout batch.
        steps: RL steps; null trains for `epochs`.
        epochs: Passes over the data when `steps` is null.
        reward_kwargs: Options of the shared scorer (`loongrl.rewards.router.REWARD_KWARGS`, docs/rewards.md).
        save_every: Checkpoint every this many RL steps (verl `trainer.save_freq`; TRL `save_steps` in
            optimiser steps, i.e. times batch/mini x ppo_epochs; the last step is always saved): a crashed
            stage resumes from its last checkpoint.
        sampler: `random` (verl's seeded shuffle) or `task_balanced` (QwenLong-L1.5: each batch holds an equal
            number of prompts of each task, the task being the data_source family; verl only).
        advantage: `grpo` (group mean and group std) or `task_normalized` (QwenLong-L1.5: group mean, std of
            the same task's rewards across the batch; verl only).
        aepo: QwenLong-L1.5's AEPO (verl only); null disables it.
        memory_agent: Train the memory agent (MemAgent's multi-conversation rollouts; verl only); null: one
            conversation per sample, the whole prompt in the window.
    """

    data: DataMixture = field(default_factory=DataMixture)
    transition: Transition | None = None
    algorithm: Literal["grpo", "dapo"] = "grpo"
    inflight_gen_batches: int = 3
    max_gen_batches: int = 30
    group_size: int = 8
    kl_coef: float = 0.001
    kl_type: Literal["low_var_kl", "kl", "mse", "abs"] = "low_var_kl"
    clip_low: float = 0.2
    clip_high: float = 0.2
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    norm_adv_by_std: bool = True
    entropy_coef: float = 0.0
    temperature: float = 1.0
    top_p: float = 1.0
    max_prompt_tokens: int = 16384
    max_response_tokens: int = 4096
    overlong_buffer: OverlongBuffer | None = None
    optim: Optim = field(default_factory=Optim)
    batch_size: int = 512
    mini_batch_size: int | None = None
    ppo_epochs: int = 1
    steps: int | None = None
    epochs: float = 1.0
    reward_kwargs: dict = field(default_factory=dict)
    save_every: int = 20
    sampler: Literal["random", "task_balanced"] = "random"
    advantage: Literal["grpo", "task_normalized"] = "grpo"
    aepo: Aepo | None = None
    memory_agent: MemoryAgentTraining | None = None

    def verl_lengths(self) -> tuple[int, int]:
        """(prompt, response) tokens of one sequence verl trains on: the stage's, or one memory-agent
        conversation's (`memory_agent_lengths`)."""
        if self.memory_agent is not None:
            return memory_agent_lengths(self.memory_agent)
        return self.max_prompt_tokens, self.max_response_tokens


@dataclass
class Stage:
    """One entry of `stages`: a name and exactly one of `sft` / `rl`.

    Args:
        name: Folder name of the stage's outputs (letters, digits, `-`, `_`; unique in the recipe).
        sft: A supervised stage.
        rl: An RL stage.
    """

    name: str
    sft: SFTStage | None = None
    rl: RLStage | None = None

    @property
    def kind(self) -> str:
        return "sft" if self.sft is not None else "rl"

    @property
    def spec(self) -> SFTStage | RLStage:
        return self.sft if self.sft is not None else self.rl


@dataclass
class EvalSet:
    """A held-out set evaluated after every stage (greedy, one sample, shared scorer).

    Args:
        name: Column name in the report.
        path: Parquet in the RL schema.
        max_new_tokens: Generation cap.
        max_items: Evaluate at most this many rows (the first ones); null = all.
    """

    name: str
    path: str
    max_new_tokens: int = 4096
    max_items: int | None = None


@dataclass
class Cluster:
    """Where the verl backend runs.

    Args:
        nnodes: Nodes.
        gpus_per_node: GPUs per node.
        ray_address: Address of a running Ray cluster (multi-node); null starts a local one.
        rollout: Rollout engine (`vllm`, `sglang`).
        tensor_parallel: Rollout tensor parallel size.
        ulysses_sp: Ulysses sequence-parallel size for the actor and reference.
        gpu_memory_utilization: Rollout KV-cache share of GPU memory.
        max_tokens_per_gpu: Dynamic-batch token budget per GPU (null: prompt + response budget).
        param_offload: FSDP parameter offload to CPU.
        optimizer_offload: FSDP optimiser-state offload to CPU.
        max_checkpoints: Checkpoints kept per stage, verl and TRL (`save_total_limit`): older ones are
            deleted; the last is what the stage's merge and a resume use. null keeps all (a 32B checkpoint
            with optimiser state is ~380 GB).
        rope_scaling: `auto`: a stage whose prompt + response (SFT: max_length) exceeds the model's native
            window (config.json `max_position_embeddings`, no rope scaling of its own) gets YaRN, factor = the
            smallest power of two that covers it, in the actor, reference and rollout config (`checks.py`,
            docs/train.md); stages that fit get none. `off`: never; such a stage is an error before launch.
        extra_overrides: Raw Hydra overrides appended last (checked by the same composition test).
    """

    nnodes: int = 1
    gpus_per_node: int = 8
    ray_address: str | None = None
    rollout: Literal["vllm", "sglang"] = "vllm"
    tensor_parallel: int = 1
    ulysses_sp: int = 1
    gpu_memory_utilization: float = 0.5
    max_tokens_per_gpu: int | None = None
    param_offload: bool = False
    optimizer_offload: bool = False
    max_checkpoints: int | None = 2
    rope_scaling: Literal["auto", "off"] = "auto"
    extra_overrides: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    """A whole training run.

    Args:
        name: Run name (used for logging and verl experiment names).
        model: Starting model: a local folder or a hub id (the engines load it).
        seed: Seed for data shuffling, sampling passes and the engines.
        stages: The stages in order.
        eval: Held-out sets evaluated before training and after every stage (may be empty).
        cluster: verl launch settings (the TRL backend uses only `max_checkpoints`).
        tiny_model: The tiny local model at `model` that the demo builds before training (demo only;
            `python -m loongrl.demo RECIPE` reads it, training does not): a mapping of
            `loongrl.demo.tiny.build_tiny_model` arguments; its tokenizer is trained on the texts of all
            stages' data and the eval sets.
        demo_data: The demo-cpu task files the demo writes before training (demo only, read by
            `python -m loongrl.demo RECIPE`): `dir` (relative to the recipe) plus
            `loongrl.demo.task.make_demo_data` arguments.
        logger: Where per-step metrics go besides each stage's `metrics.csv` (always written), a list of
            `console` (verl prints each step's metrics; TRL's progress bar is always on), `tensorboard`
            (`OUT/tb/NN_stage`), `wandb`, `mlflow`: the names TRL's `report_to` and verl's
            `trainer.logger` share. W&B and MLflow read their settings (WANDB_API_KEY, WANDB_MODE,
            MLFLOW_TRACKING_URI, ...) from the environment only; docs/train.md has examples.
    """

    name: str
    model: str
    stages: list[Stage]
    seed: int = 0
    eval: list[EvalSet] = field(default_factory=list)
    cluster: Cluster = field(default_factory=Cluster)
    tiny_model: dict | None = None
    demo_data: dict | None = None
    logger: list[Literal["console", "tensorboard", "wandb", "mlflow"]] = field(
        default_factory=lambda: ["console", "tensorboard"])
    source: str = field(default="", metadata={"internal": True})


# --------------------------------------------------------------------------------------------- loading
# A default holds no `${`, so in `${LOONGRL_CACHE:-${HOME}/.cache/loongrl}` the inner one is matched first.
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:(?!\$\{)[^}])*))?\}")


def _expand_env(text: str, where: str) -> str:
    def sub(m):
        value = os.environ.get(m.group(1), m.group(2))
        if value is None:
            raise RecipeError(f"{where}: environment variable ${{{m.group(1)}}} is not set and has no default")
        return value
    for _ in range(4):  # innermost first, one level of nesting per pass
        text, count = _ENV.subn(sub, text)
        if not count:
            break
    return text


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise RecipeError(f"{where}: must not be null")
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where)
    if value is None:
        raise RecipeError(f"{where}: must not be null")
    if origin is Literal:
        if value not in args:
            hint = " (YAML reads an unquoted off/on/no/yes as a boolean: quote it)" if isinstance(value, bool) else ""
            raise RecipeError(f"{where}: {value!r} is not one of {list(args)}{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {type(value).__name__}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return value
    raise RecipeError(f"{where}: unsupported field type {_type_name(tp)}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _build(cls, raw: Any, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where or 'recipe'}: expected a mapping for {cls.__name__}, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise RecipeError(f"{_join(where, unknown[0])}: unknown key; known keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = _convert(raw[name], hints[name], _join(where, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{_join(where, name)}: required key missing")
    return cls(**kwargs)


def parse_config(cls, raw: Any, where: str = ""):
    """A `cls` dataclass from a loaded mapping, checked as recipes are (unknown keys, types, required fields);
    raises `RecipeError` naming the dotted field. Experiment files (`loongrl.experiment`) are read with it too."""
    return _build(cls, raw, where)


def expand_env(text: str, where: str) -> str:
    """`${VAR}` and `${VAR:-default}` expanded from the environment (`where` names the file in errors); a
    default may itself name a variable.

    Example:
        >>> os.environ.pop("LOONGRL_NOT_SET", None); os.environ["LOONGRL_HOME_X"] = "/h"
        >>> expand_env("${LOONGRL_NOT_SET:-${LOONGRL_HOME_X}/.cache}/m and ${LOONGRL_HOME_X:-/d}", "x.yaml")
        '/h/.cache/m and /h'
    """
    return _expand_env(text, where)


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise RecipeError(f"{where}: {msg}")


def _validate(recipe: Recipe) -> None:
    _check(len(recipe.stages) > 0, "stages", "at least one stage is required")
    names = set()
    for i, stage in enumerate(recipe.stages):
        at = f"stages[{i}]"
        _check(re.fullmatch(r"[A-Za-z0-9_-]+", stage.name) is not None, f"{at}.name",
               f"{stage.name!r} must use letters, digits, '-' or '_'")
        _check(stage.name not in names, f"{at}.name", f"duplicate stage name {stage.name!r}")
        names.add(stage.name)
        _check((stage.sft is None) != (stage.rl is None), at, "set exactly one of 'sft' or 'rl'")
        spec = stage.spec
        sub = f"{at}.{stage.kind}"
        _check(spec.optim.learning_rate > 0, f"{sub}.optim.learning_rate", "must be > 0")
        _check(0 <= spec.optim.warmup_ratio < 1, f"{sub}.optim.warmup_ratio", "must be in [0, 1)")
        for j, comp in enumerate(spec.data.components):
            _check(comp.repeat >= 1, f"{sub}.data.components[{j}].repeat", "must be >= 1")
            _check(comp.max_items is None or comp.max_items > 0, f"{sub}.data.components[{j}].max_items",
                   "must be > 0")
        if stage.sft is not None:
            s = stage.sft
            _check(len(s.data.components) > 0, f"{sub}.data.components", "an SFT stage needs data")
            _check(s.batch_size >= 1 and s.micro_batch_size >= 1, f"{sub}.batch_size", "batch sizes must be >= 1")
            _check(s.batch_size % s.micro_batch_size == 0, f"{sub}.batch_size",
                   f"{s.batch_size} is not a multiple of micro_batch_size {s.micro_batch_size}")
            _check(s.steps is None or s.steps > 0, f"{sub}.steps", "must be > 0")
            _check(s.save_every >= 1, f"{sub}.save_every", "must be >= 1")
            continue
        r = stage.rl
        _check(r.group_size >= 2, f"{sub}.group_size", "GRPO needs at least 2 rollouts per prompt")
        _check(r.kl_coef >= 0, f"{sub}.kl_coef", "must be >= 0")
        _check(0 <= r.clip_low < 1, f"{sub}.clip_low", "must be in [0, 1)")
        _check(0 <= r.clip_high < 1, f"{sub}.clip_high", "must be in [0, 1)")
        _check(0 < r.top_p <= 1, f"{sub}.top_p", "must be in (0, 1]")
        _check(r.temperature > 0, f"{sub}.temperature", "must be > 0")
        _check(r.batch_size >= 1 and (r.mini_batch_size is None or r.mini_batch_size >= 1), f"{sub}.batch_size",
               "batch sizes must be >= 1")
        mini = r.mini_batch_size or r.batch_size
        _check(r.batch_size % mini == 0, f"{sub}.mini_batch_size",
               f"batch_size {r.batch_size} is not a multiple of mini_batch_size {mini}")
        _check(r.steps is None or r.steps > 0, f"{sub}.steps", "must be > 0")
        from loongrl.rewards.router import REWARD_KWARGS

        unknown = sorted(set(r.reward_kwargs) - set(REWARD_KWARGS))
        _check(not unknown, f"{sub}.reward_kwargs", f"unknown {unknown}; known: {', '.join(REWARD_KWARGS)}")
        judge = r.reward_kwargs.get("judge_config")
        if judge is not None:  # checked here: a typo would otherwise surface in a reward worker, mid-training
            from loongrl.rewards.judge import JudgeConfig

            at_judge = f"{sub}.reward_kwargs.judge_config"
            _check(isinstance(judge, dict), at_judge, "expected a mapping of JudgeConfig fields")
            known = [f.name for f in dataclasses.fields(JudgeConfig)]
            bad = sorted(set(judge) - set(known))
            _check(not bad, f"{at_judge}.{bad[0] if bad else ''}", f"unknown key; known keys: {', '.join(known)}")
        _check(r.inflight_gen_batches >= 1, f"{sub}.inflight_gen_batches", "must be >= 1")
        _check(r.max_gen_batches >= 1, f"{sub}.max_gen_batches", "must be >= 1")
        # verl saves only when save_freq > 0 (the last step included): 0 would leave nothing to merge
        _check(r.save_every >= 1, f"{sub}.save_every", "must be >= 1 (verl saves nothing when it is 0)")
        _check(r.data.max_prompt_tokens is None or r.data.max_prompt_tokens <= r.max_prompt_tokens,
               f"{sub}.data.max_prompt_tokens", "exceeds the stage's max_prompt_tokens")
        if r.aepo is not None:
            _check(0 <= r.aepo.entropy_low < r.aepo.entropy_high, f"{sub}.aepo",
                   f"needs 0 <= entropy_low < entropy_high, got {r.aepo.entropy_low} and {r.aepo.entropy_high}")
        m = r.memory_agent
        if m is not None:
            for name in ("chunk_tokens", "memory_tokens", "answer_tokens", "problem_tokens"):
                _check(getattr(m, name) >= 1, f"{sub}.memory_agent.{name}", "must be >= 1")
            # verl computes the final-answer-only GRPO advantage and broadcasts it only for its own `grpo`
            # estimator (verl/trainer/ppo/v1/utils.py:167-176); a registered one sees every conversation as a
            # member of the group, which would weigh a sample by its number of chunks
            _check(r.advantage == "grpo" and r.aepo is None, f"{sub}.memory_agent",
                   "works with `advantage: grpo` and no `aepo` only (verl gives the final answer's advantage to "
                   "every conversation only for its own GRPO estimator)")
            _check(r.overlong_buffer is None, f"{sub}.memory_agent",
                   "does not take an overlong_buffer (DAPO's length penalty would score the final answer against "
                   "max_response_tokens, which the memory agent does not use)")
        if r.overlong_buffer is not None:
            _check(0 < r.overlong_buffer.length < r.max_response_tokens, f"{sub}.overlong_buffer.length",
                   "must be in (0, max_response_tokens)")
        t = r.transition
        if t is not None:
            _check((t.hard_mining is None) != (t.retrospective is None), f"{sub}.transition",
                   "set exactly one of 'hard_mining' or 'retrospective'")
            _check(i > 0, f"{sub}.transition", "the first stage has no previous stage to sample from")
            hm, rs = t.hard_mining, t.retrospective
            sp = (hm or rs).sampling
            kind = "hard_mining" if hm else "retrospective"
            _check(sp.k >= 1, f"{sub}.transition.{kind}.sampling.k", "must be >= 1")
            if hm is not None:
                _check(0 < hm.solved_threshold <= 1, f"{sub}.transition.hard_mining.solved_threshold",
                       "must be in (0, 1]: it is a mean accuracy over the K samples")
            if rs is not None:
                _check(0 <= rs.carry_share < 1, f"{sub}.transition.retrospective.carry_share", "must be in [0, 1)")
                _check(len(r.data.components) > 0, f"{sub}.data.components",
                       "retrospective sampling adds to this stage's own mixture, which is empty")
            elif hm.source == "mixture" or i == 0:
                _check(len(r.data.components) > 0, f"{sub}.data.components", "mining 'mixture' needs data")
        else:
            _check(len(r.data.components) > 0, f"{sub}.data.components", "an RL stage needs data")
    _check(recipe.cluster.max_checkpoints is None or recipe.cluster.max_checkpoints >= 1,
           "cluster.max_checkpoints", "must be >= 1 or null")
    _check(len(set(recipe.logger)) == len(recipe.logger), "logger", f"{recipe.logger} names a logger twice")
    for i, o in enumerate(recipe.cluster.extra_overrides):  # verl's file logger feeds metrics.csv: keep it on
        _check(o.split("=", 1)[0].lstrip("+~") != "trainer.logger", f"cluster.extra_overrides[{i}]",
               "set the loggers with the recipe's `logger` field, not trainer.logger")
    for i, ev in enumerate(recipe.eval):
        _check(ev.max_new_tokens > 0, f"eval[{i}].max_new_tokens", "must be > 0")


def _resolve_paths(recipe: Recipe, base: str) -> None:
    def fix(p: str) -> str:
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
    for stage in recipe.stages:
        for comp in stage.spec.data.components:
            comp.path = fix(comp.path)
    for ev in recipe.eval:
        ev.path = fix(ev.path)
    if recipe.model.startswith((".", "/")) or recipe.tiny_model is not None:
        recipe.model = fix(recipe.model)
    if recipe.demo_data is not None:
        if "dir" not in recipe.demo_data:
            raise RecipeError(f"{recipe.source}: demo_data.dir: required key missing")
        recipe.demo_data = dict(recipe.demo_data, dir=fix(recipe.demo_data["dir"]))


def parse_recipe(raw: Any, source: str = "<recipe>", base_dir: str = ".") -> Recipe:
    """A validated `Recipe` from an already loaded mapping; `source` names it in errors."""
    try:
        recipe = _build(Recipe, raw, "")
        _validate(recipe)
    except RecipeError as e:
        raise RecipeError(f"{source}: {e}") from None
    recipe.source = source
    _resolve_paths(recipe, base_dir)
    for stage in recipe.stages:  # training caches verdicts unless told not to (cache_path: null)
        judge = stage.rl.reward_kwargs.get("judge_config") if stage.rl is not None else None
        if judge is not None:
            judge.setdefault("cache_path", "auto")
    return recipe


def load_recipe(path: str) -> Recipe:
    """Load and validate a recipe file (see the module docstring)."""
    if not os.path.isfile(path):
        raise RecipeError(f"{path}: recipe file not found")
    with open(path, encoding="utf-8") as f:
        text = _expand_env(f.read(), path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    return parse_recipe(raw, path, os.path.dirname(os.path.abspath(path)))


def to_dict(obj) -> Any:
    """Plain data of a recipe part (for manifests and hashing)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("internal")}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(to_dict(obj), sort_keys=True).encode()).hexdigest()[:16]
