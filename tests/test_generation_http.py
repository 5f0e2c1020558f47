"""The HTTP client and the OpenAI-compatible backend against the scripted server (faults only):
whole-request deadline under a keep-alive trickle, retries and backoff, garbage, the server's
detail in every message, keys never in messages, the prefill fallback to /completions."""

from __future__ import annotations

import time

import pytest
from openai_server import judge_answer_key, last_text

from loongrl.generation.backends import BackendError, OpenAIBackend, SamplingConfig, make_backend
from loongrl.generation.http import NoRetry, Retryable, backoff_delay, post_chat
from loongrl.rewards.judge import JudgeConfig, LLMJudge

KEY_ENV = "LOONGRL_TEST_HTTP_KEY"


@pytest.fixture
def srv(server):
    server.reset()
    server.key_of = last_text
    return server


def backend(server, **kw) -> OpenAIBackend:
    options = dict(concurrency=4, timeout_s=2.0, max_retries=2, backoff_s=0.01, backoff_max_s=0.05,
                   api_key_env=KEY_ENV)
    return make_backend(f"openai:{server.base_url}#scripted", **{**options, **kw})


def ask(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


@pytest.mark.timing
def test_keep_alive_trickle_cannot_outlive_the_deadline(srv):
    # Status 200 at once, then a newline every 0.1 s for 5 s: each read is quick, the request is not.
    srv.script["slow"] = [("trickle", 5.0, 0.1)] * 3
    start = time.perf_counter()
    with pytest.raises(Retryable, match=r"timed out after 0.5 s \(whole request\)"):
        post_chat(srv.base_url, {"model": "m", "messages": ask("slow")}, KEY_ENV, 0.5)
    assert time.perf_counter() - start < 1.5
    # The judge: two attempts of 0.5 s and a short backoff, not 3 x 5 s.
    srv.key_of = judge_answer_key
    srv.script["JFK"] = [("trickle", 5.0, 0.1)] * 3
    judge = LLMJudge(JudgeConfig(base_url=srv.base_url, model="j", timeout_s=0.5, max_retries=1, backoff_s=0.01,
                                 api_key_env=KEY_ENV))
    start = time.perf_counter()
    result = judge.judge("Who?", "JFK", "John F. Kennedy")
    assert time.perf_counter() - start < 2.5
    assert result.verdict is None and result.status == "error: timed out after 0.5 s (whole request)"


def test_a_trickle_that_ends_in_time_is_a_reply(srv):
    srv.script["ok"] = [("trickle", 0.3, 0.1)]
    srv.verdicts["ok"] = "fine"
    reply = post_chat(srv.base_url, {"model": "m", "messages": ask("ok")}, KEY_ENV, 3.0)
    assert reply["choices"][0]["message"]["content"] == "fine"


def test_5xx_and_garbage_are_retried_then_answered(srv):
    srv.script["p"] = [("status", 503), ("raw", b"<html>oops</html>"), ("raw", b'{"choices": []}')]
    srv.verdicts["p"] = "answer"
    assert backend(srv, max_retries=3).generate([ask("p")], SamplingConfig()) == [["answer"]]
    assert len(srv.requests) == 4


def test_errors_carry_the_servers_detail_and_never_the_key(srv, monkeypatch):
    secret = "sk-test-9d2e-SECRET"
    monkeypatch.setenv(KEY_ENV, secret)
    srv.script["bad"] = [("status", 400, None, "max_tokens must be at most 4096")]
    with pytest.raises(BackendError, match=r"prompt 0 sample 0: request failed: HTTP 400: max_tokens must be at most "
                                           r"4096$"):
        backend(srv).generate([ask("bad")], SamplingConfig())
    assert len(srv.requests) == 1  # a 4xx is not retried
    srv.script["auth"] = [("status", 401, None, f"invalid key {secret}")]
    with pytest.raises(BackendError) as info:
        backend(srv).generate([ask("auth")], SamplingConfig())
    assert "HTTP 401: invalid key ***" in str(info.value) and secret not in str(info.value)
    assert srv.requests[-1]["headers"]["Authorization"] == f"Bearer {secret}"
    srv.script["down"] = [("status", 502, None, "upstream model crashed")] * 3
    with pytest.raises(BackendError, match="request failed after 2 retries: HTTP 502: upstream model crashed"):
        backend(srv).generate([ask("down")], SamplingConfig())


@pytest.mark.timing
def test_retry_after_is_honoured_and_backoff_is_capped_after_jitter(srv):
    srv.script["busy"] = [("status", 429, {"Retry-After": "0.3"})]
    start = time.perf_counter()
    assert backend(srv, backoff_max_s=1.0).generate([ask("busy")], SamplingConfig()) == [["The answers differ. [[NO]]"]]
    assert 0.3 <= time.perf_counter() - start < 1.0
    assert all(backoff_delay(8, 1.0, 5.0) == 5.0 for _ in range(20))            # cap applied after the jitter
    assert backoff_delay(0, 1.0, 5.0, retry_after=60.0) == 5.0                   # the cap bounds Retry-After too
    assert {round(backoff_delay(1, 1.0, 100.0), 1) for _ in range(200)} <= {x / 10 for x in range(20, 26)}


@pytest.mark.timing
def test_concurrency_is_bounded_and_overlapping(srv):
    srv.fixed_delay_s = 0.2
    start = time.perf_counter()
    out = backend(srv, concurrency=8).generate([ask(f"q{i}") for i in range(16)], SamplingConfig())
    assert len(out) == 16 and time.perf_counter() - start < 1.6               # 2 waves, not 16 x 0.2 s
    assert srv.max_in_flight == 8


def test_prefill_falls_back_to_completions_with_the_template_rendered_locally(srv, smollm2):
    from transformers import AutoTokenizer

    srv.reject_fields = {"continue_final_message", "add_generation_prompt"}   # as transformers serve does
    srv.respond = lambda body: " 42" if "prompt" in body else "chat reply"
    prompts = [ask("What is the number?") + [{"role": "assistant", "content": "The number is:"}] for _ in range(3)]
    out = backend(srv, concurrency=1, tokenizer=smollm2).generate(prompts + [ask("plain")], SamplingConfig())
    assert out == [[" 42"]] * 3 + [["chat reply"]]
    paths = [r["path"] for r in srv.requests]
    assert paths == ["/v1/chat/completions"] + ["/v1/completions"] * 3 + ["/v1/chat/completions"]  # rejected once
    rendered = AutoTokenizer.from_pretrained(smollm2).apply_chat_template(prompts[0], continue_final_message=True,
                                                                         tokenize=False)
    assert srv.requests[1]["body"]["prompt"] == rendered and rendered.endswith("assistant\nThe number is:")
    # --prefill extension reports the rejection with the server's words; no tokenizer: says what to pass
    with pytest.raises(BackendError, match=r"HTTP 422: Unexpected fields in the request: .*continue_final_message"):
        backend(srv, prefill="extension").generate(prompts[:1], SamplingConfig())
    with pytest.raises(BackendError, match=r"give the served model's tokenizer folder \(--tokenizer DIR\)"):
        backend(srv).generate(prompts[:1], SamplingConfig())


def test_other_4xx_on_a_prefill_is_not_a_fallback(srv):
    srv.script["x"] = [("status", 400, None, "context length exceeded")]
    srv.key_of = lambda body: "x"
    with pytest.raises(BackendError, match="HTTP 400: context length exceeded"):
        backend(srv, tokenizer="unused").generate([ask("q") + [{"role": "assistant", "content": "A:"}]],
                                                  SamplingConfig())
    assert [r["path"] for r in srv.requests] == ["/v1/chat/completions"]


def test_no_retry_error_has_status_and_detail(srv):
    srv.script["gone"] = [("status", 404, None, "model 'm' not found")]
    with pytest.raises(NoRetry) as info:
        post_chat(srv.base_url, {"model": "m", "messages": ask("gone")}, KEY_ENV, 2.0)
    assert (info.value.status, info.value.detail, str(info.value)) == (404, "model 'm' not found",
                                                                       "HTTP 404: model 'm' not found")


def test_raw_completions_keep_the_deadline_and_the_base_path(srv):
    """`post_completion` (the prefill fallback's endpoint) is bound by the same whole-request deadline as
    chat, and only trailing slashes of the base URL are dropped: a deployment path ending in "X" stays."""
    from loongrl.generation.http import post_completion

    srv.key_of = lambda body: body.get("prompt", "")
    srv.respond = lambda body: " 42"
    srv.script["stall"] = [("delay", 5.0)]
    with pytest.raises(Retryable, match="timed out|timeout"):
        post_completion(srv.base_url, {"model": "m", "prompt": "stall"}, KEY_ENV, 0.5)
    reply = post_completion(srv.base_url + "/deployments/model-X//", {"model": "m", "prompt": "go"}, KEY_ENV, 5.0)
    assert reply["choices"][0]["text"] == " 42"
    assert srv.requests[-1]["path"] == "/v1/deployments/model-X/completions"


def test_retryable_errors_keep_status_detail_and_retry_after(srv):
    """What `with_retries` and the callers read off an error: the status, the server's detail, and the
    Retry-After a 429 or 5xx gives (none when absent or not a number)."""
    from loongrl.generation.http import post_json

    url = srv.base_url + "/chat/completions"
    srv.script["busy"] = [("status", 429, {"Retry-After": "7"}, "slow down")]
    srv.script["down"] = [("status", 503, {"Retry-After": "soon"})]
    srv.script["bad"] = [("status", 404, None, "no such model")]
    with pytest.raises(Retryable) as busy:
        post_json(url, {"model": "m", "messages": ask("busy")}, KEY_ENV, 5.0)
    assert (str(busy.value), busy.value.status, busy.value.detail, busy.value.retry_after) == (
        "HTTP 429: slow down", 429, "slow down", 7.0)
    with pytest.raises(Retryable) as down:
        post_json(url, {"model": "m", "messages": ask("down")}, KEY_ENV, 5.0)
    assert (down.value.status, down.value.detail, down.value.retry_after) == (503, "scripted", None)
    with pytest.raises(NoRetry) as bad:
        post_json(url, {"model": "m", "messages": ask("bad")}, KEY_ENV, 5.0)
    assert (str(bad.value), bad.value.status, bad.value.detail) == ("HTTP 404: no such model", 404, "no such model")
    plain = Retryable("timed out after 1 s (whole request)")
    assert (plain.status, plain.detail, plain.retry_after) == (None, "", None)


def test_one_daemon_loop_thread_per_process_and_a_script_still_exits(srv):
    """The client's asyncio loop runs on one daemon thread named "loongrl-http" per process, reused by every
    request: a script that made requests exits when its main code ends (a non-daemon loop thread would keep
    it alive for ever)."""
    import os
    import subprocess
    import sys

    srv.respond = lambda body: "ok"
    script = (
        "import threading\n"
        "from loongrl.generation.http import post_chat\n"
        f"url = {srv.base_url!r}\n"
        "for q in ('a', 'b', 'c'):\n"
        "    post_chat(url, {'model': 'm', 'messages': [{'role': 'user', 'content': q}]}, 'NO_KEY_HERE', 5.0)\n"
        "loops = [t for t in threading.enumerate() if t.name == 'loongrl-http']\n"
        "print(len(loops), all(t.daemon for t in loops))\n")
    # the child imports the same loongrl as this process (mutmut's mutated copy, in a mutation run)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=20)
    assert (done.returncode, done.stdout) == (0, "1 True\n"), done.stderr
    assert len(srv.requests) == 3


def test_a_process_starts_one_daemon_loop_thread_and_reuses_it(srv, monkeypatch):
    """The same, in this process (where mutmut's per-function test selection sees it): with no transport yet
    (as in a fresh process), requests start exactly one daemon thread "loongrl-http" and reuse it."""
    import threading

    from loongrl.generation import http

    def loop_threads():
        return {t for t in threading.enumerate() if t.name == "loongrl-http"}

    srv.respond = lambda body: "ok"
    before = loop_threads()
    monkeypatch.setattr(http._Transport, "_current", None)
    for q in ("a", "b", "c"):
        post_chat(srv.base_url, {"model": "m", "messages": ask(q)}, KEY_ENV, 5.0)
    started = loop_threads() - before
    transport = http._Transport._current
    transport.loop.call_soon_threadsafe(transport.loop.stop)   # this test's transport only: stop its thread
    assert [t.daemon for t in started] == [True] and len(srv.requests) == 3


def test_post_chat_keeps_the_base_path_and_sends_json(srv):
    srv.respond = lambda body: "ok"
    reply = post_chat(srv.base_url + "/deployments/model-X//", {"model": "m", "messages": ask("hi")}, KEY_ENV, 5.0)
    assert reply["choices"][0]["message"]["content"] == "ok"
    request = srv.requests[-1]
    assert request["path"] == "/v1/deployments/model-X/chat/completions"       # only the trailing slashes go
    assert {k.lower(): v for k, v in request["headers"].items()}["content-type"] == "application/json"


class _OneReply:
    """A bare HTTP server on 127.0.0.1 answering every POST with one status, headers and body: what the scripted
    server cannot send (an error with an empty body, a body its Content-Encoding does not match)."""

    def __init__(self, status: int, headers: dict, body: bytes):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/chat/completions"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_status_500_is_retried_and_an_empty_error_body_leaves_the_bare_status():
    from loongrl.generation.http import post_json

    with _OneReply(500, {}, b"") as server, pytest.raises(Retryable) as info:
        post_json(server.url, {"model": "m"}, KEY_ENV, 5.0)
    assert (str(info.value), info.value.status, info.value.detail, info.value.retry_after) == ("HTTP 500", 500, "", None)


def test_transport_errors_name_the_url_and_the_error_but_never_the_key(monkeypatch):
    """Connection errors (httpx's TransportError) read "connection failed"; any other httpx error, such as a
    body that does not match its Content-Encoding, "request failed". A key placed in the URL (Azure's
    ?api-key=) is redacted from both."""
    import socket

    from loongrl.generation.http import post_json

    secret = "sk-test-url-SECRET"
    monkeypatch.setenv(KEY_ENV, secret)
    with socket.socket() as sock:                                               # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(Retryable) as refused:
        post_json(f"http://127.0.0.1:{port}/v1/chat/completions?api-key={secret}", {"model": "m"}, KEY_ENV, 5.0)
    assert str(refused.value) == (f"connection failed: http://127.0.0.1:{port}/v1/chat/completions?api-key=*** "
                                  "(ConnectError: All connection attempts failed)")
    with _OneReply(200, {"Content-Encoding": "gzip"}, b"not gzip at all") as server, \
            pytest.raises(Retryable) as garbled:
        post_json(server.url + f"?api-key={secret}", {"model": "m"}, KEY_ENV, 5.0)
    assert str(garbled.value) == (f"request failed: {server.url}?api-key=*** "
                                  "(DecodingError: Error -3 while decompressing data: incorrect header check)")


def test_requests_in_flight_are_not_capped_below_the_callers_concurrency(srv):
    """Asked for 150, far more than 100 requests are in flight at once: the client's connection pool does not
    cap them at httpx's default of 100 connections (a server answering in 1.5 s; some connections wait in
    the listen backlog at first, so not always all 150). The deadline is long enough for a capped client too:
    a request timed out and retried would leave its abandoned handler counted in the server's in-flight."""
    srv.fixed_delay_s = 1.5
    out = backend(srv, concurrency=150, timeout_s=30.0).generate([ask(f"q{i}") for i in range(150)],
                                                                SamplingConfig())
    assert len(out) == len(srv.requests) == 150                 # each request once: none timed out
    assert srv.max_in_flight > 100                               # httpx alone would stop at 100


def test_a_reply_slower_than_httpx_default_timeouts_is_waited_for(srv):
    """Only the whole-request deadline bounds a request: a server that takes 5.5 s to answer (a long
    generation) is waited for, not cut off by httpx's default 5 s read timeout."""
    srv.respond = lambda body: "slow but fine"
    srv.fixed_delay_s = 5.5
    reply = post_chat(srv.base_url, {"model": "m", "messages": ask("think long")}, KEY_ENV, 30.0)
    assert reply["choices"][0]["message"]["content"] == "slow but fine"
