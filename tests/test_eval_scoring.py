"""Evaluation scoring rules, value by value: RULER's reasoning variant and require_think, LongBench's
truncation, --strip-think, presets, row checks and summaries (worked out by hand on real rows)."""

from __future__ import annotations

import json

import pytest
from conftest import QWEN
from longbench_rows import rows, write

from loongrl.eval import longbench as lb
from loongrl.eval import ruler
from loongrl.eval.run import EvalItem
from loongrl.generation.backends import SamplingConfig


@pytest.fixture(scope="module")
def tokenizer():
    from loongrl.data.tokens import get_counter

    return get_counter(QWEN).tokenizer


@pytest.fixture(scope="module")
def hotpot():
    return rows("hotpotqa", "hotpotqa", 3)


def _item(task: str, golds: list[str]) -> EvalItem:
    return EvalItem(f"{task}/0", task, [], golds)


# ---- RULER ----------------------------------------------------------------------------------------

KINDS = {"niah_multivalue": "niah", "qa_1": "qa"}
NIAH = _item("niah_multivalue", ["8230912", "1094587"])
QA = _item("qa_1", ["Paris", "Lyon"])


def test_ruler_scores_the_raw_continuation_without_reasoning():
    score = ruler.make_scorer(KINDS, reasoning=False)
    [[niah]], [[qa]] = score([NIAH], [["8230912 and 1094587"]]), score([QA], [["<think>Paris</think> no idea"]])
    assert niah == {"pred": "8230912 and 1094587", "score": 1.0}
    assert qa == {"pred": "<think>Paris</think> no idea", "score": 1.0}            # the whole text counts


def test_ruler_reasoning_scores_only_the_text_after_think():
    score = ruler.make_scorer(KINDS, reasoning=True)
    [[a, b, c]] = score([NIAH], [["<think>8230912 1094587</think> 8230912", "8230912 1094587",
                                   "<think>x</think>8230912, 1094587"]])
    assert (a["pred"], a["score"]) == ("8230912", 0.5)          # string_match_all: one of two values
    assert (b["pred"], b["score"]) == (None, 0.0)               # no </think>: no answer
    assert c["score"] == 1.0
    relaxed = ruler.make_scorer(KINDS, reasoning=True, require_think=False)
    [[d]] = relaxed([NIAH], [["8230912 1094587"]])
    assert (d["pred"], d["score"]) == ("8230912 1094587", 1.0)
    [[e]] = relaxed([QA], [["<think>Paris</think> Lyon!"]])
    assert (e["pred"], e["score"]) == ("Lyon!", 1.0)


@pytest.mark.parametrize("length, to_generate, new, window, budget", [
    (4096, 128, 128, 131072, 3968),            # RULER's own budget
    (131072, 128, 8192, 131072, 122880),       # reasoning at 128K: the window caps it
    (131072, 128, 128, 131072, 130944),
    (8192, 50, 8192, 8192 + 8142, 8142),       # both caps equal
])
def test_ruler_prompt_budget(length, to_generate, new, window, budget):
    assert ruler.prompt_budget(length, to_generate, new, window) == budget


def test_ruler_budget_errors():
    with pytest.raises(ValueError, match="RULER length 8192 exceeds the model window 4096"):
        ruler.prompt_budget(8192, 128, 128, 4096)
    assert ruler.prompt_budget(4096, 128, 128, 4096) == 3968           # a length equal to the window is fine
    assert ruler.prompt_budget(4096, 128, 4095, 4096) == 1             # one token of room is still room
    with pytest.raises(ValueError, match="no room for a prompt: window 4096 - 4096 new tokens"):
        ruler.prompt_budget(4096, 128, 4096, 4096)


def test_ruler_summary_by_hand():
    records = [{"task": t, "meta": {"length": n}, "score": s}
               for t, n, s in [("niah", 4096, 1.0), ("niah", 4096, 0.5), ("niah", 8192, 0.0), ("qa", 4096, 0.25)]]
    summary, table = ruler.summarize(records)
    assert summary == {"scores": {"niah": {"4096": 75.0, "8192": 0.0}, "qa": {"4096": 25.0}},
                       "average": {"4096": 50.0, "8192": 0.0}, "lengths": [4096, 8192]}
    assert table == [["niah", 75.0, 0.0], ["qa", 25.0, ""], ["average", 50.0, 0.0]]
    # per-length averages are rounded to 2 decimals: (100 + 0 + 0) / 3 = 33.33
    three = [{"task": t, "meta": {"length": 4096}, "score": s} for t, s in [("niah", 1.0), ("qa", 0.0), ("vt", 0.0)]]
    assert ruler.summarize(three)[0]["average"] == {"4096": 33.33}


