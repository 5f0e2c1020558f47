"""Recipe -> TRL: every knob lands in the right GRPOConfig / SFTConfig field (docs/train.md, "Backends and
knob mapping"), values worked out by hand; the TRL reward is the shared scorer, not a stand-in."""

from __future__ import annotations

import pytest

from loongrl.train import trl_backend
from loongrl.train.recipe import OverlongBuffer, Optim, RLStage, SFTStage


def _loongrl_stage(**kw) -> RLStage:
    fields = dict(group_size=8, kl_coef=1e-3, clip_low=0.2, clip_high=0.28, loss_agg="token-mean",
                  norm_adv_by_std=False, entropy_coef=0.01, temperature=0.6, top_p=0.95, max_response_tokens=4096,
                  batch_size=512, mini_batch_size=128, ppo_epochs=2, steps=10,
                  optim=Optim(learning_rate=1e-6, lr_scheduler="cosine", warmup_ratio=0.1, weight_decay=0.02,
                              grad_clip=0.5))
    fields.update(kw)
    return RLStage(**fields)


def test_grpo_config_of_a_paper_stage():
    assert trl_backend.grpo_config_kwargs(_loongrl_stage()) == {
        "num_generations": 8,
        "per_device_train_batch_size": 128 * 8,       # one optimiser update: a mini-batch of prompts x G
        "steps_per_generation": 4,                    # 512 / 128 updates per RL step
        "num_iterations": 2,                          # ppo_epochs
        "beta": 1e-3, "epsilon": 0.2, "epsilon_high": 0.28,
        "loss_type": "dapo",                          # token-mean
        "scale_rewards": "none",                      # norm_adv_by_std: false (Dr. GRPO)
        "entropy_coef": 0.01, "temperature": 0.6, "top_p": 0.95, "max_completion_length": 4096,
        "learning_rate": 1e-6, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "weight_decay": 0.02,
        "max_grad_norm": 0.5,
        "max_steps": 10 * 4 * 2,                      # TRL counts optimiser steps: RL steps x updates x epochs
        "save_steps": 20 * 4 * 2,                     # save_every 20 RL steps, in optimiser steps too
    }
    kw = trl_backend.grpo_config_kwargs(_loongrl_stage())
    assert type(kw["steps_per_generation"]) is int and type(kw["max_steps"]) is int


@pytest.mark.parametrize("loss_agg, loss_type", [
    ("token-mean", "dapo"), ("seq-mean-token-mean", "grpo"), ("seq-mean-token-sum-norm", "dr_grpo")])
def test_loss_aggregation_maps_to_trl_loss_type(loss_agg, loss_type):
    assert trl_backend.grpo_config_kwargs(_loongrl_stage(loss_agg=loss_agg))["loss_type"] == loss_type


def test_epochs_without_steps_and_one_update_per_step():
    kw = trl_backend.grpo_config_kwargs(_loongrl_stage(steps=None, epochs=1.5, mini_batch_size=None, ppo_epochs=1,
                                                       norm_adv_by_std=True))
    assert kw["num_train_epochs"] == 1.5 and "max_steps" not in kw
    assert (kw["per_device_train_batch_size"], kw["steps_per_generation"], kw["scale_rewards"]) == (512 * 8, 1, "group")


def test_only_the_k3_kl_estimator_is_accepted():
    with pytest.raises(ValueError, match="TRL implements only the k3 \\(low_var_kl\\) KL estimator, not 'kl'"):
        trl_backend.grpo_config_kwargs(_loongrl_stage(kl_type="kl"))
    assert trl_backend.grpo_config_kwargs(_loongrl_stage(kl_type="mse", kl_coef=0.0))["beta"] == 0.0   # KL off


def test_sft_config_of_a_stage():
    spec = SFTStage(batch_size=64, micro_batch_size=4, epochs=2.0, steps=None, max_length=30000,
                    optim=Optim(learning_rate=1e-5, lr_scheduler="linear", warmup_ratio=0.05))
    assert trl_backend.sft_config_kwargs(spec) == {
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 16, "num_train_epochs": 2.0,
        "max_steps": -1, "max_length": 30000, "completion_only_loss": True, "save_steps": 50,
        "learning_rate": 1e-5, "lr_scheduler_type": "linear", "warmup_ratio": 0.05, "weight_decay": 0.01,
        "max_grad_norm": 1.0}
    assert type(trl_backend.sft_config_kwargs(spec)["gradient_accumulation_steps"]) is int
    assert trl_backend.sft_config_kwargs(SFTStage(steps=800))["max_steps"] == 800


