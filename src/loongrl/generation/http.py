"""The one OpenAI-compatible HTTP client: POST JSON with a whole-request deadline, retries, backoff.

Used by the LLM judge (``loongrl.rewards.judge``) and the OpenAI-compatible backend
(``loongrl.generation.backends.OpenAIBackend``).

- Transport: httpx's async client on one event loop per process (a daemon thread), called from
  any thread. ``asyncio.timeout`` bounds the WHOLE request (connect, send, headers, body): httpx's
  own timeouts are per operation, so a server trickling a keep-alive byte every second would
  otherwise hold a request for ever.
- Errors: ``Retryable`` (timeouts, connection errors, 429, 5xx, malformed bodies) and ``NoRetry``
  (other 4xx, unusable replies). Every HTTP error message carries the server's own explanation
  (FastAPI's ``detail``, OpenAI's ``error.message``, or the start of the body). A server that answered
  before and now refuses connections raises ``ServerGone`` (a ``Retryable``): it has most likely died.
- Secrets: the API key is read from the environment at request time, sent as a Bearer header and
  never logged or returned: error texts pass through ``redact`` before they leave this module.

httpx and asyncio are imported on first use, so importing this module (the verl reward module
imports the judge) costs nothing.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
DETAIL_CHARS = 500
"""Longest server explanation kept in a message."""


class RequestError(Exception):
    """A request that failed; ``str(err)`` is a short reason without secrets. ``status`` is the HTTP
    status (None for transport errors) and ``detail`` the server's explanation ("" if none)."""

    def __init__(self, reason: str, status: int | None = None, detail: str = ""):
        super().__init__(reason)
        self.status, self.detail = status, detail


class NoRetry(RequestError):
    """Retrying cannot help (4xx other than 429, an unusable but well-formed reply)."""


class Retryable(RequestError):
    """Timeouts, connection errors, 429, 5xx and malformed bodies."""

    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None, detail: str = ""):
        super().__init__(reason, status, detail)
        self.retry_after = retry_after


class ServerGone(Retryable):
    """Connection refused by a server that answered this process before: it stopped (crashed, was killed).
    Still retried (it may be restarting), but reported as such, not as a plain connection failure."""


_answered: set[str] = set()
"""Servers (scheme://host:port) that sent this process at least one HTTP reply."""


def _refused(err: BaseException) -> bool:
    """A ConnectionRefusedError anywhere in the chain (httpx wraps it in httpcore's ConnectError, and
    anyio in an OSError "All connection attempts failed")."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, ConnectionRefusedError):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def redact(text: str, api_key_env: str) -> str:
    key = os.environ.get(api_key_env, "")
    return text.replace(key, "***") if key else text


def error_detail(body: bytes) -> str:
    """The server's explanation in an error body: ``detail`` (FastAPI), ``error.message`` (OpenAI,
    vLLM), ``error``/``message`` strings, else the body's text; whitespace collapsed, truncated."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        for value in (data.get("detail"), error.get("message") if isinstance(error, dict) else error,
                      data.get("message")):
            if value:
                text = value if isinstance(value, str) else json.dumps(value)
                break
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS] + "..."


class _Transport:
    """One asyncio loop on a daemon thread and one httpx.AsyncClient, per process."""

    _lock = threading.Lock()
    _current: "_Transport | None" = None

    def __init__(self):
        import asyncio

        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.client = None  # made on the loop, at the first request
        threading.Thread(target=self.loop.run_forever, name="loongrl-http", daemon=True).start()

    @classmethod
    def get(cls) -> "_Transport":
        with cls._lock:  # a forked child (a dataloader worker, say) needs its own loop thread
            if cls._current is None or cls._current.pid != os.getpid():
                cls._current = cls()
            return cls._current

    async def _post(self, url: str, body: dict, headers: dict, timeout_s: float):
        import asyncio

        import httpx

        if self.client is None:
            # No per-operation timeouts: the deadline below covers the whole request. TCP_NODELAY: httpx
            # writes headers and body separately, and Nagle + delayed ACK would stall each small request.
            transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                                                 limits=httpx.Limits(max_connections=512, max_keepalive_connections=128))
            self.client = httpx.AsyncClient(timeout=None, transport=transport)
        async with asyncio.timeout(timeout_s):
            response = await self.client.post(url, json=body, headers=headers)
        return response.status_code, response.headers, response.content

    def post(self, url: str, body: dict, headers: dict, timeout_s: float):
        import asyncio

        future = asyncio.run_coroutine_threadsafe(self._post(url, body, headers, timeout_s), self.loop)
        try:
            return future.result()
        except BaseException:  # KeyboardInterrupt in the caller: do not leave the request running
            future.cancel()
            raise


