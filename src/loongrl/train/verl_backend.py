"""The distributed backend: one verl run per stage (verl 0.9.1, the version pyproject's `verl` extra pins).

For each stage this writes the stage's parquet (the same data preparation as the TRL backend: mixture,
transition, length filter), a small validation parquet and a Hydra override list, then launches

    python -m verl.trainer.main_ppo <overrides>                      (RL, single node)
    ray job submit --address=<addr> --runtime-env-json=... -- <this python> -m verl.trainer.main_ppo ...
                                                                     (RL, Ray cluster)
    torchrun --nnodes=N --nproc_per_node=G -m verl.trainer.sft_trainer <overrides>  (SFT)

and merges the last checkpoint to HF format (`python -m verl.model_merger merge`) so the next stage (and
the next transition's sampling pass) starts from it. The stage's metrics.csv is then read from verl's `file`
logger (always on; TensorBoard goes to OUT/tb/NN_stage), and after the last stage the run's metrics.csv,
report.md and curves.png are written as for the TRL backend. `--dry-run` prints the commands instead;
`--preflight` (`preflight.py`) runs every stage for real on this CPU first. Both, and every launch, first run
the checks before launch (`checks.py`: parallelism, token budgets, context window and YaRN, data files).

On a Ray cluster, every path a stage uses (its data, the reward router, the checkpoint folder, a local
model) must be visible on every node, and loongrl and verl installed there: `cluster_check` verifies
that on each node before a stage is submitted and fails with the node and the missing items.

The overrides are checked on CPU against verl's own config (`hydra.compose` on `verl.trainer.config`,
see `compose_overrides`) and, in the preflight, against the config verl actually ran with.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys

from .recipe import Recipe, RLStage, SFTStage, Stage

ROUTER_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rewards", "router.py")
DAPO_SAMPLER = "pkg://loongrl.train.dapo_sampler"
QWENLONG15 = "loongrl.train.qwenlong15_verl"  # QwenLong-L1.5's sampler, advantage and AEPO (verl side)
MEMORY_AGENT, MEMORY_AGENT_NAME = "loongrl.train.memory_agent_verl", "memory_agent"  # its agent loop (verl side)
AEPO_STATS = "aepo.jsonl"  # one line per AEPO decision, in the stage folder
DAPO_NO_VARIANCE = "DAPO dynamic sampling found too few prompt groups with reward variance"  # its error
VAL_ROWS = 8  # validation is off (test_freq=-1), but verl still loads and length-filters val_files
# Non-secret settings the stages need on every node; an API key is checked on the nodes, never forwarded.
FORWARDED_ENV = ("HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
                 "WANDB_ENTITY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DIR", "MLFLOW_TRACKING_URI",
                 "MLFLOW_TRACKING_USERNAME")
# Secrets of the loggers: checked on the nodes when set here, never forwarded or written down.
LOGGER_KEYS = {"wandb": ("WANDB_API_KEY",), "mlflow": ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD")}
METRICS_JSONL = "verl_metrics.jsonl"  # verl's `file` logger, always on: our metrics.csv is read from it
# Our metric names (orchestrate.METRIC_COLUMNS) <- verl 0.9.1's keys: RL from verl/trainer/ppo/metric_utils.py
# (compute_data_metrics) and the actor's update (verl/workers/utils/losses.py, actor/kl_loss, actor/lr);
# SFT from verl/trainer/sft_trainer.py:398-401 (train/loss, train/lr). verl does not log our reward's `acc`
# (it reaches only the rollout dumps), so verl stages have no pass_rate column.
VERL_METRIC_KEYS = {"reward": "critic/score/mean", "response_length": "response_length/mean",
                    "kl": "actor/kl_loss", "entropy": "actor/entropy", "loss": "actor/pg_loss",
                    "learning_rate": "actor/lr"}
VERL_SFT_METRIC_KEYS = {"loss": "train/loss", "learning_rate": "train/lr"}


def _whole_epochs(epochs: float) -> int:
    """verl counts whole epochs; a fractional one is an error, not a silent rounding (use `steps`)."""
    if epochs < 1 or epochs != int(epochs):
        raise ValueError(f"verl trains whole epochs; got epochs={epochs} (set `steps` instead)")
    return int(epochs)


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    if v is None:
        return "null"
    return str(v)


def _scheduler(optim, where: str) -> str:
    if optim.lr_scheduler == "linear":
        raise ValueError(f"{where}: verl's FSDP optimiser supports lr_scheduler constant or cosine, not linear")
    return optim.lr_scheduler


def _flat(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def rl_token_budget(recipe: Recipe, stage: Stage) -> int:
    """Dynamic-batch tokens per GPU of an RL stage (actor update, rollout and ref log-prob passes):
    `cluster.max_tokens_per_gpu`, else prompt + response of the sequences verl trains on (with the memory agent,
    one conversation's). Checked before launch (`checks.check_token_budgets`)."""
    return recipe.cluster.max_tokens_per_gpu or sum(stage.rl.verl_lengths())


def rope_config_dir(ckpt_dir: str) -> str:
    """Where a stage's YaRN config.json is written (verl's `model.hf_config_path`): beside its checkpoints."""
    return os.path.join(os.path.dirname(ckpt_dir), "model_config")


def rope_overrides(recipe: Recipe, stage: Stage, model_key: str, ckpt_dir: str) -> list[str]:
    """YaRN for a stage whose sequences exceed the model's native window (`checks.rope_scaling_plan`), else [].

    verl 0.9.1 cannot take it through `model.override_config`: its update_model_config recurses into a dict value
    and sets attributes on it (verl/utils/model.py:81-85), which fails on transformers 5's `rope_parameters` dict
    (and on transformers 4's None). So the actor and reference read a config.json with the rope scaling through
    `model.hf_config_path` (verl/workers/config/model.py:151-188; written by `run` before launch), and the rollout
    engine, which loads the model folder itself, gets it as vLLM `hf_overrides` / SGLang
    `json_model_override_args` through `rollout.engine_kwargs` (vllm_async_server.py:287, 346-349;
    async_sglang_server.py:276, 340), with `max_model_len` = the stage's longest sequence."""
    from loongrl.generation.window import hf_overrides

    from .checks import rope_scaling_plan

    plan = rope_scaling_plan(recipe, stage)
    if plan is None:
        return []
    out = [f"{model_key}.hf_config_path={rope_config_dir(ckpt_dir)}"]
    if stage.rl is None:
        return out
    ro = "actor_rollout_ref.rollout"
    out.append(f"{ro}.max_model_len={plan['length']}")
    hf = hf_overrides(plan)
    if recipe.cluster.rollout == "vllm":
        out += [f"+{ro}.engine_kwargs.vllm.hf_overrides.{k}={_fmt(v)}" for k, v in _flat(hf)]
    elif recipe.cluster.rollout == "sglang":
        out.append(f"+{ro}.engine_kwargs.sglang.json_model_override_args='{json.dumps(hf)}'")
    return out


def verl_loggers(recipe: Recipe) -> list[str]:
    """verl's `trainer.logger` for the recipe's `logger`: the same names, plus verl's `file` logger, which
    our metrics.csv is read from (verl/utils/tracking.py, `Tracking.supported_backend`)."""
    return [*recipe.logger, "file"]


def stage_env(recipe: Recipe, sdir: str) -> dict:
    """Where verl's loggers write, read from the environment by verl (verl/utils/tracking.py: FileLogger
    reads VERL_FILE_LOGGER_PATH, _TensorboardAdapter TENSORBOARD_DIR, else ./tensorboard_log in the cwd)."""
    from .orchestrate import tb_dir

    env = {"VERL_FILE_LOGGER_PATH": os.path.join(sdir, METRICS_JSONL)}
    if "tensorboard" in recipe.logger:
        env["TENSORBOARD_DIR"] = tb_dir(sdir)
    return env


def rl_overrides(recipe: Recipe, stage: Stage, model_path: str, data_path: str, ckpt_dir: str,
                 val_path: str | None = None, env: dict | None = None) -> list[str]:
    """Hydra overrides for `verl.trainer.main_ppo` (config `ppo_trainer`) of one RL stage; `env` is set in
    the Ray job's runtime env, so it reaches verl's trainer whatever node it lands on."""
    r: RLStage = stage.rl
    c = recipe.cluster
    a, ro, ref = "actor_rollout_ref.actor", "actor_rollout_ref.rollout", "actor_rollout_ref.ref"
    tokens = rl_token_budget(recipe, stage)
    prompt_tokens, response_tokens = r.verl_lengths()
    o = {
        "algorithm.adv_estimator": "grpo",
        "algorithm.norm_adv_by_std_in_grpo": r.norm_adv_by_std,
        "algorithm.use_kl_in_reward": False,
        "critic.enable": False,  # GRPO has none; left unset, verl warns that it disabled it
        "data.train_files": [data_path],
        "data.val_files": [val_path or os.path.join(os.path.dirname(data_path), "val.parquet")],
        "data.prompt_key": "prompt",
        "data.max_prompt_length": prompt_tokens,
        "data.max_response_length": response_tokens,
        "data.filter_overlong_prompts": True,
        "data.truncation": "error",
        "data.train_batch_size": r.batch_size,
        "data.seed": recipe.seed,
        "actor_rollout_ref.model.path": model_path,
        "actor_rollout_ref.model.use_remove_padding": True,
        "actor_rollout_ref.model.enable_gradient_checkpointing": True,
        f"{a}.optim.lr": r.optim.learning_rate,
        f"{a}.optim.lr_scheduler_type": _scheduler(r.optim, f"stage {stage.name}"),
        f"{a}.optim.lr_warmup_steps_ratio": r.optim.warmup_ratio,
        f"{a}.optim.min_lr_ratio": r.optim.min_lr_ratio,
        f"{a}.optim.weight_decay": r.optim.weight_decay,
        f"{a}.optim.clip_grad": r.optim.grad_clip,
        f"{a}.ppo_mini_batch_size": r.mini_batch_size or r.batch_size,
        f"{a}.ppo_epochs": r.ppo_epochs,
        f"{a}.use_kl_loss": r.kl_coef > 0,
        f"{a}.kl_loss_coef": r.kl_coef,
        f"{a}.kl_loss_type": r.kl_type,
        f"{a}.clip_ratio_low": r.clip_low,
        f"{a}.clip_ratio_high": r.clip_high,
        f"{a}.loss_agg_mode": r.loss_agg,
        f"{a}.entropy_coeff": r.entropy_coef,
        f"{a}.use_dynamic_bsz": True,
        f"{a}.ppo_max_token_len_per_gpu": tokens,
        # The engine's key; `actor.ulysses_sequence_parallel_size` is deprecated in 0.9.
        f"{a}.fsdp_config.ulysses_sequence_parallel_size": c.ulysses_sp,
        f"{ref}.fsdp_config.ulysses_sequence_parallel_size": c.ulysses_sp,
        f"{a}.fsdp_config.param_offload": c.param_offload,
        f"{a}.fsdp_config.optimizer_offload": c.optimizer_offload,
        f"{ro}.name": c.rollout,
        f"{ro}.n": r.group_size,
        f"{ro}.temperature": r.temperature,
        f"{ro}.top_p": r.top_p,
        f"{ro}.tensor_model_parallel_size": c.tensor_parallel,
        f"{ro}.gpu_memory_utilization": c.gpu_memory_utilization,
        f"{ro}.max_num_batched_tokens": tokens,
        f"{ro}.log_prob_use_dynamic_bsz": True,
        f"{ro}.log_prob_max_token_len_per_gpu": tokens,
        f"{ref}.log_prob_use_dynamic_bsz": True,
        f"{ref}.log_prob_max_token_len_per_gpu": tokens,
        "reward.custom_reward_function.path": ROUTER_PATH,
        "reward.custom_reward_function.name": "compute_score",
        "trainer.project_name": "loongrl",
        "trainer.experiment_name": f"{recipe.name}-{stage.name}",
        "trainer.nnodes": c.nnodes,
        "trainer.n_gpus_per_node": c.gpus_per_node,
        "trainer.default_local_dir": ckpt_dir,
        "trainer.save_freq": r.save_every,
        "trainer.max_actor_ckpt_to_keep": c.max_checkpoints,
        "trainer.test_freq": -1,
        "trainer.val_before_train": False,
        "trainer.resume_mode": "auto",
        "trainer.logger": verl_loggers(recipe),
    }
    for k, v in (env or {}).items():
        o[f"+ray_kwargs.ray_init.runtime_env.env_vars.{k}"] = v
    if r.steps is not None:
        # verl stops at total_training_steps or after total_epochs (default 30) epochs of len(data) // batch
        # steps, whichever comes first (verl/trainer/ppo/v1/trainer_base.py:467, 765; the epoch is counted from
        # global_steps, so a resume spends none): with >= 1 step per epoch, checked before launch
        # (`asked_steps`), `steps` epochs can never end the stage first.
        o["trainer.total_training_steps"] = r.steps
        o["trainer.total_epochs"] = r.steps
    else:
        o["trainer.total_epochs"] = _whole_epochs(r.epochs)
    if c.ray_address:  # workers on every node run the launcher's interpreter (same env path on each node)
        o["ray_kwargs.ray_init.runtime_env.py_executable"] = sys.executable
    if r.algorithm == "dapo":
        # verl 0.9.1 (v1 trainer): oversampling is max_inflight_gen_batches (in train batches); the old
        # max_num_gen_batches is ignored and data.gen_batch_size forced to 1, so neither is emitted. The cap
        # is our sampler (verl's ReplayBuffer plus a limit), reading the filter settings by interpolation.
        sk = "+trainer.v1.sampler.sampler_kwargs"
        o.update({"algorithm.filter_groups.enable": True, "algorithm.filter_groups.metric": "acc",
                  "algorithm.filter_groups.max_inflight_gen_batches": r.inflight_gen_batches,
                  "trainer.v1.sampler.custom_sampler.path": DAPO_SAMPLER,
                  "trainer.v1.sampler.custom_sampler.name": "CappedDAPOReplayBuffer",
                  f"{sk}.max_gen_batches": r.max_gen_batches,
                  f"{sk}.filter_groups_metric": "${algorithm.filter_groups.metric}",
                  f"{sk}.max_inflight_gen_batches": "${algorithm.filter_groups.max_inflight_gen_batches}",
                  f"{sk}.train_batch_size": "${data.train_batch_size}"})
    o.update(qwenlong15_overrides(recipe, stage, os.path.dirname(ckpt_dir)))
    o.update(memory_agent_overrides(stage))
    out = [f"{k}={_fmt(v)}" for k, v in o.items()]
    out += [f"+reward.custom_reward_function.reward_kwargs.{k}={_fmt(v)}" for k, v in _flat(r.reward_kwargs)]
    if r.overlong_buffer is not None:
        ob = "+reward.reward_kwargs.overlong_buffer_cfg"
        out += ["reward.reward_manager.name=dapo", f"{ob}.enable=True", f"{ob}.len={r.overlong_buffer.length}",
                f"{ob}.penalty_factor={_fmt(r.overlong_buffer.penalty_factor)}", f"{ob}.log=False",
                f"+reward.reward_kwargs.max_resp_len={r.max_response_tokens}"]
    out += rope_overrides(recipe, stage, "actor_rollout_ref.model", ckpt_dir)
    return out + list(c.extra_overrides)


def qwenlong15_overrides(recipe: Recipe, stage: Stage, sdir: str) -> dict:
    """QwenLong-L1.5's options (`qwenlong15_verl`): the task-balanced dataset class read in order
    (`data.custom_cls`, verl/utils/dataset/rl_dataset.py:570-595; `data.shuffle=False` makes verl's sampler a
    SequentialSampler, verl/trainer/ppo/utils.py:158-169); the registered estimators `task_normalized` /
    `grpo_aepo`, imported into verl's processes by `VERL_USE_EXTERNAL_MODULES` (verl/__init__.py:49-52, set in
    the Ray job's env) and given AEPO's bounds and the GPUs as `algorithm.loongrl` (the config verl hands every
    estimator, verl/trainer/ppo/v1/trainer_base.py:1777-1785)."""
    r, o = stage.rl, {}
    if r.sampler == "task_balanced":
        o.update({"data.custom_cls.path": f"pkg://{QWENLONG15}", "data.custom_cls.name": "TaskBalancedRLDataset",
                  "data.shuffle": False})
    if r.advantage == "task_normalized" or r.aepo is not None:
        o["algorithm.adv_estimator"] = "task_normalized" if r.advantage == "task_normalized" else "grpo_aepo"
        o["+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES"] = QWENLONG15
    if r.aepo is not None:
        a = "+algorithm.loongrl.aepo"
        o.update({f"{a}.entropy_low": r.aepo.entropy_low, f"{a}.entropy_high": r.aepo.entropy_high,
                  f"{a}.world_size": recipe.cluster.nnodes * recipe.cluster.gpus_per_node,
                  "+algorithm.loongrl.stats_path": os.path.join(sdir, AEPO_STATS)})
    return o


def memory_agent_overrides(stage: Stage) -> dict:
    """The memory agent's training (`memory_agent_verl`, MemAgent's multi-conversation rollouts): the agent loop
    every row runs (`rollout.agent.default_agent_loop`, read when a row has no `agent_name`,
    verl/trainer/ppo/v1/agent_loop_tq.py:79-81), registered in verl's processes by importing its module
    (`VERL_USE_EXTERNAL_MODULES`, verl/__init__.py:49-52), with its budgets in the rollout config's extension
    point (`rollout.custom`, verl/workers/config/rollout.py:233-234). verl's prompt budget is one conversation's
    (`rl_overrides`: `RLStage.verl_lengths`), so its length filter would drop every row whose document is longer
    than a chunk: it is off (`data.filter_overlong_prompts`, verl/utils/dataset/rl_dataset.py:199-272), the
    stage's own filter (`max_prompt_tokens`, the whole row) having run on the data already."""
    m = stage.rl.memory_agent
    if m is None:
        return {}
    custom = "+actor_rollout_ref.rollout.custom.memory_agent"
    return {"data.filter_overlong_prompts": False,
            "actor_rollout_ref.rollout.agent.default_agent_loop": MEMORY_AGENT_NAME,
            f"{custom}.chunk_tokens": m.chunk_tokens, f"{custom}.memory_tokens": m.memory_tokens,
            f"{custom}.answer_tokens": m.answer_tokens,
            "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES": MEMORY_AGENT}


def _data_parallel(recipe: Recipe) -> int:
    c = recipe.cluster
    return max(1, c.nnodes * c.gpus_per_node // c.ulysses_sp)


def steps_per_epoch(recipe: Recipe, stage: Stage, rows: int) -> int:
    """Steps verl trains per epoch of `rows` rows: both trainers drop the last partial batch. RL:
    len(dataset) // train_batch_size (verl/trainer/ppo/v1/trainer_base.py:765). SFT: a DistributedSampler
    and StatefulDataLoader per data-parallel rank, both drop_last=True (verl/trainer/sft_trainer.py:237, 251)."""
    if stage.rl is not None:
        return rows // stage.rl.batch_size
    dp = _data_parallel(recipe)
    per_rank = stage.sft.batch_size // dp
    return rows // dp // per_rank if per_rank else 0


def asked_steps(recipe: Recipe, stage: Stage, rows: int) -> int:
    """The steps a stage of `rows` rows asks for: `steps`, or epochs x steps per epoch. A pool without one full
    batch is refused before launch (verl would divide by its 0 steps per epoch, or train nothing)."""
    spe = steps_per_epoch(recipe, stage, rows)
    if spe == 0:
        from .recipe import RecipeError

        b, dp = stage.spec.batch_size, _data_parallel(recipe)
        why = (f"batch_size {b} leaves no sequence to each of its {dp} data-parallel ranks" if stage.sft is not None
               and b < dp else f"{rows} rows make no full batch of batch_size {b} (verl drops the last partial batch)")
        raise RecipeError(f"{recipe.source}: stage {stage.name!r}: {why}: 0 steps per epoch")
    return stage.spec.steps if stage.spec.steps is not None else _whole_epochs(stage.spec.epochs) * spe


def sft_token_budget(recipe: Recipe, stage: Stage) -> int:
    """Dynamic-batch tokens per GPU for an SFT stage: verl's SFT trainer batches by tokens
    (`data.use_dynamic_bsz`, default 8,192 per GPU) and aborts on a sample longer than budget x SP size."""
    c = recipe.cluster
    return max(c.max_tokens_per_gpu or 0, math.ceil(stage.sft.max_length / c.ulysses_sp))


def sft_overrides(recipe: Recipe, stage: Stage, model_path: str, data_path: str, ckpt_dir: str) -> list[str]:
    """Hydra overrides for `verl.trainer.sft_trainer` (config `sft_trainer_engine`): multi-turn `messages`.

    verl batches SFT by tokens, so the recipe's `micro_batch_size` (a TRL setting) is not emitted: verl
    would ignore it. Sequence parallelism and offload follow `cluster`, as for the RL stages."""
    s: SFTStage = stage.sft
    c = recipe.cluster
    o = {
        "data.train_files": [data_path],
        "data.val_files": None,
        "data.messages_key": "messages",
        "data.train_batch_size": s.batch_size,
        "data.use_dynamic_bsz": True,
        "data.max_token_len_per_gpu": sft_token_budget(recipe, stage),
        "data.max_length": s.max_length,
        "data.truncation": "error",
        "model.path": model_path,
        "model.use_remove_padding": True,
        "model.enable_gradient_checkpointing": True,
        "engine.ulysses_sequence_parallel_size": c.ulysses_sp,
        "engine.param_offload": c.param_offload,
        "engine.optimizer_offload": c.optimizer_offload,
        "optim.lr": s.optim.learning_rate,
        "optim.lr_scheduler_type": _scheduler(s.optim, f"stage {stage.name}"),
        "optim.lr_warmup_steps_ratio": s.optim.warmup_ratio,
        "optim.min_lr_ratio": s.optim.min_lr_ratio,
        "optim.weight_decay": s.optim.weight_decay,
        "optim.clip_grad": s.optim.grad_clip,
        "trainer.project_name": "loongrl",
        "trainer.experiment_name": f"{recipe.name}-{stage.name}",
        "trainer.nnodes": c.nnodes,
        "trainer.n_gpus_per_node": c.gpus_per_node,
        "trainer.default_local_dir": ckpt_dir,
        "trainer.save_freq": s.save_every,  # verl's default -1 saves only the last step: nothing to resume from
        "trainer.max_ckpt_to_keep": c.max_checkpoints,
        "trainer.resume_mode": "auto",  # verl's default: resume from the newest global_step_N in default_local_dir
        "trainer.logger": verl_loggers(recipe),
        "trainer.seed": recipe.seed,
    }
    if s.steps is not None:
        # verl stops at total_training_steps or after total_epochs (default 4) epochs, whichever comes first
        # (verl/trainer/sft_trainer.py:356, 412; drop_last=True: rows // batch steps each). One epoch more
        # than steps: a resume from a checkpoint taken at an epoch's last batch spends one epoch on the
        # exhausted dataloader (its saved StatefulDataLoader state; start_epoch, sft_trainer.py:341).
        o["trainer.total_training_steps"] = s.steps
        o["trainer.total_epochs"] = s.steps + 1
    else:
        o["trainer.total_epochs"] = _whole_epochs(s.epochs)
    return ([f"{k}={_fmt(v)}" for k, v in o.items()] + rope_overrides(recipe, stage, "model", ckpt_dir)
            + list(c.extra_overrides))


def compose_overrides(overrides: list[str], config_name: str = "ppo_trainer"):
    """Compose `overrides` against verl's installed config; raises on an unknown or renamed key."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name=config_name, overrides=overrides)


def runtime_env() -> dict:
    """`ray job submit --runtime-env-json`: the non-secret environment the stage needs on every node."""
    return {"env_vars": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}


def stage_commands(recipe: Recipe, stage: Stage, model_path: str, sdir: str) -> dict:
    """The commands of one stage: train, then merge the last checkpoint to HF format at sdir/checkpoint."""
    c = recipe.cluster
    ckpt_dir = os.path.join(sdir, "verl_ckpt")
    data = os.path.join(sdir, "data.parquet")
    paths = [data, ckpt_dir]
    # verl's entry points are Hydra apps: without this they write outputs/DATE/TIME/ into the caller's cwd.
    hydra_dir = f"hydra.run.dir={os.path.join(sdir, 'hydra')}"
    env = stage_env(recipe, sdir)
    if stage.rl is not None:
        val = os.path.join(sdir, "val.parquet")
        overrides = rl_overrides(recipe, stage, model_path, data, ckpt_dir, val, env)
        env = {}  # in the overrides: Ray's runtime env reaches the trainer on any node
        train = [sys.executable, "-m", "verl.trainer.main_ppo", *overrides, hydra_dir]
        if c.ray_address:
            train = ["ray", "job", "submit", f"--address={c.ray_address}",
                     f"--runtime-env-json={json.dumps(runtime_env())}", "--", *train]
        actor = os.path.join(ckpt_dir, "global_step_{step}", "actor")
        config = "ppo_trainer"
        paths += [val, ROUTER_PATH]
    else:
        data = os.path.join(sdir, "data_messages.parquet")
        overrides = sft_overrides(recipe, stage, model_path, data, ckpt_dir)
        rdzv = [] if c.nnodes == 1 else ["--node_rank=${NODE_RANK}", "--master_addr=${MASTER_ADDR}",
                                         "--master_port=${MASTER_PORT:-29500}"]
        train = ["torchrun", f"--nnodes={c.nnodes}", f"--nproc_per_node={c.gpus_per_node}", *rdzv,
                 "-m", "verl.trainer.sft_trainer", *overrides, hydra_dir]
        actor = os.path.join(ckpt_dir, "global_step_{step}")
        config = "sft_trainer_engine"
        paths += [data]
    if os.path.isabs(model_path):
        paths.append(model_path)
    merge = [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir", actor,
             "--target_dir", os.path.join(sdir, "checkpoint")]
    # SFT runs under torchrun, no Ray: the logger paths are set in its environment (printed by --dry-run)
    cmds = {"stage": stage.name, "kind": stage.kind, "config": config, "overrides": overrides, "train": train,
            "env": env, "merge": merge, "ckpt_dir": ckpt_dir}
    if c.ray_address:
        keys = {(r.reward_kwargs.get("judge_config") or {}).get("api_key_env", "OPENAI_API_KEY")
                for r in [stage.rl] if r is not None and r.reward_kwargs.get("judge_config")}
        keys |= {k for name in recipe.logger for k in LOGGER_KEYS.get(name, ())}
        from importlib.metadata import version

        cmds["check"] = ["ray", "job", "submit", f"--address={c.ray_address}", "--", sys.executable, "-m",
                         "loongrl.train.cluster_check", *[f"--path={p}" for p in paths],
                         *[f"--env={e}" for e in sorted(keys) if e in os.environ],
                         f"--version=verl={version('verl')}", f"--version=loongrl={version('loongrl')}"]
    return cmds


def _describe_limits(recipe: Recipe, stage: Stage) -> list[str]:
    """What the dry run states besides the data: the limits verl enforces at run time."""
    c = recipe.cluster
    keep = f"keep the last {c.max_checkpoints} checkpoints" if c.max_checkpoints else "keep every checkpoint"
    keep += f" (every {stage.spec.save_every} steps; a rerun resumes from the last)"
    spec = stage.spec
    if spec.steps is not None:
        epochs = spec.steps + (1 if stage.sft is not None else 0)
        steps = (f"steps: {spec.steps} (total_training_steps; total_epochs={epochs} so that verl's epoch cap "
                 f"cannot stop the stage first; needs >= {spec.batch_size} rows)")
    else:
        n = _whole_epochs(spec.epochs)
        steps = f"steps: {n} epoch{'s' * (n != 1)} x rows // {spec.batch_size} (counted at launch)"
    steps += "; marked complete only when the last checkpoint holds them all"
    if stage.sft is not None:
        b = sft_token_budget(recipe, stage)
        return [f"SFT token budget: {b} tokens/GPU x SP {c.ulysses_sp} = {b * c.ulysses_sp} >= max_length "
                f"{stage.sft.max_length}; {keep}", steps]
    r = stage.rl
    out = [keep, steps]
    if r.algorithm == "dapo":
        out.append(f"DAPO: groups without reward variance on acc are replaced, {r.inflight_gen_batches} batches "
                   f"in flight; a step fails after {r.max_gen_batches} batches of {r.batch_size} prompts")
    return out


def _describe_data(stage: Stage) -> str:
    spec = stage.spec
    parts = [f"{os.path.basename(c.path)}" + (f"[:{c.max_items}]" if c.max_items else "") +
             (f" x{c.repeat}" if c.repeat > 1 else "") for c in spec.data.components]
    t = stage.rl.transition if stage.rl is not None else None
    lo, hi = spec.data.min_prompt_tokens, spec.data.max_prompt_tokens or (
        spec.max_prompt_tokens if stage.rl is not None else spec.max_length)
    text = f"data: {' + '.join(parts) or '(from the transition)'}; prompt tokens in ({lo}, {hi}]"
    if t is not None and t.hard_mining is not None:
        hm = t.hard_mining
        text += (f"; hard mining of the {'previous stage' if hm.source == 'previous' else 'mixture'} rows with the "
                 f"previous checkpoint: K={hm.sampling.k}, T={hm.sampling.temperature}, top-p={hm.sampling.top_p}, "
                 f"max_new_tokens={hm.sampling.max_new_tokens}; drop mean acc >= {hm.solved_threshold}")
    elif t is not None:
        rs = t.retrospective
        text += (f"; retrospective sampling: K={rs.sampling.k}, hard = mean reward <= {rs.hard_threshold}, "
                 f"carry {rs.carry_share:.0%} of the pool")
    return text


def plan(recipe: Recipe, out_dir: str) -> list[dict]:
    """Every stage's commands, chaining each stage's merged checkpoint into the next."""
    model, steps = recipe.model, []
    for i, stage in enumerate(recipe.stages):
        sdir = os.path.abspath(os.path.join(out_dir, f"{i:02d}_{stage.name}"))
        cmds = stage_commands(recipe, stage, model, sdir)
        cmds["data"] = _describe_data(stage)
        cmds["limits"] = _describe_limits(recipe, stage)
        steps.append(cmds)
        model = os.path.join(sdir, "checkpoint")
    return steps


def _print_command(cmd: list[str]) -> None:
    lead = next((j for j, x in enumerate(cmd) if "=" in x and not x.startswith("--")), len(cmd))
    print(" ".join(map(shlex.quote, cmd[:lead])) + "".join(" \\\n    " + shlex.quote(x) for x in cmd[lead:]))


def print_plan(steps: list[dict]) -> None:
    """The dry run's listing: per stage its data, limits, node check, train command and merge."""
    for i, s in enumerate(steps):
        print(f"# stage {i}: {s['stage']} ({s['kind']}, verl config {s['config']})")
        print(f"# {s['data']}")
        for line in s["limits"]:
            print(f"# {line}")
        if "check" in s:
            print("# first, on every node of the Ray cluster: paths visible, loongrl/verl importable")
            print(" ".join(map(shlex.quote, s["check"])))
        if s["env"]:
            print(" ".join(shlex.quote(f"{k}={v}") for k, v in s["env"].items()) + " \\")
        _print_command(s["train"])
        print("# then: " + " ".join(shlex.quote(x) for x in s["merge"]) + "   ({step} = last saved step)")
        print()


def run(recipe: Recipe, out_dir: str, dry_run: bool = False, resume: bool = True) -> int:
    """Check the recipe before launch (`checks.py`; a problem: exit 2), then print (`dry_run`) or run the stages."""
    from .checks import run_checks

    report = run_checks(recipe, "verl")
    report.print(show_ran=dry_run)
    if not report.ok:
        return 2
    steps = plan(recipe, out_dir)
    if dry_run:
        print_plan(steps)
        return 0
    write_rope_configs(recipe, steps)
    run_stages(recipe, out_dir, resume, SubprocessRunner())
    return 0


def write_rope_configs(recipe: Recipe, steps: list[dict]) -> None:
    """The YaRN config.json of every stage that `rope_overrides` pointed at one."""
    from .checks import rope_scaling_plan, write_rope_config

    for stage, s in zip(recipe.stages, steps):
        rope = rope_scaling_plan(recipe, stage)
        if rope is not None:
            write_rope_config(recipe, rope, rope_config_dir(s["ckpt_dir"]))


class SubprocessRunner:
    """Runs a stage's commands as they are (GPU node or Ray cluster); a failure raises."""

    def begin(self, stage: Stage, sdir: str) -> None:
        print(f"[{stage.name}] {stage.kind} stage in {sdir}")

    def train(self, cmds: dict, sdir: str) -> str | None:
        """Returns None (a runner that stops a stage short on purpose returns why: the preflight's DAPO cap)."""
        if "check" in cmds:
            os.makedirs(cmds["ckpt_dir"], exist_ok=True)  # checked writable on every node
            subprocess.run(cmds["check"], check=True)
        subprocess.run(cmds["train"], check=True, env=dict(os.environ, **cmds["env"]))
        return None

    def merge(self, cmds: dict, sdir: str, step: str) -> None:
        subprocess.run([x.replace("{step}", step) for x in cmds["merge"]], check=True)


def write_stage_inputs(stage: Stage, sdir: str, data_path: str) -> None:
    """What verl reads besides data.parquet: SFT `messages` rows, or the RL stage's small validation set."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from . import transitions

    rows = transitions.read_rows(data_path)
    if stage.sft is not None:
        msgs = [{"messages": list(r["prompt"]) + list(r["completion"])} for r in rows]
        pq.write_table(pa.Table.from_pylist(msgs), os.path.join(sdir, "data_messages.parquet"))
    else:
        transitions.write_rows(os.path.join(sdir, "val.parquet"), rows[:VAL_ROWS])


def keep_earlier_attempts(sdir: str) -> None:
    """verl's file logger truncates its file (open "wb", verl/utils/tracking.py FileLogger): before a stage
    resumes, the earlier attempt's steps move to verl_metrics.attemptN.jsonl, so metrics.csv keeps them."""
    path = os.path.join(sdir, METRICS_JSONL)
    if os.path.isfile(path):
        os.replace(path, os.path.join(sdir, f"verl_metrics.attempt{len(_attempts(sdir)) + 1}.jsonl"))


def _attempts(sdir: str) -> list[str]:
    names = [n for n in os.listdir(sdir) if n.startswith("verl_metrics.attempt") and n.endswith(".jsonl")]
    return [os.path.join(sdir, n) for n in sorted(names, key=lambda n: int(n[len("verl_metrics.attempt"):-6]))]


def read_verl_metrics(sdir: str, sft: bool) -> list[dict]:
    """Per-step rows in our metric names from verl's file logger (every attempt; a step trained again after
    a resume keeps the later values). A line a killed run left half-written is skipped and counted; a NaN
    (null in the file) is left out."""
    keys = VERL_SFT_METRIC_KEYS if sft else VERL_METRIC_KEYS
    steps: dict[int, dict] = {}
    bad = 0
    for path in _attempts(sdir) + [os.path.join(sdir, METRICS_JSONL)]:
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                    step, data = int(record["step"]), record["data"]
                except (ValueError, KeyError, TypeError):
                    bad += 1
                    continue
                row = steps.setdefault(step, {"step": step})  # SFT logs val/loss as a second record of a step
                # verl's logger writes NaN as null (orjson): a value it could not compute, left out like a missing one
                row.update({ours: float(data[theirs]) for ours, theirs in keys.items() if data.get(theirs) is not None})
    if bad:
        print(f"[metrics] {sdir}: skipped {bad} unreadable line(s) of verl's metrics log")
    return [steps[k] for k in sorted(steps)]


def write_stage_metrics(stage: Stage, sdir: str, manifests: list[dict]) -> dict:
    """The stage's metrics.csv from verl's file logger, numbered after the earlier stages' steps (as TRL
    stages are); returns the manifest's metrics summary."""
    from .orchestrate import StageMetrics

    offset = sum(m.get("metrics", {}).get("steps", 0) for m in manifests)
    metrics = StageMetrics(sdir, None, stage.name, offset)  # verl wrote its own TensorBoard
    for row in read_verl_metrics(sdir, stage.sft is not None):
        metrics(row)
    metrics.close()
    return metrics.summary()


def trained_steps(sdir: str, checkpoint: int) -> int:
    """The last step verl trained: the last step its file logger wrote (rewritten by every launch, so a resumed
    run's file starts after the resume), else the checkpoint's step. The checkpoint's step is the one that
    decides: it is what the merge hands on; steps after it are lost."""
    path = os.path.join(sdir, METRICS_JSONL)
    if not os.path.isfile(path):
        return checkpoint
    with open(path, encoding="utf-8") as f:
        logged = [json.loads(line)["step"] for line in f if line.strip()]
    return max([checkpoint, *logged])


def _checkpoint_step(ckpt_dir: str) -> int | None:
    """verl's `latest_checkpointed_iteration.txt`: the step of its newest complete checkpoint (written after
    it, verl/trainer/ppo/v1/trainer_base.py:1021, verl/utils/checkpoint/checkpoint_handler.py:128)."""
    path = os.path.join(ckpt_dir, "latest_checkpointed_iteration.txt")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return int(f.read().strip())


def run_stages(recipe: Recipe, out_dir: str, resume: bool, runner, on_stage=None) -> str:
    """Run the stages: `runner.begin`, data preparation and transitions as in the TRL backend, then
    `runner.train` and `runner.merge`; a stage with a completed manifest is skipped, an interrupted one
    (same config: its folder is kept) reuses its data and verl resumes its own last checkpoint
    (`resume_mode=auto`). A stage whose last checkpoint holds fewer steps than it asked for raises
    `StageIncomplete` before the merge. `on_stage(i, stage, cmds, manifest)` is called after each completed
    stage. Returns the last checkpoint."""
    from .orchestrate import completed_stage, finish_stage, stage_data, start_stage, write_run_report

    model, prev, manifests = recipe.model, None, []
    for i, stage in enumerate(recipe.stages):
        sdir = os.path.abspath(os.path.join(out_dir, f"{i:02d}_{stage.name}"))
        inputs, chash, done = completed_stage(recipe, stage, sdir, model, prev, resume)
        if done is not None:
            prev, model = done, done["checkpoint"]
            manifests.append(done)
            continue
        kept = start_stage(stage, sdir, chash, resume)
        runner.begin(stage, sdir)
        data_path, stats = stage_data(recipe, i, stage, model, prev, sdir, kept)
        asked = asked_steps(recipe, stage, stats["rows"])
        write_stage_inputs(stage, sdir, data_path)
        cmds = stage_commands(recipe, stage, model, sdir)
        keep_earlier_attempts(sdir)
        before = _checkpoint_step(cmds["ckpt_dir"])
        if before is not None:
            print(f"[{stage.name}] resuming from verl's checkpoint global_step_{before} (step {before} of {asked})")
        short_by_design = runner.train(cmds, sdir)
        step = _checkpoint_step(cmds["ckpt_dir"]) or 0
        steps = {"asked": asked, "trained": trained_steps(sdir, step), "checkpoint": step}
        if before is not None:
            steps["resumed_from"] = before
        if short_by_design:
            steps["short_by_design"] = short_by_design
        man = {"stage": stage.name, "index": i, "kind": stage.kind, "backend": "verl", "commands": cmds,
               "config_hash": chash, "inputs": inputs, "checkpoint": os.path.join(sdir, "checkpoint"),
               "data": {"path": data_path, "rows": stats["rows"]}, "data_stats": stats, "steps": steps,
               "metrics": write_stage_metrics(stage, sdir, manifests), "eval": {}}
        if step < asked and not short_by_design:
            finish_stage(stage, sdir, man, f"global_step_{step}")  # raises: no merge, no next stage
        runner.merge(cmds, sdir, str(step))
        prev = finish_stage(stage, sdir, man, f"global_step_{step}")
        manifests.append(prev)
        if on_stage is not None:
            on_stage(i, stage, cmds, prev)
        model = prev["checkpoint"]
    # no held-out evaluation between verl stages: the report has steps, rows, transitions and curves
    write_run_report(out_dir, recipe, {"model": recipe.model, "eval": {}}, manifests)
    print(json.dumps({"out": out_dir, "checkpoint": model}))
    return model
