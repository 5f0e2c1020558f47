"""Token counts of text pieces and of whole chat prompts, for any Hugging Face tokenizer, without torch.

The budget applies to the final prompt as the training engine sees it: the chat template rendered
by the tokenizer (`apply_chat_template(..., add_generation_prompt=True, tokenize=False)`) and then
tokenised without added special tokens, which is what verl's RLHFDataset does.

Loading ("engine"). A local tokenizer folder is read with `tokenizers` (tokenizer.json) and its chat
template rendered with jinja2 exactly as transformers renders it (chat_template.py): no transformers or
torch import, so a data command starts in about a second instead of ~10 s. That is the tokenizer
transformers itself builds when the tokenizer class keeps tokenizer.json as it is: the generic
`TokenizersBackend` / `PreTrainedTokenizerFast`, and `Qwen2Tokenizer` when the file holds the pipeline
that class rebuilds (checked below). Other classes are rebuilt by transformers in their own way (e.g.
transformers 5's `GPT2Tokenizer` drops a `Digits` pre-tokenizer step), so those, and hub names, are
loaded with transformers (engine "transformers"): counts always match what verl and TRL see.

Additivity. For byte-level BPE with the Qwen2 or the cl100k / Llama-3 split regex (NFC or no
normaliser) a regex pre-token never spans a newline followed by a letter or digit, so text can be
counted piece by piece at such boundaries and the pieces cached (see keychain.py for why the inserted
key-value pairs are additive too). For those the counting runs on `tiktoken` over the same vocabulary
(about 7x faster than `tokenizers`), after checking both agree on a probe text. For every other
tokenizer piecewise counts are only an estimate: the synthesiser learns what each join costs and
verifies every finished prompt with a full count (synth.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import unicodedata
from functools import lru_cache

from loongrl.data.chat_template import ChatTemplate, read_json

# The project's shipped Qwen2.5 tokenizer when run beside ../shared, else the hub tokenizer.
_LOCAL_QWEN = os.path.join("..", "shared", "data", "tokenizers", "qwen2.5")
_HUB_QWEN = "Qwen/Qwen2.5-7B-Instruct"

ENGINES = ("auto", "tokenizers", "transformers")


def default_tokenizer() -> str:
    return os.environ.get("LOONGRL_TOKENIZER") or (_LOCAL_QWEN if os.path.isdir(_LOCAL_QWEN) else _HUB_QWEN)


_QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
# Split regexes for which the boundary argument above holds: Qwen2/2.5/3, and cl100k / Llama-3.
_ADDITIVE_PATTERNS = {_QWEN_PATTERN, _QWEN_PATTERN.replace(r"|\p{N}|", r"|\p{N}{1,3}|")}

# tokenizer_config.json `tokenizer_class` values for which transformers uses tokenizer.json unchanged.
_VERBATIM_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast"}
_QWEN_CLASSES = {"Qwen2Tokenizer", "Qwen2TokenizerFast"}

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


def _holds_vocabulary(folder: str) -> bool:
    """Whether a folder has a file a tokenizer's vocabulary is stored in (tokenizer.json, vocab.json,
    vocab.txt, a sentencepiece .model, a .tiktoken file)."""
    names = os.listdir(folder)
    return any(f.startswith(("tokenizer.", "vocab.")) or f.endswith((".model", ".tiktoken")) for f in names)


def load_tokenizer(name_or_path: str):
    """A transformers tokenizer from a local folder or a hub name (hub needs network)."""
    folder = os.path.expanduser(name_or_path)
    if name_or_path.startswith((os.sep, ".", "~")) and not os.path.isdir(folder):
        raise FileNotFoundError(f"tokenizer {name_or_path}: no such folder (a local tokenizer folder, or a hub id "
                                "such as Qwen/Qwen2.5-7B-Instruct)")
    # else transformers' five-line "Couldn't instantiate the backend tokenizer", which names no folder
    if os.path.isdir(folder) and not _holds_vocabulary(folder):
        raise FileNotFoundError(f"tokenizer {name_or_path}: no tokenizer files in this folder (tokenizer.json, or "
                                "vocab.json / vocab.txt / a sentencepiece .model with tokenizer_config.json)")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        if os.path.isdir(folder):  # transformers' message, on one line
            raise ValueError(f"tokenizer {name_or_path}: transformers cannot load it ({' '.join(str(e).split())})") \
                from None
        if not isinstance(e, OSError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        # a hub id with no network: say what to pass instead of transformers' traceback
        raise FileNotFoundError(f"tokenizer {name_or_path}: not a local folder, and not loadable from the hub "
                                f"({first}); pass a local tokenizer folder (--tokenizer, or $LOONGRL_TOKENIZER)") from None


def _steps(spec: dict | None, key: str) -> list[dict]:
    """The steps of a normalizer / pre-tokenizer spec, a Sequence flattened ([] for none)."""
    if not spec:
        return []
    if spec.get("type") == "Sequence":
        return list(spec.get(key) or [])
    return [spec]


def _is_qwen_pipeline(backend, config: dict) -> bool:
    """Whether a loaded tokenizer.json holds exactly the pipeline transformers' Qwen2Tokenizer rebuilds."""
    norm, pre, model = _state(backend.normalizer), _state(backend.pre_tokenizer), backend.model
    steps = _steps(pre, "pretokenizers")
    return (
        [n.get("type") for n in _steps(norm, "normalizers")] == ["NFC"] and len(steps) == 2
        and steps[0].get("type") == "Split" and (steps[0].get("pattern") or {}).get("Regex") == _QWEN_PATTERN
        and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")
        and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex")
        and bool(steps[1].get("add_prefix_space")) == bool(config.get("add_prefix_space"))
        and type(model).__name__ == "BPE" and model.dropout is None and model.unk_token is None
        and not model.continuing_subword_prefix and not model.end_of_word_suffix
        and not model.fuse_unk and not model.byte_fallback and not model.ignore_merges
    )


