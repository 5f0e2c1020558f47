"""The exact-counting claims the synthesiser relies on, checked against full HF tokenisation."""

from __future__ import annotations

import functools
import os
import random

import pytest

from conftest import INPUTS, QWEN

from loongrl.data import keychain as kc
from loongrl.data import prompts
from loongrl.data.sources import load_source


def _hf(counter, text):
    return len(counter.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids)


def test_fast_counter_is_used_and_matches_hf_on_real_passages(counter):
    assert counter.additive and counter.fast
    rng = random.Random(0)
    for source in INPUTS:
        pool = load_source(source, INPUTS[source]).pool
        for i in rng.sample(range(len(pool)), 400):
            block = prompts.passage_body(pool.titles[i], pool.texts[i]) + prompts.PASSAGE_JOIN
            assert counter.count(block) == _hf(counter, block), (source, i)


def test_special_token_strings_are_counted_as_specials(counter):
    text = "before <|im_end|> after"
    assert counter.count(text) == _hf(counter, text)


def test_chat_overhead_plus_user_equals_full_prompt(counter):
    pool = load_source("musique", INPUTS["musique"]).pool
    ctx = prompts.PASSAGE_JOIN.join(prompts.PASSAGE_HEADER.format(i=i + 1) + prompts.passage_body(
        pool.titles[i], pool.texts[i]) for i in range(30))
    for system in (prompts.LOONGRL_SYSTEM, None):
        probe = prompts.QA_INTRO + "Passage 1:\nT\nx.\n\n" + prompts.QA_TAIL.format(question="Who?")
        user = prompts.QA_INTRO + ctx + prompts.PASSAGE_JOIN + prompts.QA_TAIL.format(question="Who is he?")
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        assert counter.count_chat(msgs) == counter.chat_overhead(system, probe) + counter.count(user)


def test_pairs_at_insertion_sites_add_exactly_their_own_tokens(counter):
    """Every site kind, on real passages, with link and question values: count is additive."""
    data = load_source("hotpotqa", INPUTS["hotpotqa"])
    rng = random.Random(1)
    questions = [r.question for r in data.records]
    checked = {kc.SENTENCE: 0, kc.LINE: 0}
    for pid in rng.sample(range(len(data.pool)), 150):
        body = prompts.passage_body(data.pool.titles[pid], data.pool.texts[pid])
        block = "Passage 7:\n" + body + "\n\nPassage 8:\n"
        for off, kind in kc.insertion_sites(body):
            value = rng.choice([kc.make_key(rng, "hex8"), rng.choice(questions)])
            ins = kc.inserted_form(kc.pair_text(kc.make_key(rng, "hex8"), value), kind)
            at = len("Passage 7:\n") + off
            modified = block[:at] + ins + block[at:]
            assert _hf(counter, modified) == _hf(counter, block) + counter.count(ins), (body, off, ins)
            checked[kind] += 1
    assert checked[kc.SENTENCE] > 200 and checked[kc.LINE] > 200


def test_sites_never_split_numbers_headers_or_passage_joins():
    body = "Paris\nThe tower is 3.5 km tall. It opened in 1889? Yes.\n2nd line. U.S. Army"
    sites = kc.insertion_sites(body)
    got = [(body[max(0, o - 2):o], body[o:o + 3], k) for o, k in sites]
    assert got == [("", "Par", kc.LINE), ("s\n", "The", kc.LINE), ("l.", " It", kc.SENTENCE),
                   ("9?", " Ye", kc.SENTENCE), (".\n", "2nd", kc.LINE), ("e.", " U.", kc.SENTENCE),
                   ("S.", " Ar", kc.SENTENCE)]


