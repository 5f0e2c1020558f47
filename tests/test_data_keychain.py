"""KeyChain and plain-QA rows built from the shipped data, checked from the outside."""

from __future__ import annotations

import json
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import INPUTS, QWEN, read_rows

from loongrl.data import SynthConfig, synthesize, validate_file
from loongrl.data import keychain as kc
from loongrl.data.prompts import KEYCHAIN_TAIL, LOONGRL_SYSTEM
from loongrl.data.sources import InputError, load_source
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


@pytest.mark.parametrize("damage, message", [
    (lambda row: row.update(prompt=row["prompt"][-1]["content"]), "prompt: expected a list of {role, content} "
                                                                   "messages, got str"),
    (lambda row: row.update(prompt=["hello"]), "prompt[0]: expected a {role, content} message of strings, got 'hello'"),
    (lambda row: row["prompt"][-1].update(content=None), "prompt[1]: expected a {role, content} message of strings"),
    (lambda row: row.update(extra_info="kc"), "extra_info: expected an object, got str"),
    (lambda row: row.update(reward_model=["x"]), "reward_model: expected an object, got list"),
    (lambda row: row["extra_info"].update(max_prompt_tokens="16384"), "extra_info.max_prompt_tokens: expected int, "
                                                                       "got str"),
    (lambda row: row["extra_info"].update(hops="4"), "extra_info.hops: expected int, got str"),
    (lambda row: row["extra_info"].pop("chain"), "extra_info.chain: missing"),
    (lambda row: row["extra_info"].update(key_format="alnum0"), "extra_info.key_format: unknown key format 'alnum0'"),
])
def test_validate_names_row_and_field_of_a_wrong_type(kc_files, tmp_path, damage, message):
    # JSONL rows can hold any type (parquet's schema cannot): these raised AttributeError, TypeError or KeyError
    rows = read_rows(kc_files["hotpotqa"])[:3]
    damage(rows[1])
    out = tmp_path / "typed.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = validate_file(str(out), QWEN)
    assert (report.rows, report.failed_rows) == (3, 1)
    assert any(e.startswith(f"{out}: row 1: {message}") for e in report.errors), report.errors


def test_validate_names_a_row_that_is_not_an_object(tmp_path):
    out = tmp_path / "list.jsonl"
    out.write_text('["a", "b"]\n', encoding="utf-8")
    report = validate_file(str(out), QWEN)
    assert report.errors == [f"{out}: row 0: row: expected an object with the fields data_source, prompt, ability, "
                             "reward_model, extra_info, got list"]


@pytest.mark.parametrize("name, content, message", [
    ("empty.jsonl", "", "{path}: holds no rows"),                # was '0 rows checked, 0 failed' with no reason
    ("blank.jsonl", "\n\n", "{path}: holds no rows"),
    ("garbage.parquet", "not parquet", "{path}: not a readable parquet file (Parquet magic bytes not found in footer"),
    ("folder", None, "{path}: is a folder, not a row file (.parquet or .jsonl)"),
])
def test_validate_names_a_file_with_no_rows_to_check(tmp_path, name, content, message):
    path = tmp_path / name
    path.mkdir() if content is None else path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(message.format(path=path))):
        validate_file(str(path), QWEN)


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
    assert s.written == 4 and s.fit["verified"] == 4                 # every prompt counted whole
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


# ---- issue 13: what a synthesis run reads, skips and records, on a hand-written source ----------------------

def _bookkeeping_source(tmp_path):
    """Eight items q0..q7 of two short passages each, q5's own passage far over 1,024 tokens, one row without a
    question; and an extra filler pool of one passage."""
    rows = []
    for i in range(8):
        first = ("word " * 1500).strip() if i == 5 else f"Item {i} says the river is long."
        rows.append({"id": f"q{i}", "question": f"Question number {i}?", "answers": [f"answer {i}"],
                     "passages": [{"title": f"T{i}", "text": first},
                                  {"title": f"U{i}", "text": f"Item {i} adds that the hill is high. It is old."}]})
    rows.insert(3, {"id": "bad", "answers": ["x"], "passages": [{"text": "y"}]})
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps([{"title": "Extra", "text": "The extra filler passage is here."}]), encoding="utf-8")
    return str(path), str(extra)


