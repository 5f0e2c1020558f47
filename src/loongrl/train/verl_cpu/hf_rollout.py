"""The `hf` rollout: Hugging Face `generate()` behind verl's rollout interfaces, for CPU runs.

verl 0.9.1 generates through a rollout *replica* (`RolloutReplica`: launches token-in/token-out server
actors that the agent loop calls `generate` on) and a *server adapter* inside each trainer worker
(`BaseRollout`: wakes and sleeps the server and pushes the trainer's weights to it). verl ships these for
vLLM, SGLang and TRT-LLM, none of which runs on this CPU, so this module provides the same three pieces:

- `HFServer`: a Ray actor holding an HF model; `generate(prompt_ids, sampling_params, request_id)` returns
  verl's `TokenOutput` (the sampled ids and, when asked, their log-probabilities under the model);
- `HFReplica`: launches one `HFServer` per replica next to its trainer worker (hybrid mode);
- `HFServerAdapter`: `update_weights` sends the trainer's full tensors to the server, which loads them
  and fails on any name it does not know (a silent partial load would train one model and sample another).

Concurrent requests with the same sampling settings are generated as one left-padded batch, in a thread,
so the actor keeps answering verl's control calls.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import ray
import torch

from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput


BATCH_WAIT_S = 0.05
MAX_BATCH = 64


def server_name(replica_rank: int, suffix: str = "") -> str:
    return f"hf_server_{replica_rank}{suffix}"


class HFServer:
    """One HF model answering verl's token-in/token-out `generate` calls."""

    def __init__(self, config, model_config, replica_rank: int):
        from transformers import AutoModelForCausalLM

        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig

        config = omega_conf_to_dataclass(config)
        model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.config, self.replica_rank = config, replica_rank
        torch.manual_seed(config.seed + replica_rank)
        path = model_config.local_path
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
        self.model.eval()
        tokenizer = model_config.tokenizer
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
        self.eos = [eos] if isinstance(eos, int) else list(eos)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos[0]
        self.global_steps = None
        self.weight_updates = 0
        self.lock = asyncio.Lock()  # one generate or weight load at a time
        self.pending: list[tuple] = []  # (sampling key, prompt ids, max tokens, future)
        self.batcher: asyncio.Task | None = None

    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str,
                       image_data=None, video_data=None, audio_data=None, mm_processor_kwargs=None,
                       priority: int = 0, **_kw) -> TokenOutput:
        if image_data or video_data or audio_data:
            raise NotImplementedError("the hf rollout is text-only")
        params = dict(sampling_params)
        prompt_ids = [int(t) for t in prompt_ids]
        c = self.config
        room = (c.max_model_len or c.prompt_length + c.response_length) - len(prompt_ids)
        limit = params.pop("max_tokens", params.pop("max_new_tokens", None))
        if limit is None:
            limit = min(c.response_length, c.prompt_length + c.response_length - len(prompt_ids))
        limit = max(1, min(limit, room))
        key = (float(params.get("temperature", 1.0) or 0.0), float(params.get("top_p", 1.0) or 1.0),
               int(params.get("top_k", -1) or -1), float(params.get("repetition_penalty", 1.0) or 1.0),
               bool(params.get("logprobs")))
        done = asyncio.get_running_loop().create_future()
        self.pending.append((key, prompt_ids, limit, done))
        if self.batcher is None or self.batcher.done():
            self.batcher = asyncio.create_task(self._drain())
        ids, logprobs = await done
        return TokenOutput(token_ids=ids, log_probs=logprobs, stop_reason="completed",
                           extra_fields={"global_steps": self.global_steps})

    async def _drain(self):
        """Generate the waiting requests in batches of equal sampling settings (the agent loop sends a
        step's rollouts concurrently; one by one, the 151K-token LM head dominates a CPU step)."""
        while self.pending:
            await asyncio.sleep(BATCH_WAIT_S)  # let the rest of a burst arrive
            async with self.lock:
                key = self.pending[0][0]
                batch = [r for r in self.pending if r[0] == key][:MAX_BATCH]
                self.pending = [r for r in self.pending if not any(r is b for b in batch)]
                try:
                    results = await asyncio.to_thread(self._generate, key, [b[1] for b in batch],
                                                      [b[2] for b in batch])
                except Exception as e:  # every waiting request gets the error
                    for b in batch:
                        b[3].set_exception(e)
                    continue
                for b, result in zip(batch, results):
                    b[3].set_result(result)

    @torch.no_grad()
    def _generate(self, key: tuple, prompts: list[list[int]], limits: list[int]):
        temperature, top_p, top_k, repetition_penalty, want_logprobs = key
        kwargs = dict(max_new_tokens=max(limits), eos_token_id=self.eos, pad_token_id=self.pad,
                      repetition_penalty=repetition_penalty, return_dict_in_generate=True, output_logits=True)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k if top_k > 0 else 0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        width = max(len(p) for p in prompts)  # left padding
        inputs = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        out = self.model.generate(input_ids=inputs, attention_mask=mask, **kwargs)
        logits = torch.stack(out.logits, dim=1).float() if want_logprobs else None
        results = []
        for i, limit in enumerate(limits):
            ids = out.sequences[i, width:].tolist()[:limit]
            end = next((j for j, t in enumerate(ids) if t in self.eos), None)
            ids = ids if end is None else ids[: end + 1]  # up to and with the first EOS, as vLLM returns
            logprobs = None
            if want_logprobs:  # under the model itself (verl compares them with the trainer's)
                step = torch.log_softmax(logits[i, : len(ids)], -1)
                logprobs = step.gather(-1, torch.tensor(ids)[:, None])[:, 0].tolist()
            results.append((ids, logprobs))
        return results

    async def load_weights(self, tensors: dict[str, torch.Tensor], global_steps: int | None) -> int:
        """Load the trainer's full weights; unknown names or missing non-tied weights are errors."""
        async with self.lock:
            missing, unexpected = self.model.load_state_dict(tensors, strict=False)
            tied = set(getattr(self.model, "_tied_weights_keys", None) or [])
            missing = [m for m in missing if m not in tied and not (m == "lm_head.weight"
                                                                  and self.model.config.tie_word_embeddings)]
            if missing or unexpected:
                raise RuntimeError(f"hf rollout: weights from the trainer do not match the model: "
                                   f"missing {missing[:5]}, unexpected {unexpected[:5]}")
            self.global_steps = global_steps
            self.weight_updates += 1
            print(f"[hf rollout] replica {self.replica_rank}: loaded {len(tensors)} tensors from the trainer "
                  f"(update {self.weight_updates}, global step {global_steps})", flush=True)
            return len(tensors)

    # verl's server life-cycle calls: nothing to free or resume on a CPU.
    async def wake_up(self, tags: list[str] | None = None):
        return None

    async def sleep(self):
        return None

    async def clear_kv_cache(self):
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def wait_for_requests_to_drain(self):
        while self.pending or (self.batcher is not None and not self.batcher.done()):
            await asyncio.sleep(BATCH_WAIT_S)

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {"aborted": False, "request_id": request_id}

    async def resume_generation(self):
        return None

    async def set_global_steps(self, global_steps: int):
        self.global_steps = global_steps

    async def start_profile(self, **_kw):
        return None

    async def stop_profile(self):
        return None


