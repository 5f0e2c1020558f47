"""verl contract, fast part: generated overrides compose against verl's own Hydra config and carry the fixes
for what verl 0.9.1 really does (SFT token budget, DAPO knobs, checkpoint retention, small validation set,
multi-node environment); our parquet loads through verl's RLHFDataset; the CPU plugin's pieces (platform,
gloo, hf rollout, DAPO cap, preflight checks) behave on real inputs. The end-to-end run of verl's trainer is
tests/test_train_verl_preflight.py. verl is installed by `make setup` (pyproject's `verl` extra)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("verl", reason="verl is not installed (pip install '.[verl]'); verl contract not checked")
from hydra.errors import HydraException  # noqa: E402  (hydra comes with verl)
from omegaconf import OmegaConf  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402

from loongrl.train import preflight, verl_backend  # noqa: E402
from loongrl.train.recipe import load_recipe  # noqa: E402

pytestmark = pytest.mark.slow  # verl's Hydra config and dataset: left out of mutation runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _plan(name, tmp_path, **cluster):
    recipe = load_recipe(os.path.join(REPO, "recipes", f"{name}.yaml"))
    for k, v in cluster.items():
        setattr(recipe.cluster, k, v)
    return recipe, verl_backend.plan(recipe, str(tmp_path))


def _keys(overrides):
    return {o.split("=", 1)[0].lstrip("+") for o in overrides}


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
        assert a.fsdp_config.ulysses_sequence_parallel_size == 4 == cfg.actor_rollout_ref.ref.fsdp_config.ulysses_sequence_parallel_size
        assert cfg.trainer.max_actor_ckpt_to_keep == 2 and cfg.critic.enable is False
        # a small validation set next to the stage's data, not the whole training parquet
        assert cfg.data.val_files == [os.path.join(os.path.dirname(s["ckpt_dir"]), "val.parquet")] != cfg.data.train_files
        # each stage starts from the previous stage's merged checkpoint
        expect = recipe.model if i == 0 else os.path.join(os.path.dirname(steps[i - 1]["ckpt_dir"]), "checkpoint")
        assert cfg.actor_rollout_ref.model.path == expect
        assert "algorithm.filter_groups.enable" not in _keys(s["overrides"])  # GRPO: no dynamic sampling
    assert cfg.trainer.total_training_steps == 118


def test_qwenlong_sft_budget_fits_and_uses_the_rl_sequence_parallelism(tmp_path):
    recipe, steps = _plan("qwenlong-l1-32b", tmp_path)
    sft = verl_backend.compose_overrides(steps[0]["overrides"], steps[0]["config"])
    assert steps[0]["config"] == "sft_trainer_engine" and sft.data.messages_key == "messages"
    sp = sft.engine.ulysses_sequence_parallel_size
    assert sp == recipe.cluster.ulysses_sp == 8
    # verl batches SFT by tokens: budget x SP must hold the longest sample (30K), or it aborts on it
    assert sft.data.use_dynamic_bsz and sft.data.max_token_len_per_gpu * sp >= sft.data.max_length == 30000
    assert "data.micro_batch_size_per_gpu" not in _keys(steps[0]["overrides"])  # ignored under dynamic batching
    assert sft.engine.param_offload and sft.trainer.max_ckpt_to_keep == 2


def test_qwenlong_dapo_uses_the_knobs_verl_v1_honours(tmp_path):
    _, steps = _plan("qwenlong-l1-32b", tmp_path)
    for s in steps[1:]:
        keys = _keys(s["overrides"])
        assert "algorithm.filter_groups.max_num_gen_batches" not in keys and "data.gen_batch_size" not in keys
        cfg = verl_backend.compose_overrides(s["overrides"], s["config"])
        fg = cfg.algorithm.filter_groups
        assert fg.enable and fg.metric == "acc" and fg.max_inflight_gen_batches == 3 and cfg.trainer.use_v1
        sampler = cfg.trainer.v1.sampler
        assert sampler.custom_sampler.path == "pkg://loongrl.train.dapo_sampler"
        assert OmegaConf.to_container(sampler.sampler_kwargs, resolve=True) == {
            "max_gen_batches": 30, "filter_groups_metric": "acc", "max_inflight_gen_batches": 3, "train_batch_size": 128}
        assert cfg.reward.reward_manager.name == "dapo" and cfg.reward.reward_kwargs.overlong_buffer_cfg.len == 1000
        assert cfg.reward.custom_reward_function.reward_kwargs.judge_config.model == "Qwen/Qwen2.5-1.5B-Instruct"
        assert cfg.trainer.max_actor_ckpt_to_keep == 2


def test_qwenlong15_options_compose_against_verls_config_and_reach_its_hooks(tmp_path):
    _, steps = _plan("qwenlong-l1.5-30b-a3b", tmp_path)
    assert [s["stage"] for s in steps] == ["rl-32k", "rl-60k", "rl-120k"]
    for s in steps:
        cfg = verl_backend.compose_overrides(s["overrides"], s["config"])
        # the dataset class verl loads (rl_dataset.get_dataset_class), read in order; the registered estimator,
        # imported in verl's processes by VERL_USE_EXTERNAL_MODULES; AEPO's settings where the estimator reads them
        assert (cfg.data.custom_cls.path, cfg.data.custom_cls.name) == ("pkg://loongrl.train.qwenlong15_verl",
                                                                          "TaskBalancedRLDataset")
        assert cfg.data.shuffle is False and cfg.algorithm.adv_estimator == "task_normalized"
        assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "loongrl.train.qwenlong15_verl"
        assert OmegaConf.to_container(cfg.algorithm.loongrl) == {
            "aepo": {"entropy_low": 0.3, "entropy_high": 100.0, "world_size": 32},
            "stats_path": os.path.join(os.path.dirname(s["ckpt_dir"]), "aepo.jsonl")}
        assert cfg.actor_rollout_ref.rollout.temperature == 0.7 and cfg.data.train_batch_size == 128
    assert [verl_backend.compose_overrides(s["overrides"]).data.max_prompt_length for s in steps] == [
        32768, 61440, 122880]


def test_dry_run_shows_budget_dapo_knobs_and_retention(shipped_recipe_env):
    out = subprocess.run([sys.executable, "-m", "loongrl.cli", "train", os.path.join(REPO, "recipes", "qwenlong-l1-32b.yaml"),
                          "--backend", "verl", "--dry-run"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, **shipped_recipe_env)).stdout
    for needle in ("data.max_token_len_per_gpu=10000", "engine.ulysses_sequence_parallel_size=8",
                   "algorithm.filter_groups.max_inflight_gen_batches=3", "sampler_kwargs.max_gen_batches=30",
                   "trainer.max_ckpt_to_keep=2", "trainer.max_actor_ckpt_to_keep=2",
                   "SFT token budget: 10000 tokens/GPU x SP 8 = 80000 >= max_length 30000"):
        assert needle in out, needle
    assert "max_num_gen_batches" not in out and "gen_batch_size" not in out


def test_cli_dry_run_prints_commands(shipped_recipe_env, tmp_path):
    cmd = [sys.executable, "-m", "loongrl.cli", "train", os.path.join(REPO, "recipes", "loongrl-7b.yaml"),
           "--backend", "verl", "--dry-run"]
    # without its data the dry run fails, naming every missing file (LOONGRL_DATA points at an empty folder)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **shipped_recipe_env,
                                                                       "LOONGRL_DATA": str(tmp_path)})
    assert proc.returncode == 2 and "verl.trainer.main_ppo" not in proc.stdout
    assert proc.stderr.count("data file not found") == 6 and f"{tmp_path}/keychain_2wikimqa.parquet" in proc.stderr
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, **shipped_recipe_env)).stdout
    assert out.count("verl.trainer.main_ppo") == 3 and out.count("verl.model_merger merge") == 3
    for needle in ("actor_rollout_ref.rollout.n=8", "actor_rollout_ref.actor.optim.lr=1e-06",
                   "kl_loss_coef=0.001", "kl_loss_type=low_var_kl", "rollout.temperature=0.6", "rollout.top_p=0.95",
                   "data.max_response_length=4096", "data.train_batch_size=512", "hard mining"):
        assert needle in out, needle


def test_ray_cluster_stage_gets_env_interpreter_and_an_upfront_node_check(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", "/shared/hf")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-forwarded")
    _, steps = _plan("qwenlong-l1-32b", tmp_path, ray_address="http://head:8265")
    s = steps[1]
    train = s["train"]
    assert train[:4] == ["ray", "job", "submit", "--address=http://head:8265"]
    env = json.loads(next(x for x in train if x.startswith("--runtime-env-json=")).split("=", 1)[1])
    assert env == {"env_vars": {"HF_HOME": "/shared/hf"}}  # secrets are checked on the nodes, never shipped
    assert train[train.index("--") + 1] == sys.executable  # python from the env, not a bare python3
    assert f"ray_kwargs.ray_init.runtime_env.py_executable={sys.executable}" in s["overrides"]
    check = s["check"]
    assert check[check.index("--") + 1:check.index("--") + 4] == [sys.executable, "-m", "loongrl.train.cluster_check"]
    paths = [x.split("=", 1)[1] for x in check if x.startswith("--path=")]
    assert {os.path.join(os.path.dirname(s["ckpt_dir"]), f) for f in ("data.parquet", "val.parquet")} <= set(paths)
    assert verl_backend.ROUTER_PATH in paths and s["ckpt_dir"] in paths
    assert "--env=OPENAI_API_KEY" in check and any(x.startswith("--version=verl=") for x in check)


def test_node_check_names_every_problem(tmp_path, monkeypatch):
    from loongrl.train.cluster_check import main, node_problems

    present = tmp_path / "data.parquet"
    present.write_text("x")
    monkeypatch.delenv("LOONGRL_TEST_UNSET", raising=False)
    problems = node_problems([str(present), str(tmp_path / "missing.parquet"), str(tmp_path)],
                             ["LOONGRL_TEST_UNSET"], {"json": "0.0-other"})
    assert problems == [f"missing path {tmp_path / 'missing.parquet'}", "environment variable LOONGRL_TEST_UNSET is not set",
                        f"json {json.__version__} (the launcher has 0.0-other)"]
    assert node_problems([str(present)], [], {}) == []
    with pytest.raises(SystemExit):
        main(["--bogus"])


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


# ------------------------------------------------------------------------------------ the CPU plugin
PLUGIN_PROBE = """
import json, os, tempfile, torch, torch.distributed as dist
import verl  # loads the verl.plugins entry points
from verl.utils.device import get_device_name, get_nccl_backend, get_torch_device
from verl.utils.distributed import initialize_global_process_group_ray
from verl.utils import import_utils
from verl.workers.rollout.base import _ROLLOUT_REGISTRY
from verl.workers.rollout.replica import RolloutReplicaRegistry
os.environ.update(RANK="0", WORLD_SIZE="1")
initialize_global_process_group_ray(backend=None)  # verl's own "cpu:gloo,<device>:<backend>" string
t = torch.ones(3); dist.all_reduce(t)
print(json.dumps({"device": get_device_name(), "backend": get_nccl_backend(), "pg": dist.get_backend(),
                  "sum": t.tolist(), "hf": ("hf", "async") in _ROLLOUT_REGISTRY,
                  "replica": RolloutReplicaRegistry.get("hf").__name__ if ("hf", "async") in _ROLLOUT_REGISTRY else None,
                  "pinned": torch.ones(2).pin_memory().is_pinned(), "mem": get_torch_device().max_memory_allocated(),
                  "trl_probe": import_utils.is_trl_available(), "engine": os.environ.get("VERL_ENGINE_DEVICE")}))