def fast_load(folder: str):
    """(tokenizers backend, chat template) reproducing transformers' tokenizer for `folder`, or the reason
    why they would not (a string)."""
    if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
        return "no tokenizer.json"
    config = read_json(os.path.join(folder, "tokenizer_config.json"))
    cls = config.get("tokenizer_class")
    if cls is None and os.path.isfile(os.path.join(folder, "config.json")):
        return "tokenizer_config.json names no tokenizer_class (transformers picks one from the model config)"
    if cls is not None and cls not in _VERBATIM_CLASSES | _QWEN_CLASSES:
        return f"transformers rebuilds tokenizer class {cls} from the vocabulary"
    backend = _load_backend(folder, config)
    if cls in _QWEN_CLASSES and not _is_qwen_pipeline(backend, config):
        return f"tokenizer.json differs from the pipeline transformers' {cls} rebuilds"
    return backend, ChatTemplate.from_folder(folder)


def _load_backend(folder: str, config: dict):
    """tokenizer.json plus the tokenizer_config.json settings transformers applies on load."""
    from tokenizers import AddedToken, Tokenizer

    try:
        tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception that names no file
        raise ValueError(f"tokenizer {folder}: tokenizer.json cannot be read ({e})") from None
    tok.no_truncation()
    tok.no_padding()
    # Special tokens named in the config but missing from tokenizer.json are added, as transformers does.
    present = {t.content for t in tok.get_added_tokens_decoder().values()}
    missing = []
    for value in list((config.get("added_tokens_decoder") or {}).values()):
        if isinstance(value, dict) and value.get("content") not in present:
            missing.append(AddedToken(**{k: v for k, v in value.items() if not k.startswith("__")}))
    named = [config.get(k) for k in config if k.endswith("_token")]
    named += list(config.get("additional_special_tokens") or config.get("extra_special_tokens") or [])
    for value in named:
        text = value.get("content") if isinstance(value, dict) else value
        if isinstance(text, str) and text not in present and all(t.content != text for t in missing):
            missing.append(AddedToken(text, special=True))
    if missing:
        tok.add_special_tokens(missing)
    tok.encode_special_tokens = bool(config.get("split_special_tokens", False))
    return tok


