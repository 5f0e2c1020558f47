"""KeyChain and plain-QA rows built from the shipped data, checked from the outside."""

from __future__ import annotations

import re
import signal
import statistics
import subprocess
import sys
import time

import pytest
from conftest import INPUTS, QWEN, read_rows

from loongrl.data import SynthConfig, synthesize, validate_file
from loongrl.data.prompts import KEYCHAIN_TAIL, LOONGRL_SYSTEM
from loongrl.data.sources import load_source
from loongrl.data.validate import parse_pairs

PAIR = re.compile(r'\{"([0-9a-f]{8})": "')


@pytest.mark.parametrize("source", list(INPUTS))
def test_keychain_rows_resolve_and_fit_the_budget(source, kc_files, counter):
    rows = read_rows(kc_files[source])
    data = load_source(source, INPUTS[source])
    by_id = {r.id: r for r in data.records}
    all_questions = {r.question for r in data.records}
    for row in rows:
        info, (system, user) = row["extra_info"], [m["content"] for m in row["prompt"]]
        assert system == LOONGRL_SYSTEM and row["ability"] == "longcontext_qa"
        assert row["data_source"] == f"keychain_{source}"
        # Exact, and as close to the budget as passage granularity allows.
        n = counter.count_chat(row["prompt"])
        assert n == info["prompt_tokens"] <= 16384
        assert 16384 - n <= 64                                   # README: within ~50 tokens at 16K
        assert n == len(counter.tokenizer.apply_chat_template(   # what verl and TRL will feed the model
            row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False))
        # 64 chains x 4 hex8 keys, all distinct, each once as a key.
        pairs, problems = parse_pairs(user, "hex8")
        keys = [k for k, _ in pairs]
        assert not problems and len(pairs) == 256 and len(set(keys)) == 256
        assert info["num_chains"] == 64 and info["hops"] == 4
        value = dict(pairs)
        node, walk = info["chain_head"], []
        while node in value:
            walk.append(node)
            node = value[node]
        assert node == info["question"] == by_id[info["id"]].question and walk == info["chain"]
        # The 63 other chains end in distinct questions of other items.
        ends = [v for v in value.values() if v not in value]
        assert len(ends) == 64 and len(set(ends)) == 64 and set(ends) <= all_questions
        assert ends.count(info["question"]) == 1
        assert user.endswith(KEYCHAIN_TAIL.format(head=info["chain_head"]))
        assert row["reward_model"]["ground_truth"] == by_id[info["id"]].answers
        # Every pair follows a stopper: ". " / "? " or a newline.
        for m in PAIR.finditer(user):
            assert user[m.start() - 2:m.start()] in (". ", "? ") or user[m.start() - 1] == "\n"
        # Without the pairs, the context holds every own passage verbatim, and no passage twice.
        plain = user
        for k, v in pairs:
            plain = plain.replace(" " + '{"%s": "%s"}.' % (k, v), "").replace('{"%s": "%s"}.' % (k, v), "")
        rec = by_id[info["id"]]
        for pid in rec.passage_ids:
            assert f"\n{data.pool.texts[pid]}\n" in plain or f"\n{data.pool.texts[pid]}\n" in plain + "\n"
        blocks = re.split(r"\n\nPassage \d+:\n", plain.split("\n\nIn the context above")[0])
        assert len(blocks) == len(set(blocks)) == info["num_passages"]
        assert 0 <= min(info["real_link_depths"]) and max(info["real_link_depths"]) <= 1
        assert len(info["gold_passage_depths"]) == sum(rec.gold)


@pytest.mark.parametrize("source", list(INPUTS))
def test_plain_qa_rows(source, qa_files, counter):
    for row in read_rows(qa_files[source]):
        info, user = row["extra_info"], row["prompt"][-1]["content"]
        assert row["data_source"] == f"longqa_{source}" and info["kind"] == "qa"
        assert user.startswith("The following are given passages.\nPassage 1:\n")
        assert user.endswith("\n\nQuestion: " + info["question"])
        assert '{"' not in user.replace(info["question"], "") or source == "2wikimqa"
        assert 16384 - 64 <= counter.count_chat(row["prompt"]) == info["prompt_tokens"] <= 16384
        assert info["prompt_tokens"] == len(counter.tokenizer.apply_chat_template(
            row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False))


def test_rows_share_one_schema_and_load_with_datasets(kc_files, qa_files):
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=[kc_files["hotpotqa"], qa_files["musique"]], split="train")
    assert len(ds) == 12
    assert set(ds.features) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert ds[0]["prompt"][1]["role"] == "user" and isinstance(ds[0]["reward_model"]["ground_truth"], list)
    assert ds[0]["extra_info"].keys() == ds[11]["extra_info"].keys()
    assert [r["extra_info"]["index"] for r in ds][:6] == list(range(6))


