"""The embedded backend: TRL `SFTTrainer` / `GRPOTrainer` on one machine (CPU or GPUs via accelerate).

Optimisation and rollout are TRL's; this module only maps a stage onto TRL's config, feeds it the
project's parquet rows and the shared reward, and collects per-step metrics.

Mapping (frameworks.md §5.3): group_size -> num_generations; kl_coef -> beta (TRL's estimator is k3,
i.e. `low_var_kl`, without verl's clamp); clip_low/high -> epsilon/epsilon_high; loss_agg token-mean ->
loss_type `dapo`, seq-mean-token-mean -> `grpo`, seq-mean-token-sum-norm -> `dr_grpo`; norm_adv_by_std ->
scale_rewards `group`/`none`; batch_size prompts per RL step -> generation batch of batch_size x G
completions, split into batch/mini optimiser updates (steps_per_generation), each reused ppo_epochs
times (num_iterations). TRL has no dynamic-sampling resampling: with `algorithm: dapo` zero-variance
groups get zero advantage (their share is logged as `frac_reward_zero_std`).

Checkpoints: `checkpoint-N` in the stage folder every `save_every` steps (RL: in optimiser steps, a whole RL
step's worth), the last `cluster.max_checkpoints` kept; `orchestrate` resumes an interrupted stage from the
newest complete one (`last_checkpoint`) and rebuilds the metrics logged before it (`logged_rows`).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable

from .recipe import RLStage, SFTStage

LOSS_TYPES = {"token-mean": "dapo", "seq-mean-token-mean": "grpo", "seq-mean-token-sum-norm": "dr_grpo"}
# Our metric names <- TRL log keys.
METRIC_KEYS = {"reward": "reward", "pass_rate": "pass_rate", "response_length": "completions/mean_length",
               "kl": "kl", "entropy": "entropy", "loss": "loss", "zero_std_groups": "frac_reward_zero_std",
               "learning_rate": "learning_rate", "token_accuracy": "mean_token_accuracy", "judge_errors": "judge_errors"}


def _device_kwargs() -> dict:
    import torch

    if torch.cuda.is_available():
        return {"bf16": True}
    # P3: bf16 is ~3x slower on CPU. Deterministic algorithms (and a fixed thread count, e.g. OMP_NUM_THREADS):
    # the same machine and seed give the same numbers.
    return {"use_cpu": True, "bf16": False, "gradient_checkpointing": False, "full_determinism": True}


def metric_row(logs: dict, step: int) -> dict | None:
    """Our metric row of one TRL log dict (None for the end-of-training summary)."""
    if not logs or "train_runtime" in logs:
        return None
    row = {"step": step}
    for ours, theirs in METRIC_KEYS.items():
        if theirs in logs:
            row[ours] = float(logs[theirs])
    return row


def logged_rows(checkpoint: str) -> list[dict]:
    """The metric rows a checkpoint's `trainer_state.json` logged up to its step (a resumed stage's rows before
    the crash: the run that logged them was killed before it wrote metrics.csv)."""
    with open(os.path.join(checkpoint, "trainer_state.json"), encoding="utf-8") as f:
        history = json.load(f)["log_history"]
    return [row for logs in history if (row := metric_row(logs, logs.get("step", 0))) is not None]


def _metrics_callback(sink: Callable[[dict], None]):
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            row = metric_row(logs, state.global_step)
            if row is not None:
                sink(row)

    return MetricsCallback()


def _train_and_save(trainer, out_dir: str, resume_from: str | None) -> dict:  # pragma: no mutate block (TRL only)
    """Train (from `resume_from`, a checkpoint-N folder, when given: transformers restores weights, optimiser,
    scheduler, RNG states and the data position), then save model and tokenizer to `out_dir/checkpoint`.
    The progress bar stays, but it no longer prints every step's log dict (the metrics go to CSV/TensorBoard).
    Returns the saved folder and the optimiser steps trained and planned."""
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(QuietProgress())
    trainer.train(resume_from_checkpoint=resume_from)
    ckpt = os.path.join(out_dir, "checkpoint")
    trainer.save_model(ckpt)
    trainer.processing_class.save_pretrained(ckpt)
    return {"checkpoint": ckpt, "global_step": trainer.state.global_step, "max_steps": trainer.state.max_steps}


def last_checkpoint(out_dir: str) -> str | None:
    """The newest complete `checkpoint-N` folder TRL saved in `out_dir` (its trainer_state.json, written last,
    parses), else None. Newer incomplete ones (a kill while saving) are deleted: a resume writes them again."""
    found = []
    for name in os.listdir(out_dir) if os.path.isdir(out_dir) else []:
        if name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit():
            found.append((int(name[len("checkpoint-"):]), os.path.join(out_dir, name)))
    for _, path in sorted(found, reverse=True):
        try:
            with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
                json.load(f)
            return path
        except (OSError, ValueError):
            print(f"  {path}: incomplete checkpoint (killed while saving), removed")
            shutil.rmtree(path, ignore_errors=True)
    return None


def checkpoint_step(path: str) -> int:
    return int(os.path.basename(path).split("-", 1)[1])


def make_reward(reward_kwargs: dict):
    """The shared scorer's TRL adapter for a stage's `reward_kwargs` (it also logs the pass rate)."""
    from loongrl.rewards.router import REWARD_KWARGS, make_trl_reward

    unknown = set(reward_kwargs) - set(REWARD_KWARGS)
    if unknown:
        raise ValueError(f"unknown reward_kwargs {sorted(unknown)}; known: {', '.join(REWARD_KWARGS)}")
    return make_trl_reward(**reward_kwargs)


def _optim_kwargs(optim) -> dict:
    return {"learning_rate": optim.learning_rate, "lr_scheduler_type": optim.lr_scheduler,
            "warmup_ratio": optim.warmup_ratio, "weight_decay": optim.weight_decay, "max_grad_norm": optim.grad_clip}


def report_to(logger: list[str]) -> list[str] | str:
    """TRL's `report_to` for the recipe's `logger`: W&B and MLflow are transformers' own callbacks; TensorBoard
    is our `StageMetrics` writer (OUT/tb/NN_stage, our metric names) and console TRL's progress bar."""
    return [x for x in logger if x in ("wandb", "mlflow")] or "none"