class TokenCounter:
    """Counts tokens of text pieces and of whole chat prompts for one tokenizer.

    `count(text)` counts a plain text piece (no special tokens); `count_chat(messages)` renders and
    counts a whole prompt (the reference count: used by `validate`, and to verify rows built with a
    non-additive tokenizer). `additive` says whether piecewise counts sum exactly to the count of the
    joined text at the boundaries the synthesiser uses. `engine` is "tokenizers" (tokenizer.json and
    jinja2, no transformers import) or "transformers"; `engine_note` says why transformers was needed.
    """

    def __init__(self, name_or_path: str, engine: str = "auto"):
        if engine not in ENGINES:
            raise ValueError(f"unknown tokenizer engine {engine!r} ({', '.join(ENGINES)})")
        self.name = name_or_path
        self._hf = None
        loaded = "asked for" if engine == "transformers" else \
            fast_load(name_or_path) if os.path.isdir(name_or_path) else "not a local folder"
        if engine == "tokenizers" and isinstance(loaded, str):
            raise ValueError(f"tokenizer {name_or_path}: cannot use the tokenizers engine: {loaded}")
        if engine != "transformers" and not isinstance(loaded, str):
            self.engine, self.engine_note = "tokenizers", ""
            self.backend, self.template = loaded
        else:
            self.engine, self.engine_note = "transformers", loaded if engine == "auto" else ""
            self._hf = load_tokenizer(name_or_path)
            self.backend = self._hf.backend_tokenizer
            self.backend.no_truncation()  # as transformers' own __call__ does for an untruncated call
            self.template = None
        norm, pre = _state(self.backend.normalizer), _state(self.backend.pre_tokenizer)
        added = self.backend.get_added_tokens_decoder()
        self.fingerprint = _fingerprint(norm, pre, self.backend.model.__getstate__(), added)
        self.additive = _is_additive(norm, pre, type(self.backend.model).__name__)
        specials = {t.content for t in added.values() if t.content}
        # Text containing a special-token string is tokenised by `tokenizers`, which splits it out.
        self._special = re.compile("|".join(map(re.escape, sorted(specials, key=len, reverse=True)))) \
            if specials else None
        self._nfc = [n.get("type") for n in _steps(norm, "normalizers")] == ["NFC"]
        self._encode = None
        if self.additive:
            pattern = _steps(pre, "pretokenizers")[0]["pattern"]["Regex"]
            self._encode = _tiktoken_encoder(self.backend.get_vocab(with_added_tokens=False), pattern)
            if self._encode is not None and self._encode(self._norm(_PROBE)) != len(self._ids(_PROBE)):
                self._encode = None  # disagreement: never trust the fast path for this vocabulary
        self._overhead: dict[str, int] = {}

    @property
    def tokenizer(self):
        """The transformers tokenizer (loaded on first use: it imports transformers and torch)."""
        if self._hf is None:
            self._hf = load_tokenizer(self.name)
        return self._hf

    # -- plain text ---------------------------------------------------------------------------
    def _norm(self, text: str) -> str:
        if self._nfc and not unicodedata.is_normalized("NFC", text):
            return unicodedata.normalize("NFC", text)
        return text

    def _ids(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def count(self, text: str) -> int:
        """Tokens of `text` as a piece of a prompt (special-token strings count as specials)."""
        if self._encode is not None and (self._special is None or not self._special.search(text)):
            return self._encode(self._norm(text))
        return len(self.backend.encode(text, add_special_tokens=False))

    @property
    def fast(self) -> bool:
        return self._encode is not None

    # -- whole prompts --------------------------------------------------------------------------
    def render(self, messages: list[dict]) -> str:
        if self.template is not None:
            return self.template.render(messages)
        return self._hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def count_chat(self, messages: list[dict]) -> int:
        """Reference count of a full prompt: render the chat template, tokenise the string once."""
        return len(self.backend.encode(self.render(messages), add_special_tokens=False))

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


def _state(component) -> dict | None:
    """The JSON spec of a `tokenizers` normalizer or pre-tokenizer (None when absent)."""
    return None if component is None else json.loads(component.__getstate__())


def _fingerprint(norm: dict | None, pre: dict | None, model_state: bytes, added: dict) -> str:
    """A hash of what decides the token ids of plain text (not offsets, decoding or added BOS/EOS), so
    that both engines give the same fingerprint for the same tokenizer."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "trim_offsets"}
        return [strip(v) for v in x] if isinstance(x, list) else x

    tokens = [(i, t.content, t.special, t.single_word, t.lstrip, t.rstrip, t.normalized)
              for i, t in sorted(added.items())]
    h = hashlib.sha256(json.dumps([strip(norm), strip(pre), tokens], sort_keys=True).encode())
    h.update(model_state)
    return h.hexdigest()[:16]


def _is_additive(norm: dict | None, pre: dict | None, model_type: str) -> bool:
    if [n.get("type") for n in _steps(norm, "normalizers")] not in ([], ["NFC"]) or model_type != "BPE":
        return False
    steps = _steps(pre, "pretokenizers")
    if len(steps) != 2 or steps[0].get("type") != "Split" or steps[1].get("type") != "ByteLevel":
        return False
    pattern = (steps[0].get("pattern") or {}).get("Regex")
    return pattern in _ADDITIVE_PATTERNS and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")


def _tiktoken_encoder(vocab: dict[str, int], pattern: str):
    """A `text -> token count` function on tiktoken for a byte-level BPE vocabulary, or None."""
    try:
        import tiktoken
    except ImportError:
        return None
    # Each character of a byte-level token stands for one byte: translate, then encode as latin-1.
    to_byte = str.maketrans({c: chr(b) for b, c in _bytes_to_unicode().items()})
    try:
        ranks = {tok.translate(to_byte).encode("latin-1"): i for tok, i in vocab.items()}
    except UnicodeEncodeError:
        return None  # a character outside the byte alphabet: not a byte-level vocabulary
    if len(ranks) != len(vocab) or sorted(ranks.values()) != list(range(len(ranks))):
        return None  # tiktoken needs distinct tokens with dense ranks
    try:
        enc = tiktoken.Encoding(f"loongrl-{len(ranks)}", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    except Exception:  # noqa: BLE001 - any construction failure means: use the tokenizers count
        return None
    encode = enc.encode_ordinary
    return lambda text: len(encode(text))


@lru_cache(maxsize=4)
def get_counter(name_or_path: str, engine: str = "auto") -> TokenCounter:
    """One counter per tokenizer per process (workers inherit it through fork). Says on stderr, once,
    when the tokenizer has to be loaded with transformers."""
    counter = TokenCounter(name_or_path, engine)
    if counter.engine_note:
        print(f"note: tokenizer {name_or_path}: {counter.engine_note}; loading it with transformers "
              "(slower start-up, same counts)", file=sys.stderr)
    return counter
