"""The LLM judge against a real HTTP server on 127.0.0.1 (tests/openai_server.py), started by this
module. Requests are keyed by the model answer ("Answer 1: ...") in the user message."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from loongrl.rewards import compute_score, make_trl_reward
from loongrl.rewards.judge import QWENLONG_SYSTEM_PROMPT, JudgeConfig, LLMJudge

@pytest.fixture
def judge_server(server):
    server.reset()
    return server


def fast_config(server, **overrides) -> JudgeConfig:
    # Small timeouts/backoffs keep every retry loop bounded to well under a second.
    fields = dict(base_url=server.base_url, model="judge-test", timeout_s=2.0, max_retries=2,
                  backoff_s=0.01, backoff_max_s=0.05, api_key_env="LOONGRL_TEST_JUDGE_KEY")
    fields.update(overrides)
    return JudgeConfig(**fields)


QUESTION = "Who was the 35th president of the United States?"


def test_yes_verdict_lifts_rule_zero_and_request_is_openai_shaped(judge_server):
    judge_server.verdicts["JFK"] = "Both name the same man. [[YES]]"
    result = compute_score("keychain_hotpotqa", r"<think>...</think> \boxed{JFK}", ["John F. Kennedy"],
                           {"question": QUESTION, "index": 3},
                           judge_config=fast_config(judge_server).__dict__)
    assert (result["rule"], result["score"], result["acc"], result["judge"]) == (0.0, 1.0, 1.0, "yes")
    [request] = judge_server.requests
    assert request["path"] == "/v1/chat/completions"
    body = request["body"]
    assert body["model"] == "judge-test" and body["temperature"] == 0.0
    assert body["messages"][0] == {"role": "system", "content": QWENLONG_SYSTEM_PROMPT}
    assert body["messages"][1]["content"] == f"\nProblem: {QUESTION}\nAnswer 1: JFK\nAnswer 2: John F. Kennedy\n"


def test_no_verdict_keeps_rule_score(judge_server):
    result = compute_score("longqa_musique", r"</think>\boxed{Nixon}", ["John F. Kennedy"],
                           {"question": QUESTION}, judge_config=fast_config(judge_server).__dict__)
    assert (result["score"], result["judge"]) == (0.0, "no")


def test_judge_not_called_when_rule_already_scores_one_or_no_answer(judge_server):
    cfg = fast_config(judge_server).__dict__
    ok = compute_score("keychain_x", r"</think>\boxed{Kennedy}", ["John F. Kennedy"], judge_config=cfg)
    missing = compute_score("keychain_x", r"\boxed{JFK}", ["John F. Kennedy"], judge_config=cfg)  # no </think>
    assert (ok["score"], ok["judge"]) == (1.0, "skipped")
    assert (missing["score"], missing["judge"]) == (0.0, "skipped")
    assert judge_server.requests == []


def test_custom_prompt_and_loose_verdict(judge_server):
    judge_server.verdicts["Paris"] = "YES, same city"
    cfg = fast_config(judge_server, system_prompt="Judge.", user_template="Q={problem} Answer 1: {answer_1}\nG={answer_2}",
                      strict_verdict=False)
    assert LLMJudge(cfg).judge("q", "Paris", "paris, france").verdict == 1.0
    assert judge_server.requests[0]["body"]["messages"][0]["content"] == "Judge."
    # the default strict parser refuses a reply without [[YES]]/[[NO]] and says so
    strict = LLMJudge(fast_config(judge_server)).judge("q", "Paris", "paris, france")
    assert strict.verdict is None and strict.status.startswith("error: no [[YES]]")


def test_5xx_is_retried_then_succeeds(judge_server):
    judge_server.script["JFK"] = [("status", 500), ("status", 503)]
    judge_server.verdicts["JFK"] = "[[YES]]"
    judge = LLMJudge(fast_config(judge_server))
    assert judge.judge(QUESTION, "JFK", "John F. Kennedy").status == "yes"
    assert len(judge_server.requests) == 3 and judge.stats["retries"] == 2 and judge.stats["errors"] == 0


def test_429_honours_retry_after_and_4xx_is_not_retried(judge_server):
    judge_server.script["a"] = [("status", 429, {"Retry-After": "0"})]
    judge_server.verdicts["a"] = "[[YES]]"
    judge_server.script["b"] = [("status", 400)]
    judge = LLMJudge(fast_config(judge_server))
    assert judge.judge("q", "a", "a").verdict == 1.0
    bad = judge.judge("q", "b", "b")
    assert (bad.verdict, bad.status) == (None, "error: HTTP 400: scripted")  # the server's detail kept
    assert len(judge_server.requests_for("b")) == 1


def test_persistent_5xx_returns_rule_score_marked_error(judge_server):
    judge_server.script["JFK"] = [("status", 502)] * 10
    result = compute_score("keychain_hotpotqa", r"</think>\boxed{JFK}", ["John F. Kennedy"],
                           {"question": QUESTION}, judge_config=fast_config(judge_server).__dict__)
    assert (result["score"], result["acc"], result["judge"]) == (0.0, 0.0, "error: HTTP 502: scripted")
    assert len(judge_server.requests) == 3                                  # 1 + max_retries


@pytest.mark.parametrize("body", [b"not json", b'{"choices": []}', b'{"choices": [{"message": {}}]}'])
def test_malformed_bodies_are_retried_then_reported(judge_server, body):
    judge_server.script["x"] = [("raw", body)] * 10
    result = LLMJudge(fast_config(judge_server)).judge("q", "x", "y")
    assert result.verdict is None and result.status.startswith("error: malformed response body (")
    assert len(judge_server.requests) == 3


def test_malformed_then_good_body(judge_server):
    judge_server.script["x"] = [("raw", b"{")]
    judge_server.verdicts["x"] = "[[YES]]"
    assert LLMJudge(fast_config(judge_server)).judge("q", "x", "y").verdict == 1.0


@pytest.mark.timing
def test_timeout_is_retried_and_bounded(judge_server):
    judge_server.script["slow"] = [("delay", 1.0)] * 10
    judge = LLMJudge(fast_config(judge_server, timeout_s=0.2, max_retries=1))
    start = time.perf_counter()
    result = judge.judge("q", "slow", "fast")
    elapsed = time.perf_counter() - start
    assert result.verdict is None and "timed out" in result.status.lower()
    assert len(judge_server.requests_for("slow")) == 2 and elapsed < 1.5


def test_unreachable_endpoint_never_raises():
    with socket.socket() as sock:  # a port on 127.0.0.1 with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = JudgeConfig(base_url=f"http://127.0.0.1:{port}/v1", timeout_s=0.5, max_retries=1, backoff_s=0.01,
                     api_key_env="LOONGRL_TEST_JUDGE_KEY")
    judge = LLMJudge(cfg)
    reward = make_trl_reward(judge_config=cfg)
    scores = reward(prompts=["p", "p"], completions=[r"</think>\boxed{JFK}", r"</think>\boxed{Kennedy}"],
                    reward_model=[{"ground_truth": ["John F. Kennedy"]}] * 2, data_source=["keychain_h"] * 2)
    assert scores == [0.0, 1.0]                                              # rule scores, no crash
    result = judge.judge("q", "a", "b")
    assert result.verdict is None and result.status.startswith(f"error: connection failed: http://127.0.0.1:{port}/v1")
    assert judge.stats["errors"] == 1


def test_cache_hit_on_rerun_sends_no_second_request(judge_server, tmp_path):
    judge_server.verdicts["JFK"] = "[[YES]]"
    cfg = fast_config(judge_server, cache_path=str(tmp_path / "verdicts.sqlite"))
    first = LLMJudge(cfg).judge(QUESTION, "JFK", "John F. Kennedy")
    rerun_judge = LLMJudge(cfg)                                              # a fresh process would look like this
    second = rerun_judge.judge(QUESTION, "JFK", "John F. Kennedy")
    assert (first.status, second.status, second.verdict) == ("yes", "cached-yes", 1.0)
    assert len(judge_server.requests) == 1 and rerun_judge.stats["requests"] == 0
    # a different judge model is a different cache key
    LLMJudge(fast_config(judge_server, model="other", cache_path=cfg.cache_path)).judge(QUESTION, "JFK", "John F. Kennedy")
    assert len(judge_server.requests) == 2


def test_errors_are_not_cached(judge_server, tmp_path):
    judge_server.script["x"] = [("status", 500)] * 3
    cfg = fast_config(judge_server, cache_path=str(tmp_path / "c.sqlite"))
    assert LLMJudge(cfg).judge("q", "x", "y").verdict is None
    assert LLMJudge(cfg).judge("q", "x", "y").status == "no"               # asked again, server answers now
    assert len(judge_server.requests) == 4


def test_api_key_sent_but_never_logged_or_cached(judge_server, tmp_path, monkeypatch, caplog):
    secret = "sk-test-3f9a1c-SECRET"
    monkeypatch.setenv("LOONGRL_TEST_JUDGE_KEY", secret)
    judge_server.verdicts["ok"] = "[[YES]]"
    judge_server.script["bad"] = [("status", 500)] * 10
    cache = tmp_path / "c.sqlite"
    judge = LLMJudge(fast_config(judge_server, cache_path=str(cache)))
    with caplog.at_level(logging.DEBUG):
        assert judge.judge("q", "ok", "ok").verdict == 1.0
        failed = judge.judge("q", "bad", "x")
    assert judge_server.requests[0]["headers"]["Authorization"] == f"Bearer {secret}"
    assert failed.verdict is None and caplog.records                        # the failure was logged...
    assert secret not in caplog.text and secret not in failed.status       # ...without the key
    assert secret.encode() not in cache.read_bytes()
    assert secret not in json.dumps(judge.stats)


@pytest.mark.timing
def test_concurrency_overlaps_requests(judge_server):
    judge_server.fixed_delay_s = 0.2
    items = [("q", f"answer {i}", ["gold"]) for i in range(8)]
    judge = LLMJudge(fast_config(judge_server, max_concurrency=8))
    start = time.perf_counter()
    results = judge.judge_many(items)
    elapsed = time.perf_counter() - start
    assert [r.status for r in results] == ["no"] * 8
    assert elapsed < 0.8                                                     # sequential would take 1.6 s


def test_trl_batch_judges_only_rule_failures(judge_server):
    judge_server.verdicts["JFK"] = "[[YES]]"
    reward = make_trl_reward(judge_config=fast_config(judge_server))
    completions = [[{"role": "assistant", "content": r"</think>\boxed{JFK}"}],
                   [{"role": "assistant", "content": r"</think>\boxed{Kennedy}"}],
                   [{"role": "assistant", "content": r"</think>\boxed{Nixon}"}]]
    scores = reward(prompts=[[{"role": "user", "content": "q"}]] * 3, completions=completions,
                    reward_model=[{"style": "rule", "ground_truth": ["John F. Kennedy"]}] * 3,
                    data_source=["keychain_hotpotqa"] * 3, extra_info=[{"question": QUESTION}] * 3)
    assert scores == [1.0, 1.0, 0.0]
    assert sorted(r["answer"] for r in judge_server.requests) == ["JFK", "Nixon"]


@pytest.mark.parametrize("change", [{"temperature": 0.7}, {"max_tokens": 64}, {"strict_verdict": False},
                                    {"extra_body": {"top_p": 0.5}}, {"system_prompt": "Judge."}])
def test_cache_key_covers_sampling_and_verdict_settings(judge_server, tmp_path, change):
    judge_server.verdicts["JFK"] = "[[YES]]"
    cache = str(tmp_path / "verdicts.sqlite")
    assert LLMJudge(fast_config(judge_server, cache_path=cache)).judge(QUESTION, "JFK", "Kennedy").status == "yes"
    assert LLMJudge(fast_config(judge_server, cache_path=cache)).judge(QUESTION, "JFK", "Kennedy").status == "cached-yes"
    other = LLMJudge(fast_config(judge_server, cache_path=cache, **change)).judge(QUESTION, "JFK", "Kennedy")
    assert other.status == "yes" and len(judge_server.requests) == 2      # asked again, not read from the cache
    body = judge_server.requests[-1]["body"]
    assert (body["temperature"], body["max_tokens"], body["n"]) == (change.get("temperature", 0.0),
                                                                    change.get("max_tokens", 512), 1)
    assert body.get("top_p") == change.get("extra_body", {}).get("top_p")


def test_judge_any_tries_each_gold_and_reports_an_error_only_without_verdicts(judge_server):
    judge_server.key_of = lambda body: body["messages"][-1]["content"].rsplit("Answer 2: ", 1)[1].strip()
    judge_server.verdicts["Kennedy"] = "[[YES]]"
    judge_server.script["Jack"] = [("status", 400)]
    judge = LLMJudge(fast_config(judge_server))
    assert judge.judge_any("q", "JFK", ["Jack", "Kennedy", "John"]).status == "yes"
    assert [r["answer"] for r in judge_server.requests] == ["Jack", "Kennedy"]     # stops at the first YES
    judge_server.script["Jack"] = [("status", 400)]
    assert judge.judge_any("q", "JFK", ["Jack", "John"]).status == "no"             # a verdict beats the error
    judge_server.script["Jack"] = [("status", 400)]
    assert judge.judge_any("q", "JFK", ["Jack"]).status == "error: HTTP 400: scripted"
    assert judge.judge_any("q", "JFK", []).status == "error: no gold answers"
    assert judge.judge_many([]) == []


def test_hybrid_score_without_a_judge_result_keeps_the_rule_score():
    from loongrl.rewards.judge import JudgeResult, hybrid_score

    assert hybrid_score(0.0, None) == (0.0, "skipped")
    assert hybrid_score(1.0, None) == (1.0, "skipped")
    assert hybrid_score(0.0, JudgeResult(None, "error: timeout")) == (0.0, "error: timeout")
    assert hybrid_score(0.0, JudgeResult(1.0, "cached-yes")) == (1.0, "cached-yes")


@pytest.mark.parametrize("reply, verdict, status", [
    ("[[NO]] They name different people.", 0.0, "no"),                                    # a tag at position 0
    ("[[YES]] at first sight; the years differ, [[NO]]; rechecking, the same man: [[YES]]", 1.0, "yes"),
    ("[[NO]] at first sight; the initials match, [[YES]]; but the middle name differs: [[NO]]", 0.0, "no"),
])
def test_strict_verdict_is_the_last_tag_of_the_reply(judge_server, reply, verdict, status):
    judge_server.verdicts["JFK"] = reply
    result = LLMJudge(fast_config(judge_server)).judge(QUESTION, "JFK", "John F. Kennedy")
    assert (result.verdict, result.status) == (verdict, status)


def test_loose_verdict_without_yes_is_no(judge_server):
    # QwenLong-L1's loose rule: YES anywhere counts; a reply without it is a NO (not an error, not a YES)
    judge_server.verdicts["Nixon"] = "No, they are different presidents."
    result = LLMJudge(fast_config(judge_server, strict_verdict=False)).judge(QUESTION, "Nixon", "John F. Kennedy")
    assert (result.verdict, result.status) == (0.0, "no")


def test_cache_is_keyed_by_content_not_by_the_order_of_extra_body(judge_server, tmp_path):
    judge_server.verdicts["JFK"] = "[[YES]]"
    path = str(tmp_path / "verdicts.sqlite")
    LLMJudge(fast_config(judge_server, cache_path=path, extra_body={"top_p": 1.0, "seed": 7})).judge(QUESTION, "JFK", "John F. Kennedy")
    # the same settings written in another order (a YAML file edited by hand) hit the same cache entry
    again = LLMJudge(fast_config(judge_server, cache_path=path, extra_body={"seed": 7, "top_p": 1.0}))
    assert again.judge(QUESTION, "JFK", "John F. Kennedy").status == "cached-yes"
    assert len(judge_server.requests) == 1 and again.stats["cache_hits"] == 1


def test_cached_no_verdicts_and_the_stored_reply(judge_server, tmp_path):
    import sqlite3

    judge_server.verdicts["Nixon"] = "Different presidents. [[NO]]"
    path = str(tmp_path / "verdicts.sqlite")
    first = LLMJudge(fast_config(judge_server, cache_path=path)).judge(QUESTION, "Nixon", "John F. Kennedy")
    rerun = LLMJudge(fast_config(judge_server, cache_path=path))
    second = rerun.judge(QUESTION, "Nixon", "John F. Kennedy")
    assert (first.verdict, first.status, second.verdict, second.status) == (0.0, "no", 0.0, "cached-no")
    assert dict(rerun.stats) == {"cache_hits": 1}
    with sqlite3.connect(path) as conn:                       # the judge's reply is kept beside its verdict
        assert conn.execute("SELECT verdict, reply FROM verdicts").fetchall() == [(0.0, "Different presidents. [[NO]]")]


def test_a_broken_cache_file_never_stops_judging(judge_server, tmp_path):
    judge_server.verdicts["JFK"] = "[[YES]]"
    path = tmp_path / "verdicts.sqlite"
    judge = LLMJudge(fast_config(judge_server, cache_path=str(path)))
    path.write_bytes(b"this is not an SQLite database" * 100)  # e.g. overwritten by another tool
    result = judge.judge(QUESTION, "JFK", "John F. Kennedy")
    assert (result.verdict, result.status) == (1.0, "yes")    # asked the server instead
    assert judge.stats["cache_hits"] == 0 and len(judge_server.requests) == 1


def test_a_reply_slower_than_the_timeout_is_an_error(judge_server):
    # the outcome only: the server answers after 1 s, the deadline is 0.2 s (no retry), so no verdict arrives
    judge_server.script["slow"] = [("delay", 1.0)]
    result = LLMJudge(fast_config(judge_server, timeout_s=0.2, max_retries=0)).judge("q", "slow", "fast")
    assert result.verdict is None and "timed out" in result.status
    deadline = time.monotonic() + 10                  # let the server finish that request before the next test
    while judge_server.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)


def test_judge_request_roles_and_an_empty_question(judge_server):
    judge_server.verdicts["JFK"] = "[[YES]]"
    # a row without a question: the judge's problem line is empty
    result = compute_score("keychain_hotpotqa", r"</think>\boxed{JFK}", ["John F. Kennedy"],
                           judge_config=fast_config(judge_server).__dict__)
    assert result["judge"] == "yes"
    [request] = judge_server.requests
    assert [m["role"] for m in request["body"]["messages"]] == ["system", "user"]
    assert request["body"]["messages"][1]["content"] == "\nProblem: \nAnswer 1: JFK\nAnswer 2: John F. Kennedy\n"


def test_cache_key_is_the_sha256_of_sorted_json_with_unicode_kept():
    # stable across versions and processes: a cache file written by one run is read by the next
    import hashlib

    from loongrl.rewards.judge import cache_key

    messages = [{"role": "user", "content": "Zürich?"}]
    payload = '["judge-m", [{"content": "Zürich?", "role": "user"}], {"max_tokens": 8, "temperature": 0.0}]'
    assert cache_key("judge-m", messages, {"temperature": 0.0, "max_tokens": 8}) == \
        hashlib.sha256(payload.encode("utf-8")).hexdigest()


def test_identical_items_in_a_batch_cost_one_call(judge_server):
    judge_server.verdicts["JFK"] = "[[YES]]"
    judge = LLMJudge(fast_config(judge_server))
    items = [(QUESTION, "JFK", ["John F. Kennedy"])] * 3 + [(QUESTION, "Nixon", ["John F. Kennedy"]),
                                                              ("Another question?", "JFK", ["John F. Kennedy"])]
    results = judge.judge_many(items)
    assert [r.status for r in results] == ["yes", "yes", "yes", "no", "yes"]
    # the repeated answer was asked once; the same answer to another question is another item
    assert sorted(r["answer"] for r in judge_server.requests) == ["JFK", "JFK", "Nixon"]
    assert judge.stats["deduplicated"] == 2 and judge.stats["requests"] == 3


def test_auto_cache_lives_in_the_machines_loongrl_cache(judge_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LOONGRL_CACHE", str(tmp_path / "cache"))
    judge_server.verdicts["JFK"] = "[[YES]]"
    first = LLMJudge(fast_config(judge_server, cache_path="auto")).judge(QUESTION, "JFK", "John F. Kennedy")
    again = LLMJudge(fast_config(judge_server, cache_path="auto")).judge(QUESTION, "JFK", "John F. Kennedy")
    assert (first.status, again.status) == ("yes", "cached-yes") and len(judge_server.requests) == 1
    assert (tmp_path / "cache" / "judge" / "verdicts.sqlite").is_file()


def test_trl_reward_logs_the_share_of_failed_verdicts(judge_server):
    judge_server.script["JFK"] = [("status", 500)] * 3  # the first attempt and both retries fail
    judge_server.verdicts["Nixon"] = "[[NO]]"
    reward = make_trl_reward(judge_config=fast_config(judge_server).__dict__)
    logged = {}
    completions = [[{"role": "assistant", "content": f"<think>t</think> \\boxed{{{a}}}"}] for a in ("JFK", "Nixon")]
    scores = reward(prompts=[None, None], completions=completions, data_source=["longqa_x"] * 2,
                    reward_model=[{"ground_truth": ["John F. Kennedy"]}] * 2,
                    extra_info=[{"question": QUESTION}] * 2, log_metric=logged.__setitem__)
    assert scores == [0.0, 0.0] and logged == {"pass_rate": 0.0, "judge_errors": 0.5}
