"""Difficulty filter: keep windows, rescue pass, resume without repeated work."""

from __future__ import annotations

import json

import pytest
from conftest import INPUTS

from loongrl.data.filter import FilterConfig, difficulty_filter, filter_messages
from loongrl.data.sources import load_source

DATA = load_source("2wikimqa", INPUTS["2wikimqa"])
GOLD = {r.question: r.answers[0] for r in DATA.records}
INDEX = {r.question: i for i, r in enumerate(DATA.records)}


class ScriptedModel:
    """A stand-in model: for item i it answers correctly in `correct(i)` of its k samples."""

    def __init__(self, correct, fail_after_calls=None):
        self.name, self.correct, self.prompts_seen, self.fail_after = "scripted", correct, [], fail_after_calls

    def generate(self, prompts, sampling):
        if self.fail_after is not None and len(self.prompts_seen) >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.prompts_seen.append(len(prompts))
        out = []
        for messages in prompts:
            question = messages[-1]["content"].rsplit("Question: ", 1)[1]
            i, gold = INDEX[question], GOLD[question]
            c = self.correct(i)
            out.append([f"Let me think. The answer is {gold}." if j < c else "The answer is nobody."
                        for j in range(sampling.n)])
        return out


def test_prompt_is_the_reference_short_context_prompt():
    msgs = filter_messages(DATA, DATA.records[0])
    text = msgs[0]["content"]
    first = DATA.records[0].passage_ids[0]
    assert text.startswith(f"The following are given passages.\n{DATA.pool.titles[first]}\n{DATA.pool.texts[first]}\n")
    assert "output the final answer in the format of 'The answer is <your answer here>'" in text
    assert text.endswith("\n\nQuestion: " + DATA.records[0].question)


def test_keep_window_and_rescue(tmp_path):
    out = str(tmp_path / "ids.txt")
    first, rescue = ScriptedModel(lambda i: i % 9), ScriptedModel(lambda i: 8 if i % 2 else 3)
    stats = difficulty_filter("2wikimqa", INPUTS["2wikimqa"], first, FilterConfig(batch_size=32), out,
                              rescue_backend=rescue)
    ids = open(out).read().split()
    expect_first = [r.id for i, r in enumerate(DATA.records) if 1 <= i % 9 <= 6]
    expect_rescued = [r.id for i, r in enumerate(DATA.records) if i % 9 == 0 and i % 2 == 0]
    assert ids == [r.id for r in DATA.records if r.id in set(expect_first) | set(expect_rescued)]
    assert stats["kept_first_pass"] == len(expect_first) and stats["rescued"] == len(expect_rescued)
    assert stats["first_pass_correct_histogram"]["7"] == sum(1 for i in range(164) if i % 9 == 7)
    assert stats["kept"] + stats["dropped"] == 164
    assert json.load(open(out + ".stats.json"))["kept"] == len(ids)


def test_resume_makes_no_repeated_calls(tmp_path):
    out = str(tmp_path / "ids.txt")
    crashing = ScriptedModel(lambda i: i % 9, fail_after_calls=3)
    with pytest.raises(KeyboardInterrupt):
        difficulty_filter("2wikimqa", INPUTS["2wikimqa"], crashing, FilterConfig(batch_size=20), out)
    assert sum(crashing.prompts_seen) == 60
    resumed = ScriptedModel(lambda i: i % 9)
    difficulty_filter("2wikimqa", INPUTS["2wikimqa"], resumed, FilterConfig(batch_size=20), out)
    assert sum(resumed.prompts_seen) == 164 - 60
    again = ScriptedModel(lambda i: i % 9)
    difficulty_filter("2wikimqa", INPUTS["2wikimqa"], again, FilterConfig(batch_size=20), out)
    assert again.prompts_seen == []
    # A different sampling setting is different paid work: nothing is reused.
    other = ScriptedModel(lambda i: i % 9)
    difficulty_filter("2wikimqa", INPUTS["2wikimqa"], other, FilterConfig(batch_size=20, k=4), out)
    assert sum(other.prompts_seen) == 164


@pytest.mark.slow
def test_filter_with_a_tiny_local_model(tmp_path):
    from loongrl.generation.backends import TransformersBackend
    from loongrl.demo.tiny import build_tiny_model

    model = build_tiny_model(str(tmp_path / "tiny"), DATA.pool.texts[:1500], vocab_size=512)
    out = str(tmp_path / "ids.txt")
    records = DATA.records[:6]
    small = tmp_path / "six.json"
    raw = json.load(open(INPUTS["2wikimqa"]))
    small.write_text(json.dumps([r for r in raw if r["_id"] in {x.id for x in records}]))
    stats = difficulty_filter("2wikimqa", str(small), TransformersBackend(model, batch_size=3),
                              FilterConfig(k=2, max_new_tokens=6, batch_size=3), out)
    assert stats["items"] == 6 and sum(stats["first_pass_correct_histogram"].values()) == 6
    cached = [json.loads(line) for line in open(out + ".cache.jsonl")]
    assert len(cached) == 6 and all(len(c["predictions"]) == 2 for c in cached)


