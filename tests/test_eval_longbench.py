"""LongBench v1: F1 by hand on real answers, truncation and buckets with the real tokenizer, both
presets end to end through the OpenAI backend against a scripted server on 127.0.0.1, and resume."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import QWEN
from longbench_rows import rows, write

from openai_server import start_server

from loongrl.cli import main
from loongrl.eval import longbench as lb
from loongrl.generation.backends import BackendError, OpenAIBackend, SamplingConfig
from loongrl.eval.run import run_eval
from loongrl.rewards.judge import JudgeConfig, LLMJudge
from loongrl.rewards.scorers import token_f1


@pytest.fixture
def srv(server):
    server.reset()
    return server


def by_question(replies: dict[str, list[str]]):
    """A scripted model: sample j of a question (request seed j) gets replies[question][j % len]."""

    def respond(body):
        user = body["messages"][-1]["content"]
        for question, texts in replies.items():
            if question in user:
                return texts[body.get("seed", 0) % len(texts)]
        return "zzz"
    return respond


def question_key(body):
    return body["messages"][-1]["content"][-200:]


@pytest.fixture(scope="module")
def hotpot(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("longbench"))
    data = rows("hotpotqa", "hotpotqa", 8)
    write(folder, "hotpotqa", data)
    return folder, data


@pytest.fixture(scope="module")
def tokenizer():
    from loongrl.data.tokens import get_counter

    return get_counter(QWEN).tokenizer


# (prediction, gold, F1 computed by hand after normalize_answer)
HAND_F1 = [
    ("the Chief of Protocol of the United States", "Chief of Protocol", 2 * 0.5 * 1 / 1.5),   # 3 of 6 / 3 of 3
    ("from 1969 until 1974.", "1969 until 1974", 2 * 0.75 * 1 / 1.75),                      # 3 of 4 / 3 of 3
    ("9984", "9,984", 1.0),                                                                  # comma dropped
    ("Sonic the Hedgehog", "Sonic", 2 * 0.5 * 1 / 1.5),                                      # "the" dropped
    ("Animorphs", "Animorphs", 1.0),
    ("no", "Eenasul Fateh", 0.0),
]


@pytest.mark.parametrize("pred,gold,expected", HAND_F1)
def test_token_f1_matches_hand_computed_values(pred, gold, expected):
    assert token_f1(pred, [gold]) == pytest.approx(expected)


def test_load_rows_checks_fields(tmp_path, hotpot):
    bad = dict(hotpot[1][0])
    del bad["answers"]
    path = write(str(tmp_path), "hotpotqa", [hotpot[1][1], bad])
    with pytest.raises(ValueError, match=r"hotpotqa.jsonl: row 2: field 'answers'"):
        lb.load_rows("hotpotqa", path)
    with pytest.raises(FileNotFoundError, match="musique.jsonl"):
        lb.load_rows("musique", str(tmp_path))


def _zip(path, members: dict[str, list[dict]]) -> str:
    """A LongBench-layout data.zip: data/{dataset}.jsonl members (as `unzip data.zip` yields data/)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data))
    return str(path)


def test_load_rows_from_data_zip(tmp_path, hotpot):
    # item 8: the official data is data.zip; read in place, row checks as for the jsonl files
    musique = rows("musique", "musique", 3)
    path = _zip(tmp_path / "data.zip", {"data/hotpotqa.jsonl": hotpot[1], "data/musique.jsonl": musique})
    assert lb.load_rows("hotpotqa", path) == hotpot[1]
    assert lb.load_rows("musique", path, limit=2) == musique[:2]
    with pytest.raises(FileNotFoundError, match="has no qasper.jsonl"):
        lb.load_rows("qasper", path)
    bad = dict(hotpot[1][0])
    bad["answers"] = []
    broken = _zip(tmp_path / "bad.zip", {"data/hotpotqa.jsonl": [hotpot[1][1], bad]})
    with pytest.raises(ValueError, match=r"bad.zip:data/hotpotqa.jsonl: row 2: field 'answers'"):
        lb.load_rows("hotpotqa", broken)


def test_data_zip_member_is_found_at_any_depth_and_data_is_preferred(tmp_path, hotpot):
    # a zip of the files themselves (no folder), of the unpacked repo folder (LongBench/data/...), and
    # one with a stray copy beside data/ (listed first, and sorting before "data/"): data/ wins
    first, second = hotpot[1][:2], hotpot[1][2:5]
    flat = _zip(tmp_path / "flat.zip", {"hotpotqa.jsonl": first})
    assert lb.load_rows("hotpotqa", flat) == first
    nested = _zip(tmp_path / "nested.zip", {"LongBench/data/hotpotqa.jsonl": first})
    assert lb.load_rows("hotpotqa", nested) == first
    both = _zip(tmp_path / "both.zip", {"backup/hotpotqa.jsonl": first, "data/hotpotqa.jsonl": second})
    assert lb.load_rows("hotpotqa", both) == second
    # without data/: the shortest path
    deep = _zip(tmp_path / "deep.zip", {"a/old/hotpotqa.jsonl": first, "new/hotpotqa.jsonl": second})
    assert lb.load_rows("hotpotqa", deep) == second


