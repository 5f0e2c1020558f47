"""The one OpenAI-compatible HTTP client core: POST ``/chat/completions`` with retries and backoff.

Stdlib only (urllib), so the verl reward module that imports the judge stays light. Used by the
LLM judge (``judge.py``) and the evaluation backend (``loongrl.generation.backends.OpenAIBackend``).
The API key is read from the environment at request time, sent as a Bearer header and never
logged or returned: error texts pass through ``redact`` before they leave this module.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class RequestError(Exception):
    """A request that failed; ``str(err)`` is a short reason without secrets."""


class NoRetry(RequestError):
    """Retrying cannot help (4xx other than 429, an unusable but well-formed reply)."""


class Retryable(RequestError):
    """Timeouts, connection errors, 429, 5xx and malformed bodies."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def redact(text: str, api_key_env: str) -> str:
    key = os.environ.get(api_key_env, "")
    return text.replace(key, "***") if key else text


def post_chat(base_url: str, body: dict, api_key_env: str, timeout_s: float) -> dict:
    """One POST of ``body`` to ``{base_url}/chat/completions``; the parsed JSON reply.

    Raises ``Retryable`` or ``NoRetry``. A reply without ``choices[i].message.content`` strings
    counts as malformed (retryable).
    """
    headers = {"Content-Type": "application/json"}
    api_key = os.environ.get(api_key_env)
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(base_url.rstrip("/") + "/chat/completions",
                                     data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        if err.code == 429 or err.code >= 500:
            retry_after = err.headers.get("Retry-After") if err.headers else None
            try:
                delay = float(retry_after) if retry_after else None
            except ValueError:
                delay = None
            raise Retryable(f"HTTP {err.code}", delay) from None
        raise NoRetry(f"HTTP {err.code}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        raise Retryable(redact(f"{type(err).__name__}: {reason}", api_key_env)) from None
    try:
        reply = json.loads(raw)
        if not reply["choices"] or not all(isinstance(c["message"]["content"], str) for c in reply["choices"]):
            raise ValueError
    except (ValueError, KeyError, IndexError, TypeError):
        raise Retryable("malformed response body") from None
    return reply


def backoff_delay(attempt: int, backoff_s: float, backoff_max_s: float, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (0-based): doubling with up to 25% jitter,
    or the server's Retry-After; both capped at ``backoff_max_s``."""
    if retry_after is not None:
        return min(backoff_max_s, retry_after)
    return min(backoff_max_s, backoff_s * 2**attempt * (1 + 0.25 * random.random()))


def with_retries(call: Callable[[], T], max_retries: int, backoff_s: float, backoff_max_s: float,
                 on_attempt: Callable[[int], None] | None = None) -> T:
    """``call()`` until it returns, at most ``1 + max_retries`` times; ``NoRetry`` stops at once.

    ``on_attempt(i)`` runs before attempt ``i`` (for counters). The last ``RequestError`` is raised.
    """
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