"""


def _probe(tmp_path, platform):
    env = dict(os.environ, DIST_INIT_METHOD=f"file://{tmp_path}/pg", OMP_NUM_THREADS="1")
    env.pop("VERL_ENGINE_DEVICE", None)
    if platform:
        env["VERL_PLATFORM"] = platform
    else:
        env.pop("VERL_PLATFORM", None)
    proc = subprocess.run([sys.executable, "-c", PLUGIN_PROBE], capture_output=True, text=True, env=env, timeout=300)
    return proc


def test_cpu_platform_plugin_runs_verls_process_group_on_gloo(tmp_path):
    proc = _probe(tmp_path, "loongrl_cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"device": "cpu", "backend": "gloo", "pg": "gloo", "sum": [1.0, 1.0, 1.0], "hf": True,
                   "replica": "HFReplica", "pinned": False, "mem": 0, "trl_probe": False, "engine": "cuda"}


def test_plugin_is_inert_without_the_platform_but_fixes_the_trl_probe(tmp_path):
    from loongrl.train.verl_cpu import trl_has_value_head

    proc = _probe(tmp_path, None)
    # no CPU platform: verl falls back to CUDA/NCCL, which cannot start here
    assert proc.returncode != 0 and "nccl" in proc.stderr.lower()
    # trl >= 1.13 dropped the value-head class verl imports whenever it finds trl: the probe must say so
    import trl

    major, minor = (int(x) for x in trl.__version__.split(".")[:2])
    assert trl_has_value_head() == ((major, minor) < (1, 13))


def _tiny(tmp_path):
    from loongrl.demo.tiny import build_tiny_model

    return build_tiny_model(str(tmp_path / "tiny"), ["Start from a and follow the chain. {\"a\": \"river\"}"] * 20,
                            vocab_size=300, hidden_size=64, num_layers=1, num_heads=1, num_kv_heads=1)


def test_hf_rollout_generates_with_logprobs_and_loads_trainer_weights(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from loongrl.train.verl_cpu.hf_rollout import HFServer

    path = _tiny(tmp_path)
    config = OmegaConf.create({"_target_": "verl.workers.config.RolloutConfig", "name": "hf", "seed": 0,
                               "prompt_length": 32, "response_length": 8, "max_model_len": None})
    server = HFServer(config, OmegaConf.create({"path": path}), replica_rank=0)
    prompt = server.model.config.vocab_size // 2
    out = asyncio.run(server.generate([prompt, prompt + 1, prompt + 2], {"temperature": 0, "logprobs": True}, "r0"))
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = torch.tensor([[prompt, prompt + 1, prompt + 2] + out.token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, 2:-1].float(), -1)
    want = logp.gather(-1, torch.tensor(out.token_ids)[:, None])[:, 0]
    assert 1 <= len(out.token_ids) <= 8 and out.stop_reason == "completed"
    assert torch.allclose(torch.tensor(out.log_probs), want, atol=1e-4)  # greedy ids, their model log-probs
    # concurrent requests are generated as one left-padded batch, with the same result as one by one
    other = [prompt + 5] * 5

    async def both():
        return await asyncio.gather(server.generate([prompt, prompt + 1, prompt + 2], {"temperature": 0}, "a"),
                                    server.generate(other, {"temperature": 0, "max_tokens": 3}, "b"))

    batched = asyncio.run(both())
    alone = asyncio.run(server.generate(other, {"temperature": 0, "max_tokens": 3}, "c"))
    assert batched[0].token_ids == out.token_ids and batched[1].token_ids == alone.token_ids
    assert len(alone.token_ids) <= 3
    # the trainer's weights are loaded whole; a name the model does not have is an error, not a skip
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    assert asyncio.run(server.load_weights(state, global_steps=3)) == len(state)
    assert server.global_steps == 3 and all(float(p.abs().sum()) == 0 for p in server.model.parameters())
    with pytest.raises(RuntimeError, match="unexpected"):
        asyncio.run(server.load_weights({**state, "model.extra.weight": torch.zeros(1)}, global_steps=4))


def test_dapo_cap_fails_loudly_with_the_counts():
    from collections import Counter

    from loongrl.train.dapo_sampler import NO_VARIANCE, CappedDAPOReplayBuffer

    dispatched = []
    buf = CappedDAPOReplayBuffer(trainer_mode="sync", trainer_config=OmegaConf.create({}), max_off_policy_threshold=None,
                                 max_off_policy_strategy="drop", refill_fn=dispatched.append,
                                 sampler_kwargs={"max_gen_batches": 3, "filter_groups_metric": "acc",
                                                 "max_inflight_gen_batches": 2, "train_batch_size": 4})
    assert (buf.filter_groups_metric, buf.train_batch_size, buf.gen_batch_size, buf.max_inflight_gen_batches) == ("acc", 4, 1, 2)
    buf._step, buf._generated, buf._filtered = 7, 4, Counter({0.0: 6})  # as sample() leaves them after batch 1
    buf.refill_fn(4)
    buf.refill_fn(4)  # 12 prompts = 3 batches: the cap
    assert dispatched == [4, 4]
    with pytest.raises(RuntimeError, match=NO_VARIANCE) as e:
        buf.refill_fn(1)
    assert "step 7: 12 prompts generated (3 batches of 4)" in str(e.value) and "acc=0: 6" in str(e.value)
    assert dispatched == [4, 4]
    with pytest.raises(ValueError, match="sync"):
        CappedDAPOReplayBuffer(trainer_mode="separate_async", trainer_config={}, max_off_policy_threshold=None,
                               max_off_policy_strategy="drop", refill_fn=print, sampler_kwargs={})


# ------------------------------------------------------------------------------- preflight pieces
def test_cut_keeps_head_and_tail_and_fits():
    from transformers import AutoTokenizer

    from conftest import QWEN

    tok = AutoTokenizer.from_pretrained(QWEN)
    user = "INSTRUCTIONS. " + "filler passage text. " * 400 + "Question: who wrote it?"
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": user}]
    cut = preflight.cut_messages(tok, msgs, 120)
    n = preflight._template_len(tok, cut, True)
    assert 110 <= n <= 120 and cut[0] == msgs[0]
    assert cut[1]["content"].startswith("INSTRUCTIONS.") and cut[1]["content"].endswith("Question: who wrote it?")
    assert preflight.cut_messages(tok, msgs, 10_000) == msgs


def test_contract_check_catches_overridden_values_and_warnings(tmp_path):
    recipe, steps = _plan("qwenlong-l1-32b", tmp_path)
    s = steps[1]
    cpu = preflight.cpu_rl_overrides("127.0.0.1:1", str(tmp_path))
    ran = OmegaConf.to_container(verl_backend.compose_overrides(s["overrides"] + cpu, s["config"]), resolve=True)
    log = tmp_path / "verl.log"
    log.write_text("INFO all fine\n{'data': {'gen_batch_size': 1}}\n")
    assert preflight.contract_violations(s, cpu, ran, str(log)) == []
    ran["trainer"]["max_actor_ckpt_to_keep"] = None  # verl dropped our retention limit
    log.write_text("(TaskRunnerV1 pid=1) WARNING:2026:algorithm.filter_groups.max_inflight_gen_batches=3 is ignored\n")
    problems = preflight.contract_violations(s, cpu, ran, str(log))
    assert problems[0] == "trainer.max_actor_ckpt_to_keep: we set 2, verl ran with None"
    assert problems[1].startswith("verl warned about algorithm.filter_groups.max_inflight_gen_batches: ")
    assert len(problems) == 2


def test_first_error_line_skips_warnings(tmp_path):
    log = tmp_path / "verl.log"
    log.write_text("x UserWarning: torchtitan engine is not available: ModuleNotFoundError('torchtitan')\n"
                   "\x1b[36m(WorkerDict pid=7)\x1b[0m ValueError: Duplicate device type cpu in backend string\n"
                   "RuntimeError: later\n")
    assert preflight.first_error(str(log)) == "ValueError: Duplicate device type cpu in backend string"


def test_preflight_recipe_keeps_the_algorithm_and_scales_the_rest(monkeypatch):
    monkeypatch.setenv("JUDGE_URL", "http://127.0.0.1:9/v1")  # nothing listens on the discard port
    recipe = load_recipe(os.path.join(REPO, "recipes", "qwenlong-l1-32b.yaml"))
    paths = {c.path: c.path for s in recipe.stages for c in s.spec.data.components}
    notes = []
    pf = preflight.preflight_recipe(recipe, "/tiny", paths, 0.01, notes)
    sft, p1, p2 = pf.stages
    assert pf.model == "/tiny" and pf.cluster.rollout == "hf" and pf.cluster.gpus_per_node == 1
    assert pf.cluster.ulysses_sp == 1 and pf.cluster.max_checkpoints == recipe.cluster.max_checkpoints
    assert (sft.sft.steps, sft.sft.max_length, sft.sft.data.max_prompt_tokens) == (2, 300, 200)
    for new, old in zip((p1.rl, p2.rl), (recipe.stages[1].rl, recipe.stages[2].rl)):
        for knob in ("algorithm", "group_size", "kl_coef", "clip_low", "clip_high", "loss_agg", "entropy_coef",
                     "temperature", "top_p", "inflight_gen_batches", "optim"):
            assert getattr(new, knob) == getattr(old, knob), knob
        assert (new.steps, new.batch_size, new.mini_batch_size) == (2, 4, 1)  # 4 optimiser updates per step, as 128/32
        assert (new.max_prompt_tokens, new.max_response_tokens, new.overlong_buffer.length) == (600, 32, 3)
        assert new.max_gen_batches == 3 and "judge_config" not in new.reward_kwargs
    assert (p2.rl.data.min_prompt_tokens, p2.rl.data.max_prompt_tokens) == (200, 600)  # phase II stays longer
    rs = p2.rl.transition.retrospective
    assert (rs.sampling.k, rs.sampling.max_new_tokens, rs.hard_threshold, rs.carry_share) == (8, 32, 0.5, 0.25)
    assert any("does not answer: rule-only reward" in n for n in notes)
    assert recipe.stages[1].rl.reward_kwargs.get("judge_config")  # the recipe itself is untouched


def test_watchdog_kills_the_whole_process_group(tmp_path):
    import psutil

    log = tmp_path / "stage.log"
    pidfile = tmp_path / "child.pid"
    # A stage that hangs, with a child of its own (as verl's driver has Ray workers and torchrun ranks) and one
    # that ignores SIGTERM. bash starts in milliseconds, so the children exist well before the 3 s watchdog
    # fires even on a loaded machine (a Python interpreter's start-up did not always).
    script = (f"sleep 60 & echo $! > {pidfile}; (trap '' TERM; sleep 60) & echo $! >> {pidfile}; "
              "echo started; wait")
    with pytest.raises(preflight.PreflightError, match="timed out after 3 s"):
        preflight.run_watched(["bash", "-c", script], str(log), dict(os.environ), timeout=3, grace=1)
    children = [int(x) for x in pidfile.read_text().split()]
    assert len(children) == 2
    # run_watched returns only once the group is gone: no sleep, no retry here
    for child in children:
        try:
            assert psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            pass
    assert "started" in log.read_text()
