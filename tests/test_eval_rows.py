"""`loongrl eval rows` on real KeyChain and QA rows with a scripted responder: metrics, breakdowns,
bad input, resume. (The real model in process and through transformers serve: test_real_model.py.)"""

from __future__ import annotations

import json
import os

import pytest
from conftest import QWEN, read_rows

from loongrl.eval import rows as rows_eval
from loongrl.eval.run import ResumeError
from loongrl.generation.backends import SamplingConfig


class ScriptedResponder:
    """Not a model: answers row i right (boxed, after </think>) when i is even, else wrong without a box."""

    name = "scripted"

    def __init__(self, golds: dict[str, str]):
        self.golds, self.calls = golds, 0

    def generate(self, prompts, sampling):
        self.calls += 1
        out = []
        for messages in prompts:
            gold, i = self.golds[messages[-1]["content"]]
            text = f"<think>chain</think> The answer is \\boxed{{{gold}}}." if i % 2 == 0 else "I do not know."
            out.append([text] * sampling.n)
        return out


def _responder(paths) -> ScriptedResponder:
    golds = {}
    for path in paths:
        for i, row in enumerate(read_rows(path)):
            golds[row["prompt"][-1]["content"]] = (row["reward_model"]["ground_truth"][0], i)
    return ScriptedResponder(golds)


def _run(paths, out, model, reward=None):
    return rows_eval.evaluate(paths, model, SamplingConfig(n=2), out, reward, progress=False)


def test_metrics_and_breakdowns(kc_files, qa_files, tmp_path):
    paths = [kc_files["hotpotqa"], qa_files["musique"]]
    records = _run(paths, str(tmp_path), _responder(paths))
    summary, table = rows_eval.summarize(records)
    # 6 rows per file, rows 0, 2, 4 answered right: half of the 12 items in every metric
    half = {"items": 12, "acc": 50.0, "f1": 50.0, "exact": 50.0, "score": 50.0, "answered": 50.0, "boxed": 50.0,
            "think": 50.0}
    assert summary["overall"] == half and table[0] == ["all", *half.values()]
    assert list(summary["breakdowns"]["source"]) == ["keychain_hotpotqa", "longqa_musique"]
    assert summary["breakdowns"]["length"] == {"8-16K": half}  # all rows are 16K rows
    depth = summary["breakdowns"]["depth"]
    assert sum(g["items"] for g in depth.values()) == 12 and "n/a" not in depth
    for record, row in zip(records, read_rows(paths[0]) + read_rows(paths[1])):
        depths = row["extra_info"]["gold_passage_depths"]
        assert record["meta"]["depth"] == rows_eval.depth_bucket(sum(depths) / len(depths))
        assert [s["pred"] for s in record["samples"]] == [row["reward_model"]["ground_truth"][0] if
                                                          record["meta"]["row"] % 2 == 0 else ""] * 2


def test_the_training_reward_decides(kc_files, tmp_path):
    # require_think (the training default): a box without </think> earns nothing; without it, it counts
    path = kc_files["musique"]
    gold = read_rows(path)[0]["reward_model"]["ground_truth"][0]

    class BoxOnly(ScriptedResponder):
        def generate(self, prompts, sampling):
            return [[f"\\boxed{{{gold}}}"] * sampling.n for _ in prompts]

    strict = _run([path], str(tmp_path / "strict"), BoxOnly({}), {"require_think": True})
    loose = _run([path], str(tmp_path / "loose"), BoxOnly({}), {"require_think": False})
    assert strict[0]["samples"][0]["acc"] == 0.0 and loose[0]["samples"][0]["acc"] == 1.0
    assert strict[0]["samples"][0]["boxed"] == 1.0 and strict[0]["samples"][0]["think"] == 0.0


