"""verl contract: generated overrides compose against verl's own Hydra config; our parquet loads through
verl's RLHFDataset. Needs verl (installed by `make setup`); skipped with a reason where it is absent."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("verl", reason="verl is not installed (pip install 'verl==0.9.1'); verl contract not checked")
from hydra.errors import HydraException  # noqa: E402  (hydra comes with verl)
from omegaconf.errors import OmegaConfBaseException  # noqa: E402

from loongrl.train import verl_backend  # noqa: E402
from loongrl.train.recipe import load_recipe  # noqa: E402

pytestmark = pytest.mark.slow  # verl's Hydra config and dataset: left out of mutation runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _plan(name, tmp_path):
    recipe = load_recipe(os.path.join(REPO, "recipes", f"{name}.yaml"))
    return recipe, verl_backend.plan(recipe, str(tmp_path))


def test_loongrl_7b_overrides_compose_with_paper_settings(tmp_path):
    recipe, steps = _plan("loongrl-7b", tmp_path)
    assert [s["kind"] for s in steps] == ["rl", "rl", "rl"]
    for i, s in enumerate(steps):
        cfg = verl_backend.compose_overrides(s["overrides"], s["config"])
        a, ro = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
        assert ro.n == 8 and a.optim.lr == 1e-6 and a.optim.lr_scheduler_type == "cosine"
        assert a.use_kl_loss and a.kl_loss_coef == 1e-3 and a.kl_loss_type == "low_var_kl"
        assert ro.temperature == 0.6 and ro.top_p == 0.95 and cfg.data.max_response_length == 4096
        assert cfg.data.train_batch_size == 512 and a.entropy_coeff == 0 and cfg.algorithm.adv_estimator == "grpo"
        assert cfg.reward.custom_reward_function.path.endswith("loongrl/rewards/router.py")
        # each stage starts from the previous stage's merged checkpoint
        expect = recipe.model if i == 0 else os.path.join(os.path.dirname(steps[i - 1]["ckpt_dir"]), "checkpoint")
        assert cfg.actor_rollout_ref.model.path == expect
    assert cfg.trainer.total_training_steps == 118


def test_qwenlong_dapo_and_sft_overrides_compose(tmp_path):
    _, steps = _plan("qwenlong-l1-32b", tmp_path)
    sft = verl_backend.compose_overrides(steps[0]["overrides"], steps[0]["config"])
    assert steps[0]["config"] == "sft_trainer_engine" and sft.data.messages_key == "messages"
    cfg = verl_backend.compose_overrides(steps[1]["overrides"], steps[1]["config"])
    assert cfg.algorithm.filter_groups.enable and cfg.algorithm.filter_groups.metric == "acc"
    assert cfg.data.gen_batch_size == 384 and cfg.data.train_batch_size == 128
    assert cfg.reward.reward_manager.name == "dapo" and cfg.reward.reward_kwargs.overlong_buffer_cfg.len == 1000
    assert cfg.reward.custom_reward_function.reward_kwargs.judge_config.model == "Qwen/Qwen2.5-1.5B-Instruct"
    assert cfg.actor_rollout_ref.actor.ulysses_sequence_parallel_size == 8


def test_unknown_or_renamed_key_fails(tmp_path):
    _, steps = _plan("loongrl-7b", tmp_path)
    with pytest.raises((HydraException, OmegaConfBaseException)):
        verl_backend.compose_overrides(steps[0]["overrides"] + ["actor_rollout_ref.actor.kl_coef=0.1"])
    with pytest.raises((HydraException, OmegaConfBaseException)):  # docs' DAPO key, renamed in 0.9
        verl_backend.compose_overrides(steps[0]["overrides"] + ["reward_model.overlong_buffer.enable=True"])


def test_generated_parquet_loads_in_rlhf_dataset(kc_files, tmp_path):
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from conftest import QWEN, read_rows
    from loongrl.train import transitions

    rows = read_rows(kc_files["hotpotqa"]) + read_rows(kc_files["2wikimqa"])
    path = transitions.write_rows(str(tmp_path / "data.parquet"), rows)
    recipe, _ = _plan("loongrl-7b", tmp_path)
    overrides = verl_backend.rl_overrides(recipe, recipe.stages[0], "m", path, str(tmp_path / "ck"))
    cfg = verl_backend.compose_overrides(overrides)
    ds = RLHFDataset(data_files=[path], tokenizer=AutoTokenizer.from_pretrained(QWEN), config=cfg.data)
    assert len(ds) == len(rows)  # all under 22528 tokens: none filtered
    item = ds[3]
    assert item["index"] == 3 and item["raw_prompt"][-1]["content"] == rows[3]["prompt"][-1]["content"]


def test_cli_dry_run_prints_commands():
    out = subprocess.run([sys.executable, "-m", "loongrl.cli", "train", os.path.join(REPO, "recipes", "loongrl-7b.yaml"),
                          "--backend", "verl", "--dry-run"], capture_output=True, text=True, check=True).stdout
    assert out.count("verl.trainer.main_ppo") == 3 and out.count("verl.model_merger merge") == 3
    for needle in ("actor_rollout_ref.rollout.n=8", "actor_rollout_ref.actor.optim.lr=1e-06",
                   "kl_loss_coef=0.001", "kl_loss_type=low_var_kl", "rollout.temperature=0.6", "rollout.top_p=0.95",
                   "data.max_response_length=4096", "data.train_batch_size=512", "hard mining"):
        assert needle in out, needle
