"""KeyChain: chains of key-value pairs hidden in the context, one of which leads to the real question.

A chain [k1, k2, k3, k4] becomes the pairs {"k1": "k2"}, {"k2": "k3"}, {"k3": "k4"}, {"k4": "<question>"},
written literally (no JSON escaping, as in the reference and the paper's figure). Chain 0 ends in the
real question; every other chain ends in a question of another item of the same source.

Insertion sites. The reference inserts after any of `[\\n.?]`. We insert after a stopper only where
the join is a token boundary for the supported tokenizers, which keeps prompt counts exact and cheap:
- sentence site: after "." or "?" followed by a space or tab; the pair goes in as ` {"k": "v"}.`
  (the punctuation run before it already ends at the space; the pair's closing `"}.` ends at it too);
- line site: after a newline followed by a letter or digit (the start of a passage's title or text);
  the pair goes in as `{"k": "v"}.` (no pre-token spans a newline followed by a letter or digit).
So a pair never splits a number ("3.5"), a "Passage i:" header or the blank line between passages,
and each inserted pair adds exactly `count(pair)` tokens to the prompt (tokens.py).
"""

from __future__ import annotations

import random
import re
import uuid
from functools import lru_cache

SENTENCE, LINE = 1, 0

_SENTENCE_SITE = re.compile(r"[.?](?=[ \t])")
_LINE_SITE = re.compile(r"\n(?=[^\W_])")  # [^\W_] is exactly str.isalnum: letters and digits

KEY_FORMATS = ("hex8", "uuid36", "alnum8")
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
MAX_ALNUM = 64  # longer than any key worth hiding (uuid36 is 36); also bounds what one key costs to draw
_ALNUM_FORMAT = re.compile(r"alnum([0-9]*)")


@lru_cache(maxsize=None)  # make_key asks for every key it draws: parse each format once
def key_length(key_format: str) -> int:
    """Characters in one key of this format (`alnum` alone is alnum8); ValueError for an unknown format."""
    if key_format == "hex8":
        return 8
    if key_format == "uuid36":
        return 36
    m = _ALNUM_FORMAT.fullmatch(key_format)
    if m and 1 <= int(m.group(1) or 8) <= MAX_ALNUM:
        return int(m.group(1) or 8)
    raise ValueError(f"unknown key format '{key_format}' (hex8, uuid36, alnumN with 1 <= N <= {MAX_ALNUM})")


def key_space(key_format: str) -> int:
    """How many distinct keys the format can produce."""
    n = key_length(key_format)
    return {"hex8": 16 ** 8, "uuid36": 2 ** 122}.get(key_format, len(ALNUM) ** n)


def make_key(rng: random.Random, key_format: str) -> str:
    """One random key. `hex8`: 8 lowercase hex chars (the released data); `uuid36`: canonical uuid4
    (the paper's text); `alnumN`: N random letters and digits (camera-ready ablation)."""
    n = key_length(key_format)
    if key_format == "hex8":
        return f"{rng.getrandbits(32):08x}"
    if key_format == "uuid36":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return "".join(rng.choices(ALNUM, k=n))


def key_regex(key_format: str) -> str:
    """Regex matching exactly one key of this format."""
    n = key_length(key_format)
    if key_format == "hex8":
        return r"[0-9a-f]{8}"
    if key_format == "uuid36":
        return r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    return r"[A-Za-z0-9]{%d}" % n


def _key_alphabet_run(key_format: str) -> re.Pattern:
    """Runs of characters that could contain a key, for the absence check."""
    n = key_length(key_format)
    chars = {"hex8": "0-9a-fA-F", "uuid36": "0-9a-fA-F-"}.get(key_format, "A-Za-z0-9")
    return re.compile(r"[%s]{%d,}" % (chars, n)), n


def make_chains(rng: random.Random, num_chains: int, hops: int, key_format: str) -> list[list[str]]:
    """`num_chains` chains of `hops` keys each, all keys distinct."""
    space = key_space(key_format)
    if num_chains * hops > space:  # the drawing loop below would never end
        raise ValueError(f"{num_chains} chains x {hops} hops need {num_chains * hops} distinct keys; "
                         f"key format {key_format} has only {space}")
    seen: set[str] = set()
    chains = []
    for _ in range(num_chains):
        chain = []
        while len(chain) < hops:
            k = make_key(rng, key_format)
            if k not in seen:
                seen.add(k)
                chain.append(k)
        chains.append(chain)
    return chains


def keys_in_text(keys: list[str], text: str, key_format: str) -> set[str]:
    """The keys that occur anywhere in `text` (case-insensitively for hex formats)."""
    run, n = _key_alphabet_run(key_format)
    fold = key_format in ("hex8", "uuid36")
    windows = set()
    for m in run.finditer(text):
        s = m.group(0).lower() if fold else m.group(0)
        windows.update(s[i:i + n] for i in range(len(s) - n + 1))
    return {k for k in keys if k in windows}


def pair_text(key: str, value: str) -> str:
    return '{"' + key + '": "' + value + '"}'


def chain_pairs(chains: list[list[str]], questions: list[str]) -> list[str]:
    """Pair strings of all chains; chain j ends in questions[j] (j = 0 is the real question)."""
    pairs = []
    for chain, question in zip(chains, questions, strict=True):
        for a, b in zip(chain, chain[1:] + [question]):
            pairs.append(pair_text(a, b))
    return pairs


def insertion_sites(body: str) -> list[tuple[int, int]]:
    """(offset, kind) of every place in a passage body where a pair may go (see module docstring).

    Offset 0 counts as a line site: the body follows its "Passage i:\\n" header.
    """
    sites = [(m.end(), SENTENCE) for m in _SENTENCE_SITE.finditer(body)]
    sites += [(m.end(), LINE) for m in _LINE_SITE.finditer(body)]
    if body[:1].isalnum():
        sites.append((0, LINE))
    sites.sort()
    return sites


def inserted_form(pair: str, kind: int) -> str:
    """The literal text inserted at a site of this kind."""
    return (" " if kind == SENTENCE else "") + pair + "."