def _bookkeeping_cfg(path, extra, **kw):
    base = dict(source="jsonl", input=path, tokenizer=QWEN, max_prompt_tokens=1024, keychain=False, extra_pool=extra,
                start=1, include=frozenset(f"q{i}" for i in range(1, 7)),
                exclude=frozenset({"q2", "question number 3?"}), num=2)
    base.update(kw)
    return SynthConfig(**base)


def test_synthesis_counts_every_item_it_leaves_out_and_records_its_run(tmp_path, counter):
    import hashlib

    path, extra = _bookkeeping_source(tmp_path)
    out = str(tmp_path / "rows.jsonl")
    before = time.perf_counter()
    s = synthesize(_bookkeeping_cfg(path, extra), out, progress=False)
    wall = time.perf_counter() - before
    # 9 rows read; q0 is before start=1, q7 not in the id list, q2 (by id) and q3 (by question, any case)
    # excluded: q1, q4, q5, q6 are left, and --num 2 takes q1 and q4
    skipped = {"beyond_num": 2, "before_start": 1, "excluded": 2, "missing_question": 1, "not_in_ids": 1}
    assert (s.read, s.written, dict(s.skipped)) == (9, 2, skipped)
    rows = read_rows(out)
    assert [r["extra_info"]["id"] for r in rows] == ["q1", "q4"]
    # the pool is small: every short passage fits, the extra pool's one included
    assert all("The extra filler passage is here." in r["prompt"][-1]["content"] for r in rows)
    assert 0 <= s.setup_seconds and 0 <= s.rows_seconds and s.setup_seconds + s.rows_seconds <= wall
    record = json.load(open(out + ".summary.json", encoding="utf-8"))
    assert record == {
        "read": 9, "written": 2, "skipped": skipped, "extra_pool_skipped": {},
        "config": {"source": "jsonl", "input": path, "tokenizer": QWEN, "max_prompt_tokens": 1024, "keychain": False,
                   "num_chains": None, "hops": 4, "key_format": "hex8", "placement": "uniform", "depth": 0.5,
                   "sigma": 0.3, "system_prompt": "loongrl", "seed": 0, "num": 2, "start": 1, "exclude": 2,
                   "include": 6, "extra_pool": extra, "strict": False, "max_misses": 32, "split": "train"},
        "input_sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
        "tokenizer_fingerprint": counter.fingerprint, "exact_fast_counting": True, "additive_counting": True,
        "tokenizer_engine": "tokenizers", "fit": {},
        "setup_seconds": round(s.setup_seconds, 3), "rows_seconds": round(s.rows_seconds, 3)}
    with pytest.raises(InputError) as err:                             # --strict: the row without a question stops it
        synthesize(_bookkeeping_cfg(path, extra, strict=True), out, progress=False)
    assert str(err.value) == f"{path}: row 4: field 'question': missing"


@pytest.mark.parametrize("start, num, ids, skipped", [
    (1, None, ["q1", "q4", "q6"], {"own_passages_over_budget": 1}),    # q5's own passage alone is over the budget
    (1, 0, [], {"beyond_num": 4}),
    (1, 1, ["q1"], {"beyond_num": 3}),
    (1, 3, ["q1", "q4", "q6"], {"own_passages_over_budget": 1}),       # every item used: nothing beyond --num
    (0, 1, ["q1"], {"beyond_num": 3, "before_start": None, "not_in_ids": 2}),   # q0 is now left out by the id list
])
def test_synthesis_num_and_the_items_it_never_reached(tmp_path, start, num, ids, skipped):
    path, extra = _bookkeeping_source(tmp_path)
    out = str(tmp_path / "rows.jsonl")
    s = synthesize(_bookkeeping_cfg(path, extra, start=start, num=num), out, progress=False)
    # items q1, q4, q5, q6 are left after the start, the id list and the exclusions (as above)
    expected = {"before_start": 1, "excluded": 2, "missing_question": 1, "not_in_ids": 1, **skipped}
    assert dict(s.skipped) == {k: v for k, v in expected.items() if v is not None}
    assert [r["extra_info"]["id"] for r in read_rows(out)] == ids and s.written == len(ids)


def _bar_on_a_terminal(config, out, **kw) -> str:
    """Synthesize with stderr on a pseudo-terminal of 100 columns; the progress bar as it was left."""
    import contextlib
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with open(slave, "w", encoding="utf-8") as tty, contextlib.redirect_stderr(tty):
        synthesize(config, out, **kw)
    chunks = []
    while True:   # what was written reaches this side asynchronously: read until EIO (closed and drained)
        try:
            chunks.append(os.read(master, 1 << 16))
        except OSError:
            break
    os.close(master)
    text = b"".join(chunks).decode()
    return text.strip().split("\r")[-1]   # the terminal ends the last line with "\r\n"


