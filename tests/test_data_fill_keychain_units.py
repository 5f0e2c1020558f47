"""Context filling, passage placement and key chains on small inputs whose results are worked out by hand."""

from __future__ import annotations

import random
import re

import pytest

from loongrl.data import keychain as kc
from loongrl.data.fill import fill_context, place_passages


# ---- fill_context: exactly as many fillers as fit ---------------------------------------------------

SIZES = [10, 5, 5, 5, 5, 100]          # passage 0 is the item's own; 1-4 fit; 5 never fits


def _fill(budget, own=(0,), header=lambda i: i, sizes=SIZES, **kw):
    return fill_context(random.Random(0), list(own), len(sizes), budget, lambda p: sizes[p], header, **kw)


@pytest.mark.parametrize("budget, passages", [
    (11, 1),          # own: 10 + header("Passage 1") 1
    (17, 1),          # a second passage costs 5 + header 2 = 7: 18 > 17
    (18, 2),          # ... fits exactly
    (25, 2), (26, 3),  # the third costs 5 + 3
    (35, 4), (1000, 6),
])
def test_fill_takes_what_fits_counting_each_header_by_position(budget, passages):
    chosen = _fill(budget)
    assert chosen[0] == 0 and len(chosen) == passages and len(set(chosen)) == passages
    used = sum(SIZES[p] + i for i, p in enumerate(chosen, 1))
    assert used <= budget


def test_fill_without_room_for_the_own_passages():
    assert _fill(10) is None                                   # 10 + 1 > 10
    assert _fill(113, own=(0, 5)) == [0, 5]                    # 10 + 1 + 100 + 2 = 113, and nothing else fits
    assert _fill(112, own=(0, 5)) is None


def test_fill_stops_after_max_misses_in_a_row():
    sizes = [10] + [191] * 50 + [1] * 50                        # half the fillers never fit
    full = fill_context(random.Random(3), [0], len(sizes), 200, lambda p: sizes[p], lambda i: 0, max_misses=1000)
    one = fill_context(random.Random(3), [0], len(sizes), 200, lambda p: sizes[p], lambda i: 0, max_misses=1)
    assert len(full) == 51 and all(sizes[p] == 1 for p in full[1:])    # every small one, after any number of misses
    assert 1 <= len(one) < 51                                          # the first miss ends it


def test_fill_ends_when_the_pool_is_used_up():
    assert sorted(_fill(10_000, sizes=[1, 1, 1])) == [0, 1, 2]


# ---- place_passages -----------------------------------------------------------------------------------

PASSAGES = list(range(100, 110))
GOLD = [p in (103, 107) for p in PASSAGES]


def _slots(order):
    return [i for i, p in enumerate(order) if p in (103, 107)]


@pytest.mark.parametrize("depth, slots", [(0.0, [0, 1]), (1.0, [8, 9]), (0.5, [4, 5]), (0.3, [2, 3])])
def test_fixed_placement_puts_the_gold_passages_together_at_depth(depth, slots):
    order = place_passages(random.Random(1), PASSAGES, GOLD, "fixed", depth=depth)
    assert sorted(order) == PASSAGES and _slots(order) == slots          # start = round(depth * (10 - 2))
    assert [p for p in order if p not in (103, 107)] != [p for p in PASSAGES if p not in (103, 107)]  # others shuffled


def test_gaussian_placement_centres_the_gold_passages():
    order = place_passages(random.Random(1), PASSAGES + [110], GOLD + [False], "gaussian", sigma=0.001)
    # z ~ 0 puts a gold passage at slot round(0.5 * 10) = 5; the second collides until any free slot is taken
    assert sorted(order) == PASSAGES + [110] and 5 in _slots(order)
    spread = [s for seed in range(40)
              for s in _slots(place_passages(random.Random(seed), PASSAGES, GOLD, "gaussian", sigma=0.2))]
    assert 3.0 < sum(spread) / len(spread) < 6.0 and all(0 <= s <= 9 for s in spread)


def test_uniform_placement_is_a_seeded_permutation():
    a = place_passages(random.Random(5), PASSAGES, GOLD)
    assert sorted(a) == PASSAGES and a == place_passages(random.Random(5), PASSAGES, GOLD) != PASSAGES
    assert sorted(place_passages(random.Random(5), PASSAGES, [False] * 10, "fixed")) == PASSAGES   # no gold: uniform


def test_bad_placements_are_errors():
    with pytest.raises(ValueError, match=r"depth must be in \[0, 1\], got 1.5"):
        place_passages(random.Random(0), PASSAGES, GOLD, "fixed", depth=1.5)
    with pytest.raises(ValueError, match=r"unknown placement 'middle' \(choose from uniform, gaussian, fixed\)"):
        place_passages(random.Random(0), PASSAGES, GOLD, "middle")


