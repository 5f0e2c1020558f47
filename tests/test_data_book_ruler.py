"""Book RULER rows: needles, gold, exact budget, scoring all-of."""

from __future__ import annotations

import re

import pytest
from conftest import QWEN

from loongrl.data.book_ruler import BookRulerConfig, book_ruler_rows
from loongrl.rewards.router import compute_score

NEEDLE = re.compile(r"One of the special magic numbers for ([a-z]+-[a-z]+) is: (\d{7})\.")


@pytest.fixture(scope="module")
def rows():
    return {kind: list(book_ruler_rows(BookRulerConfig(kind=kind, tokenizer=QWEN, num=3, max_prompt_tokens=4096,
                                                       seed=2)))
            for kind in ("multikey", "multivalue")}


def test_multikey_asks_one_of_twenty_keys(rows, counter):
    for row in rows["multikey"]:
        user = row["prompt"][-1]["content"]
        needles = NEEDLE.findall(user)
        keys = [k for k, _ in needles]
        assert len(needles) == 20 and len(set(keys)) == 20
        asked = re.search(r"What is the special magic number for ([a-z]+-[a-z]+) mentioned", user).group(1)
        assert row["reward_model"]["ground_truth"] == [dict(needles)[asked]]
        assert user.endswith("mentioned in the provided text?")  # no answer prefix
        assert 4096 * 0.99 <= counter.count_chat(row["prompt"]) == row["extra_info"]["prompt_tokens"] <= 4096
        assert row["data_source"] == "book_ruler_multikey" and row["ability"] == "ruler_niah"


def test_multivalue_asks_for_all_twenty_values(rows):
    for row in rows["multivalue"]:
        user = row["prompt"][-1]["content"]
        needles = NEEDLE.findall(user)
        assert len(needles) == 20 and len({k for k, _ in needles}) == 1
        gold = row["reward_model"]["ground_truth"]
        assert sorted(gold) == sorted(v for _, v in needles)
        # Needles sit between sentences of the haystack, not inside them.
        for m in NEEDLE.finditer(user):
            before = user[:m.start()].rstrip()
            assert before.endswith((".", "!", "?", "afterwards.")), before[-40:]
        all_values = "<think>found them</think> \\boxed{" + ", ".join(gold) + "}"
        missing_one = "<think>found them</think> \\boxed{" + ", ".join(gold[:-1]) + "}"
        assert compute_score(row["data_source"], all_values, gold)["score"] == 1.0
        assert compute_score(row["data_source"], missing_one, gold)["score"] == 0.0


def test_rows_differ_and_repeat_with_seed(rows):
    users = [r["prompt"][-1]["content"] for r in rows["multikey"]]
    assert len(set(users)) == 3
    again = list(book_ruler_rows(BookRulerConfig(kind="multikey", tokenizer=QWEN, num=3, max_prompt_tokens=4096,
                                                 seed=2)))
    assert [r["prompt"][-1]["content"] for r in again] == users
