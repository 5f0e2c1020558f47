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


# ---- issue 13: exact rows, exact bounds, draws by difficulty --------------------------------------

def _row(i: int, source: str = "keychain_hotpotqa", tokens: int = 100) -> dict:
    return {"data_source": source, "prompt": [{"role": "user", "content": f"q{i}"}],
            "extra_info": {"id": f"r{i}", "prompt_tokens": tokens}}


def test_prompt_token_counter_counts_tokens_of_the_rendered_chat():
    from transformers import AutoTokenizer

    from conftest import QWEN

    tokenizer = AutoTokenizer.from_pretrained(QWEN)
    row = {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}],
           "completion": [{"role": "assistant", "content": "Ok"}]}
    # <|im_start|> system \n S <|im_end|> \n <|im_start|> user \n Hi <|im_end|> \n <|im_start|> assistant \n
    assert transitions.prompt_token_counter(tokenizer)(row) == 15
    # ... then Ok <|im_end|> \n instead of the generation prompt's end: the whole SFT sequence
    assert transitions.prompt_token_counter(tokenizer, with_completion=True)(row) == 18


def test_prompt_token_counter_equals_the_synthesizer_count_on_real_rows(rows):
    from transformers import AutoTokenizer

    from conftest import QWEN

    count = transitions.prompt_token_counter(AutoTokenizer.from_pretrained(QWEN))
    # the synthesizer counts piecewise with its own renderer; the engines render with the tokenizer
    assert [count(r) for r in rows] == [r["extra_info"]["prompt_tokens"] for r in rows]


def test_length_filter_bounds_are_exclusive_below_and_inclusive_above():
    rows = [_row(i, tokens=n) for i, n in enumerate([99, 100, 101, 199, 200, 201])]
    rows[0]["data_source"] = "longqa_musique"
    kept, stats = transitions.length_filter(rows, transitions.recorded_prompt_tokens, min_tokens=100, max_tokens=200)
    assert [r["extra_info"]["prompt_tokens"] for r in kept] == [101, 199, 200]
    assert stats == {"kept": 3, "min_prompt_tokens": 100, "max_prompt_tokens": 200,
                     "dropped": {"under_min_prompt_tokens": {"longqa_musique": 1, "keychain_hotpotqa": 1},
                                 "over_max_prompt_tokens": {"keychain_hotpotqa": 1}}}
    everything, _ = transitions.length_filter(rows, transitions.recorded_prompt_tokens)
    assert len(everything) == 6                                  # no bounds: min 0, no max


def test_recorded_prompt_tokens_and_missing_files_are_clear_errors(tmp_path):
    assert transitions.recorded_prompt_tokens(_row(1, tokens=321)) == 321
    with pytest.raises(ValueError, match="row r1 has no extra_info.prompt_tokens; pass a tokenizer"):
        transitions.recorded_prompt_tokens({"extra_info": {"id": "r1"}})
    with pytest.raises(transitions.RecipeError, match="missing.parquet: data file not found"):
        transitions.read_rows(str(tmp_path / "missing.parquet"))


def test_mixture_prefers_its_own_window_and_runs_without_a_counter(kc_files):
    mix = DataMixture(components=[DataComponent(kc_files["musique"])], max_prompt_tokens=1000)
    rows, stats = transitions.build_mixture(mix, 0, transitions.recorded_prompt_tokens, max_prompt_tokens=20000)
    assert rows == [] and stats["length_filter"]["max_prompt_tokens"] == 1000   # the mixture's own bound wins
    rows, stats = transitions.build_mixture(DataMixture(components=[DataComponent(kc_files["musique"])]), 0, None, 10)
    assert len(rows) == 6 and stats["length_filter"] == {"kept": 6, "skipped": "no tokenizer to count with"}
    assert stats["components"][0]["sha256"] == transitions.file_sha256(kc_files["musique"])
    ids = [r["extra_info"]["id"] for r in read_rows(kc_files["musique"])]
    assert sorted(r["extra_info"]["id"] for r in rows) == sorted(ids) and [r["extra_info"]["id"] for r in rows] != ids


def test_hard_mining_keeps_exactly_the_unsolved_rows():
    rows = [_row(i, "keychain_hotpotqa" if i < 3 else "longqa_musique") for i in range(6)]
    accs = [0.0, 0.0, 0.875, 1.0, 0.5, 1.0]
    kept, stats = transitions.hard_mine(rows, _stats(accs))
    assert [r["extra_info"]["id"] for r in kept] == ["r0", "r1", "r2", "r4"]
    assert stats == {"input": 6, "kept": 4, "dropped_solved": 2, "solved_threshold": 1.0,
                     "by_source": {"keychain_hotpotqa": {"kept_unsolved": 2, "kept_partial": 1},
                                   "longqa_musique": {"dropped_solved": 2, "kept_partial": 1}}}
    looser, _ = transitions.hard_mine(rows, _stats(accs), solved_threshold=0.875)
    assert [r["extra_info"]["id"] for r in looser] == ["r0", "r1", "r4"]     # 7/8 counts as solved now
    with pytest.raises(ValueError, match="6 rows but 5 item statistics"):
        transitions.hard_mine(rows, _stats(accs[:5]))