def test_the_progress_bar_is_drawn_on_a_terminal_only(tmp_path, capsys):
    path, extra = _bookkeeping_source(tmp_path)
    out = str(tmp_path / "rows.jsonl")
    bar = _bar_on_a_terminal(_bookkeeping_cfg(path, extra), out)      # progress is on by default
    # 100%, 2 of 2 rows, the rate in rows (row/s, or s/row when a row took over a second)
    assert bar.startswith("qa jsonl: 100%|") and "| 2/2 [" in bar and re.search(r"[\d?]row/s\]$|s/row\]$", bar), bar
    bar = _bar_on_a_terminal(_bookkeeping_cfg(path, extra, keychain=True, num_chains=2, hops=2), out, progress=True)
    assert bar.startswith("keychain jsonl: 100%|"), bar
    assert _bar_on_a_terminal(_bookkeeping_cfg(path, extra), out, progress=False) == ""
    # stderr is not a terminal (a log file, a pipe): plain lines instead of a bar, none with progress off
    synthesize(_bookkeeping_cfg(path, extra), out)
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("qa jsonl: 2/2 rows (100%), ") and "\r" not in err, err
    synthesize(_bookkeeping_cfg(path, extra), out, progress=False)
    assert capsys.readouterr().err == ""


# ---- issue 13: settings refused up front, the chain count, and every reason a row is not made -----------------

