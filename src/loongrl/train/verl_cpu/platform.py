"""The `loongrl_cpu` verl platform: every accelerator query answered for the host CPU."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from verl.plugin.platform import PlatformBase

ROLLOUT_KV_CACHE_GIB = 1  # VLLM_CPU_KVCACHE_SPACE of verl's vLLM rollout: 46K tokens of a Qwen2-family tiny model


class CPUDevice:
    """What verl calls on `torch.<device>` (`get_torch_device()`), answered for the CPU: no-ops for streams,
    caches and memory fractions, zeros for memory statistics, the CPU RNG for RNG state."""

    Stream, Event, stream, current_stream = torch.cpu.Stream, torch.cpu.Event, torch.cpu.stream, torch.cpu.current_stream

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> torch.device:
        return torch.device("cpu")

    @staticmethod
    def get_device_name(*_a, **_k) -> str:
        return "CPU"

    @staticmethod
    def set_device(*_a, **_k) -> None:
        return None

    synchronize = empty_cache = ipc_collect = set_per_process_memory_fraction = set_device

    @staticmethod
    def mem_get_info(*_a, **_k) -> tuple[int, int]:
        return 0, 0

    @staticmethod
    def memory_allocated(*_a, **_k) -> int:
        return 0

    memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated

    @staticmethod
    def get_rng_state(*_a, **_k) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state, *_a, **_k) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed


class CPUPlatform(PlatformBase):
    """Device `cpu`, gloo collectives, Ray resource `GPU` (give Ray `num_gpus=1` per worker you want)."""

    device_name = "cpu"
    vendor_name = "loongrl"
    device_module = CPUDevice

    def is_available(self) -> bool:
        return True

    def current_device(self) -> torch.device:
        return torch.device("cpu")  # verl uses it both as an index and as a `.to()` target

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index) -> None:
        return None

    def synchronize(self, device_index=None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"  # what Ray sets for its `GPU` resource

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        # No CUDA IPC: verl's vLLM rollout then sends the trainer's weights through POSIX shared memory
        # (verl/workers/rollout/vllm_rollout/vllm_rollout.py:143 use_shm = not is_support_ipc();
        # bucketed_weight_transfer.py:182-191 sender, 320-327 receiver).
        return False

    def rollout_env_vars(self) -> dict[str, str]:
        # Set on verl's vLLM server actor (verl/workers/rollout/vllm_rollout/vllm_async_server.py:1372-1375),
        # inherited by the engine's worker processes: a 1 GiB CPU KV cache, one OpenMP thread placed by the OS.
        from loongrl.generation.serve import vllm_cpu_vars

        return vllm_cpu_vars(ROLLOUT_KV_CACHE_GIB, 1)

    def cudart(self):
        return None