def test_retrospective_sampling_draws_by_difficulty():
    # two hard items, one to carry: difficulty 1.0 vs 0.5, so the harder one is drawn with
    # probability 1.0 / (1.0 + 0.5) = 2/3 (uniform drawing would give 1/2)
    prev = [_row(0), _row(1), _row(2)]
    stats = [{"mean_reward": 0.0}, {"mean_reward": 0.5}, {"mean_reward": 0.75}]
    new = [_row(10 + i, "longqa_musique") for i in range(3)]
    picks = Counter()
    for seed in range(600):
        pool, s = transitions.retrospective_sample(prev, stats, new, hard_threshold=0.5, carry_share=0.25, seed=seed)
        [carried] = [r["extra_info"]["id"] for r in pool if r["extra_info"]["id"] in ("r0", "r1", "r2")]
        picks[carried] += 1
    assert 0.61 < picks["r0"] / 600 < 0.72 and picks["r2"] == 0
    assert s == {"previous": 3, "hard": 2, "not_hard": 1, "wanted": 1, "carried": 1, "hard_not_carried": 1,
                 "new": 3, "pool": 4, "carried_share": 0.25, "hard_threshold": 0.5, "carry_share": 0.25,
                 "by_source": {"keychain_hotpotqa": {"hard": 2, "carried": 1}, "longqa_musique": {"new": 3}}}


def test_retrospective_share_rounds_up_and_zero_carries_nothing():
    prev = [_row(i) for i in range(10)]
    new = [_row(10 + i) for i in range(10)]
    _, s = transitions.retrospective_sample(prev, _stats([0.0] * 10), new, 0.5, 0.2, seed=1)
    assert s["wanted"] == 3 and s["carried"] == 3 and s["pool"] == 13   # ceil(0.2 / 0.8 * 10) = ceil(2.5)
    assert s["by_source"] == {"keychain_hotpotqa": {"hard": 10, "carried": 3, "new": 10}}
    _, s = transitions.retrospective_sample(prev, _stats([0.0] * 10), new[:2], 0.5, 0.25, seed=1)
    assert (s["wanted"], s["pool"], s["carried_share"]) == (1, 3, 0.3333)  # ceil(1/3 * 2) = 1; 1/3 to 4 places
    pool, s = transitions.retrospective_sample(prev, _stats([0.0] * 10), new, 0.5, 0.0, seed=1)
    assert s["wanted"] == 0 and sorted(r["extra_info"]["id"] for r in pool) == sorted(f"r{10 + i}" for i in range(10))
    with pytest.raises(ValueError, match="10 rows but 9 item statistics"):
        transitions.retrospective_sample(prev, _stats([0.0] * 9), new, 0.5, 0.2, seed=1)


def test_mining_statistics_line_up_with_their_rows(rows, server):
    """Sample-and-score through the real OpenAI backend (a scripted server answers by question and sample
    seed): each row's statistics are its own, so mining drops exactly the rows answered right every time."""
    from loongrl.generation.backends import SamplingConfig, make_backend
    from loongrl.generation.sample import score_items
    from loongrl.rewards.router import row_scorer

    picked = rows[:4] + rows[6:8]                        # KeyChain and plain QA rows
    right = {0: 4, 1: 0, 2: 3, 3: 4, 4: 1, 5: 0}        # row -> samples (of 4) answered with the gold
    # a prompt's end names its row: the question (plain QA) or the chain's head key (KeyChain)
    by_tail = {r["prompt"][-1]["content"][-300:]: (i, r["reward_model"]["ground_truth"][0]) for i, r in enumerate(picked)}

    def respond(body):
        i, gold = by_tail[body["messages"][-1]["content"][-300:]]
        return f"<think>follow the chain</think> \\boxed{{{gold if body['seed'] < right[i] else 'Zanzibar'}}}"

    server.reset()
    server.respond = respond
    backend = make_backend(f"openai:{server.base_url}#scripted", concurrency=4, max_retries=0)
    stats = score_items(picked, backend, SamplingConfig(n=4, temperature=1.0, max_new_tokens=32), row_scorer(),
                        desc=None)
    assert [s["mean_acc"] for s in stats] == [1.0, 0.0, 0.75, 1.0, 0.25, 0.0]
    assert [s["mean_reward"] for s in stats] == [1.0, 0.0, 0.75, 1.0, 0.25, 0.0] and {s["n"] for s in stats} == {4}
    kept, _ = transitions.hard_mine(picked, stats)
    assert [r["extra_info"]["id"] for r in kept] == [picked[i]["extra_info"]["id"] for i in (1, 2, 4, 5)]


def test_length_filter_keeps_a_one_token_prompt_by_default_and_names_a_row_without_extra_info():
    kept, stats = transitions.length_filter([_row(0, tokens=1), _row(1, tokens=0)], transitions.recorded_prompt_tokens)
    assert [r["extra_info"]["id"] for r in kept] == ["r0"]                # default window: 0 < n
    assert stats["dropped"] == {"under_min_prompt_tokens": {"keychain_hotpotqa": 1}}
    nameless = _row(2, tokens=0)
    del nameless["data_source"]                                            # counted under "?", not lost
    assert transitions.length_filter([nameless], transitions.recorded_prompt_tokens)[1]["dropped"] == {
        "under_min_prompt_tokens": {"?": 1}}
    with pytest.raises(ValueError, match="^row None has no extra_info.prompt_tokens"):
        transitions.recorded_prompt_tokens({"prompt": []})


def test_mixture_records_each_part_and_takes_a_part_whole_when_max_items_is_its_size(kc_files, tmp_path):
    import hashlib

    path = kc_files["musique"]
    whole, stats = transitions.build_mixture(DataMixture(components=[DataComponent(path, repeat=2)]), 5, None, None)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert stats["components"] == [{"path": path, "sha256": digest, "taken": 6, "repeat": 2}]
    # max_items equal to the part's 6 rows: no subsample, so the same seed gives the same order
    same, _ = transitions.build_mixture(DataMixture(components=[DataComponent(path, max_items=6, repeat=2)]), 5, None,
                                        None)
    assert [r["extra_info"]["id"] for r in same] == [r["extra_info"]["id"] for r in whole]