class HFReplica(RolloutReplica):
    """One `HFServer` per replica, on the node of the replica's first trainer worker."""

    async def launch_servers(self):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        assert len(self.workers) == self.world_size, f"{len(self.workers)} workers for world size {self.world_size}"
        node_id = await self.workers[0].__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id())
        name = server_name(self.replica_rank, self.name_suffix)
        server = ray.remote(HFServer).options(
            name=name, num_cpus=0, max_concurrency=self.max_concurrency,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        self.servers = [server]
        self._server_handle = server
        self._server_address = name  # a key for verl's load balancer; there is no HTTP endpoint


class HFServerAdapter(BaseRollout):
    """Inside a trainer worker: pushes the trainer's weights to this replica's `HFServer`."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        world = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                 * self.config.pipeline_model_parallel_size)
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.is_leader = rank % world == 0
        self.sleep_level = 1
        self._server = None

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    async def update_weights(self, weights, wire_format: str = "named_tensors", **kwargs):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf rollout: weight wire format {wire_format!r}")
        # Every rank walks the generator: FSDP gathers each full tensor collectively.
        tensors = {name: t.detach().to("cpu").clone() for name, t in weights}
        if not self.is_leader:
            return
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        await self._server.load_weights.remote(tensors, kwargs.get("global_steps"))