def _common_kwargs(out_dir: str, seed: int, logger: list[str], keep: int | None = None) -> dict:
    """Per-step logs; checkpoints (`checkpoint-N` in the stage folder, every `save_steps`, the last `keep`)
    for a resume after a crash."""
    return {"output_dir": out_dir, "logging_steps": 1, "report_to": report_to(logger), "save_strategy": "steps",
            "save_total_limit": keep, "seed": seed, "data_seed": seed, "disable_tqdm": False, **_device_kwargs()}


def train_sft(spec: SFTStage, model_path: str, data_path: str, out_dir: str, seed: int, sink: Callable[[dict], None],
              logger: list[str], keep: int | None = None,
              resume_from: str | None = None) -> dict:  # pragma: no mutate block (TRL only)
    """SFT on prompt-completion rows (loss on the completion only); returns `_train_and_save`'s dict."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    ds = load_dataset("parquet", data_files=data_path, split="train").select_columns(["prompt", "completion"])
    args = SFTConfig(**sft_config_kwargs(spec), **_common_kwargs(out_dir, seed, logger, keep))
    trainer = SFTTrainer(model=model_path, args=args, train_dataset=ds, callbacks=[_metrics_callback(sink)])
    return _train_and_save(trainer, out_dir, resume_from)


def sft_config_kwargs(spec: SFTStage) -> dict:
    """SFTConfig arguments for a stage: `batch_size` sequences per step as micro-batches x accumulation."""
    return {"per_device_train_batch_size": spec.micro_batch_size,
            "gradient_accumulation_steps": spec.batch_size // spec.micro_batch_size,
            "num_train_epochs": spec.epochs, "max_steps": spec.steps or -1, "max_length": spec.max_length,
            "completion_only_loss": True, "save_steps": spec.save_every, **_optim_kwargs(spec.optim)}


def optimiser_steps_per_rl_step(spec: RLStage) -> int:
    """TRL counts optimiser steps: batch/mini updates per RL step, each repeated ppo_epochs times."""
    return spec.batch_size // (spec.mini_batch_size or spec.batch_size) * spec.ppo_epochs


def grpo_config_kwargs(spec: RLStage) -> dict:
    """GRPOConfig arguments for a stage (the knob mapping in the module docstring)."""
    if spec.kl_coef > 0 and spec.kl_type != "low_var_kl":
        raise ValueError(f"TRL implements only the k3 (low_var_kl) KL estimator, not {spec.kl_type!r}")
    mini = spec.mini_batch_size or spec.batch_size
    updates = spec.batch_size // mini
    # save_steps counts optimiser steps: a whole RL step's updates, so a checkpoint never splits a generation
    # batch (TRL regenerates every steps_per_generation x num_iterations steps, counted from the resume)
    kw = {"save_steps": spec.save_every * optimiser_steps_per_rl_step(spec),
          "num_generations": spec.group_size, "per_device_train_batch_size": mini * spec.group_size,
          "steps_per_generation": updates, "num_iterations": spec.ppo_epochs, "beta": spec.kl_coef,
          "epsilon": spec.clip_low, "epsilon_high": spec.clip_high, "loss_type": LOSS_TYPES[spec.loss_agg],
          "scale_rewards": "group" if spec.norm_adv_by_std else "none", "entropy_coef": spec.entropy_coef,
          "temperature": spec.temperature, "top_p": spec.top_p, "max_completion_length": spec.max_response_tokens,
          **_optim_kwargs(spec.optim)}
    if spec.steps is not None:
        kw["max_steps"] = spec.steps * optimiser_steps_per_rl_step(spec)
    else:
        kw["num_train_epochs"] = spec.epochs
    return kw


def grpo_rewards(spec: RLStage) -> tuple[list[Callable], list[float]]:
    """The stage's reward functions and their weights: the shared scorer (weight 1), plus DAPO's soft
    overlong punishment (weight `penalty_factor`) when `overlong_buffer` is set."""
    rewards, weights = [make_reward(spec.reward_kwargs)], [1.0]
    if spec.overlong_buffer is not None:
        from trl.rewards import get_soft_overlong_punishment

        rewards.append(get_soft_overlong_punishment(spec.max_response_tokens, spec.overlong_buffer.length))
        weights.append(spec.overlong_buffer.penalty_factor)
    return rewards, weights


def train_grpo(spec: RLStage, model_path: str, data_path: str, out_dir: str, seed: int, sink: Callable[[dict], None],
               logger: list[str], keep: int | None = None,
               resume_from: str | None = None) -> dict:  # pragma: no mutate block (TRL only)
    """GRPO/DAPO on RL rows; `model_path` must be a folder or hub id (TRL reloads the reference model
    from it when kl_coef > 0, pitfall P1). Returns `_train_and_save`'s dict (steps in optimiser steps)."""
    from datasets import load_dataset
    from trl import GRPOConfig, GRPOTrainer

    ds = load_dataset("parquet", data_files=data_path, split="train")
    rewards, weights = grpo_rewards(spec)
    args = GRPOConfig(reward_weights=weights, **grpo_config_kwargs(spec), **_common_kwargs(out_dir, seed, logger, keep))
    trainer = GRPOTrainer(model=model_path, reward_funcs=rewards, args=args, train_dataset=ds,
                          callbacks=[_metrics_callback(sink)])
    return _train_and_save(trainer, out_dir, resume_from)
