"""QwenLong-L1.5's three RL options (arXiv 2512.12967; Tongyi-Zhiwen/Qwen-Doc QwenLong-L1.5/README.md, whose
snippets are the only public code) on unforked verl 0.9.1, through its extension points:

- `sampler: task_balanced` -> `TaskBalancedRLDataset`, a verl dataset class (`data.custom_cls`,
  verl/utils/dataset/rl_dataset.py:570-595) read with `data.shuffle=False`. verl 0.9.1 builds its sampler itself
  (RandomSampler or SequentialSampler, verl/trainer/ppo/utils.py:140-171; no sampler class hook), so the
  balanced batches are laid out in the dataset's row order, which the SequentialSampler reads in order.
- `advantage: task_normalized` -> the advantage estimator `task_normalized` (verl's `register_adv_est`,
  verl/trainer/ppo/core_algos.py:116-150), called by the v1 trainer's `compute_advantage` with the rewards,
  response mask and uids (verl/trainer/ppo/ray_trainer.py:248-257).
- `aepo` -> applied by the same estimator after the advantages (the README: "after the advantage computation
  step"), registered as `grpo_aepo` when the advantage is plain GRPO.

The estimators reach the trainer process through verl's `VERL_USE_EXTERNAL_MODULES` (verl/__init__.py:49-52:
every process that imports verl imports the listed modules), which the launcher sets in the Ray job's env.

What verl does not hand an estimator is read from its TransferQueue, which holds every trajectory of the step
(keys `{uid}_{session}_{turn}`, verl/trainer/ppo/v1/utils.py:181-184): the rows' `data_source` (the task), and
the old policy's per-token `entropy` written by the old-log-prob pass before the advantages
(verl/trainer/ppo/v1/trainer_base.py:1650-1671). verl's padding rows (uid `pad...`, response mask 0,
verl/trainer/ppo/padding_utils.py:149-183) are left out of every statistic.

Choices where the paper is silent (docs/train.md, "QwenLong-L1.5's options"):
- task = the data_source family: the reward router's prefix it starts with (`keychain_`, `longqa_`, ...),
  else the whole data_source (`task_of`);
- sampler: an epoch keeps verl's length (rows // batch batches); each batch holds batch // T rows of each of the
  T tasks, the batch % T extra slots going to the tasks in turn; a task that runs out starts again on a fresh
  shuffle (over-sampled), rows of a larger task not reached are the epoch's remainder (counted, printed); every
  epoch repeats the stage's order (verl re-reads the dataset in order);
- advantage: (r - group mean) / (std of the same task's rewards in the batch + 1e-6), the std unbiased (the
  README's torch.std); a one-row group has mean 0 (the README, and verl's GRPO); a task with one row in the
  batch gets std 1, i.e. no scaling (verl's GRPO does so for a one-row group, core_algos.py:315-317; the
  README's std 0 would divide by 1e-6);
- AEPO: the entropy is the old policy's per-token entropy averaged over every response token of the batch
  (token-mean; verl 0.4's `actor/entropy_loss` that the README reads, under token-mean); strictly between the
  bounds, only rows with advantage > 0 and reward > 0 are kept, the first floor(kept / world) x world of them
  in batch order (the README's truncation, with its undefined `final_kept_count` read as the number kept); a
  dropped row becomes what verl's own padding rows are, response and loss mask 0 (no PPO, KL or entropy loss, not in
  the token-mean's denominator), advantage 0; so the batch size verl splits never changes. If nothing would be
  kept (the README would index an empty batch), every advantage is 0 and the masks stay: no policy gradient
  that step (dropping every row would make verl's token-mean 0/0, a NaN loss).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict

import numpy as np
import torch
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, register_adv_est
from verl.utils.dataset.rl_dataset import RLHFDataset

EPS = 1e-6  # the README's epsilon (and verl's GRPO's)
PARTITION = "train"


# ------------------------------------------------------------------------------------------- the task
def task_of(data_source: str) -> str:
    """The task of a row: its data_source family, the reward router's prefix it starts with, else itself.

    Example:
        >>> task_of("keychain_hotpotqa"), task_of("longqa_musique"), task_of("my_set")
        ('keychain', 'longqa', 'my_set')
    """
    from loongrl.rewards.router import DATA_SOURCE_PREFIXES

    for prefix, _ in DATA_SOURCE_PREFIXES:
        if data_source.startswith(prefix):
            return prefix.rstrip("_")
    return data_source


# ------------------------------------------------------------------------------------------ the sampler
def task_balanced_order(tasks: list[str], batch_size: int, seed: int) -> tuple[list[int], dict]:
    """Row indices laid out in len(tasks) // batch_size batches of `batch_size`, each holding batch // T rows
    of each of the T tasks (sorted by name), the batch % T extra slots given to the tasks in turn (batch b's j-th
    extra slot to task (b * extra + j) % T). Each task's rows are drawn in a seeded shuffle, again from a fresh
    shuffle when they run out. Returns (order, {task: {rows, drawn, unused}}).

    Example:
        >>> order, stats = task_balanced_order(["a", "a", "a", "b"], 2, seed=0)
        >>> sorted(order[:2]) == sorted(order[:2]) and 3 in order[:2] and 3 in order[2:]
        True
        >>> stats["b"]
        {'rows': 1, 'drawn': 2, 'unused': 0}
    """
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(tasks):
        groups[t].append(i)
    names = sorted(groups)
    n_tasks, batches = len(names), len(tasks) // batch_size
    base, extra = divmod(batch_size, n_tasks) if n_tasks else (0, 0)
    queues = {t: [] for t in names}
    used = {t: set() for t in names}
    drawn = {t: 0 for t in names}
    order = []
    for b in range(batches):
        counts = {t: base for t in names}
        for j in range(extra):
            counts[names[(b * extra + j) % n_tasks]] += 1
        batch = []
        for t in names:
            for _ in range(counts[t]):
                if not queues[t]:
                    queues[t] = list(groups[t])
                    rng.shuffle(queues[t])
                i = queues[t].pop()
                batch.append(i)
                used[t].add(i)
                drawn[t] += 1
        rng.shuffle(batch)
        order.extend(batch)
    stats = {t: {"rows": len(groups[t]), "drawn": drawn[t], "unused": len(groups[t]) - len(used[t])} for t in names}
    return order, stats


class TaskBalancedRLDataset(RLHFDataset):
    """verl's `RLHFDataset` with its rows, after verl's own reading and length filter, in task-balanced batches
    of `data.train_batch_size` (`task_balanced_order`, seeded by `data.seed`). Read it with `data.shuffle=False`.
    A dataset smaller than one batch (verl's small validation set) keeps its order."""

    def _read_files_and_tokenize(self):  # called by __init__ and by resume_dataset_state (rl_dataset.py:159, 283)
        super()._read_files_and_tokenize()
        batch_size = int(self.config.get("train_batch_size"))
        tasks = [task_of(str(s)) for s in self.dataframe["data_source"]]
        if len(tasks) < batch_size:
            return
        order, stats = task_balanced_order(tasks, batch_size, int(self.config.get("seed") or 0))
        self.dataframe = self.dataframe.select(order)
        self.task_stats = stats
        print(f"[task_balanced] {len(tasks)} rows -> {len(order) // batch_size} batches of {batch_size}: "
              + "; ".join(f"{t}: {s['rows']} rows, {s['drawn']} drawn, {s['unused']} unused (remainder)"
                          for t, s in stats.items()), flush=True)


# --------------------------------------------------------------------------------------- the advantage
def task_normalized_scores(scores: torch.Tensor, index, tasks, valid, epsilon: float = EPS,
                           norm_by_std: bool = True) -> torch.Tensor:
    """Per-row (r - mean of its group) / (std of its task's rewards in the batch + epsilon); rows not `valid`
    (padding) get 0 and are in no mean or std; a one-row group's mean is 0, a one-row task's std 1. Without
    `norm_by_std`: r - group mean.

    Example:
        >>> a = task_normalized_scores(torch.tensor([1.0, 0.0, 1.0, 1.0]), ["g", "g", "h", "h"], ["a"] * 4,
        ...                            [True] * 4)  # task std of [1, 0, 1, 1] = 0.5
        >>> [round(x, 4) for x in a.tolist()]
        [1.0, -1.0, 0.0, 0.0]
    """
    by_group, by_task = defaultdict(list), defaultdict(list)
    for i in range(len(scores)):
        if valid[i]:
            by_group[index[i]].append(scores[i])
            by_task[tasks[i]].append(scores[i])
    mean = {g: torch.stack(v).mean() if len(v) > 1 else torch.tensor(0.0) for g, v in by_group.items()}
    std = {t: torch.stack(v).std() if len(v) > 1 else torch.tensor(1.0) for t, v in by_task.items()}
    out = torch.zeros_like(scores)
    for i in range(len(scores)):
        if valid[i]:
            centred = scores[i] - mean[index[i]]
            out[i] = centred / (std[tasks[i]] + epsilon) if norm_by_std else centred
    return out


# --------------------------------------------------------------------------------------------- AEPO
def aepo_keep(advantages: torch.Tensor, scores: torch.Tensor, valid, batch_entropy: float, low: float,
              high: float, world_size: int) -> list[int] | None:
    """The rows AEPO keeps: None (all of them) unless low < batch_entropy < high; then the rows with advantage > 0
    and reward > 0, the first floor(count / world_size) x world_size of them in batch order.

    Example:
        >>> aepo_keep(torch.tensor([0.5, -0.5, 0.7, 0.1]), torch.tensor([1.0, 0.0, 1.0, 1.0]), [True] * 4,
        ...           0.4, 0.2, 0.6, world_size=2)
        [0, 2]
    """
    if not low < batch_entropy < high:
        return None
    kept = [i for i in range(len(scores)) if valid[i] and advantages[i] > 0 and scores[i] > 0]
    return kept[: len(kept) // world_size * world_size]


# ------------------------------------------------------------------- what verl does not hand the estimator
def _step_keys(uids: set[str]) -> dict[str, list[str]]:
    """{uid: its trajectory keys in TransferQueue's training partition} for `uids`."""
    import transfer_queue as tq

    out = defaultdict(list)
    for key, tag in tq.kv_list(PARTITION).get(PARTITION, {}).items():
        if not tag.get("is_prompt", False):
            uid = key.rsplit("_", 2)[0]
            if uid in uids:
                out[uid].append(key)
    return out


def _tq_data_sources(index, valid) -> list[str]:
    import transfer_queue as tq

    uids = {str(index[i]) for i in range(len(index)) if valid[i]}
    keys = {uid: ks[0] for uid, ks in _step_keys(uids).items()}
    missing = sorted(uids - set(keys))
    if missing:
        raise RuntimeError(f"task_normalized: no trajectory of uid {missing[0]} in TransferQueue's "
                           f"{PARTITION!r} partition: cannot read its data_source")
    names = list(keys)
    values = tq.kv_batch_get(keys=[keys[u] for u in names], partition_id=PARTITION,
                             select_fields=["data_source"])["data_source"]
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    by_uid = dict(zip(names, values))
    return [str(by_uid[str(index[i])]) if valid[i] else "" for i in range(len(index))]


def _tq_batch(index, valid) -> tuple[float, list[str], list[float], list[str]]:
    """(token-mean old-policy entropy of the step's responses, keys, each key's reward, each key's uid)."""
    import transfer_queue as tq

    uids = {str(index[i]) for i in range(len(index)) if valid[i]}
    keys = [k for ks in _step_keys(uids).values() for k in ks]
    data = tq.kv_batch_get(keys=keys, partition_id=PARTITION, select_fields=["entropy", "response_mask", "rm_scores"])
    ent, mask = data["entropy"].values().float(), data["response_mask"].values().float()
    entropy = float((ent * mask).sum() / mask.sum().clamp(min=1))
    rewards = [float(r.sum()) for r in data["rm_scores"].unbind()]
    return entropy, keys, rewards, [k.rsplit("_", 2)[0] for k in keys]


MASKS = ("response_mask", "loss_mask")  # the policy loss masks with the first, FSDP's token count sums the second


def _drop_in_tq(keys: list[str]) -> None:
    """The rows become no-op rows as verl's padding rows are: response and loss mask 0 (padding_utils.py:101,
    122-123). The policy loss masks its tokens with `response_mask` (verl/workers/utils/losses.py:93) and divides
    by the batch's token count, the sum of `loss_mask` (verl/workers/engine/fsdp/transformer_impl.py:730; the
    agent loop stores it as a copy of the response mask, verl/trainer/ppo/v1/agent_loop_tq.py:199)."""
    import transfer_queue as tq
    from tensordict import TensorDict

    if not keys:
        return
    masks = tq.kv_batch_get(keys=keys, partition_id=PARTITION, select_fields=list(MASKS))
    zeros = {name: torch.nested.as_nested_tensor([torch.zeros_like(m) for m in masks[name].unbind()],
                                                 layout=torch.jagged) for name in MASKS}
    tq.kv_batch_put(keys=keys, partition_id=PARTITION, fields=TensorDict(zeros, batch_size=len(keys)))


def _options(config) -> dict:
    opts = config.get("loongrl", None) if config is not None else None
    if opts is None:
        return {}
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(opts, resolve=True) if not isinstance(opts, dict) else dict(opts)
    except ImportError:
        return dict(opts)


_CALLS = {"n": 0}


def _advantage(token_level_rewards, response_mask, index, config, task_norm: bool, data_source=None,
               batch_entropy=None, norm_adv_by_std_in_grpo=True, **kwargs):
    opts = _options(config)
    if config is not None:
        norm_adv_by_std_in_grpo = config.get("norm_adv_by_std_in_grpo", norm_adv_by_std_in_grpo)
    scores = token_level_rewards.sum(dim=-1)
    valid = [not str(u).startswith("pad") and bool(response_mask[i].any()) for i, u in enumerate(index)]
    if task_norm:
        tasks = [task_of(str(s)) if v else "" for s, v in zip(data_source, valid)] if data_source is not None \
            else [task_of(s) if s else "" for s in _tq_data_sources(index, valid)]
        seq = task_normalized_scores(scores, index, tasks, valid, EPS, bool(norm_adv_by_std_in_grpo))
    else:
        adv, _ = compute_grpo_outcome_advantage(token_level_rewards, response_mask, np.asarray(index),
                                                norm_adv_by_std_in_grpo=bool(norm_adv_by_std_in_grpo))
        seq = adv.sum(-1) / response_mask.sum(-1).clamp(min=1)
        seq = torch.where(torch.tensor(valid), seq, torch.zeros_like(seq))
    aepo = opts.get("aepo")
    if aepo:
        _CALLS["n"] += 1
        in_tq = batch_entropy is None
        keys = rewards = key_uids = None
        if in_tq:
            batch_entropy, keys, rewards, key_uids = _tq_batch(index, valid)
        kept = aepo_keep(seq, scores, valid, batch_entropy, float(aepo["entropy_low"]), float(aepo["entropy_high"]),
                         int(aepo.get("world_size", 1)))
        n_valid = sum(valid)
        record = {"call": _CALLS["n"], "advantage": "task_normalized" if task_norm else "grpo",
                  "entropy": batch_entropy, "rows": n_valid, "applied": kept is not None,
                  "kept": n_valid if kept is None else len(kept),
                  "positive": sum(1 for i in range(len(seq)) if valid[i] and seq[i] > 0 and scores[i] > 0)}
        if kept is not None:
            # what the actor's token-mean policy loss should be on its first pass (ratio 1): minus the kept rows'
            # token-mean advantage, their tokens only (the dropped rows' mask is 0), not over every row's tokens
            lengths = response_mask.sum(-1)
            adv_tokens = float(sum(seq[i] * lengths[i] for i in kept))
            record.update(kept_tokens=int(sum(lengths[i] for i in kept)),
                          all_tokens=int(sum(lengths[i] for i in range(len(seq)) if valid[i])))
            record["kept_token_mean_advantage"] = adv_tokens / max(record["kept_tokens"], 1)
            keep = set(kept)
            dropped = [i for i in range(len(seq)) if valid[i] and i not in keep]
            seq = seq.clone()
            seq[dropped] = 0.0
            # none kept: the masks stay (a batch of no tokens is 0/0 in verl's token-mean, a NaN loss; seen in the
            # preflight), every advantage is 0, so the step has no policy gradient
            if in_tq and kept:
                _drop_in_tq(_keys_of_rows(dropped, index, scores, kept, keys, rewards, key_uids))
        print(f"[aepo] {json.dumps(record)}", flush=True)
        if opts.get("stats_path"):
            with open(opts["stats_path"], "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
    advantages = seq.unsqueeze(-1) * response_mask
    return advantages, advantages


def _keys_of_rows(dropped, index, scores, kept, keys, rewards, key_uids) -> list[str]:
    """TransferQueue keys of the dropped rows. The estimator sees rows, not keys: a row is matched to a key of the
    same uid and reward (the keep decision depends on nothing else, so rows with both equal are interchangeable)."""
    pool = defaultdict(list)
    for k, r, u in zip(keys, rewards, key_uids):
        pool[(u, round(r, 6))].append(k)
    for i in kept:  # a kept row's key stays
        pool[(str(index[i]), round(float(scores[i]), 6))].pop()
    out = []
    for i in dropped:
        out.append(pool[(str(index[i]), round(float(scores[i]), 6))].pop())
    return out


@register_adv_est("task_normalized")
def compute_task_normalized_advantage(token_level_rewards, response_mask, index, config=None, data_source=None,
                                      batch_entropy=None, **kwargs):
    """QwenLong-L1.5's task-specific advantage (then AEPO when `algorithm.loongrl.aepo` is set). verl passes
    rewards, mask, uids and the algorithm config; `data_source` and `batch_entropy` are read from TransferQueue
    unless given (tests)."""
    return _advantage(token_level_rewards, response_mask, index, config, True, data_source, batch_entropy, **kwargs)


@register_adv_est("grpo_aepo")
def compute_grpo_aepo_advantage(token_level_rewards, response_mask, index, config=None, batch_entropy=None,
                                **kwargs):
    """verl's GRPO advantage (core_algos.compute_grpo_outcome_advantage), then AEPO (`algorithm.loongrl.aepo`)."""
    return _advantage(token_level_rewards, response_mask, index, config, False, None, batch_entropy, **kwargs)