def test_buckets():
    assert [rows_eval.length_bucket(n) for n in (None, 0, 900, 1024, 1025, 16384, 200_000)] == [
        "n/a", "n/a", "<=1K", "<=1K", "1-2K", "8-16K", ">128K"]
    assert [rows_eval.depth_bucket(d) for d in (None, 0.0, 0.19, 0.2, 0.99, 1.0)] == [
        "n/a", "0-20%", "0-20%", "20-40%", "80-100%", "80-100%"]


def test_resume_generates_nothing_twice_and_refuses_other_settings(kc_files, tmp_path):
    paths = [kc_files["2wikimqa"]]
    model = _responder(paths)
    first = _run(paths, str(tmp_path), model)
    calls = model.calls
    assert _run(paths, str(tmp_path), model) == first and model.calls == calls
    with pytest.raises(ResumeError, match="written by a run with other settings"):
        _run(paths, str(tmp_path), model, {"require_think": False})


def test_bad_rows_name_file_row_and_field(kc_files, tmp_path):
    row = read_rows(kc_files["musique"])[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(row) + "\n" + json.dumps({**row, "reward_model": {"style": "rule"}}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: row 1: field 'reward_model.ground_truth': missing or empty"):
        rows_eval.load_items(str(bad))
    bad.write_text(json.dumps({**row, "prompt": "text"}) + "\n")
    with pytest.raises(ValueError, match=r"row 0: field 'prompt': must be a non-empty list"):
        rows_eval.load_items(str(bad))


def test_cli_writes_reports(kc_files, tmp_path, capsys):
    from loongrl.cli import main

    out = str(tmp_path / "cli")
    # a folder that is not a model: a clear error, exit 2
    assert main(["eval", "rows", kc_files["hotpotqa"], "--backend", "hf:/nonexistent/model", "--out", out]) == 2
    assert "model folder /nonexistent/model does not exist" in capsys.readouterr().err


class Right(ScriptedResponder):
    """Every prompt answered right (after </think>, boxed); records how many prompts each call carried."""

    def __init__(self, golds):
        super().__init__(golds)
        self.batches = []

    def generate(self, prompts, sampling):
        self.batches.append(len(prompts))
        return [[f"<think>t</think> \\boxed{{{self.golds[m[-1]['content']][0]}}}"] * sampling.n for m in prompts]


def test_chunks_of_eight_a_row_limit_and_the_judge_in_the_run_settings(kc_files, qa_files, tmp_path):
    rows = read_rows(kc_files["musique"]) + read_rows(qa_files["hotpotqa"])[:3]       # 9 rows in one file
    path = tmp_path / "nine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = Right(_responder([kc_files["musique"], qa_files["hotpotqa"]]).golds)
    assert len(_run([str(path)], str(tmp_path / "all"), model)) == 9 and model.batches == [8, 1]
    rows_eval.evaluate([str(path)], model, SamplingConfig(n=1), str(tmp_path / "three"), chunk_size=3, progress=False)
    assert model.batches[2:] == [3, 3, 3]
    two = rows_eval.evaluate([str(path)], model, SamplingConfig(n=1), str(tmp_path / "lim"), limit=2, progress=False)
    assert [r["meta"]["row"] for r in two] == [0, 1] and model.batches[-1] == 2
    # every answer is right, so the judge is never asked; its model is still part of what a rerun must match
    judge = {"model": "j1", "base_url": "http://127.0.0.1:9/v1"}
    out = str(tmp_path / "judged")
    first = _run([str(path)], out, model, {"judge_config": judge})
    calls = len(model.batches)
    assert _run([str(path)], out, model, {"judge_config": {**judge, "base_url": "http://other:1/v1"}}) == first
    assert len(model.batches) == calls                          # where the judge runs is not what it is
    with pytest.raises(ResumeError, match="written by a run with other settings"):
        _run([str(path)], out, model, {"judge_config": {**judge, "model": "j2"}})


def test_row_files_need_distinct_names(kc_files, tmp_path):
    (tmp_path / "a").mkdir()
    name = os.path.basename(kc_files["musique"])
    copy = tmp_path / "a" / name
    copy.write_bytes(open(kc_files["musique"], "rb").read())
    stem = name.removesuffix(".parquet")
    with pytest.raises(ValueError, match=rf"^row files need distinct names \(their samples files are "
                                         rf"samples_<name>.jsonl\): \['{stem}', '{stem}'\]$"):
        _run([kc_files["musique"], str(copy)], str(tmp_path / "out"), None)


PROMPT = "must be a non-empty list of {role, content} messages"


def test_rows_that_are_not_objects_or_lack_a_source_are_named(kc_files, tmp_path):
    row = read_rows(kc_files["musique"])[0]
    bad = tmp_path / "bad.jsonl"
    for line, field, problem in [("[1, 2]", "<row>", "not an object"),
                                 (json.dumps({**row, "data_source": ""}), "data_source", "missing or not a string"),
                                 (json.dumps({**row, "data_source": 3}), "data_source", "missing or not a string"),
                                 (json.dumps({**row, "prompt": []}), "prompt", PROMPT),
                                 (json.dumps({**row, "prompt": 5}), "prompt", PROMPT),
                                 (json.dumps({**row, "prompt": [{"role": 1, "content": "q"}]}), "prompt", PROMPT),
                                 (json.dumps({**row, "prompt": [{"role": "user"}]}), "prompt", PROMPT),
                                 (json.dumps({**row, "reward_model": {"ground_truth": []}}),
                                  "reward_model.ground_truth", "missing or empty")]:
        bad.write_text(json.dumps(row) + "\n" + line + "\n")
        with pytest.raises(ValueError) as err:
            rows_eval.load_items(str(bad))
        assert str(err.value) == f"{bad}: row 1: field '{field}': {problem}"
        assert err.value.reason == ("not_an_object" if field == "<row>" else "bad_field")
    bad.write_text(json.dumps(row) + "\n\n" + json.dumps(row)[:-1] + "\n")  # a line cut short
    with pytest.raises(ValueError) as err:
        rows_eval.load_items(str(bad))
    assert str(err.value) == f"{bad}: line 3: invalid JSON (Expecting ',' delimiter: column {len(json.dumps(row))})"
    with pytest.raises(FileNotFoundError, match=f"^row file not found: {tmp_path}/none.jsonl$"):
        rows_eval.load_items(str(tmp_path / "none.jsonl"))
    garbage = tmp_path / "garbage.parquet"  # pyarrow's message names no file
    garbage.write_text("not parquet")
    with pytest.raises(ValueError) as err:
        rows_eval.load_items(str(garbage))
    assert str(err.value).startswith(f"{garbage}: not a readable parquet file (Parquet magic bytes not found")


def test_load_items_reads_each_rows_metadata(tmp_path):
    """Item ids, task, messages, golds, question and the breakdown metadata of hand-written rows."""
    from loongrl.eval.run import EvalItem

    system, user = {"role": "system", "content": "S"}, {"role": "user", "content": "Where?"}
    rows = [
        {"data_source": "keychain_hotpotqa", "prompt": [system, user], "ability": "longcontext_qa",
         "reward_model": {"style": "rule", "ground_truth": ["Paris", "paris"]},
         "extra_info": {"id": "h1", "question": "Where is it?", "prompt_tokens": 3000,
                        "gold_passage_depths": [0.25, 0.75]}},
        {"data_source": "book_ruler_niah_single", "prompt": [user], "reward_model": {"ground_truth": "42"},
         "extra_info": {"prompt_tokens": 0}},
        {"data_source": "longqa_musique", "prompt": [user], "reward_model": {"ground_truth": [7]}},
    ]
    path = tmp_path / "held.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items, by_id = rows_eval.load_items(str(path))
    assert items == [
        EvalItem("held/0", "keychain_hotpotqa", [system, user], ["Paris", "paris"], "Where is it?",
                 {"file": "held", "row": 0, "row_id": "h1", "source": "keychain_hotpotqa", "prompt_tokens": 3000,
                  "gold_depth": 0.5, "length": "2-4K", "depth": "40-60%"}),
        EvalItem("held/1", "book_ruler_niah_single", [user], ["42"], "",
                 {"file": "held", "row": 1, "row_id": None, "source": "book_ruler_niah_single",
                  "prompt_tokens": None, "gold_depth": None, "length": "n/a", "depth": "n/a"}),
        EvalItem("held/2", "longqa_musique", [user], ["7"], "",
                 {"file": "held", "row": 2, "row_id": None, "source": "longqa_musique", "prompt_tokens": None,
                  "gold_depth": None, "length": "n/a", "depth": "n/a"}),
    ]
    assert by_id == {"held/0": rows[0], "held/1": rows[1], "held/2": rows[2]}
    items[0].messages[0]["content"] = "changed"             # the item's messages are its own copies
    assert by_id["held/0"]["prompt"][0]["content"] == "S"
    assert [it.id for it in rows_eval.load_items(str(path), limit=2)[0]] == ["held/0", "held/1"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty.jsonl: row 0: field '<file>': no rows") as err:
        rows_eval.load_items(str(empty))
    assert err.value.reason == "empty_file"    # the reason skipped inputs are counted by


def test_cli_judge_flags_and_judge_errors_in_the_report(kc_files, server, tmp_path, capsys):
    """`eval rows` against a real HTTP server playing the model and the judge: --judge-retries bounds the
    attempts, and the judge's failures are counted in the report (their rows keep the rule score)."""
    from loongrl.cli import main

    server.reset()
    server.respond = lambda body: ("[[NO]]" if "Answer 1:" in body["messages"][-1]["content"]
                                   else "<think>t</think> The answer is \\boxed{Wrong}.")
    server.script["Wrong"] = [("status", 500)] * 4
    out = str(tmp_path / "judged")
    assert main(["eval", "rows", kc_files["hotpotqa"], "--limit", "2", "--backend", f"openai:{server.base_url}#m",
                 "--tokenizer", QWEN, "--out", out, "--quiet", "--judge-url", server.base_url,
                 "--judge-retries", "1", "--judge-timeout", "5"]) == 0
    judged = [r for r in server.requests if r["answer"] == "Wrong"]
    assert len(judged) == 4  # 2 items x (1 attempt + 1 retry); the default (4 retries) would make 10
    report = json.load(open(os.path.join(out, "rows.json")))
    assert report["summary"]["judge"] == {"error": 2}
    assert "LLM judge: 2 errors in 2 verdicts asked" in open(os.path.join(out, "rows.md")).read()
    capsys.readouterr()
    assert main(["eval", "rows", kc_files["hotpotqa"], "--backend", f"openai:{server.base_url}#m", "--out", out,
                 "--judge-url", server.base_url, "--judge-retries", "-1"]) == 2
    assert "--judge-retries: max_retries must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("backend, problem", [
    ("bogus:xyz", "expected hf:PATH, openai:BASE_URL#MODEL or vllm:PATH"),
    ("hf:", "expected hf:PATH, openai:BASE_URL#MODEL or vllm:PATH"),
    ("openai:http://127.0.0.1:1/v1", "expected openai:BASE_URL#MODEL")])
def test_a_bad_backend_spec_is_refused_before_the_tokenizer_is_resolved(kc_files, tmp_path, capsys, backend, problem):
    """Without --tokenizer the default tokenizer is a hub id: the spec used to be checked only after trying the hub
    (about 50 s of retries offline), and the error then blamed the tokenizer."""
    from loongrl.cli import main

    assert main(["eval", "rows", kc_files["hotpotqa"], "--backend", backend, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"error: backend spec {backend!r}: {problem}\n"
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.parametrize("flags, message", [
    (["--n", "0"], "--n must be >= 1, got 0"),
    (["--n", "-1"], "--n must be >= 1, got -1"),
    (["--batch-size", "-2"], "--batch-size must be >= 1, got -2"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--chunk-size", "0"], "--chunk-size must be >= 1, got 0"),
    (["--window", "0"], "--window must be >= 1, got 0"),
    (["--limit", "0"], "--limit must be >= 1, got 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
    (["--temperature", "-0.5"], "--temperature must be >= 0 (0: greedy), got -0.5"),
    (["--temperature", "0.6", "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    (["--n", "4"], "--n 4 with temperature 0 (greedy) would be 4 identical samples: set --temperature > 0 (e.g. 0.6), "
                   "or --n 1"),
    (["--n", "2", "--temperature", "0"], "--n 2 with temperature 0 (greedy) would be 2 identical samples"),
])
def test_flags_out_of_range_are_refused_before_anything_runs(kc_files, server, tmp_path, capsys, flags, message):
    """They used to end in tracebacks (--n 0: ZeroDivisionError after a samples file was made; --batch-size -2:
    KeyError), a misleading error (--limit 0: 'no rows'), or be ignored (--window 0)."""
    from loongrl.cli import main

    server.reset()
    out = tmp_path / "o"
    assert main(["eval", "rows", kc_files["hotpotqa"], "--backend", f"openai:{server.base_url}#m", "--tokenizer", QWEN,
                 "--out", str(out), "--quiet", *flags]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert server.requests == [] and not os.path.exists(out)


def test_several_samples_with_a_temperature_are_accepted(kc_files, server, tmp_path):
    from loongrl.cli import main

    server.reset()
    server.respond = lambda body: "no idea"
    assert main(["eval", "rows", kc_files["hotpotqa"], "--backend", f"openai:{server.base_url}#m", "--tokenizer", QWEN,
                 "--out", str(tmp_path / "o"), "--quiet", "--limit", "1", "--n", "2", "--temperature", "0.6",
                 "--top-p", "1"]) == 0
    assert len(json.load(open(tmp_path / "o" / "rows.json"))["records"][0]["samples"]) == 2


@pytest.mark.parametrize("change, field, problem", [
    (lambda r: r["extra_info"].update(prompt_tokens="abc"), "extra_info.prompt_tokens",
     "must be a token count, got 'abc'"),
    (lambda r: r["extra_info"].update(prompt_tokens=-3), "extra_info.prompt_tokens", "must be a token count, got -3"),
    (lambda r: r["extra_info"].update(gold_passage_depths=["x"]), "extra_info.gold_passage_depths",
     "must be a list of fractions in [0, 1], got ['x']"),
    (lambda r: r["extra_info"].update(gold_passage_depths=[50]), "extra_info.gold_passage_depths",
     "must be a list of fractions in [0, 1], got [50]"),
    (lambda r: r.update(extra_info="text"), "extra_info", "not an object"),
    (lambda r: r["prompt"][0].update(role="bogus"), "prompt", "role 'bogus' is not one of system, user, assistant"),
], ids=["tokens-str", "tokens-negative", "depths-str", "depths-percent", "info-str", "role-bogus"])
def test_bad_metadata_and_roles_are_named_not_tracebacks_or_sent(kc_files, server, tmp_path, capsys, change, field,
                                                                  problem):
    """A string prompt_tokens used to raise TypeError while bucketing; a message with role 'bogus' was sent to the
    model (data validate refuses both)."""
    from loongrl.cli import main

    row = read_rows(kc_files["musique"])[0]
    bad = json.loads(json.dumps(row))
    change(bad)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError) as err:
        rows_eval.load_items(str(path))
    assert str(err.value) == f"{path}: row 1: field '{field}': {problem}"
    server.reset()
    assert main(["eval", "rows", str(path), "--backend", f"openai:{server.base_url}#m", "--tokenizer", QWEN,
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert capsys.readouterr().err.endswith(f"error: {path}: row 1: field '{field}': {problem}\n")
    assert server.requests == []