def test_non_additive_tokenizer_falls_back_to_full_counts(tmp_path):
    """A locally trained word-level tokenizer (Whitespace pre-tokenizer) is not in the additive family."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from loongrl.data.tokens import TokenCounter

    data = load_source("2wikimqa", INPUTS["2wikimqa"])
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(data.pool.texts, trainers.WordLevelTrainer(special_tokens=["[UNK]", "<|im_end|>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<|im_end|>")
    fast.chat_template = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}<|im_end|>{% endfor %}"
                          "{% if add_generation_prompt %}<assistant>{% endif %}")
    fast.save_pretrained(tmp_path / "wordlevel")
    counter = TokenCounter(str(tmp_path / "wordlevel"))
    assert not counter.additive and not counter.fast
    assert counter.count("hello world .") == 3


def test_default_tokenizer_is_the_env_then_the_shipped_folder_then_the_hub(tmp_path, monkeypatch):
    from loongrl.data.tokens import default_tokenizer

    monkeypatch.delenv("LOONGRL_TOKENIZER", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert default_tokenizer() == "Qwen/Qwen2.5-7B-Instruct"                 # no ../shared beside the checkout
    (tmp_path / "shared" / "data" / "tokenizers" / "qwen2.5").mkdir(parents=True)
    assert default_tokenizer() == os.path.join("..", "shared", "data", "tokenizers", "qwen2.5")
    monkeypatch.setenv("LOONGRL_TOKENIZER", "/models/mine")
    assert default_tokenizer() == "/models/mine"


@pytest.mark.parametrize("name", ["./no-such-tokenizer", "~/no-such-tokenizer-folder", "/no/such/tokenizer"])
def test_a_missing_local_tokenizer_folder_is_named_not_looked_up_on_the_hub(name):
    """A path (starting with /, . or ~) that is not a folder is refused with its name; only other names are
    hub ids (whose lookup would fail offline with a hub error that does not say the folder is missing)."""
    from loongrl.data.tokens import load_tokenizer

    with pytest.raises(FileNotFoundError) as err:
        load_tokenizer(name)
    assert str(err.value) == (f"tokenizer {name}: no such folder (a local tokenizer folder, or a hub id such as "
                              "Qwen/Qwen2.5-7B-Instruct)")


def test_a_tokenizer_folder_without_tokenizer_files_is_named(tmp_path):
    """An existing folder with no vocabulary in it got transformers' five-line message naming no folder; a
    tokenizer.json cut short got tokenizers' bare Exception; an unusable vocabulary, transformers' five lines."""
    from loongrl.data.tokens import TokenCounter, load_tokenizer

    empty = tmp_path / "empty"
    empty.mkdir()
    for load in (lambda: TokenCounter(str(empty)), lambda: load_tokenizer(str(empty))):
        with pytest.raises(FileNotFoundError) as err:
            load()
        assert str(err.value) == (f"tokenizer {empty}: no tokenizer files in this folder (tokenizer.json, or "
                                  "vocab.json / vocab.txt / a sentencepiece .model with tokenizer_config.json)")
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "tokenizer.json").write_text(open(os.path.join(QWEN, "tokenizer.json")).read()[:1000])
    with pytest.raises(ValueError, match=rf"^tokenizer {torn}: tokenizer.json cannot be read \(.+\)$"):
        TokenCounter(str(torn))
    empty_vocab = tmp_path / "empty-vocab"  # a vocabulary file transformers cannot use: its message, on one line
    empty_vocab.mkdir()
    (empty_vocab / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
    (empty_vocab / "vocab.json").write_text("{}")
    with pytest.raises(ValueError, match=rf"^tokenizer {empty_vocab}: transformers cannot load it \(.+\)$") as err:
        TokenCounter(str(empty_vocab))
    assert "\n" not in str(err.value)


# -- hand-built tokenizer folders ---------------------------------------------------------------------------
# A byte-level BPE is 256 single-byte tokens plus merges; with few merges a count is done by hand. The split
# regexes are the real ones: Qwen2.5's from the shipped tokenizer.json, and cl100k's (Llama-3's) as published.
CL100K_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
CHAT = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")


@functools.lru_cache(maxsize=1)
def _qwen_pattern() -> str:
    import json

    from conftest import QWEN

    with open(os.path.join(QWEN, "tokenizer.json"), encoding="utf-8") as f:
        return json.load(f)["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]


def _byte_vocab() -> dict[str, int]:
    """GPT-2's byte alphabet: printable bytes stand for themselves, the others for chr(256 + n) in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(others)}
    return {chars[b]: b for b in range(256)}