# ---- LongBench ------------------------------------------------------------------------------------------

def test_longbench_prompts_are_middle_truncated_to_the_preset(tokenizer, hotpot):
    row = hotpot[0]
    preset = lb.get_preset("official", max_input_tokens=300)
    [item] = lb.build_items("hotpotqa", [row], preset, tokenizer)
    full = lb.load_configs()[0]["hotpotqa"].format(**row)
    full_tokens = len(tokenizer(full, add_special_tokens=False)["input_ids"])
    user = item.messages[-1]["content"]
    assert item.meta == {"dataset": "hotpotqa", "input_tokens": full_tokens, "truncated": True, "length": row["length"]}
    assert full_tokens > 1000 and abs(len(tokenizer(user, add_special_tokens=False)["input_ids"]) - 300) <= 2
    assert user.startswith("Answer the question based on the given passages.")
    assert user.endswith(f"Question: {row['input']}\nAnswer:")                     # both ends survive
    [whole] = lb.build_items("hotpotqa", [row], lb.get_preset("official", max_input_tokens=full_tokens), tokenizer)
    assert whole.messages == [{"role": "user", "content": full}] and whole.meta["truncated"] is False
    assert (whole.id, whole.task, whole.golds, whole.question) == (f"hotpotqa/{row['_id']}", "hotpotqa",
                                                                     row["answers"], row["input"])


def test_strip_think_scores_the_text_after_think():
    responses = [["<think>maybe Nixon</think> Chief of Protocol", "Chief of Protocol"]]
    item = _item("hotpotqa", ["Chief of Protocol"])
    raw = lb.make_scorer(lb.get_preset("official"))([item], responses)
    stripped = lb.make_scorer(lb.get_preset("official", strip_think=True))([item], responses)
    # raw: punctuation goes, so "thinkmaybe nixonthink chief of protocol": P = 3/5, R = 1, F1 = 0.75
    assert [s["score"] for s in raw[0]] == pytest.approx([0.75, 1.0])
    assert stripped[0] == [{"pred": "Chief of Protocol", "score": 1.0}, {"pred": "Chief of Protocol", "score": 1.0}]


def test_loongrl_scoring_reads_one_answer_or_either_when_faithful():
    item = _item("musique", ["Paris"])
    response = [["<think>x</think>\\boxed{Rome}. The answer is Paris.", "no think: the answer is Paris"]]
    ours = lb.make_scorer(lb.get_preset("loongrl"))([item], response)
    faithful = lb.make_scorer(lb.get_preset("loongrl"), faithful=True)([item], response)
    assert ours[0] == [{"pred": "Rome", "rule": 0.0, "judge": "off", "score": 0.0},
                       {"pred": "Paris", "rule": 1.0, "judge": "off", "score": 1.0}]   # require_think is off
    assert [s["score"] for s in faithful[0]] == [1.0, 1.0]


def test_presets_and_overrides():
    official = lb.get_preset("official")
    assert (official.system_prompt, official.template, official.scoring, official.max_input_tokens) == \
        (None, None, "f1", 31500)
    assert official.sampling == SamplingConfig(n=1, temperature=0.0, max_new_tokens=0)
    loong = lb.get_preset("loongrl", n=2, temperature=None, top_p=0.9, max_new_tokens=64, seed=5, strip_think=None)
    assert (loong.sampling.n, loong.sampling.temperature, loong.sampling.top_p, loong.sampling.max_new_tokens,
            loong.sampling.seed, loong.max_input_tokens, loong.strip_think) == (2, 0.6, 0.9, 64, 5, 120000, False)
    assert lb.sampling_for("musique", official).max_new_tokens == 32
    assert lb.sampling_for("narrativeqa", official).max_new_tokens == 128
    assert lb.sampling_for("musique", loong) is loong.sampling
    assert lb.get_preset("official", temperature=0.3).sampling.temperature == 0.3
    with pytest.raises(ValueError, match=r"unknown LongBench preset 'offical' \(choose from official, loongrl\)"):
        lb.get_preset("offical")


