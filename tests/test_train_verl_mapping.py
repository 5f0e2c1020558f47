"""Recipe -> verl: every recipe knob lands on its Hydra key with its value, written out by hand from the recipe
below (docs/train.md, "Backends and knob mapping"). No verl import: these run in `make mutation`; that the
keys exist in verl's own config is checked by tests/test_train_verl.py (slow: Hydra compose)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import read_rows

from loongrl.train import verl_backend
from loongrl.train.recipe import RecipeError, parse_recipe

ROUTER = os.path.join(os.path.dirname(verl_backend.__file__), os.pardir, "rewards", "router.py")

# Every value differs from its neighbours and from the defaults, so a swapped or dropped field shows.
RECIPE = {
    "name": "r", "model": "org/base", "seed": 7,
    "cluster": {"nnodes": 3, "gpus_per_node": 4, "rollout": "sglang", "tensor_parallel": 2, "ulysses_sp": 5,
                "gpu_memory_utilization": 0.6, "param_offload": True, "optimizer_offload": False,
                "max_checkpoints": 4, "extra_overrides": ["trainer.balance_batch=False"]},
    "logger": ["wandb", "tensorboard"],
    "stages": [
        {"name": "warm", "sft": {
            "data": {"components": [{"path": "/d/sft.parquet"}]},
            "optim": {"learning_rate": 3e-5, "lr_scheduler": "cosine", "warmup_ratio": 0.1, "min_lr_ratio": 0.05,
                      "weight_decay": 0.02, "grad_clip": 0.5},
            "batch_size": 16, "micro_batch_size": 2, "epochs": 2, "max_length": 3000}},
        {"name": "rl1", "rl": {
            "data": {"components": [{"path": "/d/a.parquet", "max_items": 10, "repeat": 2}, {"path": "/d/b.parquet"}],
                     "min_prompt_tokens": 5, "max_prompt_tokens": 900},
            "algorithm": "dapo", "group_size": 6, "kl_coef": 0.002, "kl_type": "mse", "clip_low": 0.21,
            "clip_high": 0.28, "loss_agg": "seq-mean-token-mean", "norm_adv_by_std": False, "entropy_coef": 0.003,
            "temperature": 0.9, "top_p": 0.8, "max_prompt_tokens": 1000, "max_response_tokens": 500,
            "overlong_buffer": {"length": 100, "penalty_factor": 0.5},
            "optim": {"learning_rate": 2e-6, "lr_scheduler": "constant", "warmup_ratio": 0.03, "min_lr_ratio": 0.1,
                      "weight_decay": 0.04, "grad_clip": 2.0},
            "batch_size": 12, "mini_batch_size": 4, "ppo_epochs": 3, "steps": 9, "save_every": 3,
            "inflight_gen_batches": 2, "max_gen_batches": 7,
            "reward_kwargs": {"require_think": True, "judge_config": {"model": "j", "base_url": "http://h/v1"}}}},
        {"name": "rl2", "rl": {
            "data": {"components": []},
            "transition": {"hard_mining": {"sampling": {"k": 4, "temperature": 0.5, "top_p": 0.7,
                                                        "max_new_tokens": 300}, "solved_threshold": 0.75}},
            "kl_coef": 0.0, "max_prompt_tokens": 700, "max_response_tokens": 200, "batch_size": 8, "epochs": 2}},
    ],
}


@pytest.fixture
def recipe():
    return parse_recipe(RECIPE, "r.yaml", "/base")


def test_rl_overrides_carry_every_knob(recipe):
    out = verl_backend.rl_overrides(recipe, recipe.stages[1], "/m/sft", "/s/data.parquet", "/s/ck")
    a, ro, ref = "actor_rollout_ref.actor", "actor_rollout_ref.rollout", "actor_rollout_ref.ref"
    kw = "+reward.custom_reward_function.reward_kwargs"
    ob = "+reward.reward_kwargs.overlong_buffer_cfg"
    sk = "+trainer.v1.sampler.sampler_kwargs"
    assert out == [
        "algorithm.adv_estimator=grpo", "algorithm.norm_adv_by_std_in_grpo=False", "algorithm.use_kl_in_reward=False",
        "critic.enable=False",
        "data.train_files=[/s/data.parquet]", "data.val_files=[/s/val.parquet]", "data.prompt_key=prompt",
        "data.max_prompt_length=1000", "data.max_response_length=500", "data.filter_overlong_prompts=True",
        "data.truncation=error", "data.train_batch_size=12", "data.seed=7",
        "actor_rollout_ref.model.path=/m/sft", "actor_rollout_ref.model.use_remove_padding=True",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        f"{a}.optim.lr=2e-06", f"{a}.optim.lr_scheduler_type=constant", f"{a}.optim.lr_warmup_steps_ratio=0.03",
        f"{a}.optim.min_lr_ratio=0.1", f"{a}.optim.weight_decay=0.04", f"{a}.optim.clip_grad=2.0",
        f"{a}.ppo_mini_batch_size=4", f"{a}.ppo_epochs=3", f"{a}.use_kl_loss=True", f"{a}.kl_loss_coef=0.002",
        f"{a}.kl_loss_type=mse", f"{a}.clip_ratio_low=0.21", f"{a}.clip_ratio_high=0.28",
        f"{a}.loss_agg_mode=seq-mean-token-mean", f"{a}.entropy_coeff=0.003", f"{a}.use_dynamic_bsz=True",
        f"{a}.ppo_max_token_len_per_gpu=1500",  # no max_tokens_per_gpu: prompt + response tokens
        f"{a}.fsdp_config.ulysses_sequence_parallel_size=5", f"{ref}.fsdp_config.ulysses_sequence_parallel_size=5",
        f"{a}.fsdp_config.param_offload=True",
        f"{a}.fsdp_config.optimizer_offload=False",
        f"{ro}.name=sglang", f"{ro}.n=6", f"{ro}.temperature=0.9", f"{ro}.top_p=0.8",
        f"{ro}.tensor_model_parallel_size=2", f"{ro}.gpu_memory_utilization=0.6", f"{ro}.max_num_batched_tokens=1500",
        f"{ro}.log_prob_use_dynamic_bsz=True", f"{ro}.log_prob_max_token_len_per_gpu=1500",
        f"{ref}.log_prob_use_dynamic_bsz=True", f"{ref}.log_prob_max_token_len_per_gpu=1500",
        f"reward.custom_reward_function.path={verl_backend.ROUTER_PATH}",
        "reward.custom_reward_function.name=compute_score",
        "trainer.project_name=loongrl", "trainer.experiment_name=r-rl1", "trainer.nnodes=3",
        "trainer.n_gpus_per_node=4", "trainer.default_local_dir=/s/ck", "trainer.save_freq=3",
        "trainer.max_actor_ckpt_to_keep=4", "trainer.test_freq=-1",
        "trainer.val_before_train=False", "trainer.resume_mode=auto",
        "trainer.logger=[wandb,tensorboard,file]",  # the recipe's loggers and verl's file logger, read for metrics.csv
        "trainer.total_training_steps=9", "trainer.total_epochs=9",  # the epoch cap never binds first
        # DAPO: dynamic sampling on accuracy, 2 batches in flight, our capped sampler stops after 7 batches
        "algorithm.filter_groups.enable=True", "algorithm.filter_groups.metric=acc",
        "algorithm.filter_groups.max_inflight_gen_batches=2",
        "trainer.v1.sampler.custom_sampler.path=pkg://loongrl.train.dapo_sampler",
        "trainer.v1.sampler.custom_sampler.name=CappedDAPOReplayBuffer",
        f"{sk}.max_gen_batches=7", f"{sk}.filter_groups_metric=${{algorithm.filter_groups.metric}}",
        f"{sk}.max_inflight_gen_batches=${{algorithm.filter_groups.max_inflight_gen_batches}}",
        f"{sk}.train_batch_size=${{data.train_batch_size}}",
        f"{kw}.require_think=True", f"{kw}.judge_config.model=j", f"{kw}.judge_config.base_url=http://h/v1",
        f"{kw}.judge_config.cache_path=auto",  # training caches verdicts on each node by default
        "reward.reward_manager.name=dapo", f"{ob}.enable=True", f"{ob}.len=100", f"{ob}.penalty_factor=0.5",
        f"{ob}.log=False", "+reward.reward_kwargs.max_resp_len=500",
        "trainer.balance_batch=False",  # cluster.extra_overrides, last
    ]
    assert os.path.samefile(verl_backend.ROUTER_PATH, ROUTER)


def test_rl_overrides_of_a_grpo_stage_by_epochs_with_the_cluster_token_budget(recipe):
    recipe.cluster.max_tokens_per_gpu = 4000
    out = verl_backend.rl_overrides(recipe, recipe.stages[2], "/m", "/d.parquet", "/ck")
    assert "trainer.total_epochs=2" in out and not any(o.startswith("trainer.total_training_steps") for o in out)
    assert "actor_rollout_ref.actor.ppo_mini_batch_size=8" in out           # no mini-batch: the whole batch
    assert "actor_rollout_ref.actor.use_kl_loss=False" in out                # kl_coef 0: KL loss off
    assert "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=4000" in out   # the cluster's budget wins
    assert "algorithm.norm_adv_by_std_in_grpo=True" in out
    assert "actor_rollout_ref.rollout.max_num_batched_tokens=4000" in out
    assert "data.val_files=[/val.parquet]" in out   # beside the data file
    assert not any("filter_groups" in o or "sampler" in o or "overlong_buffer" in o or "reward_manager" in o
                   or "reward_kwargs" in o or "py_executable" in o for o in out)  # GRPO, one node, no options
    with_val = verl_backend.rl_overrides(recipe, recipe.stages[2], "/m", "/d.parquet", "/ck", "/v/val.parquet")
    assert "data.val_files=[/v/val.parquet]" in with_val


def test_sft_overrides_carry_every_knob(recipe):
    assert verl_backend.sft_overrides(recipe, recipe.stages[0], "org/base", "/s/m.parquet", "/s/ck") == [
        "data.train_files=[/s/m.parquet]", "data.val_files=null", "data.messages_key=messages",
        "data.train_batch_size=16", "data.use_dynamic_bsz=True",
        "data.max_token_len_per_gpu=600",  # max_length 3000 over sequence parallelism 5
        "data.max_length=3000", "data.truncation=error", "model.path=org/base", "model.use_remove_padding=True",
        "model.enable_gradient_checkpointing=True", "engine.ulysses_sequence_parallel_size=5",
        "engine.param_offload=True", "engine.optimizer_offload=False",
        "optim.lr=3e-05", "optim.lr_scheduler_type=cosine",
        "optim.lr_warmup_steps_ratio=0.1", "optim.min_lr_ratio=0.05", "optim.weight_decay=0.02",
        "optim.clip_grad=0.5", "trainer.project_name=loongrl", "trainer.experiment_name=r-warm",
        "trainer.nnodes=3", "trainer.n_gpus_per_node=4", "trainer.default_local_dir=/s/ck",
        "trainer.save_freq=50",  # SFT's save_every default: checkpoints to resume from
        "trainer.max_ckpt_to_keep=4", "trainer.resume_mode=auto", "trainer.logger=[wandb,tensorboard,file]",
        "trainer.seed=7", "trainer.total_epochs=2",
        "trainer.balance_batch=False",
    ]
    recipe.stages[0].sft.steps, recipe.stages[0].sft.save_every = 5, 2
    out = verl_backend.sft_overrides(recipe, recipe.stages[0], "m", "d", "c")
    # one epoch more than steps: a resume at an epoch's end spends one on verl's exhausted dataloader
    assert "trainer.total_training_steps=5" in out and "trainer.total_epochs=6" in out
    assert "trainer.save_freq=2" in out


def test_steps_asked_counted_as_verl_counts_them_and_a_pool_without_a_full_batch_refused(recipe):
    warm, rl1, rl2 = recipe.stages
    # SFT: 3 x 4 GPUs / SP 5 = 2 data-parallel ranks of 16 / 2 = 8 sequences; 101 rows -> 50 per rank -> 6 steps
    assert verl_backend.steps_per_epoch(recipe, warm, 101) == 6
    assert verl_backend.asked_steps(recipe, warm, 101) == 2 * 6                     # epochs 2
    assert verl_backend.asked_steps(recipe, rl1, 24) == 9                           # steps 9, whatever the rows
    assert verl_backend.asked_steps(recipe, rl2, 23) == 2 * 2                       # epochs 2 x 23 // 8
    with pytest.raises(RecipeError, match="^r.yaml: stage 'rl1': 11 rows make no full batch of batch_size 12 "
                                          "\\(verl drops the last partial batch\\): 0 steps per epoch$"):
        verl_backend.asked_steps(recipe, rl1, 11)
    warm.sft.batch_size = 1
    with pytest.raises(RecipeError, match="batch_size 1 leaves no sequence to each of its 2 data-parallel ranks"):
        verl_backend.asked_steps(recipe, warm, 101)


@pytest.mark.parametrize("epochs", [1.5, 0.5, 0.0])
def test_fractional_or_zero_epochs_are_refused_not_rounded(recipe, epochs):
    recipe.stages[2].rl.epochs = epochs
    with pytest.raises(ValueError, match=f"verl trains whole epochs; got epochs={epochs} \\(set `steps` instead\\)"):
        verl_backend.rl_overrides(recipe, recipe.stages[2], "m", "d", "c")
    recipe.stages[0].sft.epochs = epochs
    with pytest.raises(ValueError, match="verl trains whole epochs"):
        verl_backend.sft_overrides(recipe, recipe.stages[0], "m", "d", "c")


def test_linear_schedule_is_refused_naming_the_stage(recipe):
    recipe.stages[1].rl.optim.lr_scheduler = "linear"
    with pytest.raises(ValueError, match="^stage rl1: verl's FSDP optimiser supports lr_scheduler constant or "
                                         "cosine, not linear$"):
        verl_backend.rl_overrides(recipe, recipe.stages[1], "m", "d", "c")
    recipe.stages[0].sft.optim.lr_scheduler = "linear"
    with pytest.raises(ValueError, match="^stage warm: "):
        verl_backend.sft_overrides(recipe, recipe.stages[0], "m", "d", "c")


def test_values_are_written_as_hydra_reads_them(recipe):
    recipe.stages[1].rl.reward_kwargs = {"a": None, "b": [1, 2.5, "x"], "c": {"d": {"e": False}}, "f": 3}
    out = verl_backend.rl_overrides(recipe, recipe.stages[1], "m", "d", "c")
    kw = "+reward.custom_reward_function.reward_kwargs"
    assert [o for o in out if o.startswith(kw)] == [f"{kw}.a=null", f"{kw}.b=[1,2.5,x]", f"{kw}.c.d.e=False",
                                                    f"{kw}.f=3"]


def test_plan_chains_each_stage_from_the_previous_merged_checkpoint(recipe, tmp_path):
    steps = verl_backend.plan(recipe, str(tmp_path / "out"))
    out = str(tmp_path / "out")
    sdir = [os.path.join(out, n) for n in ("00_warm", "01_rl1", "02_rl2")]
    assert [(s["stage"], s["kind"], s["config"]) for s in steps] == [
        ("warm", "sft", "sft_trainer_engine"), ("rl1", "rl", "ppo_trainer"), ("rl2", "rl", "ppo_trainer")]
    assert [s["ckpt_dir"] for s in steps] == [os.path.join(d, "verl_ckpt") for d in sdir]
    # SFT: torchrun over 3 nodes of 4 GPUs with the rendezvous of a multi-node launch
    assert steps[0]["train"] == ["torchrun", "--nnodes=3", "--nproc_per_node=4", "--node_rank=${NODE_RANK}",
                                 "--master_addr=${MASTER_ADDR}", "--master_port=${MASTER_PORT:-29500}",
                                 "-m", "verl.trainer.sft_trainer", *steps[0]["overrides"],
                                 f"hydra.run.dir={sdir[0]}/hydra"]  # Hydra's outputs in the stage folder
    assert f"data.train_files=[{sdir[0]}/data_messages.parquet]" in steps[0]["overrides"]
    assert "model.path=org/base" in steps[0]["overrides"]
    assert steps[0]["merge"] == [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
                                 "--local_dir", os.path.join(sdir[0], "verl_ckpt", "global_step_{step}"),
                                 "--target_dir", os.path.join(sdir[0], "checkpoint")]
    # RL: main_ppo on this node, from the SFT stage's merged checkpoint, on this stage's parquet
    assert steps[1]["train"] == [sys.executable, "-m", "verl.trainer.main_ppo", *steps[1]["overrides"],
                                 f"hydra.run.dir={sdir[1]}/hydra"]
    assert f"data.val_files=[{sdir[1]}/val.parquet]" in steps[1]["overrides"]
    assert not any("check" in s for s in steps)  # the node check is for Ray clusters
    assert f"actor_rollout_ref.model.path={sdir[0]}/checkpoint" in steps[1]["overrides"]
    assert f"data.train_files=[{sdir[1]}/data.parquet]" in steps[1]["overrides"]
    for s, d in zip(steps, sdir):  # verl saves (and resumes) its checkpoints in the stage's own folder
        assert f"trainer.default_local_dir={d}/verl_ckpt" in s["overrides"]
    assert f"actor_rollout_ref.model.path={sdir[1]}/checkpoint" in steps[2]["overrides"]
    assert steps[1]["merge"][7] == os.path.join(sdir[1], "verl_ckpt", "global_step_{step}", "actor")
    assert steps[2]["merge"][-1] == os.path.join(sdir[2], "checkpoint")
    # what the dry run prints about each stage: limits and data
    assert steps[0]["limits"] == ["SFT token budget: 600 tokens/GPU x SP 5 = 3000 >= max_length 3000; "
                                  "keep the last 4 checkpoints (every 50 steps; a rerun resumes from the last)",
                                  "steps: 2 epochs x rows // 16 (counted at launch); marked complete only when the "
                                  "last checkpoint holds them all"]
    assert steps[1]["limits"] == ["keep the last 4 checkpoints (every 3 steps; a rerun resumes from the last)",
                                  "steps: 9 (total_training_steps; total_epochs=9 so that verl's epoch cap cannot "
                                  "stop the stage first; needs >= 12 rows); marked complete only when the last "
                                  "checkpoint holds them all",
                                  "DAPO: groups without reward variance on acc are replaced, 2 batches in flight; "
                                  "a step fails after 7 batches of 12 prompts"]
    recipe.cluster.max_checkpoints = None
    assert verl_backend.plan(recipe, out)[2]["limits"][0] == ("keep every checkpoint (every 20 steps; a rerun "
                                                              "resumes from the last)")
    assert steps[0]["data"] == "data: sft.parquet; prompt tokens in (0, 3000]"
    assert steps[1]["data"] == "data: a.parquet[:10] x2 + b.parquet; prompt tokens in (5, 900]"
    assert steps[2]["data"] == (
        "data: (from the transition); prompt tokens in (0, 700]; hard mining of the previous stage rows with the "
        "previous checkpoint: K=4, T=0.5, top-p=0.7, max_new_tokens=300; drop mean acc >= 0.75")


def test_single_node_sft_and_ray_cluster_rl(recipe, tmp_path):
    recipe.cluster.nnodes, recipe.cluster.ray_address = 1, "http://head:8265"
    steps = verl_backend.plan(recipe, str(tmp_path))
    assert steps[0]["train"][:5] == ["torchrun", "--nnodes=1", "--nproc_per_node=4", "-m", "verl.trainer.sft_trainer"]
    env = {"env_vars": {k: os.environ[k] for k in ("HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                    "HF_DATASETS_OFFLINE") if k in os.environ}}
    assert steps[1]["train"] == ["ray", "job", "submit", "--address=http://head:8265",
                                 f"--runtime-env-json={json.dumps(env)}", "--", sys.executable, "-m",
                                 "verl.trainer.main_ppo", *steps[1]["overrides"],
                                 f"hydra.run.dir={tmp_path}/01_rl1/hydra"]
    # every node runs the launcher's interpreter, and is checked first for the stage's paths
    assert f"ray_kwargs.ray_init.runtime_env.py_executable={sys.executable}" in steps[1]["overrides"]
    check = steps[1]["check"]
    assert check[:8] == ["ray", "job", "submit", "--address=http://head:8265", "--", sys.executable, "-m",
                         "loongrl.train.cluster_check"]
    assert [c for c in check if c.startswith("--path=")] == [
        f"--path={tmp_path}/01_rl1/data.parquet", f"--path={tmp_path}/01_rl1/verl_ckpt",
        f"--path={tmp_path}/01_rl1/val.parquet", f"--path={verl_backend.ROUTER_PATH}",
        f"--path={tmp_path}/00_warm/checkpoint"]   # the SFT stage's merged model, a local path


def test_retrospective_stage_description(tmp_path):
    raw = {**RECIPE, "stages": [RECIPE["stages"][1], {"name": "p2", "rl": {
        "data": {"components": [{"path": "/d/long.parquet"}]},
        "transition": {"retrospective": {"sampling": {"k": 3}, "hard_threshold": 0.4, "carry_share": 0.2}}}}]}
    steps = verl_backend.plan(parse_recipe(raw), str(tmp_path))
    assert steps[1]["data"] == ("data: long.parquet; prompt tokens in (0, 16384]; retrospective sampling: K=3, "
                                "hard = mean reward <= 0.4, carry 20% of the pool")
    raw["stages"][1]["rl"]["transition"] = {"hard_mining": {"source": "mixture"}}
    steps = verl_backend.plan(parse_recipe(raw), str(tmp_path))
    assert "hard mining of the mixture rows" in steps[1]["data"]


def test_dry_run_prints_each_stage_without_running_it(recipe, tmp_path, capsys):
    # this recipe's odd values do not make a launchable cluster (SP 5 on 12 GPUs) and its data is absent:
    # the dry run refuses it (checks before launch, tests/test_train_checks.py); the listing is print_plan's
    assert verl_backend.run(recipe, str(tmp_path), dry_run=True) == 2
    assert "error: cluster: 3 nodes x 4 GPUs = 12 GPUs is not divisible by Ulysses SP 5" in capsys.readouterr().err
    verl_backend.print_plan(verl_backend.plan(recipe, str(tmp_path)))
    out = capsys.readouterr().out
    assert not (tmp_path / "00_warm").exists()
    stages = out.split("\n\n")[:3]
    assert stages[0].splitlines()[:4] == ["# stage 0: warm (sft, verl config sft_trainer_engine)",
                                          "# data: sft.parquet; prompt tokens in (0, 3000]",
                                          "# SFT token budget: 600 tokens/GPU x SP 5 = 3000 >= max_length 3000; "
                                          "keep the last 4 checkpoints (every 50 steps; a rerun resumes from the last)",
                                          "# steps: 2 epochs x rows // 16 (counted at launch); marked complete only "
                                          "when the last checkpoint holds them all"]
    # SFT runs under torchrun, without Ray: where verl's loggers write is set in its environment
    assert stages[0].splitlines()[4] == (f"VERL_FILE_LOGGER_PATH={tmp_path}/00_warm/verl_metrics.jsonl "
                                         f"TENSORBOARD_DIR={tmp_path}/tb/00_warm \\")
    # the launcher and its flags on one line, then one override per line
    assert stages[0].splitlines()[5] == ("torchrun --nnodes=3 --nproc_per_node=4 '--node_rank=${NODE_RANK}' "
                                         "'--master_addr=${MASTER_ADDR}' '--master_port=${MASTER_PORT:-29500}' "
                                         "-m verl.trainer.sft_trainer \\")
    assert stages[0].splitlines()[6] == f"    'data.train_files=[{tmp_path}/00_warm/data_messages.parquet]' \\"
    assert stages[0].splitlines()[-2] == f"    hydra.run.dir={tmp_path}/00_warm/hydra"
    assert stages[1].splitlines()[4:6] == ["# DAPO: groups without reward variance on acc are replaced, 2 batches "
                                           "in flight; a step fails after 7 batches of 12 prompts",
                                           f"{sys.executable} -m verl.trainer.main_ppo \\"]
    assert stages[2].splitlines()[-1].startswith(f"# then: {sys.executable} -m verl.model_merger merge --backend fsdp")


def test_without_dry_run_the_stages_are_prepared_for_real(recipe, tmp_path):
    from conftest import QWEN

    recipe.model = QWEN  # a local tokenizer: the stages get as far as their data, which is absent here
    assert verl_backend.run(recipe, str(tmp_path)) == 2 and not (tmp_path / "00_warm").exists()  # checks first
    with pytest.raises(RecipeError, match="^/d/sft.parquet: data file not found$"):
        verl_backend.run_stages(recipe, str(tmp_path), True, verl_backend.SubprocessRunner())
    assert (tmp_path / "00_warm").is_dir() and not (tmp_path / "01_rl1").exists()


def test_every_override_composes_against_verls_own_config(recipe):
    pytest.importorskip("verl", reason="verl is not installed (make setup installs it)")
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    rl = verl_backend.rl_overrides(recipe, recipe.stages[1], "/m", "/d.parquet", "/ck")
    cfg = verl_backend.compose_overrides(rl)
    assert cfg.actor_rollout_ref.rollout.name == "sglang" and cfg.trainer.balance_batch is False  # extra, last
    assert cfg.trainer.logger == ["wandb", "tensorboard", "file"]
    assert cfg.reward.reward_kwargs.overlong_buffer_cfg.len == 100 and cfg.algorithm.filter_groups.metric == "acc"
    sft = verl_backend.compose_overrides(verl_backend.sft_overrides(recipe, recipe.stages[0], "/m", "/d", "/ck"),
                                         "sft_trainer_engine")
    assert sft.data.messages_key == "messages" and sft.trainer.total_epochs == 2 and sft.optim.lr == 3e-5
    with pytest.raises((HydraException, OmegaConfBaseException)):
        verl_backend.compose_overrides(rl + ["actor_rollout_ref.actor.kl_coef=0.1"])


def test_stage_inputs_beside_the_data_sft_messages_and_a_small_validation_set(recipe, tmp_path):
    from loongrl.data.io import make_row
    from loongrl.train import transitions

    rows = [make_row("longqa_musique", "qa", [{"role": "system", "content": "s"}, {"role": "user", "content": f"q{i}"}],
                     [f"a{i}"], id=f"r{i}") for i in range(10)]
    rl_dir, sft_dir = tmp_path / "rl", tmp_path / "sft"
    transitions.write_rows(str(rl_dir / "data.parquet"), rows)
    verl_backend.write_stage_inputs(recipe.stages[1], str(rl_dir), str(rl_dir / "data.parquet"))
    val = transitions.read_rows(str(rl_dir / "val.parquet"))
    assert [r["extra_info"]["id"] for r in val] == [f"r{i}" for i in range(8)]   # the first 8 rows
    sft = [{**r, "completion": [{"role": "assistant", "content": f"a{i}"}]} for i, r in enumerate(rows[:2])]
    transitions.write_rows(str(sft_dir / "data.parquet"), sft)
    verl_backend.write_stage_inputs(recipe.stages[0], str(sft_dir), str(sft_dir / "data.parquet"))
    assert transitions.read_rows(str(sft_dir / "data_messages.parquet")) == [
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": f"q{i}"},
                      {"role": "assistant", "content": f"a{i}"}]} for i in range(2)]
    assert not (sft_dir / "val.parquet").exists() and not (rl_dir / "data_messages.parquet").exists()


def test_ray_node_check_covers_the_sft_inputs_and_the_judge_key(recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOONGRL_TEST_JUDGE_KEY", "secret")
    recipe.cluster.ray_address = "http://head:8265"
    recipe.stages[1].rl.reward_kwargs["judge_config"]["api_key_env"] = "LOONGRL_TEST_JUDGE_KEY"
    steps = verl_backend.plan(recipe, str(tmp_path))
    sft_paths = [c for c in steps[0]["check"] if c.startswith("--path=")]
    assert sft_paths == [f"--path={tmp_path}/00_warm/data.parquet", f"--path={tmp_path}/00_warm/verl_ckpt",
                         f"--path={tmp_path}/00_warm/data_messages.parquet"]
    # the judge's key is checked on every node by name (its value is never on the command line)
    assert [c for c in steps[1]["check"] if c.startswith("--env=")] == ["--env=LOONGRL_TEST_JUDGE_KEY"]
    assert not [c for c in steps[0]["check"] if c.startswith("--env=")] and "secret" not in str(steps)
    assert [c for c in steps[1]["check"] if c.startswith("--version=verl=")] == ["--version=verl=0.9.1"]
    del recipe.stages[1].rl.reward_kwargs["judge_config"]["api_key_env"]   # the judge's default key variable
    monkeypatch.setenv("OPENAI_API_KEY", "secret")
    assert [c for c in verl_backend.plan(recipe, str(tmp_path))[1]["check"] if c.startswith("--env=")] == [
        "--env=OPENAI_API_KEY"]
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("LOONGRL_TEST_JUDGE_KEY")
    assert not [c for c in verl_backend.plan(recipe, str(tmp_path))[1]["check"] if c.startswith("--env=")]
    verl_backend.print_plan(verl_backend.plan(recipe, str(tmp_path)))
    out = capsys.readouterr().out
    assert out.count("# first, on every node of the Ray cluster: paths visible, loongrl/verl importable\n"
                     "ray job submit --address=http://head:8265 -- ") == 3


def test_the_subprocess_runner_checks_trains_and_merges_and_fails_loudly(tmp_path):
    import subprocess

    log = tmp_path / "log"

    def py(text):  # a command that appends `text` to the log
        return [sys.executable, "-c", f"open({str(log)!r}, 'a').write({text!r})"]

    runner = verl_backend.SubprocessRunner()
    ckpt = tmp_path / "ck"
    runner.train({"train": py("train "), "env": {}, "ckpt_dir": str(ckpt)}, str(tmp_path))
    assert log.read_text() == "train " and not ckpt.exists()           # one node: no check, no folder made
    runner.train({"check": py("check "), "train": py("train "), "env": {}, "ckpt_dir": str(ckpt)}, str(tmp_path))
    runner.merge({"merge": py("merge {step}")}, str(tmp_path), "7")
    assert log.read_text() == "train check train merge 7" and ckpt.is_dir()
    # the stage's environment (an SFT stage's logger paths) reaches the training command
    env_cmd = [sys.executable, "-c", f"import os; open({str(log)!r}, 'a').write(' ' + os.environ['TENSORBOARD_DIR'])"]
    runner.train({"train": env_cmd, "env": {"TENSORBOARD_DIR": "/run/tb/00_sft"}, "ckpt_dir": str(ckpt)}, str(tmp_path))
    assert log.read_text() == "train check train merge 7 /run/tb/00_sft"
    fail = [sys.executable, "-c", "raise SystemExit(3)"]
    for call in (lambda: runner.train({"train": fail, "env": {}, "ckpt_dir": str(ckpt)}, str(tmp_path)),
                 lambda: runner.train({"check": fail, "train": py("never"), "env": {}, "ckpt_dir": str(ckpt)},
                                      str(tmp_path)),
                 lambda: runner.merge({"merge": fail}, str(tmp_path), "7")):
        with pytest.raises(subprocess.CalledProcessError):
            call()
    assert "never" not in log.read_text()


class RecordingRunner:
    """Stands where verl runs (a GPU node, or the CPU preflight): records each call, and writes what verl
    would leave behind: the last checkpoint's step, and a merged model (here: the tokenizer, all the next
    stage reads before its own training)."""

    def __init__(self, tokenizer_dir):
        self.tokenizer_dir, self.calls = tokenizer_dir, []

    def begin(self, stage, sdir):
        self.calls.append(("begin", stage.name, os.path.basename(sdir)))

    def train(self, cmds, sdir):
        self.calls.append(("train", cmds["stage"], os.path.isfile(os.path.join(sdir, "val.parquet"))))
        os.makedirs(cmds["ckpt_dir"], exist_ok=True)
        with open(os.path.join(cmds["ckpt_dir"], "latest_checkpointed_iteration.txt"), "w") as f:
            f.write("12\n")

    def merge(self, cmds, sdir, step):
        import shutil

        self.calls.append(("merge", cmds["stage"], step, cmds["merge"][7]))
        shutil.copytree(self.tokenizer_dir, os.path.join(sdir, "checkpoint"))


def test_run_stages_prepares_trains_merges_and_resumes_each_stage(kc_files, tmp_path, capsys):
    import hashlib

    from conftest import QWEN

    stage = {"data": {"components": [{"path": kc_files["musique"]}]}, "max_prompt_tokens": 20000,
             "batch_size": 2, "steps": 1}
    recipe = parse_recipe({"name": "r", "model": QWEN, "seed": 3,
                           "stages": [{"name": "one", "rl": stage}, {"name": "two", "rl": stage}]}, "r.yaml", "/")
    out, seen = str(tmp_path / "out"), []
    runner = RecordingRunner(QWEN)
    last = verl_backend.run_stages(recipe, out, True, runner,
                                   on_stage=lambda i, s, c, m: seen.append((i, s.name, c["stage"], m)))
    one, two = os.path.join(out, "00_one"), os.path.join(out, "01_two")
    assert last == os.path.join(two, "checkpoint")
    assert runner.calls == [
        ("begin", "one", "00_one"), ("train", "one", True),
        ("merge", "one", "12", os.path.join(one, "verl_ckpt", "global_step_{step}", "actor")),
        ("begin", "two", "01_two"), ("train", "two", True),
        ("merge", "two", "12", os.path.join(two, "verl_ckpt", "global_step_{step}", "actor"))]
    assert [(i, name, cmds) for i, name, cmds, _ in seen] == [(0, "one", "one"), (1, "two", "two")]
    with open(os.path.join(two, "manifest.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(one, "manifest.json")) as f:
        first = json.load(f)
    assert manifest == seen[1][3]
    with open(kc_files["musique"], "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    # what decides a later resume: the model it started from, the stage before it, the data's bytes
    assert manifest["inputs"] == {"model": os.path.join(one, "checkpoint"),
                                  "previous_manifest_hash": first["manifest_hash"],
                                  "data": {kc_files["musique"]: digest}}
    assert first["inputs"]["model"] == QWEN and first["inputs"]["previous_manifest_hash"] is None
    assert first["manifest_hash"] != manifest["manifest_hash"]
    # rows counted with the model's tokenizer and bounded by the stage's prompt budget
    assert manifest["data_stats"]["mixture"]["length_filter"] == {"kept": 6, "min_prompt_tokens": 0,
                                                                  "max_prompt_tokens": 20000, "dropped": {}}
    assert (manifest["stage"], manifest["status"], manifest["backend"], manifest["checkpoint"]) == (
        "two", "completed", "verl", os.path.join(two, "checkpoint"))
    assert manifest["data"] == {"path": os.path.join(two, "data.parquet"), "rows": 6}
    assert manifest["data_stats"]["rows"] == 6 and manifest["commands"]["stage"] == "two"
    assert f"actor_rollout_ref.model.path={one}/checkpoint" in manifest["commands"]["overrides"]
    assert len(manifest["config_hash"]) == 16 and len(manifest["manifest_hash"]) == 16
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"out": out, "checkpoint": last}
    # a rerun skips the completed stages; without resume it redoes them
    again = RecordingRunner(QWEN)
    assert verl_backend.run_stages(recipe, out, True, again) == last and again.calls == []
    for d in (one, two):
        import shutil

        shutil.rmtree(os.path.join(d, "checkpoint"))
    redo = RecordingRunner(QWEN)
    verl_backend.run_stages(recipe, out, False, redo)
    assert [c[:2] for c in redo.calls if c[0] == "merge"] == [("merge", "one"), ("merge", "two")]


def test_run_stages_refuses_a_stage_short_of_its_steps_and_resumes_it_in_its_kept_folder(kc_files, tmp_path, capsys):
    """verl exited 0 with its last checkpoint at step 12 of the 20 asked: no merge, no `completed`, no next
    stage. The rerun keeps the folder (same config): the prepared rows are reused, verl resumes its checkpoint."""
    from conftest import QWEN

    from loongrl.train.orchestrate import StageIncomplete

    stage = {"data": {"components": [{"path": kc_files["musique"]}]}, "max_prompt_tokens": 20000,
             "batch_size": 2, "steps": 20}
    recipe = parse_recipe({"name": "r", "model": QWEN, "seed": 3,
                           "stages": [{"name": "one", "rl": stage}, {"name": "two", "rl": stage}]}, "r.yaml", "/")
    out, runner = str(tmp_path / "out"), RecordingRunner(QWEN)  # it leaves global_step_12
    with pytest.raises(StageIncomplete, match="^one trained 12 of 20 steps \\(last checkpoint global_step_12\\): "
                                              "not marked complete$"):
        verl_backend.run_stages(recipe, out, True, runner)
    assert [c[0] for c in runner.calls] == ["begin", "train"]                       # no merge, no stage two
    one = os.path.join(out, "00_one")
    manifest = json.load(open(os.path.join(one, "manifest.json")))
    assert (manifest["status"], manifest["steps"]) == ("incomplete", {"asked": 20, "trained": 12, "checkpoint": 12})
    assert not os.path.exists(os.path.join(out, "01_two"))
    data = os.stat(os.path.join(one, "data.parquet")).st_mtime_ns
    capsys.readouterr()
    with pytest.raises(StageIncomplete):
        verl_backend.run_stages(recipe, out, True, RecordingRunner(QWEN))
    printed = capsys.readouterr().out
    assert "[one] reusing the 6 rows prepared before the interruption" in printed
    assert "[one] resuming from verl's checkpoint global_step_12 (step 12 of 20)" in printed
    assert os.stat(os.path.join(one, "data.parquet")).st_mtime_ns == data
    # a changed stage clears the folder: verl must not resume a checkpoint of another configuration
    stage["steps"] = 10
    recipe = parse_recipe({"name": "r", "model": QWEN, "seed": 3, "stages": [{"name": "one", "rl": stage}]},
                          "r.yaml", "/")
    verl_backend.run_stages(recipe, out, True, RecordingRunner(QWEN))
    assert f"[one] {one} holds a run of another configuration: cleared" in capsys.readouterr().out
    assert json.load(open(os.path.join(one, "manifest.json")))["steps"] == {"asked": 10, "trained": 12,
                                                                            "checkpoint": 12}


def test_run_stages_counts_sft_completions_and_mines_with_the_last_checkpoint(tmp_path):
    """An SFT stage's `max_length` bounds prompt + completion (not the prompt alone); a mining stage samples
    the previous stage's rows with the previous stage's checkpoint."""
    from transformers import AutoTokenizer

    from loongrl.data.io import iter_rows, write_rows
    from loongrl.demo.task import make_demo_data
    from loongrl.demo.tiny import build_tiny_model

    data = make_demo_data(str(tmp_path / "data"), seed=0, num_sft=6, num_rl=4, num_eval=1, num_chains=2, hops=1)
    texts = [m["content"] for path in (data["sft"], data["rl"]) for r in iter_rows(path) for m in r["prompt"]]
    model = build_tiny_model(str(tmp_path / "model"), texts + ["river " * 50], vocab_size=300, hidden_size=16,
                             num_layers=1, num_heads=2, num_kv_heads=1)
    sft = list(iter_rows(data["sft"]))
    for i, row in enumerate(sft):  # the odd rows get a completion 100 words longer
        row["completion"] = [{"role": "assistant", "content": "<think>" + "river " * (1 + 100 * (i % 2)) + "</think>"}]
    write_rows(data["sft"], sft)
    tok = AutoTokenizer.from_pretrained(model)
    full = [len(tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=False)) for r in sft]
    prompt_only = [len(tok.apply_chat_template(r["prompt"], tokenize=True, add_generation_prompt=True,
                                               return_dict=False)) for r in sft]
    max_length = max(full[0::2])  # every short row fits, every long one does not; prompts alone all fit
    assert max(prompt_only) <= max_length < min(full[1::2])

    rl = {"data": {"components": [{"path": data["rl"]}]}, "max_prompt_tokens": 4000, "batch_size": 2, "steps": 1}
    sampling = {"k": 2, "max_new_tokens": 4, "backend": "transformers"}
    recipe = parse_recipe({"name": "r", "model": model, "seed": 3, "cluster": {"gpus_per_node": 1}, "stages": [
        {"name": "one", "sft": {"data": {"components": [{"path": data["sft"]}]}, "max_length": max_length,
                                "batch_size": 2, "micro_batch_size": 2, "steps": 1}},
        {"name": "two", "rl": rl},
        {"name": "three", "rl": {**rl, "data": {"components": []},
                                 "transition": {"hard_mining": {"sampling": sampling}}}}]}, "r.yaml", "/")
    out = str(tmp_path / "out")
    verl_backend.run_stages(recipe, out, True, RecordingRunner(model))
    manifests = [json.load(open(os.path.join(out, d, "manifest.json"))) for d in ("00_one", "01_two", "02_three")]
    kept = [r["extra_info"]["id"] for r in read_rows(os.path.join(out, "00_one", "data.parquet"))]
    assert sorted(kept) == sorted(r["extra_info"]["id"] for r in sft[0::2])
    assert manifests[0]["data_stats"]["mixture"]["length_filter"]["dropped"] == {
        "over_max_prompt_tokens": {sft[0]["data_source"]: 3}}
    transition = manifests[2]["data_stats"]["transition"]
    assert transition["kind"] == "hard_mining" and transition["input"] == 4      # stage two's four rows
    assert transition["model"] == os.path.join(out, "01_two", "checkpoint")     # sampled with stage two's model
    assert manifests[2]["inputs"]["model"] == manifests[1]["checkpoint"]


# logger: TRL's report_to (its progress bar is the console; TensorBoard is our writer, OUT/tb/NN_stage) and
# verl's trainer.logger (plus `file`, read for metrics.csv), written out by hand for each choice.
@pytest.mark.parametrize("logger, report_to, verl_logger", [
    (["console", "tensorboard"], "none", ["console", "tensorboard", "file"]),  # the default
    (["wandb"], ["wandb"], ["wandb", "file"]),
    ([], "none", ["file"]),
    (["console", "tensorboard", "wandb", "mlflow"], ["wandb", "mlflow"], ["console", "tensorboard", "wandb", "mlflow",
                                                                          "file"]),
])
def test_logger_maps_to_trl_report_to_and_verl_trainer_logger(recipe, tmp_path, logger, report_to, verl_logger):
    pytest.importorskip("verl", reason="verl is not installed (make setup installs it)")
    from loongrl.train import trl_backend

    recipe.logger = logger
    assert trl_backend._common_kwargs("out", 0, logger)["report_to"] == report_to
    sft, rl, _ = verl_backend.plan(recipe, str(tmp_path))
    tb = {"TENSORBOARD_DIR": f"{tmp_path}/tb/01_rl1"} if "tensorboard" in logger else {}
    composed = verl_backend.compose_overrides(rl["overrides"])
    assert list(composed.trainer.logger) == verl_logger
    # RL: verl's trainer runs in a Ray actor, on any node: the paths go in the job's runtime env
    assert dict(composed.ray_kwargs.ray_init.runtime_env.env_vars) == {
        "VERL_FILE_LOGGER_PATH": f"{tmp_path}/01_rl1/verl_metrics.jsonl", **tb}
    assert rl["env"] == {}
    # SFT: torchrun, no Ray: the paths are the launch's environment
    composed = verl_backend.compose_overrides(sft["overrides"], "sft_trainer_engine")
    assert list(composed.trainer.logger) == verl_logger
    assert sft["env"] == {"VERL_FILE_LOGGER_PATH": f"{tmp_path}/00_warm/verl_metrics.jsonl",
                          **({"TENSORBOARD_DIR": f"{tmp_path}/tb/00_warm"} if tb else {})}


def test_logger_names_are_the_ones_trl_and_verl_take():
    pytest.importorskip("verl", reason="verl is not installed (make setup installs it)")
    import typing

    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
    from verl.utils.tracking import Tracking

    from loongrl.train.recipe import Recipe

    names = typing.get_args(typing.get_args(typing.get_type_hints(Recipe)["logger"])[0])
    assert names == ("console", "tensorboard", "wandb", "mlflow")
    assert set(names) | {"file"} <= set(Tracking.supported_backend)
    assert {"wandb", "mlflow", "tensorboard"} <= set(INTEGRATION_TO_CALLBACK)


def test_logger_secrets_stay_in_the_environment(kc_files, tmp_path, monkeypatch, capsys):
    """W&B / MLflow keys are checked on the nodes by name, never forwarded or written down; their non-secret
    settings reach the Ray job."""
    from conftest import QWEN

    secrets = {"WANDB_API_KEY": "wk-0123456789abcdef", "MLFLOW_TRACKING_TOKEN": "mt-fedcba9876543210"}
    settings = {"WANDB_MODE": "offline", "WANDB_ENTITY": "team", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    for k, v in {**secrets, **settings}.items():
        monkeypatch.setenv(k, v)
    stage = {"data": {"components": [{"path": kc_files["musique"]}]}, "max_prompt_tokens": 20000,
             "batch_size": 2, "steps": 1}
    recipe = parse_recipe({"name": "r", "model": QWEN, "logger": ["wandb", "mlflow"],
                           "cluster": {"ray_address": "http://head:8265"},
                           "stages": [{"name": "one", "rl": stage}]}, "r.yaml", "/")
    out = tmp_path / "out"
    verl_backend.run_stages(recipe, str(out), True, RecordingRunner(QWEN))
    verl_backend.run(recipe, str(out), dry_run=True)
    cmds = json.loads((out / "00_one" / "manifest.json").read_text())["commands"]
    assert [c for c in cmds["check"] if c.startswith("--env=")] == ["--env=MLFLOW_TRACKING_TOKEN",
                                                                    "--env=WANDB_API_KEY"]
    job_env = json.loads(next(c for c in cmds["train"] if c.startswith("--runtime-env-json="))
                         .split("=", 1)[1])["env_vars"]
    assert {k: job_env.get(k) for k in settings} == settings
    assert not set(secrets) & set(job_env)
    written = capsys.readouterr().out + "".join(p.read_text(errors="replace") for p in out.rglob("*")
                                                if p.is_file() and p.suffix in (".json", ".md", ".csv", ".jsonl"))
    assert "manifest" in written and not [v for v in secrets.values() if v in written]


def test_a_resumed_stage_keeps_the_steps_of_its_earlier_attempt(tmp_path, monkeypatch):
    """verl's file logger truncates its file when a stage resumes; the earlier attempt is kept aside and
    a step trained again takes the later values. A metric verl logged as NaN (null in its file) is left out."""
    pytest.importorskip("verl", reason="verl is not installed (make setup installs it)")
    from verl.utils.tracking import FileLogger

    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(tmp_path / "verl_metrics.jsonl"))
    first = FileLogger("loongrl", "r-one")
    for step in (1, 2, 3):
        first.log({"critic/score/mean": step / 10, "response_length/mean": 5.0, "other": 1}, step)
    first.log({"actor/kl_loss": float("nan")}, 1)  # orjson writes NaN as null: a value verl could not compute
    first.fp.close()  # killed after step 3; the checkpoint is step 2
    verl_backend.keep_earlier_attempts(str(tmp_path))
    second = FileLogger("loongrl", "r-one")
    for step in (3, 4):
        second.log({"critic/score/mean": step, "actor/kl_loss": 0.5}, step)
    second.finish()
    with open(tmp_path / "verl_metrics.jsonl", "a") as f:
        f.write('{"step": 5, "da')  # half a line
    assert verl_backend.read_verl_metrics(str(tmp_path), sft=False) == [
        {"step": 1, "reward": 0.1, "response_length": 5.0}, {"step": 2, "reward": 0.2, "response_length": 5.0},
        {"step": 3, "reward": 3.0, "response_length": 5.0, "kl": 0.5}, {"step": 4, "reward": 4.0, "kl": 0.5}]
    assert sorted(os.listdir(tmp_path)) == ["verl_metrics.attempt1.jsonl", "verl_metrics.jsonl"]