def _tokenizer_folder(path, *, merges=(), extra=None, normalizer="NFC", steps="qwen", model="BPE", model_kw=None,
                      specials=(), config=None, template=CHAT, post_bos=False, trim_offsets=False) -> str:
    """A tokenizer folder (tokenizer.json, tokenizer_config.json, chat_template.jinja) built with `tokenizers`."""
    import json

    from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = _byte_vocab() | {tok: 256 + i for i, tok in enumerate(m[0] + m[1] for m in merges)} | (extra or {})
    if model == "BPE":
        tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges), **(model_kw or {})))
    else:
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="!"))
    if normalizer and normalizer.startswith("Sequence["):   # "Sequence[NFC]": NFC alone inside a Sequence
        tok.normalizer = normalizers.Sequence([getattr(normalizers, normalizer[len("Sequence["):-1])()])
    elif normalizer:
        tok.normalizer = getattr(normalizers, normalizer)()
    split = {"qwen": pre_tokenizers.Split(Regex(_qwen_pattern()), behavior="isolated"),
             "cl100k": pre_tokenizers.Split(Regex(CL100K_PATTERN), behavior="isolated"),
             "gpt2": pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
             "removed": pre_tokenizers.Split(Regex(_qwen_pattern()), behavior="removed"),
             "inverted": pre_tokenizers.Split(Regex(_qwen_pattern()), behavior="isolated", invert=True)}
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=trim_offsets)
    tok.pre_tokenizer = pre_tokenizers.Sequence({
        "qwen": [split["qwen"], byte_level], "cl100k": [split["cl100k"], byte_level],
        "gpt2": [split["gpt2"], byte_level], "removed": [split["removed"], byte_level],
        "inverted": [split["inverted"], byte_level], "swapped": [byte_level, split["qwen"]],
        "digits": [split["qwen"], pre_tokenizers.Digits()],
        "three": [split["qwen"], byte_level, pre_tokenizers.Digits()],
        "prefix_space": [split["qwen"], pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False)],
        "byte_regex": [split["qwen"], pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)],
    }[steps])
    tok.add_special_tokens([AddedToken(s, special=True) for s in specials])
    if post_bos:  # a post-processor that adds a BOS token, as Llama's does (only with special tokens asked for)
        tok.add_special_tokens([AddedToken("<s>", special=True)])
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast"} if config is None else config, f)
    with open(os.path.join(path, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(template)
    return str(path)


def test_a_small_qwen_style_bpe_is_counted_exactly_on_the_fast_path(tmp_path):
    """Three merges: "the" is t+he, " the" is one token; NFC joins e + U+0301 into é (two bytes)."""
    from loongrl.data.tokens import TokenCounter

    folder = _tokenizer_folder(tmp_path / "tok", merges=[("h", "e"), ("Ġ", "t"), ("Ġt", "he")],
                               specials=["<|endoftext|>", "<|im_end|>"])
    counter = TokenCounter(folder)
    assert (counter.engine, counter.engine_note, counter.name) == ("tokenizers", "", folder)
    assert counter.additive and counter.fast
    assert counter.count("the the") == 3
    assert counter.count("cafe\u0301") == 5
    assert counter.count("the<|im_end|>the") == 5
    assert counter.count("<|im_end|><|endoftext|>") == 2
    assert counter.count_chat([{"role": "user", "content": "the"}]) == len("<user>") + 2 + len("\n<assistant>")


@pytest.mark.parametrize("kind, kw, additive, fast", [
    ("no normaliser", {"normalizer": None}, True, True),
    ("NFKC normaliser", {"normalizer": "NFKC"}, False, False),
    ("cl100k split", {"steps": "cl100k"}, True, True),
    ("GPT-2 split", {"steps": "gpt2"}, False, False),
    ("split then digits", {"steps": "digits"}, False, False),
    ("three steps", {"steps": "three"}, False, False),
    ("byte level first", {"steps": "swapped"}, False, False),
    ("split removes", {"steps": "removed"}, False, False),
    ("split inverted", {"steps": "inverted"}, False, False),
    ("word-level model", {"model": "WordLevel"}, False, False),
    ("a token outside the byte alphabet", {"extra": {"☃": 256}}, True, False),
    ("a hole in the ids", {"extra": {"zzzzzz": 257}}, True, False),
    ("a token no merge makes", {"extra": {"ss": 256}}, True, False),
    ("a BOS-adding post-processor", {"post_bos": True}, True, True),
    ("NFC in a sequence", {"normalizer": "Sequence[NFC]"}, True, True),
    ("NFKC in a sequence", {"normalizer": "Sequence[NFKC]"}, False, False),
])
def test_which_tokenizers_are_additive_and_counted_with_tiktoken(tmp_path, kind, kw, additive, fast):
    """Additive: byte-level BPE, NFC or no normaliser, Qwen's or cl100k's split isolated, then ByteLevel. The
    tiktoken path also needs a byte-level vocabulary with dense ids that gives tokenizers' own count on a probe
    ("Passage" there: tiktoken would join an "ss" that no merge makes)."""
    from loongrl.data.tokens import TokenCounter

    counter = TokenCounter(_tokenizer_folder(tmp_path / "tok", **kw))
    assert (counter.additive, counter.fast) == (additive, fast)
    text = "Passage cafe\u0301"
    if kind not in ("word-level model", "split then digits", "split removes"):  # these drop or lose bytes
        assert counter.count(text) == (14 if kind == "no normaliser" else 13)  # é is 2 bytes, e + U+0301 3


@pytest.mark.parametrize("kw, cfg", [
    ({"steps": "prefix_space"}, {}),
    ({}, {"add_prefix_space": True}),
    ({"normalizer": None}, {}),
    ({"normalizer": "NFKC"}, {}),
    ({"steps": "cl100k"}, {}),
    ({"steps": "three"}, {}),
    ({"steps": "swapped"}, {}),
    ({"steps": "removed"}, {}),
    ({"steps": "inverted"}, {}),
    ({"steps": "byte_regex"}, {}),
    ({"model": "WordLevel"}, {}),
    ({"model_kw": {"dropout": 0.1}}, {}),
    ({"model_kw": {"unk_token": "!"}}, {}),
    ({"model_kw": {"continuing_subword_prefix": "##"}}, {}),
    ({"model_kw": {"end_of_word_suffix": "</w>"}}, {}),
    ({"model_kw": {"fuse_unk": True}}, {}),
    ({"model_kw": {"byte_fallback": True}}, {}),
    ({"model_kw": {"ignore_merges": True}}, {}),
])
def test_a_qwen2_class_is_read_without_transformers_only_with_qwens_exact_pipeline(tmp_path, kw, cfg):
    """transformers rebuilds Qwen2Tokenizer's pipeline from the vocabulary: NFC, Qwen's split (isolated, not
    inverted), ByteLevel without its own regex and with the config's add_prefix_space, a plain BPE. Anything
    else in tokenizer.json would be counted differently from what transformers (and verl) count."""
    from loongrl.data.tokens import TokenCounter, fast_load

    for cls in ("Qwen2Tokenizer", "Qwen2TokenizerFast"):
        folder = _tokenizer_folder(tmp_path / cls, config={"tokenizer_class": cls, **cfg}, **kw)
        assert fast_load(folder) == f"tokenizer.json differs from the pipeline transformers' {cls} rebuilds"
    with pytest.raises(ValueError) as err:
        TokenCounter(folder, engine="tokenizers")
    assert str(err.value) == (f"tokenizer {folder}: cannot use the tokenizers engine: tokenizer.json differs "
                              "from the pipeline transformers' Qwen2TokenizerFast rebuilds")


@pytest.mark.parametrize("kw, cfg, tokens", [({}, {}, 2), ({"steps": "prefix_space"}, {"add_prefix_space": True}, 3),
                                              ({"normalizer": "Sequence[NFC]"}, {}, 2)])
def test_qwens_own_pipeline_is_read_without_transformers(tmp_path, kw, cfg, tokens):
    from loongrl.data.tokens import TokenCounter, fast_load

    folder = _tokenizer_folder(tmp_path / "tok", config={"tokenizer_class": "Qwen2Tokenizer", **cfg}, **kw)
    backend, template = fast_load(folder)
    assert len(backend.encode("ab", add_special_tokens=False).ids) == tokens  # " ab" with a prefix space
    assert template.render([{"role": "user", "content": "hi"}]) == "<user>hi\n<assistant>"
    assert TokenCounter(folder, engine="tokenizers").engine == "tokenizers"


def test_fast_load_says_why_a_folder_needs_transformers(tmp_path):
    import json

    from loongrl.data.tokens import fast_load

    def config_json(folder):
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({"model_type": "qwen2"}, f)
        return folder

    no_file = tmp_path / "empty"
    no_file.mkdir()
    assert fast_load(str(no_file)) == "no tokenizer.json"
    assert fast_load(config_json(_tokenizer_folder(tmp_path / "a", config={}))) == (
        "tokenizer_config.json names no tokenizer_class (transformers picks one from the model config)")
    assert fast_load(_tokenizer_folder(tmp_path / "b", config={"tokenizer_class": "GPT2Tokenizer"})) == (
        "transformers rebuilds tokenizer class GPT2Tokenizer from the vocabulary")
    loaded = [config_json(_tokenizer_folder(tmp_path / "c", config={"tokenizer_class": "Qwen2Tokenizer"})),
              _tokenizer_folder(tmp_path / "d", config={}),                            # no class and no model config
              _tokenizer_folder(tmp_path / "e", config={"tokenizer_class": "PreTrainedTokenizerFast"}, model="WordLevel"),
              _tokenizer_folder(tmp_path / "f", config={"tokenizer_class": "TokenizersBackend"}, steps="gpt2")]
    os.remove(os.path.join(loaded[1], "tokenizer_config.json"))
    for folder in loaded:
        backend, template = fast_load(folder)
        assert template.render([{"role": "user", "content": "x"}]) == "<user>x\n<assistant>", folder


def test_special_tokens_named_in_the_config_are_added_as_transformers_adds_them(tmp_path):
    """tokenizer.json holds <|endoftext|> (special) and <pad> (a plain added token); the config names more."""
    import json

    from tokenizers import AddedToken, Tokenizer

    from loongrl.data.tokens import TokenCounter, fast_load

    config = {"tokenizer_class": "PreTrainedTokenizerFast",
              "added_tokens_decoder": {
                  "256": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False,
                          "single_word": False, "special": True},
                  "257": {"content": "<pad>", "lstrip": False, "normalized": True, "rstrip": False,
                          "single_word": False, "special": False},
                  "258": {"__type": "AddedToken", "content": "<|im_start|>", "lstrip": False, "normalized": False,
                          "rstrip": False, "single_word": False, "special": True}},
              "add_bos_token": False, "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<pad>",
              "unk_token": {"__type": "AddedToken", "content": "<unk>", "special": True},
              "additional_special_tokens": ["<|im_start|>", "<tool>"]}
    folder = _tokenizer_folder(tmp_path / "tok", specials=["<|endoftext|>"], config=config)
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tok.add_tokens([AddedToken("<pad>", normalized=True)])
    tok.save(os.path.join(folder, "tokenizer.json"))

    backend, _ = fast_load(folder)
    added = {i: (t.content, t.special) for i, t in backend.get_added_tokens_decoder().items()}
    assert added == {256: ("<|endoftext|>", True), 257: ("<pad>", False), 258: ("<|im_start|>", True),
                     259: ("<|im_end|>", True), 260: ("<unk>", True), 261: ("<tool>", True)}
    counter = TokenCounter(folder)
    assert counter.count("a<tool>b<|im_end|>") == 4

    # extra_special_tokens (transformers 5's name) when there is no additional_special_tokens
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "extra_special_tokens": ["<tool>"]}
    backend, _ = fast_load(_tokenizer_folder(tmp_path / "extra", config=config))
    assert {t.content for t in backend.get_added_tokens_decoder().values()} == {"<tool>"}
    # split_special_tokens: special-token strings are tokenised as text
    for split, want in ((False, 3), (True, len("a<|im_end|>b"))):
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
                  "split_special_tokens": split}
        folder = _tokenizer_folder(tmp_path / f"split{split}", config=config)
        assert TokenCounter(folder).count("a<|im_end|>b") == want
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
            json.dump(config, f)


