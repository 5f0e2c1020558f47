"""Transitions over real synthesized rows: mixture, length filter, hard mining, retrospective sampling."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import read_rows
from loongrl.train import transitions
from loongrl.train.recipe import DataComponent, DataMixture


@pytest.fixture(scope="module")
def rows(kc_files, qa_files):
    return read_rows(kc_files["hotpotqa"]) + read_rows(qa_files["musique"])


def _stats(accs):
    return [{"mean_acc": a, "mean_reward": a, "n": 8, "mean_chars": 10.0} for a in accs]


def test_mixture_subsets_repeats_and_filters(kc_files, qa_files, tmp_path):
    mix = DataMixture(components=[DataComponent(kc_files["musique"], max_items=4),
                                  DataComponent(qa_files["2wikimqa"], repeat=2)])
    rows, stats = transitions.build_mixture(mix, seed=3, count=transitions.recorded_prompt_tokens,
                                            max_prompt_tokens=None)
    assert len(rows) == 4 + 2 * 6 and stats["rows"] == 16
    assert [p["taken"] for p in stats["components"]] == [4, 6]
    again, _ = transitions.build_mixture(mix, seed=3, count=transitions.recorded_prompt_tokens, max_prompt_tokens=None)
    assert [r["extra_info"]["id"] for r in again] == [r["extra_info"]["id"] for r in rows]  # seeded
    lengths = sorted(r["extra_info"]["prompt_tokens"] for r in rows)
    cut = lengths[len(lengths) // 2]
    kept, fstats = transitions.build_mixture(mix, 3, transitions.recorded_prompt_tokens, max_prompt_tokens=cut)
    assert all(r["extra_info"]["prompt_tokens"] <= cut for r in kept)
    dropped = fstats["length_filter"]["dropped"]["over_max_prompt_tokens"]
    assert len(kept) + sum(dropped.values()) == 16 and len(kept) < 16


def test_length_filter_window_counts_by_reason(rows):
    lengths = sorted(r["extra_info"]["prompt_tokens"] for r in rows)
    lo, hi = lengths[2], lengths[-3]
    kept, stats = transitions.length_filter(rows, transitions.recorded_prompt_tokens, lo, hi)
    assert all(lo < r["extra_info"]["prompt_tokens"] <= hi for r in kept)
    n_drop = sum(sum(v.values()) for v in stats["dropped"].values())
    assert len(kept) + n_drop == len(rows) and set(stats["dropped"]) <= {"over_max_prompt_tokens", "under_min_prompt_tokens"}


def test_prompt_token_counter_uses_chat_template(rows):
    from transformers import AutoTokenizer

    from conftest import QWEN

    count = transitions.prompt_token_counter(AutoTokenizer.from_pretrained(QWEN))
    n = count(rows[0])
    assert isinstance(n, int) and n >= rows[0]["extra_info"]["prompt_tokens"]


def test_hard_mining_drops_only_fully_solved(rows):
    accs = [1.0, 0.0, 0.5, 1.0, 0.875, 0.0] * (len(rows) // 6) + [1.0] * (len(rows) % 6)
    kept, stats = transitions.hard_mine(rows, _stats(accs))
    assert len(kept) == sum(a < 1.0 for a in accs) and stats["dropped_solved"] == sum(a == 1.0 for a in accs)
    by = stats["by_source"]
    assert set(by) == {"keychain_hotpotqa", "longqa_musique"}
    assert sum(sum(c.values()) for c in by.values()) == len(rows)
    with pytest.raises(ValueError):
        transitions.hard_mine(rows, _stats(accs[:-1]))


def test_retrospective_carries_hard_share(rows):
    prev, new = rows[:6], rows[6:]
    accs = [0.0, 0.25, 1.0, 0.5, 0.75, 0.0]
    pool, stats = transitions.retrospective_sample(prev, _stats(accs), new, hard_threshold=0.5, carry_share=0.25, seed=0)
    assert stats["hard"] == 4 and stats["wanted"] == 2 and stats["carried"] == 2
    carried = Counter(r["extra_info"]["id"] for r in pool) - Counter(r["extra_info"]["id"] for r in new)
    hard_ids = {r["extra_info"]["id"] for r, a in zip(prev, accs) if a <= 0.5}
    assert set(carried) <= hard_ids and sum(carried.values()) == 2
    pool2, _ = transitions.retrospective_sample(prev, _stats(accs), new, 0.5, 0.25, seed=0)
    assert [r["extra_info"]["id"] for r in pool2] == [r["extra_info"]["id"] for r in pool]
    everything, s = transitions.retrospective_sample(prev, _stats(accs), new, 0.5, 0.9, seed=0)
    assert s["carried"] == 4 and s["hard_not_carried"] == 0  # runs out of hard items, says so


def test_write_rows_renumbers_and_roundtrips(rows, tmp_path):
    path = transitions.write_rows(str(tmp_path / "out.parquet"), rows[::-1])
    back = read_rows(path)
    assert [r["extra_info"]["index"] for r in back] == list(range(len(rows)))
    assert [r["extra_info"]["id"] for r in back] == [r["extra_info"]["id"] for r in rows[::-1]]
    assert not (tmp_path / "out.parquet.tmp").exists()