def test_common_arguments_on_this_cpu_machine():
    assert trl_backend._common_kwargs("out", 7, ["console", "tensorboard"], 3) == {
        "output_dir": "out", "logging_steps": 1, "report_to": "none", "save_strategy": "steps",
        "save_total_limit": 3, "seed": 7, "data_seed": 7, "disable_tqdm": False, "use_cpu": True, "bf16": False,
        "gradient_checkpointing": False,
        "full_determinism": True}  # same machine and seed, same numbers (issue 12)


def test_grpo_rewards_are_the_shared_scorer_and_the_overlong_shaping():
    stage = _loongrl_stage(reward_kwargs={"word_boundary": True}, max_response_tokens=100,
                           overlong_buffer=OverlongBuffer(length=20, penalty_factor=0.5))
    (scorer, overlong), weights = trl_backend.grpo_rewards(stage)
    assert weights == [1.0, 0.5]
    completions = [r"</think>\boxed{Oslo}", r"</think>\boxed{no}", r"\boxed{Oslo}"]
    assert scorer(prompts=["q"] * 3, completions=completions, data_source=["keychain_x"] * 3,
                  reward_model=[{"ground_truth": ["Oslo"]}, {"ground_truth": ["Norway"]},
                                {"ground_truth": ["Oslo"]}]) == [1.0, 0.0, 0.0]     # word_boundary reached it
    # DAPO Eq. 13 with L_max 100, L_cache 20: 0 up to 80 tokens, then down to -1 at 100
    assert overlong(completion_ids=[[1] * 80, [1] * 90, [1] * 100]) == [0.0, -0.5, -1.0]
    assert trl_backend.grpo_rewards(_loongrl_stage())[1] == [1.0]


def test_unknown_reward_kwargs_fail_before_training():
    with pytest.raises(ValueError, match=r"unknown reward_kwargs \['wordboundary'\]; known: require_think"):
        trl_backend.make_reward({"wordboundary": True})
    with pytest.raises(ValueError) as err:
        trl_backend.make_reward({"x": 1})
    assert str(err.value) == ("unknown reward_kwargs ['x']; known: require_think, word_boundary, faithful, "
                              "math_timeout_s, judge_config")


def test_metrics_callback_maps_trl_log_keys():
    rows = []
    callback = trl_backend._metrics_callback(rows.append)

    class State:
        global_step = 3

    callback.on_log(None, State(), None, logs={"reward": 0.5, "completions/mean_length": 12, "kl": 0.01,
                                               "frac_reward_zero_std": 0.25, "learning_rate": 1e-6, "other": 1})
    callback.on_log(None, State(), None, logs={"train_runtime": 9.0, "loss": 1.0})   # the end-of-training summary
    callback.on_log(None, State(), None, logs=None)
    assert rows == [{"step": 3, "reward": 0.5, "response_length": 12.0, "kl": 0.01, "zero_std_groups": 0.25,
                     "learning_rate": 1e-6}]


@pytest.mark.slow
def test_trl_accepts_the_mapped_configs(tmp_path):
    """The contract: TRL's own config classes take the mapped arguments (a renamed field fails here)."""
    from trl import GRPOConfig, SFTConfig

    common = trl_backend._common_kwargs(str(tmp_path), 0, ["console", "tensorboard", "wandb"], 2)
    grpo = GRPOConfig(reward_weights=[1.0], **trl_backend.grpo_config_kwargs(_loongrl_stage()), **common)
    assert (grpo.loss_type, grpo.beta, grpo.epsilon_high, grpo.num_generations) == ("dapo", 1e-3, 0.28, 8)
    sft = SFTConfig(**trl_backend.sft_config_kwargs(SFTStage(batch_size=8, micro_batch_size=2)), **common)
    assert (sft.gradient_accumulation_steps, sft.completion_only_loss) == (4, True)
    assert sft.report_to == grpo.report_to == ["wandb"]  # the recipe's `logger`, TRL's own W&B callback
    assert (sft.save_strategy, sft.save_steps, sft.save_total_limit, grpo.save_steps) == ("steps", 50, 2, 160)