def test_the_counter_refuses_an_unknown_engine_and_names_why_it_cannot_use_tokenizers(tmp_path):
    from loongrl.data.tokens import TokenCounter

    folder = _tokenizer_folder(tmp_path / "tok")
    with pytest.raises(ValueError) as err:
        TokenCounter(folder, engine="tiktoken")
    assert str(err.value) == "unknown tokenizer engine 'tiktoken' (auto, tokenizers, transformers)"
    with pytest.raises(ValueError) as err:
        TokenCounter("Qwen/Qwen2.5-7B-Instruct", engine="tokenizers")
    assert str(err.value) == "tokenizer Qwen/Qwen2.5-7B-Instruct: cannot use the tokenizers engine: not a local folder"
    gpt2 = _tokenizer_folder(tmp_path / "gpt2", config={"tokenizer_class": "GPT2Tokenizer"})
    with pytest.raises(ValueError) as err:
        TokenCounter(gpt2, engine="tokenizers")
    assert str(err.value) == (f"tokenizer {gpt2}: cannot use the tokenizers engine: transformers rebuilds "
                              "tokenizer class GPT2Tokenizer from the vocabulary")


def test_chat_overhead_is_what_the_template_adds_per_system_prompt(tmp_path):
    """No merges: every byte is a token, so a count is a length. The template writes "S:" before the system
    prompt, "User: " before the user message, a newline after each, and "Assistant:" at the end."""
    from loongrl.data.tokens import TokenCounter

    template = ("{% for m in messages %}{{ {'system': 'S:', 'user': 'User: '}[m['role']] }}{{ m['content'] }}\n"
                "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")
    counter = TokenCounter(_tokenizer_folder(tmp_path / "tok", template=template))
    assert counter.chat_overhead("Be brief.", "Q?") == len("S:Be brief.\nUser: ") + len("\nAssistant:") == 29
    assert counter.chat_overhead(None, "Q?") == len("User: \nAssistant:") == 17
    assert counter.chat_overhead("", "Q?") == 17
    assert counter.chat_overhead("Be brief.", "Q?") == 29
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who wrote it?"}]
    assert counter.count_chat(msgs) == 29 + len("Who wrote it?")

    for template in ("{% for m in messages %}{{ m['content'] }}{{ m['content'] }}{% endfor %}",
                     "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"):
        folder = _tokenizer_folder(tmp_path / str(len(template)), template=template)
        with pytest.raises(ValueError) as err:
            TokenCounter(folder).chat_overhead(None, "Who?")
        assert str(err.value) == f"tokenizer {folder}: chat template does not insert the user message verbatim"