# ---- keys and chains ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, pattern", [
    ("hex8", r"[0-9a-f]{8}"), ("uuid36", r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
    ("alnum12", r"[A-Za-z0-9]{12}"), ("alnum", r"[A-Za-z0-9]{8}"), ("alnum3", r"[A-Za-z0-9]{3}")])
def test_key_formats(fmt, pattern):
    rng = random.Random(7)
    keys = [kc.make_key(rng, fmt) for _ in range(200)]
    assert all(re.fullmatch(pattern, k) for k in keys) and len(set(keys)) > 150
    assert kc.key_regex(fmt) == pattern
    if fmt.startswith("alnum"):
        assert any(c.isupper() for k in keys for c in k) and any(c.isdigit() for k in keys for c in k)


def test_unknown_key_format():
    with pytest.raises(ValueError, match=r"unknown key format 'hex4' \(hex8, uuid36, alnumN with 1 <= N <= 64\)"):
        kc.make_key(random.Random(0), "hex4")
    with pytest.raises(ValueError, match="unknown key format 'hex4'"):
        kc.key_regex("hex4")


@pytest.mark.parametrize("fmt", ["alnum0", "alnum-3", "alnumx", "alnum 3", "alnum+3", "alnum65"])
def test_alnum_lengths_outside_1_to_64_are_unknown_formats(fmt):
    # alnum0 and alnum-3 made empty keys, of which no two are distinct: drawing a chain never ended
    for use in (lambda: kc.make_key(random.Random(0), fmt), lambda: kc.key_regex(fmt), lambda: kc.key_space(fmt)):
        with pytest.raises(ValueError, match=f"unknown key format '{re.escape(fmt)}'"):
            use()


def test_key_space_and_chains_that_need_more_keys_than_it_has():
    assert (kc.key_space("alnum1"), kc.key_space("alnum"), kc.key_space("hex8")) == (62, 62 ** 8, 2 ** 32)
    assert len({k for c in kc.make_chains(random.Random(0), 31, 2, "alnum1") for k in c}) == 62   # all of them
    with pytest.raises(ValueError, match="16 chains x 4 hops need 64 distinct keys; key format alnum1 has only 62"):
        kc.make_chains(random.Random(0), 16, 4, "alnum1")   # used to loop for ever


def test_chains_have_distinct_keys_and_end_in_their_questions():
    chains = kc.make_chains(random.Random(0), 12, 5, "alnum1")   # 60 keys out of 62 possible: collisions happen
    assert [len(c) for c in chains] == [5] * 12 and len({k for c in chains for k in c}) == 60
    assert kc.chain_pairs([["a", "b"], ["c", "d"]], ["Q0?", "Q1?"]) == [
        '{"a": "b"}', '{"b": "Q0?"}', '{"c": "d"}', '{"d": "Q1?"}']
    with pytest.raises(ValueError):
        kc.chain_pairs([["a", "b"]], ["Q0?", "Q1?"])


def test_keys_in_text_case_and_windows():
    keys = ["7a0f9ecc", "021553ad", "deadbeef"]
    text = 'x {"7A0F9ECC": "y"} and ab021553adcd, dead beef'
    assert kc.keys_in_text(keys, text, "hex8") == {"7a0f9ecc", "021553ad"}     # any case, inside longer runs
    assert kc.keys_in_text(["AbC12", "abc12"], "xxAbC12yy", "alnum5") == {"AbC12"}   # alnum keys are case-sensitive
    uuid = "0f8e5d2a-1b3c-4d5e-8f9a-0b1c2d3e4f5a"
    assert kc.keys_in_text([uuid], f"key {uuid.upper()}.", "uuid36") == {uuid}


def test_inserted_forms_and_sites():
    pair = kc.pair_text("k1", "v")
    assert pair == '{"k1": "v"}'
    assert kc.inserted_form(pair, kc.SENTENCE) == ' {"k1": "v"}.' and kc.inserted_form(pair, kc.LINE) == '{"k1": "v"}.'
    assert kc.insertion_sites("3rd item.\tx") == [(0, kc.LINE), (9, kc.SENTENCE)]
    assert kc.insertion_sites(" lead.") == [] and kc.insertion_sites("_x\ny") == [(3, kc.LINE)]


# ---- issue 13: draws written out by hand ------------------------------------------------------------------