@pytest.mark.slow
def test_validate_accepts_real_rows(kc_files, qa_files):
    for path in list(kc_files.values()) + [qa_files["hotpotqa"]]:
        report = validate_file(path, QWEN)
        assert report.ok, report.errors[:5]


def _rewrite(src, dst, edit):
    from loongrl.data.io import RowWriter

    w = RowWriter(dst)
    for i, row in enumerate(read_rows(src)):
        edit(i, row)
        w.write(row)
    w.close()


@pytest.mark.parametrize("damage, message", [
    ("relink", "ends in"),
    ("duplicate_key", "occurs 2 times as a key"),
    ("distractor_to_real", "reaches the real question"),
    ("over_budget", "over the budget"),
    ("miscount", "recorded prompt_tokens"),
])
def test_validate_rejects_damaged_rows(kc_files, tmp_path, damage, message):
    def edit(i, row):
        if i != 2:
            return
        info, msg = row["extra_info"], row["prompt"][-1]
        user = msg["content"]
        pairs, _ = parse_pairs(user, "hex8")
        value = dict(pairs)
        last = info["chain"][-1]
        other_end = next(k for k, v in pairs if v not in value and k != last)
        if damage == "relink":
            msg["content"] = user.replace(f'{{"{info["chain"][1]}": "{info["chain"][2]}"}}',
                                          f'{{"{info["chain"][1]}": "{other_end}"}}')
        elif damage == "duplicate_key":
            msg["content"] = user.replace(f'{{"{other_end}": ', f'{{"{last}": ', 1)
        elif damage == "distractor_to_real":
            msg["content"] = user.replace(f'{{"{other_end}": "{value[other_end]}"}}',
                                          f'{{"{other_end}": "{info["question"]}"}}')
        elif damage == "over_budget":
            info["max_prompt_tokens"] = info["prompt_tokens"] - 1
        elif damage == "miscount":
            info["prompt_tokens"] -= 3

    out = str(tmp_path / "damaged.parquet")
    _rewrite(kc_files["hotpotqa"], out, edit)
    report = validate_file(out, QWEN)
    assert not report.ok and report.failed_rows == 1
    assert any(e.startswith(f"{out}: row 2: ") and message in e for e in report.errors), report.errors


def _cfg(**kw):
    base = dict(source="musique", input=INPUTS["musique"], tokenizer=QWEN, max_prompt_tokens=4096, num=8, seed=5)
    base.update(kw)
    return SynthConfig(**base)


def test_same_seed_same_bytes_any_workers(tmp_path):
    paths = [str(tmp_path / f"{n}.parquet") for n in ("a", "b", "w2")]
    synthesize(_cfg(), paths[0], progress=False)
    synthesize(_cfg(), paths[1], progress=False)
    synthesize(_cfg(), paths[2], workers=2, progress=False)
    blobs = [open(p, "rb").read() for p in paths]
    assert blobs[0] == blobs[1] == blobs[2]
    other = str(tmp_path / "seed6.parquet")
    synthesize(_cfg(seed=6), other, progress=False)
    assert open(other, "rb").read() != blobs[0]


def test_each_item_gets_its_own_permutation(kc_files):
    depths = [tuple(r["extra_info"]["gold_passage_depths"]) for r in read_rows(kc_files["hotpotqa"])]
    assert len(set(depths)) == len(depths)


def test_placement_policies_move_gold_passages(tmp_path):
    def gold_depths(**kw):
        out = str(tmp_path / f"{kw}.parquet".replace(" ", ""))
        synthesize(_cfg(source="hotpotqa", input=INPUTS["hotpotqa"], num=12, **kw), out, progress=False)
        return [d for r in read_rows(out) for d in r["extra_info"]["gold_passage_depths"]]

    early = gold_depths(placement="fixed", depth=0.0)
    late = gold_depths(placement="fixed", depth=1.0)
    mid = gold_depths(placement="gaussian", sigma=0.1)
    uniform = gold_depths(placement="uniform")
    assert max(early) < 0.15 and min(late) > 0.8
    assert statistics.mean(abs(d - 0.5) for d in mid) < 0.12 < statistics.mean(abs(d - 0.5) for d in uniform)