def test_the_fingerprint_changes_with_what_decides_the_ids_only(tmp_path):
    from loongrl.data.tokens import TokenCounter

    def fp(name, **kw):
        return TokenCounter(_tokenizer_folder(tmp_path / name, **kw)).fingerprint

    base = fp("base", merges=[("h", "e")], specials=["<|im_end|>"])
    assert fp("again", merges=[("h", "e")], specials=["<|im_end|>"]) == base
    assert fp("offsets", merges=[("h", "e")], specials=["<|im_end|>"], trim_offsets=True, template="x") == base
    for name, kw in {"nfkc": {"normalizer": "NFKC"}, "no normaliser": {"normalizer": None},
                     "split": {"steps": "removed"}, "merges": {"merges": [("h", "e"), ("Ġ", "t")]},
                     "specials": {"specials": ["<|im_end|>", "<|im_start|>"]}}.items():
        kw = {"merges": [("h", "e")], "specials": ["<|im_end|>"]} | kw
        assert fp(name, **kw) != base, name


def test_the_transformers_engine_renders_and_counts_the_same_prompt(tmp_path):
    """No merges: a count is a length in bytes. Asked for, transformers loads the tokenizer and renders its
    template; the torch-free counter loads transformers' tokenizer only when `.tokenizer` is used."""
    from loongrl.data.tokens import TokenCounter

    folder = _tokenizer_folder(tmp_path / "tok", specials=["<|im_end|>"])
    ref = TokenCounter(folder, engine="transformers")
    assert (ref.engine, ref.engine_note, ref.template, ref.name) == ("transformers", "", None, folder)
    assert ref.additive and ref.fast
    msgs = [{"role": "user", "content": "the the"}]
    assert ref.render(msgs) == "<user>the the\n<assistant>"
    assert ref.count_chat(msgs) == len("<user>the the\n<assistant>") == 25
    assert ref.count("the<|im_end|>") == 4
    ours = TokenCounter(folder)
    assert ours.count_chat(msgs) == 25 and ours.fingerprint == ref.fingerprint
    assert len(ours.tokenizer("the the", add_special_tokens=False)["input_ids"]) == 7
