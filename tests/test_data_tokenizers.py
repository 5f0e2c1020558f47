"""Synthesis with any tokenizer: the torch-free engine (tokenizers + jinja2) against transformers, and exact
budgets with tokenizers whose counts are not additive at passage joins.

Tokenizers: Qwen2.5 (shipped; additive, tiktoken path), SmolLM2 (the real model's, GPT-2 BPE with split
digits: a passage join costs a token more than the pieces), the demo's locally trained byte-level BPE, and
two trained here on the shipped passages: WordPiece (BERT-style, lower-casing) and a SentencePiece-style
Unigram (Metaspace, NFKC) with a Llama-2-style template.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import pytest
from conftest import INPUTS, QWEN

from loongrl.data import SynthConfig, synthesize, validate_file
from loongrl.data import prompts
from loongrl.data.sources import load_source
from loongrl.data.tokens import TokenCounter

# A template exercising what transformers' jinja environment adds: trim_blocks / lstrip_blocks, the
# {% generation %} tag, loop controls, a tojson that keeps HTML and non-ASCII, special-token variables.
WORDPIECE_TEMPLATE = """{{ cls_token }}
{%- for m in messages %}
  {%- if m['role'] == 'system' %}[SYS] {{ m['content'] | tojson }}
  {% continue %}
  {%- endif %}
  {% if m['role'] == 'assistant' %}{% generation %}[A] {{ m['content'] }}{% endgeneration %}{% else %}