def _scripted_model(body: dict) -> str:
    """Item i answers correctly in (i % 9) of its 8 samples; sample j has seed base + j (batches of 16)."""
    question = body["messages"][-1]["content"].rsplit("Question: ", 1)[1]
    i, j = INDEX[question], body["seed"] % 8
    return f"The answer is {GOLD[question]}." if j < i % 9 else "The answer is somebody else."


def test_filter_over_http_resumes_without_repeated_requests(server, tmp_path):
    from loongrl.generation.backends import BackendError, make_backend

    server.reset()
    server.respond = _scripted_model
    server.key_of = lambda body: body["messages"][-1]["content"].rsplit("Question: ", 1)[1]
    broken = DATA.records[70].question
    server.script[broken] = [("status", 400)]  # not retried: the run stops loudly at its batch
    backend = make_backend(f"openai:{server.base_url}#filter-model", concurrency=4, max_retries=1,
                           backoff_s=0.01)
    out, cfg = str(tmp_path / "ids.txt"), FilterConfig(batch_size=16)
    with pytest.raises(BackendError, match=r"prompt 6 sample \d: request failed: HTTP 400: scripted"):
        difficulty_filter("2wikimqa", INPUTS["2wikimqa"], backend, cfg, out)
    done_before = {json.loads(line)["id"] for line in open(out + ".cache.jsonl")}
    assert len(done_before) == 64  # four whole batches were paid for and kept
    first_requests = len(server.requests)

    stats = difficulty_filter("2wikimqa", INPUTS["2wikimqa"], backend, cfg, out)
    resumed = server.requests[first_requests:]
    asked = {r["answer"] for r in resumed}
    assert len(resumed) == (164 - 64) * 8
    assert not asked & {r.question for r in DATA.records if r.id in done_before}
    ids = open(out).read().split()
    assert ids == [r.id for i, r in enumerate(DATA.records) if 1 <= i % 9 <= 6]
    assert stats["first_pass_correct_histogram"] == {str(c): sum(1 for i in range(164) if i % 9 == c)
                                                     for c in range(9)}


def test_a_server_that_dies_mid_run_is_reported_and_the_rerun_resumes_after_a_restart(tmp_path):
    """The server answers, then dies (its socket closed mid-run): the run stops saying the server stopped
    answering, not "connection failed after N retries"; restarted at the same address, the same command
    resumes without asking again for the items already counted."""
    import threading

    from openai_server import start_server

    from loongrl.generation.backends import BackendError, make_backend

    raw = json.load(open(INPUTS["2wikimqa"]))[:24]
    small = tmp_path / "24.json"
    small.write_text(json.dumps(raw))
    questions = {r.id: r.question for r in DATA.records}

    died_once = threading.Event()

    def dies_at_request_40(body):
        if len(first.requests) >= 40 and not died_once.is_set():  # in the third batch of 16 (8 items x 2)
            died_once.set()
            threading.Thread(target=lambda: (first.shutdown(), first.server_close())).start()
        return _scripted_model(body)

    first = start_server()
    first.respond = dies_at_request_40
    first.key_of = lambda body: body["messages"][-1]["content"].rsplit("Question: ", 1)[1]
    spec = f"openai:{first.base_url}#filter-model"
    out, cfg = str(tmp_path / "ids.txt"), FilterConfig(k=2, batch_size=8)
    backend = make_backend(spec, concurrency=4, max_retries=1, backoff_s=0.01)
    with pytest.raises(BackendError) as died:
        difficulty_filter("2wikimqa", str(small), backend, cfg, out)
    port = first.server_address[1]
    assert str(died.value).startswith(f"{spec}: the server at http://127.0.0.1:{port} stopped answering "
                                      "(connection refused): it may have died; restart it at the same address "
                                      "and rerun the same command to resume (at prompt ")
    assert "retries" not in str(died.value)
    done_before = {json.loads(line)["id"] for line in open(out + ".cache.jsonl")}
    assert len(done_before) == 16  # the two batches finished before the crash were kept

    second = start_server(port)  # the restart, at the same address (runs are keyed by the endpoint)
    try:
        second.respond = _scripted_model
        second.key_of = first.key_of
        stats = difficulty_filter("2wikimqa", str(small), make_backend(spec, concurrency=4), cfg, out)
    finally:
        second.shutdown()
        second.server_close()
    asked = {r["answer"] for r in second.requests}
    assert len(second.requests) == (24 - 16) * 2 and not asked & {questions[i] for i in done_before}
    assert stats["items"] == 24 and sum(stats["first_pass_correct_histogram"].values()) == 24
