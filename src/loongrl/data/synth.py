"""Build long-context QA rows (plain or KeyChain) in verl's RL parquet schema.

One row per source item: fill the context to the token budget (fill.py), optionally hide the
question behind a key chain (keychain.py), count the final prompt exactly (tokens.py) and record
what analysis needs. Every random choice of an item comes from a generator seeded by
(seed, source, item id), so rows do not depend on worker count or on other items.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
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
        key_format: hex8 (released data, default), uuid36 (paper text) or alnumN (N letters and digits,
            1 <= N <= 64); the format must make at least twice the distinct keys a row needs (chains x hops).
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

    def __post_init__(self):
        for name, low in (("max_prompt_tokens", 1), ("hops", 1), ("num_chains", 1), ("num", 0), ("start", 0)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{name.replace('_', '-')}: must be >= {low}, got {value}")
        if not 0 <= self.depth <= 1:
            raise ValueError(f"depth: must be in [0, 1], got {self.depth}")
        try:
            space = kc.key_space(self.key_format)
        except ValueError as e:
            raise ValueError(f"key-format: {e}") from None
        # Twice the keys a row needs: distinct keys are then drawn in < 1.4 tries each on average.
        need = self.chains() * self.hops
        if self.keychain and space < 2 * need:
            raise ValueError(f"key-format: {self.key_format} makes {space} distinct keys, fewer than twice the "
                             f"{need} a row needs ({self.chains()} chains x {self.hops} hops); use longer keys "
                             "(e.g. alnum8), hex8 or uuid36")

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
    """Turns source items into rows. Holds per-passage caches (token counts, insertion sites).

    With an additive tokenizer (tokens.py) piecewise counts are exact and a row is assembled once. With
    any other tokenizer they are estimates: the cost of a passage is measured in context (between two
    headers, so what the joins cost is included) and the cost of a key-value pair at each kind of site
    is learned on real passages; every assembled prompt is then counted whole, trimmed (fillers
    dropped) while it is over the budget and topped up while a filler still fits. A row is skipped only
    if it is over the budget with no filler left.
    """

    MAX_TOPUPS = 2  # attempts to add fillers into the slack a full count revealed
    ESTIMATE_MARGIN = 0.05  # an item whose own passages are estimated this far over the budget is skipped uncounted

    def __init__(self, config: SynthConfig, data: LoadedSource, counter: TokenCounter):
        self.cfg = config
        self.data = data
        self.counter = counter
        self.exact = counter.additive
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
        # Tokens a pair adds beyond count(pair + ".") at a site of each kind: proven for additive tokenizers.
        self.site_extra = {kc.SENTENCE: self.lead, kc.LINE: 0} if self.exact else self._learn_site_extra()
        questions = [clean(r.question) for r in data.records]
        self._distractors = [i for i, q in enumerate(questions) if '"}' not in q]
        self._qnorm = [q.lower() for q in questions]
        self.last_fit: tuple[str, ...] = ()  # how the last row was fitted: verified, trimmed, topped_up

    # -- cached per-passage facts ------------------------------------------------------------------
    def block_tokens(self, pid: int) -> int:
        n = self._block[pid]
        if not n:
            block = self.bodies[pid] + prompts.PASSAGE_JOIN
            if self.exact:
                n = self.counter.count(block)
            else:  # the passage's cost in context: its two joins with the headers around it included
                a, b = prompts.PASSAGE_HEADER.format(i=1), prompts.PASSAGE_HEADER.format(i=2)
                n = self.counter.count(a + block + b) - self.counter.count(a) - self.counter.count(b)
            n = self._block[pid] = max(n, 1)
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

    def _learn_site_extra(self) -> dict[int, int]:
        """What inserting a pair costs beyond count(pair + "."), per site kind: the most common value over
        pairs inserted at real sites of up to 64 pool passages (an estimate; rows are verified whole)."""
        rng = random.Random(0)
        seen: dict[int, Counter] = {kc.SENTENCE: Counter(), kc.LINE: Counter()}
        fmt = self.cfg.key_format
        for pid in rng.sample(range(len(self.bodies)), min(64, len(self.bodies))):
            block = prompts.PASSAGE_HEADER.format(i=1) + self.bodies[pid] + prompts.PASSAGE_JOIN
            base = self.counter.count(block)
            for off, kind in self.sites(pid)[:4]:
                pair = kc.pair_text(kc.make_key(rng, fmt), kc.make_key(rng, fmt))
                at = len(prompts.PASSAGE_HEADER.format(i=1)) + off
                with_pair = block[:at] + kc.inserted_form(pair, kind) + block[at:]
                seen[kind][self.counter.count(with_pair) - base - self.counter.count(pair + ".")] += 1
        return {kind: (c.most_common(1)[0][0] if c else 0) for kind, c in seen.items()}

    def _pair_tokens(self, pairs: list[str]) -> int:
        """Sum of count(pair + ".") over the pairs."""
        if self.exact:  # one call: joined by spaces, each later pair costs `lead` more
            return self.counter.count(" ".join(p + "." for p in pairs)) - (len(pairs) - 1) * self.lead
        return sum(self.counter.count(p + ".") for p in pairs)

    # -- one row --------------------------------------------------------------------------------------
    def build(self, rec: Record) -> dict:
        cfg = self.cfg
        rng = item_rng(cfg.seed, cfg.source, rec.id)
        question = clean(rec.question)
        if not cfg.keychain:
            tail = prompts.QA_TAIL.format(question=question)
            a = self._fit(rng, rec, tail, [], 0)
            return self._row(rec, question, tail, a, head="", chain=[])

        if '"}' in question:
            raise Skip("question_contains_pair_delimiter")
        questions = [question] + self._pick_distractor_questions(rng, rec, cfg.chains() - 1)
        for _ in range(4):  # new keys only if a key happens to occur in the text already
            chains = kc.make_chains(rng, cfg.chains(), cfg.hops, cfg.key_format)
            pairs = kc.chain_pairs(chains, questions)
            tail = prompts.KEYCHAIN_TAIL.format(head=chains[0][0])
            # Reserve the worst case of the sites' extra tokens before the sites are known.
            reserve = self._pair_tokens(pairs) + max(0, *self.site_extra.values()) * len(pairs)
            a = self._fit(rng, rec, tail, pairs, reserve)
            keys = [k for c in chains for k in c]
            plain = "\n".join([self.bodies[p] for p in a.order] + questions + [prompts.KEYCHAIN_TAIL])
            if not kc.keys_in_text(keys, plain, cfg.key_format):
                break
        else:
            raise Skip("key_collision")
        return self._row(rec, question, tail, a, head=chains[0][0], chain=chains[0])

    def _fit(self, rng: random.Random, rec: Record, tail: str, pairs: list[str], reserve: int) -> "Assembly":
        """Choose, place and (with pairs) interleave passages so that the prompt fits the budget exactly."""
        budget = self.cfg.max_prompt_tokens
        fixed = self.overhead + self.counter.count(tail)
        far = budget * (1 + self.ESTIMATE_MARGIN) + 32  # surely over, even for an estimate
        if fixed + reserve > (budget if self.exact else far):
            raise Skip("chains_over_budget")
        chosen = self._fill(rng, rec.passage_ids, budget - fixed - reserve)
        if chosen is None:
            # Exact counts decide at once. An estimate decides only far over the budget (the in-context
            # estimate is off by well under 1 %); near it, the full count below decides.
            if self.exact or fixed + reserve + self._passages_tokens(rec.passage_ids) > far:
                raise Skip("own_passages_over_budget")
            chosen = list(rec.passage_ids)
        a = self._arrange(rng, rec, chosen, tail, pairs, fixed)
        if self.exact:
            self.last_fit = ()
            return a
        best, topups, trimmed, topped_up = None, 0, False, False
        while True:
            a.tokens = self.counter.count_chat(self._messages(self._user(a.context, tail)))
            if a.tokens <= budget:
                best, topped_up = a, topups > 0
                if topups == self.MAX_TOPUPS:
                    break
                topups += 1
                more = self._fill(rng, chosen, self._passages_tokens(chosen) + budget - a.tokens)
                if len(more) == len(chosen):
                    break
                chosen = more
            elif best is not None:  # a top-up overshot: keep the verified assembly
                break
            else:
                chosen, trimmed = self._drop_fillers(chosen, len(rec.passage_ids), a.tokens - budget), True
            a = self._arrange(rng, rec, chosen, tail, pairs, fixed)
        self.last_fit = ("verified",) + (("trimmed",) if trimmed else ()) + (("topped_up",) if topped_up else ())
        return best

    def _fill(self, rng: random.Random, own: list[int], budget: int) -> list[int] | None:
        return fill_context(rng, own, len(self.data.pool), budget, self.block_tokens, self.header_tokens,
                            self.cfg.max_misses)

    def _passages_tokens(self, chosen: list[int]) -> int:
        return sum(self.block_tokens(p) for p in chosen) + sum(self.header_tokens(i) for i in
                                                               range(1, len(chosen) + 1))

    def _drop_fillers(self, chosen: list[int], num_own: int, over: int) -> list[int]:
        """`chosen` without the fewest filler tokens that cover `over`: the smallest filler at least as
        large, else the largest ones. Raises Skip when there is no filler left to drop."""
        kept = list(chosen)
        while over > 0:
            fillers = kept[num_own:]
            if not fillers:
                raise Skip("own_passages_over_budget")
            cost = {p: self.block_tokens(p) + self.header_tokens(len(kept)) for p in fillers}
            enough = [p for p in fillers if cost[p] >= over]
            drop = min(enough, key=cost.get) if enough else max(fillers, key=cost.get)
            kept.remove(drop)
            over -= cost[drop]
        return kept

    def _arrange(self, rng: random.Random, rec: Record, chosen: list[int], tail: str, pairs: list[str],
                 fixed: int) -> "Assembly":
        """Place the chosen passages, insert the pairs at random sites and render the context; `tokens` is
        the prompt's piecewise count (exact for additive tokenizers)."""
        cfg = self.cfg
        gold_set = {p for p, g in zip(rec.passage_ids, rec.gold) if g}
        order = place_passages(rng, chosen, [p in gold_set for p in chosen], cfg.placement, cfg.depth, cfg.sigma)
        tokens = fixed + self._passages_tokens(order)
        inserts: dict[int, list[tuple[int, str, int]]] = {}
        if pairs:
            all_sites = [(slot, off, kind) for slot, pid in enumerate(order) for off, kind in self.sites(pid)]
            if len(all_sites) < len(pairs):
                raise Skip("too_few_insertion_sites")
            picked = rng.sample(range(len(all_sites)), len(pairs))
            which = list(range(len(pairs)))
            rng.shuffle(which)  # which pair goes to which site: the links of a chain land anywhere
            tokens += self._pair_tokens(pairs)
            for j, site_idx in zip(which, picked):
                slot, off, kind = all_sites[site_idx]
                inserts.setdefault(slot, []).append((off, kc.inserted_form(pairs[j], kind), j))
                tokens += self.site_extra[kind]
        ctx, offsets, pair_pos = self._render(order, inserts)
        return Assembly(order, [p in gold_set for p in order], len(chosen) - len(rec.passage_ids), ctx, offsets,
                        pair_pos, tokens)

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

    def _render(self, order: list[int], inserts: dict[int, list[tuple[int, str, int]]]):
        """Join the passage blocks, with pairs inserted; returns text, block offsets, pair offsets."""
        parts: list[str] = []
        pos = 0
        block_offsets, pair_pos = [], {}
        last_slot = len(order) - 1
        for slot, pid in enumerate(order):
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

    def _user(self, context: str, tail: str) -> str:
        return self.intro + context + prompts.PASSAGE_JOIN + tail

    def _messages(self, user: str) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": user}]

    def _row(self, rec: Record, question: str, tail: str, a: "Assembly", *, head: str, chain: list[str]) -> dict:
        cfg = self.cfg
        ctx = a.context
        link_depths = [round(a.pair_pos[j] / len(ctx), 6) for j in range(cfg.hops)] if chain else []
        return make_row(
            f"{'keychain' if cfg.keychain else 'longqa'}_{cfg.source}", ABILITY, self._messages(self._user(ctx, tail)),
            rec.answers, split=cfg.split, id=rec.id, source=cfg.source, kind="keychain" if cfg.keychain else "qa",
            question=question, prompt_tokens=int(a.tokens), max_prompt_tokens=cfg.max_prompt_tokens,
            tokenizer=self.counter.name, tokenizer_fingerprint=self.counter.fingerprint, seed=cfg.seed,
            num_passages=len(a.order), num_fillers=a.fillers, placement=cfg.placement,
            gold_passage_depths=[round(a.offsets[i] / len(ctx), 6) for i, g in enumerate(a.gold) if g],
            chain_head=head, chain=list(chain), real_link_depths=link_depths,
            num_chains=cfg.chains() if cfg.keychain else 0, hops=cfg.hops if cfg.keychain else 0,
            key_format=cfg.key_format if cfg.keychain else "",
        )


@dataclass
class Assembly:
    """One arrangement of a row's context."""

    order: list[int]  # pool ids in context order
    gold: list[bool]  # parallel to order
    fillers: int
    context: str
    offsets: list[int]  # character offset of each passage block
    pair_pos: dict[int, int]  # pair index -> character offset (chain 0's pairs come first)
    tokens: int  # the prompt's tokens: exact (additive tokenizer or counted whole)
