"""The exact-counting claims the synthesiser relies on, checked against full HF tokenisation."""

from __future__ import annotations

import os
import random

import pytest

from conftest import INPUTS

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