def post_json(url: str, body: dict, api_key_env: str, timeout_s: float) -> dict:
    """POST ``body`` to ``url`` within ``timeout_s`` seconds in all; the parsed JSON reply.

    Raises ``Retryable`` (timeout, connection error, 429, 5xx with Retry-After honoured, a body that
    is not JSON) or ``NoRetry`` (other 4xx), each with the server's detail in its message.
    """
    import httpx

    headers = {"Content-Type": "application/json"}
    api_key = os.environ.get(api_key_env)
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        status, response_headers, raw = _Transport.get().post(url, body, headers, timeout_s)
    except TimeoutError:
        raise Retryable(f"timed out after {timeout_s:g} s (whole request)") from None
    except httpx.HTTPError as err:
        if _refused(err) and _origin(url) in _answered:
            raise ServerGone(redact(f"the server at {_origin(url)} stopped answering (connection refused): it may "
                                    "have died; restart it at the same address and rerun the same command to "
                                    "resume", api_key_env)) from None
        kind = "connection failed" if isinstance(err, httpx.TransportError) else "request failed"
        raise Retryable(redact(f"{kind}: {url} ({type(err).__name__}: {err})", api_key_env)) from None
    _answered.add(_origin(url))
    if status >= 400:
        detail = redact(error_detail(raw), api_key_env)
        reason = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
        if status == 429 or status >= 500:
            try:
                delay = float(response_headers.get("Retry-After", ""))
            except ValueError:
                delay = None
            raise Retryable(reason, delay, status, detail)
        raise NoRetry(reason, status, detail)
    try:
        return json.loads(raw)
    except ValueError:
        raise Retryable("malformed response body (not JSON)") from None


def _choices(reply, text: Callable[[dict], object]) -> dict:
    """``reply`` if it has choices whose ``text(choice)`` is a string, else a retryable error."""
    try:
        if not reply["choices"] or not all(isinstance(text(c), str) for c in reply["choices"]):
            raise ValueError
    except (ValueError, KeyError, IndexError, TypeError):
        raise Retryable("malformed response body (no choices with text)") from None
    return reply


def post_chat(base_url: str, body: dict, api_key_env: str, timeout_s: float) -> dict:
    """``POST {base_url}/chat/completions``; the reply, with ``choices[i].message.content`` strings."""
    reply = post_json(base_url.rstrip("/") + "/chat/completions", body, api_key_env, timeout_s)
    return _choices(reply, lambda c: c["message"]["content"])


def post_completion(base_url: str, body: dict, api_key_env: str, timeout_s: float) -> dict:
    """``POST {base_url}/completions`` (a raw prompt); the reply, with ``choices[i].text`` strings."""
    reply = post_json(base_url.rstrip("/") + "/completions", body, api_key_env, timeout_s)
    return _choices(reply, lambda c: c["text"])


def backoff_delay(attempt: int, backoff_s: float, backoff_max_s: float, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (0-based): doubling with up to 25% jitter,
    or the server's Retry-After; both capped at ``backoff_max_s``."""
    if retry_after is not None:
        return min(backoff_max_s, retry_after)
    return min(backoff_max_s, backoff_s * 2**attempt * (1 + 0.25 * random.random()))


def check_max_retries(max_retries: int, owner: str = "") -> None:
    """Refuse a negative retry count. Clients call it when they are made, so a bad setting fails at once."""
    if max_retries < 0:
        raise ValueError(f"{owner}max_retries must be >= 0 (retries after the first attempt), got {max_retries}")


def with_retries(call: Callable[[], T], max_retries: int, backoff_s: float, backoff_max_s: float,
                 on_attempt: Callable[[int], None] | None = None) -> T:
    """``call()`` until it returns, at most ``1 + max_retries`` times; ``NoRetry`` stops at once.

    ``on_attempt(i)`` runs before attempt ``i`` (for counters). The last ``RequestError`` is raised.
    """
    check_max_retries(max_retries)
    for attempt in range(max_retries + 1):
        if on_attempt:
            on_attempt(attempt)
        try:
            return call()
        except NoRetry:
            raise
        except Retryable as err:
            if attempt == max_retries:
                raise
            time.sleep(backoff_delay(attempt, backoff_s, backoff_max_s, err.retry_after))
    raise AssertionError("unreachable")
