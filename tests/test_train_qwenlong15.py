"""QwenLong-L1.5's three RL options on verl 0.9.1 (`loongrl.train.qwenlong15_verl`), each checked against values
worked out by hand in the comments, through what verl itself calls: the dataset class verl loads with
`data.custom_cls`, and the advantage estimators from verl's registry (`get_adv_estimator_fn`)."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("verl", reason="verl is not installed (pip install '.[verl]')")

from omegaconf import OmegaConf  # noqa: E402
from verl.trainer.ppo.core_algos import get_adv_estimator_fn  # noqa: E402
from verl.utils.dataset.rl_dataset import get_dataset_class  # noqa: E402

import loongrl.train.qwenlong15_verl  # noqa: E402,F401  (registers the estimators, as VERL_USE_EXTERNAL_MODULES does)
from loongrl.data.io import write_rows  # noqa: E402

QWEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                    "tokenizers", "qwen2.5")


# ------------------------------------------------------------------------------------------- the sampler
def _row(source: str, i: int) -> dict:
    return {"data_source": source, "prompt": [{"role": "user", "content": f"question {source} {i}"}],
            "ability": "longcontext_qa", "reward_model": {"style": "rule", "ground_truth": ["x"]},
            "extra_info": {"index": i}}


def test_task_balanced_dataset_lays_out_equal_tasks_per_batch_and_a_counted_remainder(tmp_path):
    from transformers import AutoTokenizer

    # 9 rows: book_ruler x3, keychain x5, longqa x1; batch 4 -> 9 // 4 = 2 batches (verl's epoch), 8 rows.
    # 3 tasks (sorted: book_ruler, keychain, longqa): 4 // 3 = 1 each, 1 extra slot: batch 0 gives it to task
    # (0*1+0) % 3 = book_ruler, batch 1 to (1*1+0) % 3 = keychain. So batch 0 = {book_ruler 2, keychain 1,
    # longqa 1}, batch 1 = {book_ruler 1, keychain 2, longqa 1}. Totals: book_ruler 3 of 3 (each once),
    # keychain 3 of 5 (2 unused: the remainder), longqa 2 of 1 (its one row twice: drawn again).
    rows = ([_row("book_ruler_x", i) for i in range(3)] + [_row("keychain_x", 10 + i) for i in range(5)]
            + [_row("longqa_x", 20)])
    path = write_rows(str(tmp_path / "rows.parquet"), rows)
    config = OmegaConf.create({"custom_cls": {"path": "pkg://loongrl.train.qwenlong15_verl",
                                              "name": "TaskBalancedRLDataset"},
                               "train_batch_size": 4, "seed": 0, "shuffle": False, "filter_overlong_prompts": False,
                               "max_prompt_length": 512, "prompt_key": "prompt", "cache_dir": str(tmp_path / "c")})
    cls = get_dataset_class(config)  # what verl's create_rl_dataset calls
    ds = cls(data_files=[path], tokenizer=AutoTokenizer.from_pretrained(QWEN), processor=None, config=config)
    assert len(ds) == 8
    sources = [ds.dataframe[i]["data_source"] for i in range(8)]
    ids = [int(ds.dataframe[i]["prompt"][0]["content"].rsplit(" ", 1)[1]) for i in range(8)]
    for batch, want in ((sources[:4], {"book_ruler_x": 2, "keychain_x": 1, "longqa_x": 1}),
                        (sources[4:], {"book_ruler_x": 1, "keychain_x": 2, "longqa_x": 1})):
        assert {s: batch.count(s) for s in set(batch)} == want
    assert sorted(i for i in ids if i < 10) == [0, 1, 2]
    assert len({i for i in ids if 10 <= i < 20}) == 3 and ids.count(20) == 2
    assert ds.task_stats == {"book_ruler": {"rows": 3, "drawn": 3, "unused": 0},
                             "keychain": {"rows": 5, "drawn": 3, "unused": 2},
                             "longqa": {"rows": 1, "drawn": 2, "unused": 0}}
    again = cls(data_files=[path], tokenizer=AutoTokenizer.from_pretrained(QWEN), processor=None, config=config)
    assert [again.dataframe[i]["prompt"][0]["content"] for i in range(8)] == [
        ds.dataframe[i]["prompt"][0]["content"] for i in range(8)]  # same seed, same order


# ----------------------------------------------------------------------------------------- the advantage
def _batch(rewards: list[float], width: int = 3):
    """Outcome rewards on the last response token of `width`; a row with reward None is verl's padding row
    (response mask 0)."""
    scores = torch.zeros(len(rewards), width)
    mask = torch.ones(len(rewards), width)
    for i, r in enumerate(rewards):
        if r is None:
            mask[i] = 0
        else:
            scores[i, -1] = r
    return scores, mask


# keychain: group g1 [1, 0], group g2 [1, 1]; longqa: g3 [1, 0], g4 [1, 0]; then a verl padding row.
UIDS = ["g1", "g1", "g2", "g2", "g3", "g3", "g4", "g4", "pad0"]
SOURCES = ["keychain_a", "keychain_b", "keychain_a", "keychain_a", "longqa_a", "longqa_a", "longqa_b", "longqa_b",
           "keychain_a"]
REWARDS = [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, None]
# By hand. keychain rewards [1, 0, 1, 1]: mean 0.75, unbiased var (0.0625 + 0.5625 + 0.0625 + 0.0625) / 3 = 0.25,
# std 0.5; g1 mean 0.5 -> (1 - 0.5) / 0.5 = 1, -1; g2 mean 1 -> 0, 0. longqa rewards [1, 0, 1, 0]: mean 0.5,
# var 4 x 0.25 / 3 = 1/3, std 0.57735; g3, g4 mean 0.5 -> +-0.5 / 0.57735 = +-0.866025. The padding row: 0, and
# in no statistic (counted in keychain, its reward 0 would give std 0.5477 and g1 +-0.9129).
# (GRPO's per-group std would give +-0.707107 for g1, g3 and g4.)
TASK_NORMALIZED = [1.0, -1.0, 0.0, 0.0, 0.866025, -0.866025, 0.866025, -0.866025, 0.0]


def _config(**aepo):
    return OmegaConf.create({"norm_adv_by_std_in_grpo": True, "loongrl": {"aepo": aepo} if aepo else {}})


def test_task_normalized_advantage_divides_by_the_tasks_std_across_the_batch():
    scores, mask = _batch(REWARDS)
    fn = get_adv_estimator_fn("task_normalized")  # verl's registry: what its compute_advantage calls
    adv, returns = fn(token_level_rewards=scores, response_mask=mask, index=UIDS, config=_config(),
                      data_source=SOURCES)
    assert adv[:, 0].tolist() == pytest.approx(TASK_NORMALIZED, abs=1e-5)
    assert torch.equal(adv, returns) and torch.equal(adv[-1], torch.zeros(3))  # per token, masked


def test_task_normalized_advantage_edge_cases_by_hand():
    fn = get_adv_estimator_fn("task_normalized")
    # one task, every reward 1: std 0, each (1 - 1) / (0 + 1e-6) = 0 (epsilon keeps it finite).
    scores, mask = _batch([1.0, 1.0])
    adv, _ = fn(token_level_rewards=scores, response_mask=mask, index=["g", "g"], config=_config(),
                data_source=["longqa_a"] * 2)
    assert adv[:, 0].tolist() == [0.0, 0.0]
    # a task with one row (math_dapo, group of one): group mean 0 (verl's GRPO), task std taken as 1: 0.5;
    # the other task (keychain [1, 0]: std 0.7071, g mean 0.5) -> +-0.5 / 0.7071 = +-0.707107.
    scores, mask = _batch([0.5, 1.0, 0.0])
    adv, _ = fn(token_level_rewards=scores, response_mask=mask, index=["m", "g", "g"], config=_config(),
                data_source=["math_dapo", "keychain_a", "keychain_a"])
    assert adv[:, 0].tolist() == pytest.approx([0.5, 0.707107, -0.707107], abs=1e-5)
    # without std normalisation: r - group mean: 0.5 - 0, 1 - 0.5, 0 - 0.5.
    no_std = OmegaConf.create({"norm_adv_by_std_in_grpo": False})
    adv, _ = fn(token_level_rewards=scores, response_mask=mask, index=["m", "g", "g"], config=no_std,
                data_source=["math_dapo", "keychain_a", "keychain_a"])
    assert adv[:, 0].tolist() == pytest.approx([0.5, 0.5, -0.5])


# ---------------------------------------------------------------------------------------------------- AEPO
def test_aepo_keeps_positive_advantage_and_reward_rows_truncated_to_the_world_size():
    fn = get_adv_estimator_fn("task_normalized")
    scores, mask = _batch(REWARDS)
    # batch entropy 0.4 inside (0.2, 0.6): rows with advantage > 0 and reward > 0 are 0 (g1), 4 (g3), 6 (g4);
    # 3 is not a multiple of 2 GPUs -> the first 2 in batch order: rows 0 and 4 keep their advantage; 6 and every
    # other row get 0.
    adv, _ = fn(token_level_rewards=scores, response_mask=mask, index=UIDS, data_source=SOURCES, batch_entropy=0.4,
                config=_config(entropy_low=0.2, entropy_high=0.6, world_size=2))
    assert adv[:, 0].tolist() == pytest.approx([1.0, 0, 0, 0, 0.866025, 0, 0, 0, 0], abs=1e-5)
    # entropy 0.6 is not strictly inside: nothing dropped, the advantages are the task-normalised ones.
    adv, _ = fn(token_level_rewards=scores, response_mask=mask, index=UIDS, data_source=SOURCES, batch_entropy=0.6,
                config=_config(entropy_low=0.2, entropy_high=0.6, world_size=2))
    assert adv[:, 0].tolist() == pytest.approx(TASK_NORMALIZED, abs=1e-5)
    # 4 GPUs: 3 kept rows truncate to 0 -> every advantage 0 (no policy gradient that step).
    adv, _ = fn(token_level_rewards=scores, response_mask=mask, index=UIDS, data_source=SOURCES, batch_entropy=0.4,
                config=_config(entropy_low=0.2, entropy_high=0.6, world_size=4))
    assert adv.abs().sum().item() == 0.0


def test_aepo_on_grpo_needs_a_positive_reward_not_only_a_positive_advantage():
    fn = get_adv_estimator_fn("grpo_aepo")
    # GRPO (verl's): group a [-0.5, -1.0] (overlong penalties): mean -0.75, std 0.353553 -> +0.707107, -0.707107;
    # group b [1, 0] -> +0.707107, -0.707107. Row 0 has advantage > 0 but reward -0.5: dropped; row 2 kept.
    scores, mask = _batch([-0.5, -1.0, 1.0, 0.0])
    adv, _ = fn(token_level_rewards=scores, response_mask=mask, index=["a", "a", "b", "b"], batch_entropy=1.0,
                config=_config(entropy_low=0.5, entropy_high=2.0, world_size=1))
    assert adv[:, 0].tolist() == pytest.approx([0, 0, 0.707107, 0], abs=1e-5)
