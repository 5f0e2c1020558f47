"""Exact token counts without re-tokenising whole prompts.

The budget applies to the final prompt as the training engine sees it: the chat template rendered
by the tokenizer (`apply_chat_template(..., add_generation_prompt=True, tokenize=False)`) and then
tokenised without added special tokens, which is what verl's RLHFDataset does.

Counting is additive for the tokenizers this module recognises (byte-level BPE with the Qwen2 or
the cl100k / Llama-3 split regex, NFC or no normaliser). For those, a regex pre-token never spans
a newline followed by a letter or digit, so text can be counted piece by piece at such boundaries
and the pieces cached (see keychain.py for why the inserted key-value pairs are additive too).
For such tokenizers the counting runs on `tiktoken` over the same vocabulary (about 7x faster
than the Hugging Face tokenizer), after checking that both agree on a probe text.
Other tokenizers fall back to the Hugging Face tokenizer, and the synthesiser verifies each
finished prompt with a full count.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from functools import lru_cache

# The project's shipped Qwen2.5 tokenizer when run beside ../shared, else the hub tokenizer.
_LOCAL_QWEN = os.path.join("..", "shared", "data", "tokenizers", "qwen2.5")
_HUB_QWEN = "Qwen/Qwen2.5-7B-Instruct"


def default_tokenizer() -> str:
    return os.environ.get("LOONGRL_TOKENIZER") or (_LOCAL_QWEN if os.path.isdir(_LOCAL_QWEN) else _HUB_QWEN)

# Split regexes for which the boundary argument above holds.
_ADDITIVE_PATTERNS = {
    # Qwen2 / Qwen2.5 / Qwen3
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    # cl100k / Llama-3
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}

_PROBE = (
    "Passage 12:\nThe Eiffel Tower (French: tour Eiffel) is 330 m tall. Größe: 3.5 km²; naïve café — 東京.\n\n"
    'In the context above, starting from "7a0f9ecc".\nWho wrote "Hamlet"?  It\'s 1999\'s  best...\r\n\tdone'
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte <-> printable-character map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def load_tokenizer(name_or_path: str):
    """A Hugging Face tokenizer from a local folder or a hub name (hub needs network)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path)


class TokenCounter:
    """Counts tokens of text pieces and of whole chat prompts for one tokenizer.

    `count(text)` counts a plain text piece (no special tokens); `count_chat(messages)` renders and
    counts a whole prompt the slow, reference way (used by `validate` and the fallback path).
    `additive` says whether piecewise counts sum exactly to the count of the joined text at the
    boundaries the synthesiser uses.
    """

    def __init__(self, name_or_path: str):
        self.name = name_or_path
        self.tokenizer = load_tokenizer(name_or_path)
        serialized = self.tokenizer.backend_tokenizer.to_str()
        self.fingerprint = hashlib.sha256(serialized.encode()).hexdigest()[:16]
        spec = json.loads(serialized)
        self.additive = _is_additive(spec)
        specials = {t for t in self.tokenizer.all_special_tokens if t}
        specials |= {t.content for t in self.tokenizer.added_tokens_decoder.values() if t.content}
        # Text containing a special-token string is tokenised by the HF tokenizer, which splits it out.
        self._special = re.compile("|".join(map(re.escape, sorted(specials, key=len, reverse=True)))) \
            if specials else None
        self._nfc = (spec.get("normalizer") or {}).get("type") == "NFC"
        self._encode = None
        if self.additive:
            self._encode = _tiktoken_encoder(spec)
            if self._encode is not None and self._encode(self._norm(_PROBE)) != len(self._hf_ids(_PROBE)):
                self._encode = None  # disagreement: never trust the fast path for this vocabulary
        self._overhead: dict[str, int] = {}

    # -- plain text ---------------------------------------------------------------------------
    def _norm(self, text: str) -> str:
        if self._nfc and not unicodedata.is_normalized("NFC", text):
            return unicodedata.normalize("NFC", text)
        return text

    def _hf_ids(self, text: str) -> list[int]:
        return self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids

    def count(self, text: str) -> int:
        """Tokens of `text` as a piece of a prompt (special-token strings count as specials)."""
        if self._encode is not None and (self._special is None or not self._special.search(text)):
            return self._encode(self._norm(text))
        return len(self._hf_ids(text))

    @property
    def fast(self) -> bool:
        return self._encode is not None

    # -- whole prompts --------------------------------------------------------------------------
    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def count_chat(self, messages: list[dict]) -> int:
        """Reference count of a full prompt: render the chat template, tokenise the string once."""
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def chat_overhead(self, system: str | None, probe_user: str) -> int:
        """Tokens the chat template adds around a user message (system prompt included).

        Measured once per system prompt with a probe user message that starts and ends like the
        real ones; `count_chat(msgs) == chat_overhead + count(user)` for additive tokenizers.
        """
        key = f"{system}\x00{probe_user}"
        if key not in self._overhead:
            msgs = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": probe_user}]
            rendered = self.render(msgs)
            if rendered.count(probe_user) != 1:
                raise ValueError(f"tokenizer {self.name}: chat template does not insert the user message verbatim")
            self._overhead[key] = self.count_chat(msgs) - self.count(probe_user)
        return self._overhead[key]


def _is_additive(spec: dict) -> bool:
    norm = spec.get("normalizer")
    if norm is not None and norm.get("type") != "NFC":
        return False
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return False
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    if len(steps) != 2 or steps[0].get("type") != "Split" or steps[1].get("type") != "ByteLevel":
        return False
    pattern = (steps[0].get("pattern") or {}).get("Regex")
    return pattern in _ADDITIVE_PATTERNS and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")


def _tiktoken_encoder(spec: dict):
    """A `text -> token count` function on tiktoken for a byte-level BPE vocabulary, or None."""
    try:
        import tiktoken
    except ImportError:
        return None
    vocab = spec["model"]["vocab"]
    u2b = {c: b for b, c in _bytes_to_unicode().items()}
    try:
        ranks = {bytes(u2b[ch] for ch in tok): i for tok, i in vocab.items()}
    except KeyError:
        return None
    if sorted(ranks.values()) != list(range(len(ranks))):
        return None  # tiktoken needs dense ranks
    pre = spec["pre_tokenizer"]
    pattern = pre["pretokenizers"][0]["pattern"]["Regex"]
    try:
        enc = tiktoken.Encoding(f"loongrl-{len(ranks)}", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    except Exception:  # noqa: BLE001 - any construction failure means: use the HF tokenizer
        return None
    encode = enc.encode_ordinary
    return lambda text: len(encode(text))


@lru_cache(maxsize=4)
def get_counter(name_or_path: str) -> TokenCounter:
    """One counter per tokenizer per process (workers inherit it through fork)."""
    return TokenCounter(name_or_path)