[{{ m['role'] | upper }}] {{ m['content'] }}{% endif %}
{{ sep_token }}
{% endfor %}
{%- if add_generation_prompt %}[A]{% endif %}"""

LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def _corpus() -> list[str]:
    texts = []
    for source in INPUTS:
        data = load_source(source, INPUTS[source])
        texts += data.pool.texts[:3000] + [r.question for r in data.records[:500]]
    return texts + [prompts.LOONGRL_SYSTEM, prompts.KEYCHAIN_TAIL, prompts.QA_INTRO]


def _save(backend, folder: str, template: str, **special) -> str:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **special)
    tok.chat_template = template
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    from loongrl.demo.task import make_demo_data
    from loongrl.demo.tiny import CHATML_TEMPLATE, train_tokenizer

    root = tmp_path_factory.mktemp("tokenizers")
    corpus = _corpus()
    dirs = {"qwen2.5": QWEN}

    # The demo's tokenizer, trained on the demo task's rows as `make demo` does (byte-level BPE, 512 tokens).
    files = make_demo_data(str(root / "demo_data"), num_sft=200, num_rl=50, num_eval=20, num_chains=2, hops=1)
    from loongrl.data.io import iter_rows
    texts = [m["content"] for p in files.values() for r in iter_rows(p) for m in r["prompt"] + (r.get("completion") or [])]
    train_tokenizer(texts, 512).save_pretrained(str(root / "demo"))
    dirs["demo"] = str(root / "demo")
    assert open(os.path.join(dirs["demo"], "chat_template.jinja")).read() == CHATML_TEMPLATE

    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.decoder = decoders.WordPiece()
    wp.train_from_iterator(corpus, trainers.WordPieceTrainer(
        vocab_size=4000, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]))
    dirs["wordpiece"] = _save(wp, str(root / "wordpiece"), WORDPIECE_TEMPLATE, unk_token="[UNK]",
                              cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]")

    sp = Tokenizer(models.Unigram())
    sp.normalizer = normalizers.NFKC()
    sp.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    sp.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    sp.train_from_iterator(corpus, trainers.UnigramTrainer(
        vocab_size=4000, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>"))
    dirs["sentencepiece"] = _save(sp, str(root / "sentencepiece"), LLAMA2_TEMPLATE, unk_token="<unk>",
                                  bos_token="<s>", eos_token="</s>")
    return dirs


# SmolLM2's folder comes from the real model's fetch (slow); the others are here or trained in seconds.
NAMES = ["qwen2.5", pytest.param("smollm2", marks=pytest.mark.slow), "demo", "wordpiece", "sentencepiece"]


def folder_of(request, tokenizer_dirs, name: str) -> str:
    return request.getfixturevalue("smollm2") if name == "smollm2" else tokenizer_dirs[name]
# Budgets and KeyChain chains per 1K tokens. Qwen2.5 and SmolLM2 spend ~4.3 characters a token and take the
# defaults (2K, 4K; 4 chains per 1K). The 4K-token WordPiece and Unigram vocabularies trained here spend 3.4
# (a key-value pair ~48 tokens, 4 chains per 1K would leave no room for a HotpotQA item's own passages at 2K)
# and the demo's 512-token vocabulary 1.3 (own passages ~4.6K tokens, a pair ~130): fewer chains, and 4x the
# budgets for the demo's.
SETTINGS = {"qwen2.5": ((2048, 4096), 4), "smollm2": ((2048, 4096), 4), "wordpiece": ((2048, 4096), 1),
            "sentencepiece": ((2048, 4096), 1), "demo": ((8192, 16384), 1)}
CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": prompts.LOONGRL_SYSTEM}, {"role": "user", "content": "Who wrote \"Hamlet\"?"}],
    [{"role": "system", "content": "Keep <b>HTML</b> & 'quotes', naïve café 東京"},
     {"role": "user", "content": "  leading and trailing spaces  \n\n"},
     {"role": "assistant", "content": "<think>x</think> \\boxed{42}"},
     {"role": "user", "content": "Passage 1:\nTitle\n3.5 km. {\"a1b2c3d4\": \"e5f6a7b8\"}."}],
]


@pytest.mark.parametrize("name", NAMES)
def test_engine_renders_and_counts_like_transformers(request, tokenizer_dirs, name):
    from transformers import AutoTokenizer

    folder = folder_of(request, tokenizer_dirs, name)
    ours = TokenCounter(folder)
    ref = TokenCounter(folder, engine="transformers")
    hf = AutoTokenizer.from_pretrained(folder)
    assert ours.engine == "tokenizers" and ours.template is not None
    assert ours.fingerprint == ref.fingerprint
    for conv in CONVERSATIONS:
        for gen in (True, False):
            text = hf.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False)
            assert ours.template.render(conv, add_generation_prompt=gen) == text, (name, conv, gen)
        assert ours.count_chat(conv) == len(hf(ours.render(conv), add_special_tokens=False)["input_ids"])
    data = load_source("hotpotqa", INPUTS["hotpotqa"])
    rng = random.Random(3)
    for i in rng.sample(range(len(data.pool)), 200):
        block = prompts.PASSAGE_HEADER.format(i=7) + prompts.passage_body(data.pool.titles[i], data.pool.texts[i])
        assert ours.count(block) == len(hf(block, add_special_tokens=False)["input_ids"]), (name, block)


def test_template_errors_are_raised_as_in_transformers(tokenizer_dirs):
    import jinja2

    ours = TokenCounter(tokenizer_dirs["sentencepiece"])
    with pytest.raises(jinja2.exceptions.TemplateError, match="roles must alternate"):
        ours.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [0, 1])
@pytest.mark.parametrize("kind", ["kc", "qa"])
def test_fifty_of_fifty_rows_fit_exactly(request, tokenizer_dirs, tmp_path, name, size, kind):
    """50 requested rows are written; each prompt, counted whole by transformers, is within the budget and
    as close to it as passage granularity allows; `loongrl data validate` passes."""
    from transformers import AutoTokenizer

    folder, (budgets, chains_per_1k) = folder_of(request, tokenizer_dirs, name), SETTINGS[name]
    budget = budgets[size]
    out = str(tmp_path / f"{name}_{kind}_{budget}.parquet")
    cfg = SynthConfig(source="hotpotqa", input=INPUTS["hotpotqa"], tokenizer=folder, max_prompt_tokens=budget,
                      keychain=kind == "kc", num=50, seed=2, num_chains=chains_per_1k * budget // 1024)
    s = synthesize(cfg, out, progress=False)
    assert s.written == 50, s.line()
    assert not {r for r in s.skipped if "budget" in r} - {"own_passages_over_budget", "chains_over_budget"}
    counter = TokenCounter(folder)
    assert s.fit["verified"] == (0 if counter.additive else 50)
    # how rows were fitted, in the summary's words: estimated counts leave slack that top-ups fill
    assert set(s.fit) <= {"verified", "trimmed", "topped_up"} and (counter.additive or s.fit["topped_up"] > 0)
    assert validate_file(out, folder).ok
    hf = AutoTokenizer.from_pretrained(folder)
    from loongrl.data.io import iter_rows
    gaps = []
    for row in iter_rows(out):
        text = hf.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        n = len(hf(text, add_special_tokens=False)["input_ids"])
        assert n == row["extra_info"]["prompt_tokens"] <= budget
        gaps.append(budget - n)
    assert sorted(gaps)[25] < 0.03 * budget and max(gaps) < 0.1 * budget, gaps


def test_an_estimated_row_is_topped_up_at_most_twice(tokenizer_dirs, tmp_path, monkeypatch):
    """With estimated counts a row is filled once, then topped up into the slack the full count shows, at most
    MAX_TOPUPS (2) times: some rows take both top-ups, none a third."""
    from loongrl.data.synth import RowBuilder

    fills, real_build, real_fill = [], RowBuilder.build, RowBuilder._fill

    def build(self, rec):
        fills.append(0)
        return real_build(self, rec)

    def fill(self, *args):
        fills[-1] += 1
        return real_fill(self, *args)

    monkeypatch.setattr(RowBuilder, "build", build)
    monkeypatch.setattr(RowBuilder, "_fill", fill)
    cfg = SynthConfig(source="hotpotqa", input=INPUTS["hotpotqa"], tokenizer=tokenizer_dirs["demo"],
                      max_prompt_tokens=8192, keychain=False, num=50, seed=2)
    assert synthesize(cfg, str(tmp_path / "rows.jsonl"), progress=False).written == 50
    assert max(fills) == 1 + RowBuilder.MAX_TOPUPS == 3


def test_synthesis_and_validation_import_neither_torch_nor_transformers(smollm2, tmp_path):
    code = (
        "import sys\n"
        "from loongrl.cli import main\n"
        f"args = ['--source', 'hotpotqa', '--input', {INPUTS['hotpotqa']!r}, '--num', '2', '--quiet',"
        f" '--max-prompt-tokens', '4096']\n"
        f"for tok in {[QWEN, smollm2]!r}:\n"
        f"    out = {str(tmp_path)!r} + '/' + str(abs(hash(tok))) + '.parquet'\n"
        "    assert main(['data', 'keychain', *args, '--tokenizer', tok, '--out', out]) == 0\n"
        "    assert main(['data', 'validate', out, '--tokenizer', tok, '--quiet']) == 0\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_rebuilt_tokenizer_class_is_counted_with_transformers(tmp_path):
    """transformers 5 rebuilds a `GPT2Tokenizer` from the vocabulary with GPT-2's own pre-tokenizer, whatever
    tokenizer.json says (an original SmolLM2 checkpoint loses its digit splitting that way). The counter must
    count what transformers, and so verl, will see: here Qwen2.5's files under that class name."""
    import json

    from transformers import AutoTokenizer

    folder = str(tmp_path / "gpt2class")
    shutil.copytree(QWEN, folder)
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    cfg = json.load(open(cfg_path))
    cfg["tokenizer_class"] = "GPT2Tokenizer"
    json.dump(cfg, open(cfg_path, "w"))
    counter = TokenCounter(folder)
    assert counter.engine == "transformers" and "GPT2Tokenizer" in counter.engine_note
    hf = AutoTokenizer.from_pretrained(folder)
    text = "Passage 1:\nThe Eiffel Tower (French: tour Eiffel) opened in 1889!!!\n\nPassage 2:\n\n\nx"
    assert counter.count(text) == len(hf(text, add_special_tokens=False)["input_ids"])
    assert counter.count(text) != TokenCounter(QWEN).count(text)  # the file's own pipeline counts differently