@pytest.mark.parametrize("setting, message", [
    ({"max_prompt_tokens": 0}, "max-prompt-tokens: must be >= 1, got 0"),
    ({"hops": 0}, "hops: must be >= 1, got 0"),
    ({"num_chains": 0}, "num-chains: must be >= 1, got 0"),
    ({"num": -1}, "num: must be >= 0, got -1"),
    ({"start": -1}, "start: must be >= 0, got -1"),
    ({"depth": 1.5}, r"depth: must be in \[0, 1\], got 1.5"),
    ({"depth": -0.1}, r"depth: must be in \[0, 1\], got -0.1"),
])
def test_synth_config_refuses_settings_that_cannot_make_a_row(setting, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        SynthConfig(source="jsonl", input="x.jsonl", tokenizer=QWEN, **setting)


def test_synth_config_accepts_the_lowest_settings_and_counts_chains_per_1k_tokens():
    low = SynthConfig(source="jsonl", input="x.jsonl", tokenizer=QWEN, max_prompt_tokens=1, hops=1, num_chains=1,
                      num=0, start=0, depth=0.0)
    assert (low.max_prompt_tokens, low.hops, low.chains(), low.num, low.start) == (1, 1, 1, 0, 0)
    assert SynthConfig(source="jsonl", input="x.jsonl", tokenizer=QWEN, depth=1.0).depth == 1.0

    def chains(budget, key_format="hex8"):
        return SynthConfig(source="jsonl", input="x.jsonl", tokenizer=QWEN, max_prompt_tokens=budget,
                           key_format=key_format).chains()

    assert chains(16384) == 64 and chains(16384, "alnum8") == 64 and chains(16384, "uuid36") == 16
    assert chains(1000) == 3                 # 4 * 1000 // 1024
    assert chains(512) == 2 and chains(256) == 2 and chains(2048, "uuid36") == 2   # never fewer than 2


@pytest.mark.parametrize("setting, message", [
    ({"key_format": "alnumx"}, r"key-format: unknown key format 'alnumx' \(hex8, uuid36, alnumN with 1 <= N <= 64\)"),
    ({"key_format": "alnum0"}, r"key-format: unknown key format 'alnum0'"),
    # 16 chains x 4 hops at 4096 tokens: 64 keys, more than one letter or digit can make
    ({"key_format": "alnum1"}, r"key-format: alnum1 makes 62 distinct keys, fewer than twice the 64 a row needs "
                               r"\(16 chains x 4 hops\); use longer keys \(e.g. alnum8\), hex8 or uuid36"),
    ({"key_format": "alnum1", "num_chains": 8}, r"fewer than twice the 32 a row needs \(8 chains x 4 hops\)"),
])
def test_synth_config_refuses_key_formats_that_cannot_make_the_keys_a_row_needs(setting, message):
    with pytest.raises(ValueError, match=message):
        SynthConfig(**{"source": "jsonl", "input": "x.jsonl", "tokenizer": QWEN, "max_prompt_tokens": 4096, **setting})


def test_synth_config_accepts_key_formats_with_twice_the_keys_a_row_needs():
    ok = SynthConfig(source="jsonl", input="x.jsonl", tokenizer=QWEN, key_format="alnum1", num_chains=31, hops=1)
    assert ok.chains() * ok.hops * 2 == kc.key_space("alnum1")
    assert SynthConfig(source="jsonl", input="x.jsonl", tokenizer=QWEN, key_format="alnum64").key_format == "alnum64"
    # plain QA rows have no keys: their key format is only checked to be one
    assert SynthConfig(source="jsonl", input="x.jsonl", tokenizer=QWEN, keychain=False, key_format="alnum1").chains()


def test_item_generator_is_seeded_by_seed_source_and_id():
    import hashlib
    import random

    from loongrl.data.synth import item_rng

    digest = hashlib.sha256(b"7\x00musique\x00item-1").digest()
    expected = random.Random(int.from_bytes(digest[:8], "big")).random()
    assert item_rng(7, "musique", "item-1").random() == expected


def _small_source(tmp_path, questions=None, title="T{i}", text="Item {i} says the river is long. It is old."):
    questions = questions or [f"Question number {i}?" for i in range(8)]
    rows = [{"id": f"q{i}", "question": q, "answers": [f"answer {i}"],
             "passages": [{"title": title.format(i=i), "text": text.format(i=i)}]} for i, q in enumerate(questions)]
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("source_kw, setting, written, skipped", [
    ({"questions": [f"Question number {i}?" for i in range(7)] + ['Is {"a": "b"} a pair?']}, {}, 7,
     {"question_contains_pair_delimiter": 1}),
    ({}, {"num_chains": 8}, 8, {}),                                    # 7 other questions: enough for 7 decoys
    ({}, {"num_chains": 9}, 0, {"too_few_distractor_questions": 8}),   # ... not for 8
    ({}, {"hops": 60}, 0, {"chains_over_budget": 8}),                  # 2 chains x 60 pairs cannot fit 1,024 tokens
    ({"title": "(T{i})", "text": "(text {i}) ends here"}, {}, 0, {"too_few_insertion_sites": 8}),   # no site at all
    ({}, {"key_format": "alnum1"}, 0, {"key_collision": 8}),           # one-letter keys occur in any text
    # a question holding the pair delimiter is never a decoy either: 6 decoys left for the 7 each row needs
    ({"questions": [f"Question number {i}?" for i in range(7)] + ['Is {"a": "b"} a pair?']}, {"num_chains": 8}, 0,
     {"question_contains_pair_delimiter": 1, "too_few_distractor_questions": 7}),
    # q7 asks q0's question in capitals: one question, so 6 distinct decoys for every row
    ({"questions": [f"Question number {i}?" for i in range(7)] + ["QUESTION NUMBER 0?"]}, {"num_chains": 8}, 0,
     {"too_few_distractor_questions": 8}),
    # one site per passage (the line after its title), all 8 passages in each row: just enough for 2 x 4 pairs
    ({"title": "(T{i})", "text": "Item {i} ends here"}, {"hops": 4}, 8, {}),
])
def test_every_item_that_cannot_become_a_keychain_row_is_counted_by_reason(tmp_path, source_kw, setting, written,
                                                                           skipped):
    cfg = SynthConfig(**{"source": "jsonl", "input": _small_source(tmp_path, **source_kw), "tokenizer": QWEN,
                         "max_prompt_tokens": 1024, "num_chains": 2, "hops": 2, **setting})
    s = synthesize(cfg, str(tmp_path / "rows.jsonl"), progress=False)
    assert (s.read, s.written, dict(s.skipped)) == (8, written, skipped)


def test_pairs_after_a_sentence_are_counted_where_the_space_before_a_pair_costs_a_token(tmp_path):
    # In Qwen ' {"' costs no more tokens than '{"'; in a bytes-only BPE (additive, so counted piecewise) it costs
    # 3 against 2: each pair inserted after a sentence costs one token more, and the recorded count must say so
    from test_data_tokens import _tokenizer_folder

    from loongrl.data.tokens import TokenCounter

    folder = _tokenizer_folder(tmp_path / "bytes")
    counter = TokenCounter(folder)
    assert counter.additive and counter.count(' {"') - counter.count('{"') == 1
    cfg = SynthConfig(source="jsonl", input=_small_source(tmp_path), tokenizer=folder, max_prompt_tokens=4096,
                      num_chains=2, hops=4)
    out = str(tmp_path / "rows.jsonl")
    assert synthesize(cfg, out, progress=False).written == 8
    rows = read_rows(out)
    assert any(" {\"" in r["prompt"][-1]["content"] for r in rows)   # some pairs follow a sentence
    assert validate_file(out, folder).ok                              # recorded prompt_tokens = actual count


def test_passages_of_one_token_are_counted_exactly(tmp_path):
    # ".\n\n" is one Qwen token: the smallest passage block there is, counted as it is (not rounded up)
    rows = [{"id": f"q{i}", "question": f"Question number {i}?", "answers": [f"answer {i}"],
             "passages": [{"title": f"T{i}", "text": f"Item {i} says the river is long."}, {"text": mark}]}
            for i, mark in enumerate([".", "?", ")", ":", ";", "!"])]
    path = tmp_path / "marks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = str(tmp_path / "rows.jsonl")
    cfg = SynthConfig(source="jsonl", input=str(path), tokenizer=QWEN, max_prompt_tokens=1024, keychain=False)
    assert synthesize(cfg, out, progress=False).written == 6
    assert all("\n.\n\n" in r["prompt"][-1]["content"] for r in read_rows(out))
    assert validate_file(out, QWEN).ok   # recorded prompt_tokens = the actual count


@pytest.mark.parametrize("collisions, written, skipped", [(3, 8, {}), (4, 0, {"key_collision": 8})])
def test_a_row_draws_its_keys_at_most_four_times(tmp_path, monkeypatch, collisions, written, skipped):
    # keys that happen to occur in the row's text are drawn again, 4 draws in all: the first `collisions`
    # draws of each row are made to collide (a row's draws share its questions, the end of the checked text)
    from loongrl.data import keychain

    draws, real = Counter(), keychain.keys_in_text

    def colliding(keys, text, key_format):
        row = tuple(text[:-len(KEYCHAIN_TAIL) - 1].rsplit("\n", 2)[-2:])   # its question and its decoy's
        draws[row] += 1
        return set(keys[:1]) if draws[row] <= collisions else real(keys, text, key_format)

    monkeypatch.setattr(keychain, "keys_in_text", colliding)
    cfg = SynthConfig(source="jsonl", input=_small_source(tmp_path), tokenizer=QWEN, max_prompt_tokens=1024,
                      num_chains=2, hops=2)
    s = synthesize(cfg, str(tmp_path / "rows.jsonl"), progress=False)
    assert (s.written, dict(s.skipped)) == (written, skipped)
    assert sorted(draws.values()) == [min(collisions + 1, 4)] * 8


def _context(user, intro, tail):
    """The passages part of a user message: intro + context + blank line + tail."""
    assert user.startswith(intro) and user.endswith("\n\n" + tail)
    return user[len(intro):-len("\n\n" + tail)]


@pytest.mark.parametrize("keychain", [False, True])
def test_each_row_records_its_item_its_passages_and_its_chain(tmp_path, counter, keychain):
    from loongrl.data.prompts import KEYCHAIN_INTRO, QA_INTRO

    path = _small_source(tmp_path)     # eight items of one short passage each: every passage fits 1,024 tokens
    rows = {}
    for depth in (0.0, 1.0):
        out = str(tmp_path / f"rows{depth}.jsonl")
        cfg = SynthConfig(source="jsonl", input=path, tokenizer=QWEN, max_prompt_tokens=1024, keychain=keychain,
                          num_chains=2, hops=2, placement="fixed", depth=depth, seed=3, num=1, split="dev")
        synthesize(cfg, out, progress=False)
        [rows[depth]] = read_rows(out)
    row = rows[0.0]
    info, user = row["extra_info"], row["prompt"][-1]["content"]
    tail = KEYCHAIN_TAIL.format(head=info["chain_head"]) if keychain else "Question: Question number 0?"
    ctx = _context(user, KEYCHAIN_INTRO if keychain else QA_INTRO, tail)
    assert "Item 0 says" in ctx[:ctx.index("Passage 2:\n")]                       # the gold passage first
    if not keychain:   # a passage block is its title, its text and a blank line
        assert ctx.startswith("Passage 1:\nT0\nItem 0 says the river is long. It is old.\n\nPassage 2:\nT")
    assert (row["data_source"], row["ability"], row["reward_model"]) == (
        ("keychain_jsonl" if keychain else "longqa_jsonl"), "longcontext_qa", {"style": "rule", "ground_truth": ["answer 0"]})
    chain = info["chain"]
    if keychain:   # chain 0: head -> second key -> the real question, its links found in the context
        assert len(chain) == 2 and all(re.fullmatch(r"[0-9a-f]{8}", k) for k in chain) and info["chain_head"] == chain[0]
        links = [f'{{"{chain[0]}": "{chain[1]}"}}', f'{{"{chain[1]}": "Question number 0?"}}']
        starts = [ctx.index(link) for link in links]
        starts = [i - 1 if ctx[i - 1] == " " else i for i in starts]     # a sentence site's pair starts with a space
        link_depths = [round(i / len(ctx), 6) for i in starts]
    else:
        link_depths = []
    assert info == {
        "split": "dev", "index": 0, "id": "q0", "source": "jsonl", "kind": "keychain" if keychain else "qa",
        "question": "Question number 0?", "answers": ["answer 0"], "prompt_tokens": counter.count_chat(row["prompt"]),
        "max_prompt_tokens": 1024, "tokenizer": QWEN, "tokenizer_fingerprint": counter.fingerprint, "seed": 3,
        "num_passages": 8, "num_fillers": 7, "placement": "fixed", "gold_passage_depths": [0.0],
        "chain_head": chain[0] if keychain else "", "chain": chain if keychain else [],
        "real_link_depths": link_depths, "num_chains": 2 if keychain else 0, "hops": 2 if keychain else 0,
        "key_format": "hex8" if keychain else ""}
    # depth 1: the gold passage is the last block, "Passage 8:"
    last = rows[1.0]
    tail = KEYCHAIN_TAIL.format(head=last["extra_info"]["chain_head"]) if keychain else "Question: Question number 0?"
    ctx = _context(last["prompt"][-1]["content"], KEYCHAIN_INTRO if keychain else QA_INTRO, tail)
    assert "Item 0 says" in ctx[ctx.index("Passage 8:\n"):]
    assert last["extra_info"]["gold_passage_depths"] == [round(ctx.index("Passage 8:\n") / len(ctx), 6)]


def test_the_same_item_in_two_sources_gets_its_own_keys(tmp_path):
    # one item written as HotpotQA and as generic JSONL: its generator is seeded by (seed, source, id)
    items = [{"_id": f"q{i}", "question": f"Question number {i}?", "answer": f"answer {i}",
              "context": [[f"T{i}", [f"Item {i} says the river is long. ", "It is old."]]],
              "supporting_facts": [[f"T{i}", 0]]} for i in range(4)]
    hotpot = tmp_path / "h.json"
    hotpot.write_text(json.dumps(items), encoding="utf-8")
    generic = tmp_path / "g.jsonl"
    generic.write_text("".join(json.dumps({"id": r["_id"], "question": r["question"], "answers": [r["answer"]],
                                           "passages": [{"title": r["context"][0][0], "text": "".join(r["context"][0][1])}]})
                               + "\n" for r in items), encoding="utf-8")
    chains = {}
    for source, path in (("hotpotqa", hotpot), ("jsonl", generic)):
        out = str(tmp_path / f"{source}.jsonl")
        synthesize(SynthConfig(source=source, input=str(path), tokenizer=QWEN, max_prompt_tokens=1024, num_chains=2,
                               hops=2, num=1), out, progress=False)
        [row] = read_rows(out)
        chains[source] = row["extra_info"]["chain"]
    assert len(chains["hotpotqa"]) == len(chains["jsonl"]) == 2 and not set(chains["hotpotqa"]) & set(chains["jsonl"])


@pytest.mark.parametrize("system_prompt, system", [
    ("none", None), ("Answer briefly.", "Answer briefly."), ("loongrl", LOONGRL_SYSTEM)])
def test_the_system_prompt_setting_decides_the_system_message(tmp_path, system_prompt, system):
    out = str(tmp_path / "rows.jsonl")
    synthesize(SynthConfig(source="jsonl", input=_small_source(tmp_path), tokenizer=QWEN, max_prompt_tokens=1024,
                           keychain=False, system_prompt=system_prompt, num=1), out, progress=False)
    [row] = read_rows(out)
    assert [m["role"] for m in row["prompt"]] == (["system", "user"] if system else ["user"])
    assert system is None or row["prompt"][0]["content"] == system
