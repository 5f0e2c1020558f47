"""The demo-cpu task: miniature KeyChain items a tiny model can learn on a laptop CPU.

An item hides `num_chains` chains of `hops` short keys among shuffled key-value pairs (written with
`loongrl.data.keychain.pair_text`, exactly as in the real KeyChain data). Chain 0 starts at the head key
named in the question and ends in the answer word; the other chains end in dead-end words (DECOYS) and act
as distractors. The gold trace follows the chain inside `<think>` and boxes the answer, so the shared
scorer (`loongrl.rewards.router`, data_source `keychain_demo`) grades it unchanged:

    <think>a->Q</think> \\boxed{river}

Length is the number of pairs: held-out items at "4x length" carry four times as many chains.
Rows use the project's RL parquet schema; SFT rows add a `completion` chat column with the gold trace.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from loongrl.data.keychain import chain_pairs, make_chains
from loongrl.data.prompts import LOONGRL_SYSTEM

from loongrl.data.io import write_rows

ANSWERS = ("apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "ocean", "maple", "robot",
           "candle", "garden", "silver", "rocket", "forest", "violin", "castle", "pepper", "rabbit",
           "saturn", "winter", "copper", "island", "mirror")
# Decoy chains end in dead-end words (the real KeyChain's decoy chains end in other questions): the model
# must tell the chain's answer from the decoys and copy it; a model this small cannot learn general
# associative recall in CPU-minutes, so the decoys are recognisable by content.
DECOYS = ("nothing", "empty", "unknown", "none", "void", "blank", "missing", "null")
DATA_SOURCE = "keychain_demo"
QUESTION = 'Start from "{head}" and follow the chain of keys to its end. What is the final value?'


def gold_trace(chain: list[str], answer: str) -> str:
    return "<think>" + "->".join(chain) + "</think> \\boxed{" + answer + "}"


def make_item(rng: random.Random, num_chains: int, hops: int, key_format: str = "alnum1",
              split: str = "train", system_prompt: bool = False) -> dict:
    """One row in the RL parquet schema (extra_info.index is set by the writer)."""
    chains = make_chains(rng, num_chains, hops, key_format)
    ends = [rng.choice(ANSWERS)] + [rng.choice(DECOYS) for _ in range(num_chains - 1)]
    pairs = chain_pairs(chains, ends)
    rng.shuffle(pairs)
    question = QUESTION.format(head=chains[0][0])
    user = "\n".join(pairs) + "\n" + question
    return {
        "data_source": DATA_SOURCE,
        "prompt": ([{"role": "system", "content": LOONGRL_SYSTEM}] if system_prompt else [])
        + [{"role": "user", "content": user}],
        "ability": "longcontext_qa",
        "reward_model": {"style": "rule", "ground_truth": [ends[0]]},
        "extra_info": {
            "split": split, "index": 0, "id": f"demo-{split}-{rng.getrandbits(32):08x}", "source": "demo",
            "kind": "keychain", "question": question, "answers": [ends[0]], "prompt_tokens": None,
            "max_prompt_tokens": None, "tokenizer": "", "tokenizer_fingerprint": "", "seed": None,
            "num_passages": 0, "num_fillers": 0, "placement": "", "gold_passage_depths": [],
            "chain_head": chains[0][0], "chain": chains[0], "real_link_depths": [],
            "num_chains": num_chains, "hops": hops, "key_format": key_format,
        },
    }


def with_gold_completion(rows: list[dict]) -> list[dict]:
    """RL rows plus a `completion` column holding the gold trace (TRL prompt-completion format)."""
    return [dict(r, completion=[{"role": "assistant", "content": gold_trace(r["extra_info"]["chain"],
                                                                           r["extra_info"]["answers"][0])}])
            for r in rows]


def make_demo_data(out_dir: str, seed: int = 0, num_sft: int = 400, num_rl: int = 400, num_eval: int = 100,
                   num_chains: int = 3, hops: int = 2, long_factors: Sequence[int] = (4,), rl_factor: int = 1,
                   key_format: str = "alnum1", system_prompt: bool = False) -> dict:
    """Write the demo files to `out_dir`; returns their paths by name.

    sft: gold traces at training length; rl: RL rows (disjoint items) with `rl_factor * num_chains` chains;
    eval_1x and eval_{f}x for each f in `long_factors`: held-out items with `num_chains` and `f * num_chains`
    chains.
    `system_prompt` adds LoongRL's system prompt (off by default: on a tiny model it is most of the
    sequence, and without it "4x length" is about 4x the prompt tokens).
    """
    files = {}
    # One generator per file, so that resizing one part (e.g. more RL items) leaves the others unchanged.
    rng = random.Random(f"{seed}-sft")
    sft = [make_item(rng, num_chains, hops, key_format, system_prompt=system_prompt) for _ in range(num_sft)]
    files["sft"] = write_rows(os.path.join(out_dir, "sft.parquet"), with_gold_completion(sft))
    parts = [("rl", num_rl, num_chains * rl_factor, "train")]
    parts += [(f"eval_{f}x", num_eval, num_chains * f, "test") for f in [1, *long_factors]]
    for name, n, chains, split in parts:
        rng = random.Random(f"{seed}-{name}")
        files[name] = write_rows(os.path.join(out_dir, f"{name}.parquet"),
                                 [make_item(rng, chains, hops, key_format, split, system_prompt) for _ in range(n)])
    return files
