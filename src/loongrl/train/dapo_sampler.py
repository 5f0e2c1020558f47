"""DAPO dynamic sampling on verl 0.9.1's default (v1) trainer, with a cap on regeneration.

verl 0.9.1's sync replay buffer does DAPO's group filtering: a finished prompt group whose `acc` is the
same for every rollout is evicted and two fresh prompts are generated for it, at most
`algorithm.filter_groups.max_inflight_gen_batches` training batches in flight at once, until a batch of
groups with reward variance is full. Nothing bounds how long that takes: on data the model always or never
solves (or with a broken reward) a step never finishes. `algorithm.filter_groups.max_num_gen_batches`,
the old DAPO recipe's cap, is ignored by v1 (it says so in a warning).

`CappedDAPOReplayBuffer` is verl's own `ReplayBuffer` (plugged in through verl's
`trainer.v1.sampler.custom_sampler`), unchanged except that it counts the prompts generated for one step
and raises, naming the numbers, once they would exceed `max_gen_batches` training batches (the first batch
included). verl hands custom samplers only `sampler_kwargs`, so the launcher passes the filter settings there
as interpolations of `algorithm.filter_groups.*` and `data.train_batch_size` (one source of truth).
"""

from __future__ import annotations

from collections import Counter

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from .verl_backend import DAPO_NO_VARIANCE as NO_VARIANCE


class CappedDAPOReplayBuffer(ReplayBuffer):
    """verl's sync `ReplayBuffer` with DAPO filtering and a regeneration cap (`max_gen_batches`)."""

    def __init__(self, *, trainer_mode: str, sampler_kwargs, refill_fn, **kwargs):
        kw = dict(sampler_kwargs)
        if trainer_mode != "sync":
            raise ValueError(f"{type(self).__name__} implements the sync trainer; trainer.v1.trainer_mode={trainer_mode}")
        self.max_gen_batches = int(kw.pop("max_gen_batches"))
        if self.max_gen_batches < 1:
            raise ValueError(f"max_gen_batches must be >= 1, got {self.max_gen_batches}")
        super().__init__(trainer_mode=trainer_mode, sampler_kwargs={}, refill_fn=refill_fn,
                         filter_groups_metric=str(kw.pop("filter_groups_metric")),
                         train_batch_size=int(kw.pop("train_batch_size")), gen_batch_size=1,
                         max_inflight_gen_batches=int(kw.pop("max_inflight_gen_batches")), **kwargs)
        if kw:
            raise ValueError(f"unknown sampler_kwargs for {type(self).__name__}: {sorted(kw)}")
        self._verl_refill = refill_fn
        self.refill_fn = self._capped_refill
        self._step, self._generated, self._filtered = None, 0, Counter()

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        if partition_id != "val":
            self._step, self._generated, self._filtered = global_steps, batch_size, Counter()
        return super().sample(global_steps, partition_id, batch_size)

    def _evict_terminal_groups(self, global_steps, partition_id, eviction_reasons):
        self._filtered.update(eviction_reasons[3])  # {shared metric value: groups} of the no-variance groups
        return super()._evict_terminal_groups(global_steps, partition_id, eviction_reasons)

    def _capped_refill(self, num_prompts: int):
        limit = self.max_gen_batches * self.train_batch_size
        if self._generated + num_prompts > limit:
            values = ", ".join(f"{self.filter_groups_metric}={v:g}: {n}" for v, n in sorted(self._filtered.items()))
            raise RuntimeError(
                f"{NO_VARIANCE} at step {self._step}: {self._generated} prompts generated "
                f"({self._generated / self.train_batch_size:g} batches of {self.train_batch_size}), the cap is "
                f"max_gen_batches={self.max_gen_batches}; groups filtered out for no variance, by their common "
                f"value: {values or 'none'}. The data may be too easy or too hard for the model, or the reward "
                f"broken; raise the stage's `max_gen_batches` to keep sampling longer.")
        self._generated += num_prompts
        return self._verl_refill(num_prompts)
