"""Book RULER, the retrieval part of LoongRL's training mix: RULER's "special magic" needles in a book.

- multikey: 20 needles with distinct word-pair keys and one 7-digit value each; one key is asked; gold is its value.
- multivalue: one key with 20 values; the question asks for all of them; gold is the 20 values (scored all-of).

The haystack is a random stretch of a book-like text (default: the Paul Graham essays shipped in ../shared;
any plain-text book such as a PG19 one via `book`), the needles sit at random sentence boundaries, and the
prompt is RULER's niah template without the answer prefix (LoongRL cuts the input after its last "?").
The needle generator is the evaluation harness's RULER generator (`loongrl.eval.ruler`), so training and
evaluation needles are made by the same code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

from loongrl.data.io import make_row
from loongrl.data.prompts import resolve_system_prompt
from loongrl.data.tokens import get_counter
from loongrl.tasks.ruler import RulerData, fit, gen_niah

KINDS = ("multikey", "multivalue")


@dataclass
class BookRulerConfig:
    """One Book RULER part.

    Args:
        kind: multikey (20 keys, one asked) or multivalue (one key, 20 values, all asked).
        tokenizer: HF tokenizer the budget is measured with.
        num: Rows to make (the paper's mix uses 512 of each kind).
        max_prompt_tokens: Budget for the final chat prompt (system prompt included).
        needles: Keys (multikey) or values (multivalue) per row (20 in the paper).
        book: Plain-text haystack file (.txt or .txt.gz); None: the essays in ../shared.
        system_prompt: `loongrl`, `none`, a file or the text.
        seed: Rows depend only on (seed, kind, row number).
    """

    kind: str
    tokenizer: str
    num: int = 512
    max_prompt_tokens: int = 16384
    needles: int = 20
    book: str | None = None
    system_prompt: str | None = "loongrl"
    seed: int = 0

    def needle_args(self) -> dict:
        if self.kind not in KINDS:
            raise ValueError(f"unknown Book RULER kind {self.kind!r} (choose from {', '.join(KINDS)})")
        k, v = (self.needles, 1) if self.kind == "multikey" else (1, self.needles)
        return {"type_haystack": "book", "type_needle_k": "words", "type_needle_v": "numbers",
                "num_needle_k": k, "num_needle_v": v, "num_needle_q": 1}


def book_ruler_rows(cfg: BookRulerConfig, data: RulerData | None = None) -> Iterator[dict]:
    """`cfg.num` rows in the canonical schema, each exactly within the token budget."""
    data = data or RulerData(book_path=cfg.book)
    counter = get_counter(cfg.tokenizer)
    system = resolve_system_prompt(cfg.system_prompt)
    args = cfg.needle_args()
    overhead = counter.chat_overhead(system, gen_niah(data, args, random.Random(0), 50).user)
    budget = cfg.max_prompt_tokens

    def messages(user: str) -> list[dict]:
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]

    for i in range(cfg.num):
        def build(size: int):
            return gen_niah(data, args, random.Random(f"{cfg.seed}/book_ruler_{cfg.kind}/{i}"), size)

        def count(sample) -> int:
            return overhead + counter.count(sample.user)

        sample, tokens, _ = fit(build, count, budget, first=700 * budget // 1024)
        if not counter.additive:  # overhead + piece is exact only for additive tokenizers: check whole
            exact = counter.count_chat(messages(sample.user))
            if exact > budget:
                sample, _, _ = fit(build, lambda s: count(s) + exact - tokens, budget, sample.meta["units"])
            tokens = counter.count_chat(messages(sample.user))
        question = sample.user.rsplit("\n", 1)[-1]
        yield make_row(f"book_ruler_{cfg.kind}", "ruler_niah", messages(sample.user), sample.answers,
                       split="train", id=f"book_ruler_{cfg.kind}_{cfg.seed}_{i}", source="book", kind="book_ruler",
                       question=question, prompt_tokens=tokens, max_prompt_tokens=budget, tokenizer=counter.name,
                       tokenizer_fingerprint=counter.fingerprint, seed=cfg.seed)