def test_longbench_configs_come_from_the_given_data_dir(tmp_path, tokenizer, hotpot):
    # an edited copy of LongBench's two config files: its prompt and max length are used, not the shipped ones
    folder = tmp_path / "longbench_prompts"
    folder.mkdir()
    (folder / "dataset2prompt.json").write_text(json.dumps({"hotpotqa": "Q: {input}\nC: {context}"}))
    (folder / "dataset2maxlen.json").write_text(json.dumps({"hotpotqa": 7}))
    official = lb.get_preset("official")
    row = hotpot[0]
    [item] = lb.build_items("hotpotqa", [row], official, tokenizer, str(tmp_path))
    assert item.messages == [{"role": "user", "content": f"Q: {row['input']}\nC: {row['context']}"}]
    assert lb.sampling_for("hotpotqa", official, str(tmp_path)).max_new_tokens == 7
    assert lb.sampling_for("hotpotqa", official).max_new_tokens == 32                # the shipped copy


@pytest.mark.parametrize("tokens, bucket", [(0, "0-16K"), (16383, "0-16K"), (16384, "16-32K"), (32767, "16-32K"),
                                            (32768, "32-64K"), (65535, "32-64K"), (65536, ">=64K")])
def test_narrativeqa_bucket_edges(tokens, bucket):
    assert lb.length_bucket(tokens) == bucket


@pytest.mark.parametrize("edit, field, problem, reason", [
    (lambda r: "a string", "<row>", "not a JSON object", "not_an_object"),
    (lambda r: {k: v for k, v in r.items() if k != "input"}, "input", "missing or not a str", "bad_field"),
    (lambda r: {**r, "context": 3}, "context", "missing or not a str", "bad_field"),
    (lambda r: {**r, "answers": "Paris"}, "answers", "missing or not a list", "bad_field"),
    (lambda r: {**r, "_id": 7}, "_id", "missing or not a str", "bad_field"),
    (lambda r: {**r, "answers": []}, "answers", "must be a non-empty list of strings", "bad_field"),
    (lambda r: {**r, "answers": ["a", 1]}, "answers", "must be a non-empty list of strings", "bad_field"),
    (lambda r: {**r, "dataset": "musique"}, "dataset", "is 'musique', expected 'hotpotqa'", "bad_field"),
])
def test_longbench_rows_are_checked(tmp_path, hotpot, edit, field, problem, reason):
    good = hotpot
    path = tmp_path / "hotpotqa.jsonl"
    path.write_text(json.dumps(good[0]) + "\n" + json.dumps(edit(good[1])) + "\n")
    with pytest.raises(ValueError) as err:
        lb.load_rows("hotpotqa", str(path))
    assert str(err.value) == f"{path}: row 2: field '{field}': {problem}"
    assert err.value.reason == reason                                   # the skip/error reason a caller counts by


def test_longbench_rows_limit_and_lookup(tmp_path, hotpot):
    data = hotpot
    folder = str(tmp_path)
    write(folder, "hotpotqa", [{**r, "dataset": None} for r in data])
    assert [r["_id"] for r in lb.load_rows("hotpotqa", folder, limit=2)] == [r["_id"] for r in data[:2]]
    assert len(lb.load_rows("hotpotqa", folder)) == 3
    with pytest.raises(ValueError, match=r"unknown LongBench dataset 'trec' \(choose from hotpotqa, 2wikimqa, musique, "
                                         r"narrativeqa, qasper\)"):
        lb.load_rows("trec", folder)
    with pytest.raises(FileNotFoundError) as missing:
        lb.load_rows("qasper", folder)
    assert str(missing.value) == (f"LongBench file not found: {folder}/qasper.jsonl (pass the folder of the official "
                                  "jsonl files, one file, data.zip, or hf:THUDM/LongBench)")


def test_longbench_summary_by_hand():
    records = [{"task": "hotpotqa", "meta": {}, "score": 1.0}, {"task": "hotpotqa", "meta": {}, "score": 0.5},
               {"task": "narrativeqa", "meta": {"bucket": "16-32K"}, "score": 0.25},
               {"task": "narrativeqa", "meta": {"bucket": "0-16K"}, "score": 1.0}]
    summary, table = lb.summarize(records)
    assert summary == {"scores": {"hotpotqa": 75.0, "narrativeqa": 62.5}, "average": 68.75,
                       "items": {"hotpotqa": 2, "narrativeqa": 2},
                       "narrativeqa_buckets": {"0-16K": {"items": 1, "score": 100.0},
                                               "16-32K": {"items": 1, "score": 25.0}}}
    assert table == [["hotpotqa", 2, 75.0], ["narrativeqa", 2, 62.5], ["average", 4, 68.75]]
    assert lb.summarize([])[0] == {"scores": {}, "average": None, "items": {}}
    # the unweighted average is rounded to 2 decimals: (100 + 0 + 0) / 3 = 33.33
    three = [{"task": t, "meta": {}, "score": s} for t, s in [("hotpotqa", 1.0), ("musique", 0.0), ("qasper", 0.0)]]
    assert lb.summarize(three)[0]["average"] == 33.33