class ScriptedRandom(random.Random):
    """A random source whose draws are written out in the test: `randrange` and `gauss` return the listed
    values in order, `choice` takes the last element; a draw beyond the script fails the test."""

    def __init__(self, ints=(), normals=()):
        super().__init__(0)
        self.ints, self.normals = list(ints), list(normals)

    def randrange(self, n):
        assert self.ints, "drew a passage beyond the script"
        value = self.ints.pop(0)
        assert 0 <= value < n
        return value

    def gauss(self, mu=0.0, sigma=1.0):
        assert self.normals, "drew a normal beyond the script"
        return self.normals.pop(0)

    def choice(self, seq):
        return seq[-1]


# Passage 0 is the item's own (10 tokens), 1 never fits (100), 2 and 3 do (5 each); every header costs 1.
BIG_SIZES = [10, 100, 5, 5]


def _scripted_fill(draws, budget=30, sizes=BIG_SIZES, **kw):
    rng = ScriptedRandom(draws)
    chosen = fill_context(rng, [0], len(sizes), budget, lambda p: sizes[p], lambda i: 1, **kw)
    return chosen, rng.ints


def test_fill_gives_up_after_32_misses_in_a_row_by_default():
    # 32 misses end the filling: the 33rd draw (a passage that fits) is never made
    assert _scripted_fill([1] * 32 + [2]) == ([0], [2])
    assert _scripted_fill([1] * 3 + [2], max_misses=3) == ([0], [2])
    # a passage that fits resets the count: 31 misses, a fit, 31 misses, a fit, then 32 misses
    assert _scripted_fill([1] * 31 + [2] + [1] * 31 + [3] + [1] * 32) == ([0, 2, 3], [])


def test_fill_draws_at_most_20_per_pool_passage_plus_100():
    # a pool of 2 whose free passage is drawn only late: 20 * 2 + 100 = 140 draws are allowed
    assert _scripted_fill([0] * 139 + [1], sizes=[10, 5]) == ([0, 1], [])
    assert _scripted_fill([0] * 140 + [1], sizes=[10, 5]) == ([0], [1])


def test_fill_stops_drawing_once_the_pool_is_used_up():
    assert _scripted_fill([1, 2], sizes=[10, 5, 5]) == ([0, 1, 2], [])   # a third draw would fail the script


def test_fill_counts_headers_from_passage_1():
    assert _fill(11, header=lambda i: 1, sizes=[10]) == [0]      # 10 + header("Passage 1") 1: fits exactly


@pytest.mark.parametrize("normals, slots", [
    ([0.95, -0.95], {9, 0}),        # slot = round((z / 0.95 + 1) / 2 * (10 - 1)): the edges of the truncation
    ([0.9, -0.95], {9, 0}),         # 0.9: round(8.76) = 9
    ([1.0, 0.5, -0.95], {7, 0}),    # 1.0 is outside +-0.95 and drawn again; 0.5: round(6.87) = 7
    ([0.9] * 51, {9, 8}),           # the second gold collides 50 times, then takes a free slot (the last: 8)
])
def test_gaussian_placement_maps_each_draw_to_its_slot(normals, slots):
    rng = ScriptedRandom(normals=normals)
    order = place_passages(rng, PASSAGES, GOLD, "gaussian")
    assert sorted(order) == PASSAGES and set(_slots(order)) == slots and rng.normals == []


def test_placement_defaults_are_the_middle_and_sigma_0_3():
    assert _slots(place_passages(random.Random(2), PASSAGES, GOLD, "fixed")) == [4, 5]   # depth 0.5: round(0.5 * 8)
    for seed in range(5):
        assert (place_passages(random.Random(seed), PASSAGES, GOLD, "gaussian")
                == place_passages(random.Random(seed), PASSAGES, GOLD, "gaussian", sigma=0.3))


def test_alnum_keys_draw_every_letter_and_digit_alike():
    from collections import Counter

    rng = random.Random(0)
    chars = Counter("".join(kc.make_key(rng, "alnum12") for _ in range(1000)))
    assert len(chars) == 62 and max(chars.values()) < 260        # 12,000 characters: about 194 of each


def test_keys_in_text_default_alnum_length_and_lower_case_uuids():
    assert kc.keys_in_text(["AbC12xyz", "zzzzzzzz"], "see AbC12xyz.", "alnum") == {"AbC12xyz"}   # alnum = alnum8
    uuid = "0f8e5d2a-1b3c-4d5e-8f9a-0b1c2d3e4f5a"
    assert kc.keys_in_text([uuid], f"key {uuid}.", "uuid36") == {uuid}


def test_a_body_starting_with_a_one_letter_word_has_a_line_site():
    assert kc.insertion_sites("I am. Yes") == [(0, kc.LINE), (5, kc.SENTENCE)]
