"""Retries and backoff of the HTTP client, without the clock: the delays it would sleep, the attempts it
makes, the errors it keeps (the scripted-server tests in test_generation_http.py time the real thing)."""

from __future__ import annotations

import random

import pytest

from loongrl.generation.http import NoRetry, Retryable, backoff_delay, error_detail, redact, with_retries


def test_backoff_doubles_with_jitter_and_is_capped_after_it():
    random.seed(0)
    for attempt, low in ((0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0)):
        delays = [backoff_delay(attempt, 0.5, 100.0) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= low * 1.25 and max(delays) > low * 1.2   # up to 25% jitter
    assert {backoff_delay(4, 0.5, 8.0) for _ in range(50)} == {8.0}          # 8 <= base: the cap, jitter or not
    assert max(backoff_delay(3, 0.5, 4.5) for _ in range(200)) == 4.5 > min(backoff_delay(3, 0.5, 4.5) for _ in range(200))
    assert backoff_delay(0, 0.5, 8.0, retry_after=3.0) == 3.0                # the server's Retry-After...
    assert backoff_delay(0, 0.5, 8.0, retry_after=30.0) == 8.0               # ...capped too
    assert backoff_delay(5, 0.5, 8.0, retry_after=0.0) == 0.0


def test_with_retries_counts_attempts_and_keeps_the_last_error():
    seen, errors = [], iter([Retryable("HTTP 503"), Retryable("HTTP 502"), Retryable("timed out")])

    def call():
        raise next(errors)

    with pytest.raises(Retryable, match="timed out"):
        with_retries(call, max_retries=2, backoff_s=0.0, backoff_max_s=0.0, on_attempt=seen.append)
    assert seen == [0, 1, 2]
    answers = iter([Retryable("HTTP 503", retry_after=0.0), "ok"])

    def flaky():
        value = next(answers)
        if isinstance(value, Exception):
            raise value
        return value

    assert with_retries(flaky, max_retries=1, backoff_s=0.0, backoff_max_s=0.0) == "ok"
    calls = []

    def refused():
        calls.append(1)
        raise NoRetry("HTTP 400: bad request")

    with pytest.raises(NoRetry, match="HTTP 400"):
        with_retries(refused, max_retries=5, backoff_s=0.0, backoff_max_s=0.0)
    assert len(calls) == 1                                                     # a 4xx is not retried
    assert with_retries(lambda: 7, max_retries=0, backoff_s=1.0, backoff_max_s=1.0) == 7


@pytest.mark.parametrize("body, detail", [
    (b'{"detail": "max_tokens must be at most 4096"}', "max_tokens must be at most 4096"),     # FastAPI
    (b'{"error": {"message": "model not found", "type": "x"}}', "model not found"),           # OpenAI, vLLM
    (b'{"error": "overloaded"}', "overloaded"),
    (b'{"message": "try later"}', "try later"),
    (b'{"detail": [{"loc": ["body"], "msg": "bad"}]}', '[{"loc": ["body"], "msg": "bad"}]'),
    (b"<html>  Bad\n  Gateway </html>", "<html> Bad Gateway </html>"),
    (b"x" * 600, "x" * 500 + "..."),
    (b'{"other": 1}', '{"other": 1}'),
    (b"bad \xff byte", "bad \ufffd byte"),                                      # not UTF-8: replaced, not raised
    (b"y" * 500, "y" * 500),                                                      # exactly the limit: kept whole
])
def test_error_detail_reads_the_servers_explanation(body, detail):
    assert error_detail(body) == detail


def test_redact_hides_the_key(monkeypatch):
    monkeypatch.setenv("LOONGRL_TEST_REDACT", "sk-123")
    assert redact("bad key sk-123 given", "LOONGRL_TEST_REDACT") == "bad key *** given"
    assert redact("bad key sk-123 given", "LOONGRL_TEST_UNSET_VAR") == "bad key sk-123 given"


def test_redact_without_a_key_leaves_every_text_alone(monkeypatch):
    text = "Incorrect API key provided: sk-XXXX****XXXX. You can find your API key at https://example.com."
    monkeypatch.delenv("LOONGRL_TEST_REDACT", raising=False)
    assert redact(text, "LOONGRL_TEST_REDACT") == text
    monkeypatch.setenv("LOONGRL_TEST_REDACT", "")                               # set but empty: no key either
    assert redact(text, "LOONGRL_TEST_REDACT") == text


def test_an_error_made_without_a_server_reply_has_no_status_and_no_detail():
    for err in (NoRetry("no [[YES]]/[[NO]] verdict in reply"), Retryable("timed out after 1 s (whole request)")):
        assert (err.status, err.detail) == (None, "")


def test_completions_endpoint_and_malformed_replies(server):
    from loongrl.generation.http import post_completion

    server.reset()
    server.key_of = lambda body: body.get("prompt", "")
    server.respond = lambda body: " 42"
    reply = post_completion(server.base_url + "/", {"model": "m", "prompt": "The number is:"}, "UNSET_KEY_VAR", 5.0)
    assert reply["choices"][0]["text"] == " 42" and server.requests[-1]["path"] == "/v1/completions"
    server.script["bad"] = [("raw", b'{"choices": [{"message": {"content": "x"}}]}')]    # a chat reply, no text
    with pytest.raises(Retryable, match=r"^malformed response body \(no choices with text\)$"):
        post_completion(server.base_url, {"model": "m", "prompt": "bad"}, "UNSET_KEY_VAR", 5.0)
    server.script["junk"] = [("raw", b"<html>")]
    with pytest.raises(Retryable, match=r"^malformed response body \(not JSON\)$"):
        post_completion(server.base_url, {"model": "m", "prompt": "junk"}, "UNSET_KEY_VAR", 5.0)


def test_the_servers_retry_after_replaces_the_backoff():
    """A Retry-After of 0 s is waited instead of the 600 s backoff (the thread would still be asleep)."""
    import threading

    answers = iter([Retryable("HTTP 429: slow down", retry_after=0.0), "ok"])
    results = []

    def call():
        value = next(answers)
        if isinstance(value, Exception):
            raise value
        return value

    worker = threading.Thread(target=lambda: results.append(with_retries(call, 1, backoff_s=600.0, backoff_max_s=600.0)),
                              daemon=True)
    worker.start()
    worker.join(20)
    assert results == ["ok"]


def test_a_negative_retry_count_is_refused_when_the_client_is_made():
    """`--max-retries -1` (or a judge config's max_retries: -1) is refused before any request, not met at
    the first request as a bare internal error."""
    from loongrl.generation.backends import make_backend
    from loongrl.rewards.judge import JudgeConfig

    with pytest.raises(ValueError) as err:
        make_backend("openai:http://127.0.0.1:9/v1#m", max_retries=-1)
    assert str(err.value) == "max_retries must be >= 0 (retries after the first attempt), got -1"
    with pytest.raises(ValueError) as err:
        JudgeConfig(max_retries=-2)
    assert str(err.value) == "judge max_retries must be >= 0 (retries after the first attempt), got -2"
    assert make_backend("openai:http://127.0.0.1:9/v1#m", max_retries=0).max_retries == 0
    assert JudgeConfig(max_retries=0).max_retries == 0
    # the retry loop itself holds the same rule, for any other caller
    from loongrl.generation.http import with_retries

    with pytest.raises(ValueError, match=r"^max_retries must be >= 0 \(retries after the first attempt\), got -1$"):
        with_retries(lambda: "never called", -1, 0.0, 0.0)
    assert with_retries(lambda: "once", 0, 0.0, 0.0) == "once"
