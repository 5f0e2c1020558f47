"""Build long-context QA rows (plain or KeyChain) in verl's RL parquet schema.

One row per source item: fill the context to the token budget (fill.py), optionally hide the
question behind a key chain (keychain.py), count the final prompt exactly (tokens.py) and record
what analysis needs. Every random choice of an item comes from a generator seeded by
(seed, source, item id), so rows do not depend on worker count or on other items.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import RawArray

from loongrl.data import keychain as kc
from loongrl.data import prompts
from loongrl.data.fill import fill_context, place_passages
from loongrl.data.io import make_row
from loongrl.data.sources import LoadedSource, Record, clean
from loongrl.data.tokens import TokenCounter

ABILITY = "longcontext_qa"


@dataclass
class SynthConfig:
    """Everything that decides the rows of one synthesis run (recorded with the output).

    Args:
        source: Source format of `input`: hotpotqa, musique, 2wikimqa or jsonl.
        input: Source file (.json, .jsonl, optionally .gz) or `hf:[OWNER/NAME[:CONFIG]]` for the hub.
        tokenizer: Hugging Face tokenizer (local folder or hub name) the budget is measured with.
        max_prompt_tokens: Hard budget for the final prompt: system prompt + user message, rendered
            with the tokenizer's chat template including the generation prompt.
        keychain: True for KeyChain rows, False for plain long-context QA (same pipeline, no chains).
        num_chains: Chains per row, 1 real + the rest distractors. Default 4 * budget / 1024 (64 at 16K)
            for short keys, as in the final reference data; budget / 1024 (16 at 16K) for uuid36 keys, as
            in the reference revision that used them (64 chains of 36-char keys alone overflow 16K).
        hops: Keys per chain (4 in the paper).
        key_format: hex8 (released data, default), uuid36 (paper text) or alnumN.
        placement: Where the gold passages go: uniform (default), gaussian or fixed.
        depth: Relative depth of the gold passages for `placement=fixed`.
        sigma: Spread of the gold passages for `placement=gaussian`.
        system_prompt: `loongrl` (the paper's system prompt), `none`, a file path or the text.
        seed: Run seed; each item's generator is derived from (seed, source, item id).
        num: Rows to write (None: all usable items from `start`).
        start: Index of the first source item to use (file order), e.g. 2500 for disjoint sets.
        exclude: Item ids or normalised questions to leave out (e.g. evaluation questions).
        include: If set, only these item ids (e.g. the difficulty filter's output), still in file order.
        extra_pool: Extra filler passages (JSON list of {title, text}).
        strict: Stop at the first unusable input row instead of skipping and counting it.
        max_misses: Consecutive fillers that did not fit before the context is considered full.
        split: Value of extra_info.split.
    """

    source: str
    input: str
    tokenizer: str
    max_prompt_tokens: int = 16384
    keychain: bool = True
    num_chains: int | None = None
    hops: int = 4
    key_format: str = "hex8"
    placement: str = "uniform"
    depth: float = 0.5
    sigma: float = 0.3
    system_prompt: str | None = "loongrl"
    seed: int = 0
    num: int | None = None
    start: int = 0
    exclude: frozenset[str] = field(default_factory=frozenset)
    include: frozenset[str] | None = None
    extra_pool: str | None = None
    strict: bool = False
    max_misses: int = 32
    split: str = "train"

    def chains(self) -> int:
        if self.num_chains is not None:
            return self.num_chains
        per_1k = 1 if self.key_format == "uuid36" else 4
        return max(2, per_1k * self.max_prompt_tokens // 1024)


class Skip(Exception):
    """An item that cannot become a row; `reason` is the key it is counted under."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def item_rng(seed: int, source: str, item_id: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{source}\x00{item_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class RowBuilder:
    """Turns source items into rows. Holds per-passage caches (token counts, insertion sites)."""

    def __init__(self, config: SynthConfig, data: LoadedSource, counter: TokenCounter):
        self.cfg = config
        self.data = data
        self.counter = counter
        self.system = prompts.resolve_system_prompt(config.system_prompt)
        pool = data.pool
        self.bodies = [prompts.passage_body(t, x) for t, x in zip(pool.titles, pool.texts)]
        # Shared memory, so worker processes forked later share one cache (0 = not counted yet).
        self._block = RawArray("i", len(pool))
        self._sites: list[list[tuple[int, int]] | None] = [None] * len(pool)
        self._headers: list[int] = [0]
        if config.keychain:
            self.intro, tail_probe = prompts.KEYCHAIN_INTRO, prompts.KEYCHAIN_TAIL.format(head="0" * 8)
        else:
            self.intro, tail_probe = prompts.QA_INTRO, prompts.QA_TAIL.format(question="Who?")
        probe = self.intro + prompts.PASSAGE_HEADER.format(i=1) + "Title\nText.\n\n" + tail_probe
        self.overhead = counter.chat_overhead(self.system, probe) + counter.count(self.intro)
        # " {" + '"' vs '{"': the only token difference between the two inserted forms of a pair.
        self.lead = counter.count(' {"') - counter.count('{"')
        questions = [clean(r.question) for r in data.records]
        self._distractors = [i for i, q in enumerate(questions) if '"}' not in q]
        self._qnorm = [q.lower() for q in questions]

    # -- cached per-passage facts ------------------------------------------------------------------
    def block_tokens(self, pid: int) -> int:
        n = self._block[pid]
        if not n:
            n = self._block[pid] = self.counter.count(self.bodies[pid] + prompts.PASSAGE_JOIN)
        return n

    def header_tokens(self, i: int) -> int:
        while len(self._headers) <= i:
            self._headers.append(self.counter.count(prompts.PASSAGE_HEADER.format(i=len(self._headers))))
        return self._headers[i]

    def sites(self, pid: int) -> list[tuple[int, int]]:
        s = self._sites[pid]
        if s is None:
            s = self._sites[pid] = kc.insertion_sites(self.bodies[pid])
        return s

    # -- one row --------------------------------------------------------------------------------------
    def build(self, rec: Record) -> dict:
        cfg = self.cfg
        rng = item_rng(cfg.seed, cfg.source, rec.id)
        question = clean(rec.question)
        if not cfg.keychain:
            tail = prompts.QA_TAIL.format(question=question)
            fixed = self.overhead + self.counter.count(tail)
            layout = self._layout(rng, rec, cfg.max_prompt_tokens - fixed)
            ctx, offsets, _ = self._render(layout, {})
            return self._row(rec, question, ctx, tail, fixed + layout.tokens, layout, offsets, head="", chain=[],
                             link_depths=[])

        if '"}' in question:
            raise Skip("question_contains_pair_delimiter")
        questions = [question] + self._pick_distractor_questions(rng, rec, cfg.chains() - 1)
        for _ in range(4):  # new keys only if a key happens to occur in the text already
            chains = kc.make_chains(rng, cfg.chains(), cfg.hops, cfg.key_format)
            pairs = kc.chain_pairs(chains, questions)
            # Sum of count(pair + ".") in one call: joined by spaces, each later pair costs `lead` more.
            pair_tokens = self.counter.count(" ".join(p + "." for p in pairs)) - (len(pairs) - 1) * self.lead
            tail = prompts.KEYCHAIN_TAIL.format(head=chains[0][0])
            fixed = self.overhead + self.counter.count(tail)
            # Sentence sites add `lead` tokens each; reserve for the worst case before sites are known.
            reserve = pair_tokens + max(0, self.lead) * len(pairs)
            if fixed + reserve > cfg.max_prompt_tokens:
                raise Skip("chains_over_budget")
            layout = self._layout(rng, rec, cfg.max_prompt_tokens - fixed - reserve)
            keys = [k for c in chains for k in c]
            plain = "\n".join([self.bodies[p] for p in layout.order] + questions + [prompts.KEYCHAIN_TAIL])
            if not kc.keys_in_text(keys, plain, cfg.key_format):
                break
        else:
            raise Skip("key_collision")
        all_sites = [(slot, off, kind) for slot, pid in enumerate(layout.order) for off, kind in self.sites(pid)]
        if len(all_sites) < len(pairs):
            raise Skip("too_few_insertion_sites")
        chosen = rng.sample(range(len(all_sites)), len(pairs))
        order = list(range(len(pairs)))
        rng.shuffle(order)  # which pair goes to which site: the links of a chain land anywhere
        inserts: dict[int, list[tuple[int, str, int]]] = {}
        tokens = fixed + layout.tokens + pair_tokens
        for j, site_idx in zip(order, chosen):
            slot, off, kind = all_sites[site_idx]
            inserts.setdefault(slot, []).append((off, kc.inserted_form(pairs[j], kind), j))
            tokens += self.lead if kind == kc.SENTENCE else 0
        ctx, offsets, pair_pos = self._render(layout, inserts)
        real = range(cfg.hops)  # chain 0's pairs come first in `pairs`
        link_depths = [round(pair_pos[j] / len(ctx), 6) for j in real]
        return self._row(rec, question, ctx, tail, tokens, layout, offsets, head=chains[0][0], chain=chains[0],
                         link_depths=link_depths)

    def _pick_distractor_questions(self, rng: random.Random, rec: Record, k: int) -> list[str]:
        own = clean(rec.question).lower()
        picked: list[str] = []
        seen = {own}
        candidates = self._distractors
        for _ in range(20 * k + 100 if candidates else 0):  # bounded: a small source may run out
            if len(picked) == k:
                break
            i = candidates[rng.randrange(len(candidates))]
            if self.data.records[i].id == rec.id or self._qnorm[i] in seen:
                continue
            seen.add(self._qnorm[i])
            picked.append(clean(self.data.records[i].question))
        if len(picked) < k:
            raise Skip("too_few_distractor_questions")
        return picked

    def _layout(self, rng: random.Random, rec: Record, budget: int) -> "Layout":
        chosen = fill_context(rng, rec.passage_ids, len(self.data.pool), budget, self.block_tokens,
                              self.header_tokens, self.cfg.max_misses)
        if chosen is None:
            raise Skip("own_passages_over_budget")
        gold_set = {p for p, g in zip(rec.passage_ids, rec.gold) if g}
        order = place_passages(rng, chosen, [p in gold_set for p in chosen], self.cfg.placement, self.cfg.depth,
                               self.cfg.sigma)
        tokens = sum(self.block_tokens(p) for p in order) + sum(self.header_tokens(i) for i in
                                                                 range(1, len(order) + 1))
        return Layout(order, [p in gold_set for p in order], len(chosen) - len(rec.passage_ids), tokens)

    def _render(self, layout: "Layout", inserts: dict[int, list[tuple[int, str, int]]]):
        """Join the passage blocks, with pairs inserted; returns text, block offsets, pair offsets."""
        parts: list[str] = []
        pos = 0
        block_offsets, pair_pos = [], {}
        last_slot = len(layout.order) - 1
        for slot, pid in enumerate(layout.order):
            block_offsets.append(pos)
            header = prompts.PASSAGE_HEADER.format(i=slot + 1)
            parts.append(header)
            pos += len(header)
            body = self.bodies[pid]
            cut = 0
            for off, text, j in sorted(inserts.get(slot, ())):
                parts.append(body[cut:off])
                pos += off - cut
                pair_pos[j] = pos
                parts.append(text)
                pos += len(text)
                cut = off
            parts.append(body[cut:])
            pos += len(body) - cut
            if slot != last_slot:
                parts.append(prompts.PASSAGE_JOIN)
                pos += len(prompts.PASSAGE_JOIN)
        return "".join(parts), block_offsets, pair_pos

    def _row(self, rec, question, ctx, tail, tokens, layout, offsets, *, head, chain, link_depths) -> dict:
        cfg = self.cfg
        user = self.intro + ctx + prompts.PASSAGE_JOIN + tail
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": user}]
        if not self.counter.additive:  # unknown tokenizer: trust only a full count
            tokens = self.counter.count_chat(messages)
            if tokens > cfg.max_prompt_tokens:
                raise Skip("over_budget_unsupported_tokenizer")
        return make_row(
            f"{'keychain' if cfg.keychain else 'longqa'}_{cfg.source}", ABILITY, messages, rec.answers,
            split=cfg.split, id=rec.id, source=cfg.source, kind="keychain" if cfg.keychain else "qa",
            question=question, prompt_tokens=int(tokens), max_prompt_tokens=cfg.max_prompt_tokens,
            tokenizer=self.counter.name, tokenizer_fingerprint=self.counter.fingerprint, seed=cfg.seed,
            num_passages=len(layout.order), num_fillers=layout.fillers, placement=cfg.placement,
            gold_passage_depths=[round(offsets[i] / len(ctx), 6) for i, g in enumerate(layout.gold) if g],
            chain_head=head, chain=list(chain), real_link_depths=link_depths,
            num_chains=cfg.chains() if cfg.keychain else 0, hops=cfg.hops if cfg.keychain else 0,
            key_format=cfg.key_format if cfg.keychain else "",
        )


@dataclass
class Layout:
    order: list[int]  # pool ids in context order
    gold: list[bool]  # parallel to order
    fillers: int
    tokens: int  # exact tokens of all passage blocks and headers