# ---- resume (eval/run.py) ---------------------------------------------------------------------------

class Replies:
    """Not a model: every prompt's reply is the prompt's last message upper-cased; counts its prompts."""

    name = "replies"

    def __init__(self):
        self.prompts = []

    def generate(self, prompts, sampling, progress=None):
        self.prompts += [p[-1]["content"] for p in prompts]
        return [[p[-1]["content"].upper()] * sampling.n for p in prompts]


def _items(n: int) -> list[EvalItem]:
    return [EvalItem(f"t/{i}", "t", [{"role": "user", "content": f"q{i}"}], [f"Q{i}"]) for i in range(n)]


def _exact(items, responses):
    return [[{"pred": t, "score": float(t in it.golds)} for t in texts] for it, texts in zip(items, responses)]


def _eval(path, items, model, settings=None, n=1, chunk_size=2):
    from loongrl.eval.run import run_eval

    return run_eval(items, model, SamplingConfig(n=n), _exact, str(path), settings or {"s": 1}, chunk_size=chunk_size,
                    progress=False)


def test_resume_repairs_a_torn_or_unterminated_last_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    model = Replies()
    first = _eval(path, _items(4), model)
    assert [r["score"] for r in first] == [1.0] * 4 and model.prompts == ["q0", "q1", "q2", "q3"]
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3]))                 # the last record whole but without its newline
    again = Replies()
    assert _eval(path, _items(5), again) == first + [_eval(tmp_path / "fresh.jsonl", _items(5)[4:], Replies())[0]]
    assert again.prompts == ["q3", "q4"]
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["t/0", "t/1", "t/2", "t/3", "t/4"]
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])      # a torn last line: redone, file repaired
    torn = Replies()
    _eval(path, _items(3), torn)
    assert torn.prompts == ["q2"] and len(path.read_text().splitlines()) == 3


def test_resume_refuses_other_settings_and_broken_files(tmp_path):
    from loongrl.eval.run import ResumeError, read_done

    path = tmp_path / "samples.jsonl"
    _eval(path, _items(2), Replies())
    with pytest.raises(ResumeError, match=r"samples.jsonl: line 1: written by a run with other settings"):
        _eval(path, _items(2), Replies(), settings={"s": 2})
    with pytest.raises(ResumeError, match="line 1: written by a run with other settings"):
        _eval(path, _items(2), Replies(), n=2)                            # sampling is part of the fingerprint
    lines = path.read_text().splitlines()
    path.write_text("not json\n" + lines[1] + "\n")
    with pytest.raises(ResumeError, match=r"samples.jsonl: line 1: not a sample record"):
        read_done(str(path), json.loads(lines[1])["run"])
    path.write_text(json.dumps({"id": "t/0"}) + "\n" + lines[1] + "\n")   # a record without its run
    with pytest.raises(ResumeError, match="line 1: not a sample record"):
        read_done(str(path), json.loads(lines[1])["run"])
    assert read_done(str(tmp_path / "absent.jsonl"), "x") == {}
    with pytest.raises(ValueError, match="^evaluation items have duplicate ids$"):
        _eval(tmp_path / "dup.jsonl", _items(2) + _items(1), Replies())


def test_run_id_is_a_stable_hash_of_the_sorted_settings():
    # the first 16 hex digits of SHA-256 over the settings as sorted JSON (values JSON lacks, as str):
    # key order does not matter, and a samples.jsonl keeps resuming across versions
    import hashlib
    from pathlib import Path

    from loongrl.eval.run import fingerprint

    expected = hashlib.sha256(b'{"a": "/data", "b": 1}').hexdigest()[:16]
    assert fingerprint({"b": 1, "a": Path("/data")}) == fingerprint({"a": Path("/data"), "b": 1}) == expected