def test_interrupted_run_leaves_no_file_that_looks_complete(tmp_path):
    """Ctrl-C in the middle of a real run: the previous output stays as it was and no .tmp is left."""
    out = tmp_path / "kc.parquet"
    out.write_bytes(b"previous complete output")
    cmd = [sys.executable, "-m", "loongrl.cli", "data", "keychain", "--source", "musique", "--input",
           INPUTS["musique"], "--tokenizer", QWEN, "--max-prompt-tokens", "16384", "--out", str(out)]
    # A job started in the background by a non-interactive shell inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: give the child the default, as a terminal's Ctrl-C would find it.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (tmp_path / "kc.parquet.tmp").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()  # still writing rows
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert out.read_bytes() == b"previous complete output"
    assert not (tmp_path / "kc.parquet.tmp").exists()


def test_skips_are_counted_never_silent(tmp_path):
    out = str(tmp_path / "tiny.jsonl")
    s = synthesize(_cfg(max_prompt_tokens=3000, num=None), out, progress=False)
    assert s.read == 300 and s.written + sum(s.skipped.values()) == 300
    assert s.skipped["own_passages_over_budget"] > 0 and s.written > 0
    assert s.line().startswith(f"read 300 / written {s.written} / skipped {300 - s.written}: ")
    assert len(read_rows(out)) == s.written


def test_uuid_and_alnum_keys(tmp_path):
    for fmt, pattern in (("uuid36", r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
                         ("alnum12", r"[A-Za-z0-9]{12}")):
        out = str(tmp_path / f"{fmt}.parquet")
        synthesize(_cfg(key_format=fmt, num=3, max_prompt_tokens=8192), out, progress=False)
        rows = read_rows(out)
        assert all(re.fullmatch(pattern, k) for r in rows for k in r["extra_info"]["chain"])
        assert validate_file(out, QWEN).ok


def test_unsupported_tokenizer_still_meets_the_budget(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    data = load_source("musique", INPUTS["musique"])
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(data.pool.texts + [r.question for r in data.records],
                            trainers.WordLevelTrainer(special_tokens=["[UNK]", "<|im_end|>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<|im_end|>")
    fast.chat_template = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}<|im_end|>{% endfor %}"
                          "{% if add_generation_prompt %}<assistant>{% endif %}")
    path = str(tmp_path / "wl")
    fast.save_pretrained(path)
    out = str(tmp_path / "wl.parquet")
    s = synthesize(_cfg(tokenizer=path, num=4), out, progress=False)
    assert s.written == 4
    assert validate_file(out, path).ok


def test_trimming_drops_the_fewest_filler_tokens_and_never_an_own_passage(counter):
    """A prompt counted over the budget (non-additive tokenizers) loses fillers: the smallest filler that
    covers the excess alone, else the largest ones first; the item's own passages are never dropped."""
    from tokenizers import Tokenizer

    from loongrl.data import prompts
    from loongrl.data.synth import RowBuilder, Skip

    data = load_source("hotpotqa", INPUTS["hotpotqa"])
    cfg = SynthConfig(source="hotpotqa", input=INPUTS["hotpotqa"], tokenizer=QWEN, max_prompt_tokens=4096)
    builder = RowBuilder(cfg, data, counter)
    own = list(data.records[0].passage_ids)
    # Filler sizes counted independently (the tokenizer file itself), far apart: ~30, ~120, ~300 tokens.
    tok = Tokenizer.from_file(f"{QWEN}/tokenizer.json")
    size = {p: len(tok.encode(builder.bodies[p]).ids) for p in range(len(data.pool)) if p not in own}
    short, medium, long_ = (min(size, key=lambda p: abs(size[p] - n)) for n in (30, 120, 300))
    assert abs(size[short] - 30) < 5 and abs(size[medium] - 120) < 10 and abs(size[long_] - 300) < 20
    chosen = own + [medium, long_, short]
    n_own = len(own)
    assert builder._drop_fillers(chosen, n_own, 1) == own + [medium, long_]          # smallest that covers 1
    assert builder._drop_fillers(chosen, n_own, 200) == own + [medium, short]        # only the long one covers 200
    assert builder._drop_fillers(chosen, n_own, 350) == own + [short]                # long, then medium covers ~50
    assert builder._drop_fillers(chosen, n_own, 0) == chosen
    # At exactly the short filler's cost (its block with the join, plus the last header: Qwen's counts are
    # additive), the short one still covers the excess.
    exact = (len(tok.encode(builder.bodies[short] + prompts.PASSAGE_JOIN).ids)
             + len(tok.encode(prompts.PASSAGE_HEADER.format(i=len(chosen))).ids))
    assert builder._drop_fillers(chosen, n_own, exact) == own + [medium, long_]
    assert builder._drop_fillers(chosen, n_own, exact + 1) == own + [long_, short]
    with pytest.raises(Skip, match="own_passages_over_budget"):
        builder._drop_fillers(chosen, n_own, 10_000)
    assert chosen == own + [medium, long_, short]                                    # the caller's list is not changed
