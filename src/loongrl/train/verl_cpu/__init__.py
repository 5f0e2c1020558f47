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
- with `LOONGRL_VERL_CONFIG_DUMP=<file>`, writes the resolved config verl hands its loggers (`Tracking`,
  built by both trainers once every runtime adjustment is made) to that file, for the preflight's check
  that verl ran with what we emitted.

What was measured running verl like this is in docs/train.md (preflight).
"""

from __future__ import annotations

import importlib.util
import os

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
