"""Context filling: the item's own passages plus random passages of the same source, to a token budget.

The token cost of a context does not depend on the order of its passages (each passage block is
counted on its own; headers depend only on how many blocks there are), so we first choose WHICH
passages fit, exactly, and only then decide WHERE they go.
"""

from __future__ import annotations

import random
from typing import Callable

PLACEMENTS = ("uniform", "gaussian", "fixed")


def fill_context(rng: random.Random, own: list[int], pool_size: int, budget: int,
                 block_tokens: Callable[[int], int], header_tokens: Callable[[int], int],
                 max_misses: int = 32) -> list[int] | None:
    """Own passages plus fillers drawn at random from the pool (never the item's own), as many as fit.

    `block_tokens(pid)` is the exact token count of a passage body with its trailing blank line,
    `header_tokens(i)` that of "Passage i:\\n". A filler that would overflow is skipped and another
    tried, until `max_misses` consecutive misses: the result lands within one small passage of the
    budget. Returns own + fillers in selection order, or None if the own passages alone overflow.
    """
    chosen = list(own)
    used = sum(block_tokens(p) for p in own) + sum(header_tokens(i) for i in range(1, len(own) + 1))
    if used > budget:
        return None
    taken = set(own)
    misses = 0
    draws_left = 20 * pool_size + 100  # bounds the loop when the pool is nearly used up
    while misses < max_misses and len(taken) < pool_size and draws_left > 0:
        draws_left -= 1
        pid = rng.randrange(pool_size)
        if pid in taken:
            continue
        cost = block_tokens(pid) + header_tokens(len(chosen) + 1)
        if used + cost <= budget:
            chosen.append(pid)
            taken.add(pid)
            used += cost
            misses = 0
        else:
            misses += 1
    return chosen


def place_passages(rng: random.Random, passages: list[int], gold: list[bool], policy: str = "uniform",
                   depth: float = 0.5, sigma: float = 0.3) -> list[int]:
    """Order the chosen passages; `gold[i]` marks passages[i] as a supporting (gold) passage.

    - uniform: one random permutation per item (the reference used one fixed permutation for all
      items, which put the gold passages in the same slots every time);
    - gaussian: gold passages at slots drawn from N(middle, sigma) truncated to +-0.95 of the
      half-width (the reference's "core-Gaussian-middle" variant); the rest shuffled around them;
    - fixed: gold passages together, starting at relative depth `depth` (0 = first, 1 = last).
    """
    n = len(passages)
    golds = [p for p, g in zip(passages, gold) if g]
    others = [p for p, g in zip(passages, gold) if not g]
    if policy == "uniform" or not golds:
        order = list(passages)
        rng.shuffle(order)
        return order
    rng.shuffle(others)
    slots: list[int | None] = [None] * n
    if policy == "fixed":
        if not 0.0 <= depth <= 1.0:
            raise ValueError(f"depth must be in [0, 1], got {depth}")
        start = round(depth * (n - len(golds)))
        for i, p in enumerate(golds):
            slots[start + i] = p
    elif policy == "gaussian":
        rng.shuffle(golds)
        free = set(range(n))
        for p in golds:
            for _ in range(50):
                z = rng.gauss(0.0, sigma)
                if abs(z) <= 0.95:
                    s = round((z / 0.95 + 1) / 2 * (n - 1))
                    if s in free:
                        break
            else:  # collisions kept happening: any free slot
                s = rng.choice(sorted(free))
            free.discard(s)
            slots[s] = p
    else:
        raise ValueError(f"unknown placement '{policy}' (choose from {', '.join(PLACEMENTS)})")
    it = iter(others)
    return [s if s is not None else next(it) for s in slots]