def test_data_zip_invalid_json_line_names_member_and_line(tmp_path, hotpot):
    import zipfile

    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as archive:  # line 1 a row, line 2 blank, line 3 cut short
        archive.writestr("data/hotpotqa.jsonl", json.dumps(hotpot[1][0]) + "\n\n{not json\n")
    with pytest.raises(lb.InputError) as e:
        lb.load_rows("hotpotqa", str(path))
    assert str(e.value) == (f"{path}:data/hotpotqa.jsonl: row 3: field '<line>': "
                            "invalid JSON (Expecting property name enclosed in double quotes)")
    assert e.value.reason == "invalid_json"


@pytest.mark.slow
def test_load_rows_from_the_hub_reads_data_zip(tmp_path, hotpot):
    # item 8: hf:THUDM/LongBench downloads data.zip with huggingface_hub (no loading script). Offline
    # here: the real hf_hub_download resolves it from a local cache laid out as the hub client writes it.
    import subprocess
    import sys

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--THUDM--LongBench"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    _zip(repo / "snapshots" / commit / "data.zip", {"data/hotpotqa.jsonl": hotpot[1]})
    code = ("import json; from loongrl.eval.longbench import load_rows; "
            "print(json.dumps([r['_id'] for r in load_rows('hotpotqa', 'hf:THUDM/LongBench')]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [r["_id"] for r in hotpot[1]]


@pytest.mark.parametrize("spec, repo", [("hf:not a repo", "not a repo"), ("hf:not a repo@no such rev", "not a repo"),
                                        ("hf:bad repo@x@v2", "bad repo")])
def test_hub_spec_names_the_repo_before_the_first_at(spec, repo):
    # hf:OWNER/NAME[@REVISION]: the repo id ends at the first "@". These ids are malformed, so
    # huggingface_hub refuses them by name before any network call (the download itself: the slow test above)
    with pytest.raises(ValueError) as err:
        lb.load_rows("hotpotqa", spec)
    assert type(err.value).__name__ == "HFValidationError" and str(err.value).endswith(f": '{repo}'.")


def test_middle_truncation_keeps_both_ends(tokenizer, hotpot):
    text = hotpot[1][0]["context"]
    total = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    cut, before = lb.middle_truncate(text, tokenizer, 200)
    assert before == total > 200
    assert cut.startswith(text[:100]) and cut.endswith(text[-100:])
    assert abs(len(tokenizer(cut, add_special_tokens=False)["input_ids"]) - 200) <= 2
    assert lb.middle_truncate(text, tokenizer, total) == (text, total)


def test_middle_truncation_drops_special_tokens_from_both_halves(tokenizer, hotpot):
    # a context carrying the model's own end-of-text string (one special token each): LongBench's pred.py
    # decodes each kept half with skip_special_tokens, so neither survives truncation
    text = hotpot[1][0]["context"]
    total = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    marked = "<|endoftext|>" + text + "<|endoftext|>"
    cut, before = lb.middle_truncate(marked, tokenizer, 200)
    assert before == total + 2
    assert cut.startswith(text[:100]) and cut.endswith(text[-100:]) and "<|endoftext|>" not in cut


def test_middle_truncation_counts_the_text_tokens_without_a_bos():
    # a Llama-style tokenizer that prepends <s> (built here: words w1..w10, one token each): the budget
    # counts the text's own 10 tokens; the chat template adds the special tokens later
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(1, 11)]
    model = Tokenizer(models.WordLevel({"<s>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}},
                                       unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    model.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    bos = PreTrainedTokenizerFast(tokenizer_object=model, bos_token="<s>", unk_token="<unk>")
    text = " ".join(words)
    assert bos(text)["input_ids"][0] == 0                                   # it does add <s> by default
    assert lb.middle_truncate(text, bos, 10) == (text, 10)                   # fits: untouched
    assert lb.middle_truncate(text, bos, 6) == ("w1 w2 w3" + "w8 w9 w10", 10)  # first 3 + last 3


def test_official_prompt_is_longbench_template(tokenizer, hotpot):
    preset = lb.get_preset("official")
    [item] = lb.build_items("hotpotqa", hotpot[1][:1], preset, tokenizer)
    row = hotpot[1][0]
    prompts, maxlen = lb.load_configs()
    assert item.messages == [{"role": "user", "content": prompts["hotpotqa"].format(**row)}]
    assert item.messages[0]["content"].endswith(f"Question: {row['input']}\nAnswer:")
    assert lb.sampling_for("hotpotqa", preset).max_new_tokens == maxlen["hotpotqa"] == 32
    loong = lb.build_items("hotpotqa", hotpot[1][:1], lb.get_preset("loongrl"), tokenizer)[0]
    assert loong.messages[0]["role"] == "system" and "\\boxed{}" in loong.messages[0]["content"]
    assert loong.messages[1]["content"].startswith("Please read the following text")


def test_narrativeqa_buckets_use_the_tokenizer(tokenizer):
    short = rows("narrativeqa", "musique", 1)
    long = rows("narrativeqa", "musique", 1, start=1, passages_per_row=260)
    items = lb.build_items("narrativeqa", short + long, lb.get_preset("official", max_input_tokens=100000), tokenizer)
    tokens = [len(tokenizer(r["context"], add_special_tokens=False)["input_ids"]) for r in short + long]
    assert [i.meta["context_tokens"] for i in items] == tokens
    assert tokens[0] < 16384 <= tokens[1] < 32768
    assert [i.meta["bucket"] for i in items] == ["0-16K", "16-32K"]


def test_official_preset_end_to_end_scores_known_outputs(srv, hotpot, tmp_path):
    folder, data = hotpot
    # rows 0..5 get the HAND_F1 predictions, the rest the exact gold
    golds = [r["answers"][0] for r in data]
    assert golds[:8] == ["Chief of Protocol", "Animorphs", "Eenasul Fateh", "no", "9,984", "1969 until 1974",
                         "Sonic", "Badly Drawn Boy"]
    preds = ["the Chief of Protocol of the United States", "Animorphs", "no", "no", "9984", "from 1969 until 1974.",
             "Sonic the Hedgehog", "Badly Drawn Boy"]
    srv.respond = by_question({r["input"]: [p] for r, p in zip(data, preds)})
    out = str(tmp_path / "run")
    rc = main(["eval", "longbench", "--backend", f"openai:{srv.base_url}#scripted", "--data", folder,
               "--datasets", "hotpotqa", "--tokenizer", QWEN, "--out", out, "--quiet", "--concurrency", "4"])
    assert rc == 0
    expected = [2 / 3, 1.0, 0.0, 1.0, 1.0, 6 / 7, 2 / 3, 1.0]
    report = json.load(open(os.path.join(out, "longbench.json")))
    assert [r["score"] for r in report["records"]] == pytest.approx(expected)
    assert report["summary"]["scores"]["hotpotqa"] == round(100 * sum(expected) / 8, 2) == 77.38
    body = srv.requests[0]["body"]
    assert (body["temperature"], body["max_tokens"], body["n"]) == (0.0, 32, 1)
    assert "| hotpotqa | 8 | 77.38 |" in open(os.path.join(out, "longbench.md")).read()
    assert os.path.getsize(os.path.join(out, "longbench.png")) > 1000


def test_loongrl_preset_boxed_answer_is_and_judge(srv, hotpot, tokenizer, tmp_path):
    data = hotpot[1][:3]
    judge_srv = start_server()
    try:
        judge_srv.verdicts["Kennedy"] = "[[YES]]"
        srv.respond = by_question({
            data[0]["input"]: ["<think>x</think> so \\boxed{Chief of Protocol}", "<think>x</think> the answer is Nixon"],
            data[1]["input"]: ["<think>x</think> Therefore, the answer is Animorphs.", "<think>\\boxed{Animorphs}"],
            data[2]["input"]: ["<think>x</think> \\boxed{Kennedy}", "<think>x</think> \\boxed{Eenasul Fateh}"],
        })
        preset = lb.get_preset("loongrl", n=2, max_new_tokens=64)
        judge = LLMJudge(JudgeConfig(base_url=judge_srv.base_url, model="judge", max_retries=0))
        items = lb.build_items("hotpotqa", data, preset, tokenizer)
        backend = OpenAIBackend(srv.base_url, "scripted", concurrency=4, timeout_s=5)
        records = run_eval(items, backend, preset.sampling, lb.make_scorer(preset, judge), str(tmp_path / "s.jsonl"),
                           {"t": 1}, progress=False)
    finally:
        judge_srv.shutdown()
        judge_srv.server_close()
    # item 0: boxed right, "Nixon" wrong (judge says no) -> 0.5; item 1: "answer is" right, the
    # unclosed-think box still counts (no </think>: whole text) -> 1.0; item 2: judge YES + boxed -> 1.0
    assert [r["score"] for r in records] == [0.5, 1.0, 1.0]
    s = records[2]["samples"]
    assert (s[0]["pred"], s[0]["rule"], s[0]["judge"], s[0]["score"]) == ("Kennedy", 0.0, "yes", 1.0)
    assert records[0]["samples"][1]["judge"] == "no"
    assert sorted(r["answer"] for r in judge_srv.requests) == ["Kennedy", "Nixon"]
    # the judge sees the row's question (QwenLong-L1's template: Problem / Answer 1 / Answer 2)
    [nixon] = [r["body"]["messages"][-1]["content"] for r in judge_srv.requests if r["answer"] == "Nixon"]
    assert nixon == f"\nProblem: {data[0]['input']}\nAnswer 1: Nixon\nAnswer 2: Chief of Protocol\n"
    assert {r["body"]["temperature"] for r in srv.requests} == {0.6}
    assert {r["body"]["seed"] for r in srv.requests} == {0, 1}


def test_resume_requests_only_missing_items(srv, hotpot, tmp_path):
    folder, data = hotpot
    srv.respond = by_question({r["input"]: [r["answers"][0]] for r in data})
    out = str(tmp_path / "run")
    args = ["eval", "longbench", "--backend", f"openai:{srv.base_url}#m", "--data", folder, "--datasets", "hotpotqa",
            "--tokenizer", QWEN, "--out", out, "--quiet", "--chunk-size", "2"]
    assert main(args) == 0
    first = json.load(open(os.path.join(out, "longbench.json")))
    samples = os.path.join(out, "samples_hotpotqa.jsonl")
    lines = open(samples).read().splitlines()
    with open(samples, "w") as f:  # a killed run: 3 whole records and a torn fourth
        f.write("\n".join(lines[:3]) + "\n" + lines[3][:40])
    srv.requests.clear()
    assert main(args) == 0
    asked = [r["body"]["messages"][-1]["content"] for r in srv.requests]
    assert len(asked) == 5 and all(any(r["input"] in a for r in data[3:]) for a in asked)
    assert not any(data[i]["input"] in a for a in asked for i in range(3))
    assert json.load(open(os.path.join(out, "longbench.json"))) == first
    srv.requests.clear()
    assert main(args) == 0 and srv.requests == []                      # complete: nothing re-requested
    # other settings, same folder: refused instead of mixing runs
    assert main(args + ["--max-new-tokens", "16"]) == 2


@pytest.mark.timing
def test_backend_concurrency_retry_and_timeout(srv):
    srv.key_of = question_key
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(8)]
    srv.respond = lambda body: body["messages"][-1]["content"].upper()
    srv.script["q1"] = [("status", 503)]                    # one 5xx, then fine
    srv.script["q2"] = [("delay", 1.0)]                     # one timeout, then fine
    srv.fixed_delay_s = 0.15
    backend = OpenAIBackend(srv.base_url, "m", concurrency=8, timeout_s=0.6, max_retries=2, backoff_s=0.01,
                            backoff_max_s=0.02)
    start = time.perf_counter()
    out = backend.generate(prompts, SamplingConfig(n=1, max_new_tokens=4))
    elapsed = time.perf_counter() - start
    assert out == [[f"Q{i}"] for i in range(8)]
    assert len(srv.requests_for("q1")) == 2 and len(srv.requests_for("q2")) == 2
    assert srv.max_in_flight >= 4 and elapsed < 8 * 0.15 + 1.0   # overlapped, not one by one


def test_backend_gives_up_loudly(srv):
    srv.key_of = question_key
    srv.script["bad"] = [("status", 500)] * 5
    backend = OpenAIBackend(srv.base_url, "m", max_retries=1, backoff_s=0.01, backoff_max_s=0.02)
    with pytest.raises(BackendError, match="prompt 0 sample 0.*HTTP 500"):
        backend.generate([[{"role": "user", "content": "bad"}]], SamplingConfig())
    assert len(srv.requests) == 2


def test_shared_data_folder_is_loongrl_shared_not_the_training_data_folder(tmp_path, monkeypatch, capsys):
    """$LOONGRL_DATA is the recipes' training-data folder: evaluation reads its prompt configs from
    $LOONGRL_SHARED/data, whatever LOONGRL_DATA says; with neither folder there, a note names both."""
    from conftest import SHARED

    from loongrl import tasks

    train = tmp_path / "train"
    train.mkdir()
    (train / "qa_hotpotqa.parquet").write_bytes(b"")
    monkeypatch.setenv("LOONGRL_DATA", str(train))
    monkeypatch.setenv("LOONGRL_SHARED", SHARED)
    prompts, maxlen = lb.load_configs()
    assert maxlen["hotpotqa"] == 32 and "hotpotqa" in prompts
    monkeypatch.delenv("LOONGRL_SHARED")
    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    monkeypatch.setattr(tasks, "_NOTED", [])
    assert tasks.shared_data_dir() == os.path.join("..", "shared", "data")
    assert "note: the shared data folder is $LOONGRL_SHARED/data" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"\.\./shared/data/longbench_prompts"):
        lb.load_configs()  # never the training folder