@pytest.mark.parametrize("name", ["demo", "wordpiece", "sentencepiece"])
def test_learned_site_cost_is_what_most_insertions_cost(tokenizer_dirs, name):
    """Tokenizers that are not additive: what a pair costs at each kind of site beyond count(pair + ".") is
    learned on 64 pool passages. Measured with the tokenizer file itself on 150 other passages, at every site,
    it is what most insertions cost there."""
    from collections import Counter

    from tokenizers import Tokenizer

    from loongrl.data import keychain as kc
    from loongrl.data.synth import RowBuilder

    folder = tokenizer_dirs[name]
    data = load_source("hotpotqa", INPUTS["hotpotqa"])
    cfg = SynthConfig(source="hotpotqa", input=INPUTS["hotpotqa"], tokenizer=folder, max_prompt_tokens=8192)
    learned = RowBuilder(cfg, data, TokenCounter(folder)).site_extra
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))

    def n(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    rng = random.Random(11)
    header = prompts.PASSAGE_HEADER.format(i=3)
    seen = {kc.SENTENCE: Counter(), kc.LINE: Counter()}
    for pid in rng.sample(range(len(data.pool)), 150):
        body = prompts.passage_body(data.pool.titles[pid], data.pool.texts[pid])
        block = header + body + prompts.PASSAGE_JOIN
        for off, kind in kc.insertion_sites(body):
            pair = '{"%08x": "%08x"}' % (rng.getrandbits(32), rng.getrandbits(32))
            at = len(header) + off
            inserted = (" " if kind == kc.SENTENCE else "") + pair + "."
            seen[kind][n(block[:at] + inserted + block[at:]) - n(block) - n(pair + ".")] += 1
    print(name, {k: c.most_common(3) for k, c in seen.items()}, learned)
    for kind, counts in seen.items():
        value, times = counts.most_common(1)[0]
        assert learned[kind] == value and times > 0.5 * sum(counts.values()), (kind, counts)