def test_a_complete_file_is_resumed_without_rewrite_or_warning(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    _eval(path, _items(3), Replies())
    before = path.stat()
    again = Replies()
    assert [r["id"] for r in _eval(path, _items(3), again)] == ["t/0", "t/1", "t/2"] and again.prompts == []
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)   # not rewritten
    assert capsys.readouterr().err == ""                                             # no "incomplete" warning


class Dies(Replies):
    """Replies until it is asked for `q8`, then fails as a dead server would."""

    def generate(self, prompts, sampling, progress=None):
        if any(p[-1]["content"] == "q8" for p in prompts):
            raise RuntimeError("server gone")
        return super().generate(prompts, sampling, progress)


def test_a_failed_run_keeps_every_finished_chunk_of_eight(tmp_path):
    from loongrl.eval.run import run_eval

    path = tmp_path / "samples.jsonl"
    with pytest.raises(RuntimeError, match="server gone"):    # the default chunk is 8 items: q0..q7 are written
        run_eval(_items(10), Dies(), SamplingConfig(), _exact, str(path), {"s": 1}, progress=False)
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [f"t/{i}" for i in range(8)]
    again = Replies()
    _eval(path, _items(10), again)
    assert again.prompts == ["q8", "q9"]


class Terminal:
    """A text sink that says it is a terminal, as a user's stderr is (tqdm hides its bar otherwise)."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_bar_counts_resumed_items_and_can_be_turned_off(tmp_path):
    from contextlib import redirect_stderr

    from loongrl.eval.run import run_eval

    path = str(tmp_path / "samples.jsonl")
    _eval(path, _items(2), Replies())
    shown = Terminal()
    with redirect_stderr(shown):                               # the default: a bar named "eval", counted in items
        run_eval(_items(4), Replies(), SamplingConfig(), _exact, path, {"s": 1}, chunk_size=1)
    assert "eval:  50%" in shown.text and "| 2/4 [" in shown.text   # starts at the 2 items already done
    assert "eval: 100%" in shown.text and "| 4/4 [" in shown.text and "item/s]" in shown.text
    assert "sampling" not in shown.text                          # no second bar per chunk
    hidden = Terminal()
    with redirect_stderr(hidden):
        run_eval(_items(2), Replies(), SamplingConfig(), _exact, str(tmp_path / "other.jsonl"), {"s": 1},
                 progress=False)
    assert hidden.text == ""


def test_records_keep_non_ascii_text_readable(tmp_path):
    path = tmp_path / "s.jsonl"
    _eval(path, [EvalItem("z", "t", [{"role": "user", "content": "Zürich"}], ["ZÜRICH"])], Replies())
    assert '"golds": ["ZÜRICH"]' in path.read_text(encoding="utf-8")   # not "Z\\u00dcRICH"


def test_records_hold_every_sample_and_the_mean(tmp_path):
    model = Replies()
    items = [EvalItem("a", "t", [{"role": "user", "content": "x"}], ["X"], "question?", {"length": 7})]
    [record] = _eval(tmp_path / "s.jsonl", items, model, n=4)
    assert {k: v for k, v in record.items() if k != "run"} == {
        "id": "a", "task": "t", "question": "question?", "golds": ["X"], "meta": {"length": 7},
        "samples": [{"response": "X", "pred": "X", "score": 1.0}] * 4, "score": 1.0}
    assert json.loads((tmp_path / "s.jsonl").read_text()) == record


def test_longbench_resume_refuses_changed_scoring_settings(server, hotpot, tmp_path, capsys):
    from loongrl.cli import main

    folder = str(tmp_path / "data")
    write(folder, "hotpotqa", hotpot)
    server.reset()
    server.respond = lambda body: "<think>x</think> Chief of Protocol"
    out = str(tmp_path / "run")
    args = ["eval", "longbench", "--backend", f"openai:{server.base_url}#m", "--data", folder, "--datasets", "hotpotqa",
            "--tokenizer", QWEN, "--out", out, "--quiet"]
    assert main(args) == 0
    asked = len(server.requests)
    assert main(args + ["--strip-think"]) == 2                   # scored differently: refused, not mixed
    assert main(args + ["--judge-url", server.base_url]) == 2
    assert "written by a run with other settings" in capsys.readouterr().err
    assert len(server.requests) == asked and main(args) == 0 and len(server.requests) == asked
    # --strip-think reaches the scorer: the answer after </think> scores F1 1.0 where the raw text does not
    server.respond = lambda body: "<think>maybe Nixon</think> " + next(
        r["answers"][0] for r in hotpot if r["input"] in body["messages"][-1]["content"])
    for flag, out_dir in ((["--strip-think"], "stripped"), ([], "raw")):
        assert main(args[:-3] + ["--out", str(tmp_path / out_dir), "--quiet", *flag]) == 0
    stripped, raw = (json.load(open(tmp_path / d / "longbench.json"))["records"] for d in ("stripped", "raw"))
    assert [r["score"] for r in stripped] == [1.0] * 3 and all(r["score"] < 1.0 for r in raw)


def test_the_answer_prefill_is_rendered_for_the_reply_to_continue(tokenizer):
    from loongrl.generation.backends import render_chat

    prefill = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
               {"role": "assistant", "content": "A:"}]
    # Qwen2.5's template, by hand: the prefill follows the assistant header and is left open (no <|im_end|>)
    assert render_chat(tokenizer, prefill) == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" \
                                               "<|im_start|>assistant\nA:"
    assert render_chat(tokenizer, prefill[:2]).endswith("Hi<|im_end|>\n<|im_start|>assistant\n")
    # 15 tokens up to the assistant header (see tests/test_train_transitions.py), then "A" ":"
    assert ruler.chat_tokens(tokenizer, prefill) == 17 and ruler.chat_tokens(tokenizer, prefill[:2]) == 15


# ---- the project's own rows (eval/rows.py) --------------------------------------------------------------

def _record(source, length, depth, acc):
    sample = {"acc": acc, "f1": acc, "exact": acc, "score": acc, "answered": 1.0, "boxed": 1.0, "think": 1.0}
    return {"meta": {"source": source, "length": length, "depth": depth}, "samples": [sample, dict(sample, acc=0.0)]}


def test_rows_breakdowns_in_reading_order():
    from loongrl.eval import rows as rows_eval

    records = [_record("longqa_b", "n/a", "n/a", 1.0), _record("keychain_a", ">128K", "80-100%", 1.0),
               _record("keychain_a", "8-16K", "0-20%", 0.0)]
    summary, table = rows_eval.summarize(records)
    assert summary["overall"] == {"items": 3, "acc": round(100 * (0.5 + 0.5 + 0) / 3, 2), "f1": 66.67,
                                  "exact": 66.67, "score": 66.67, "answered": 100.0, "boxed": 100.0, "think": 100.0}
    assert list(summary["breakdowns"]["source"]) == ["keychain_a", "longqa_b"]          # alphabetical
    assert list(summary["breakdowns"]["length"]) == ["8-16K", ">128K", "n/a"]            # numeric, n/a last
    assert list(summary["breakdowns"]["depth"]) == ["0-20%", "80-100%", "n/a"]
    assert [r[0] for r in table] == ["all", "data source: keychain_a", "data source: longqa_b", "prompt tokens: 8-16K",
                                     "prompt tokens: >128K", "prompt tokens: n/a", "gold depth: 0-20%",
                                     "gold depth: 80-100%", "gold depth: n/a"]
    assert summary["breakdowns"]["depth"]["80-100%"] == {"items": 1, "acc": 50.0, "f1": 100.0, "exact": 100.0,
                                                         "score": 100.0, "answered": 100.0, "boxed": 100.0, "think": 100.0}


def test_rows_scorer_asks_the_judge_of_the_reward_kwargs(server):
    from loongrl.eval import rows as rows_eval

    server.reset()
    server.verdicts["JFK"] = "[[YES]]"
    row = {"data_source": "keychain_x", "reward_model": {"ground_truth": ["John F. Kennedy"]},
           "extra_info": {"question": "Who?"}}
    item = EvalItem("f/0", "keychain_x", [], ["John F. Kennedy"])
    judge = {"judge_config": {"base_url": server.base_url, "model": "j", "max_retries": 0}}
    [[with_judge]] = rows_eval.make_scorer({"f/0": row}, judge)([item], [[r"</think>\boxed{JFK}"]])
    [[rule_only]] = rows_eval.make_scorer({"f/0": row}, judge, judge=False)([item], [[r"</think>\boxed{JFK}"]])
    assert (with_judge["score"], with_judge["judge"], with_judge["f1"]) == (1.0, "yes", 0.0)
    assert (rule_only["score"], rule_only["judge"]) == (0.0, "off") and len(server.requests) == 1
