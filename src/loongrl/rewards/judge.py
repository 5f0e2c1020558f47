"""LLM-as-a-judge over any OpenAI-compatible ``/v1/chat/completions`` endpoint.

Requests go through the project's one HTTP client (``loongrl.generation.http``: httpx, imported
on first use, so the verl reward module stays light), with a whole-request deadline. The API key
is read from the environment at request time and is never logged, cached or returned. Failures
never raise into a training step: they come back as a ``JudgeResult`` with ``verdict=None`` and an
``"error: ..."`` status (with the server's detail for HTTP errors).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from loongrl.generation.http import NoRetry, RequestError, check_max_retries, post_chat, redact, with_retries

log = logging.getLogger(__name__)

# QwenLong-L1 docqa.py / docmath.py equivalence prompt (verbatim).
QWENLONG_SYSTEM_PROMPT = (
    "You are an expert in verifying if two answers are the same.\n"
    "Your input is a problem and two answers, Answer 1 and Answer 2. You need to check if they are equivalent.\n"
    "Your task is to determine if two answers are equivalent, without attempting to solve the original problem.\n"
    "Compare the answers to verify they represent identical values or meaning, even when written in different "
    "forms or notations.\n\n"
    "Your output must follow the following format:\n"
    "1) Provide an explanation for why the answers are equivalent or not.\n"
    "2) Then provide your final answer in the form of: [[YES]] or [[NO]]"
)
QWENLONG_USER_TEMPLATE = "\nProblem: {problem}\nAnswer 1: {answer_1}\nAnswer 2: {answer_2}\n"


@dataclass
class JudgeConfig:
    """Settings of the LLM judge (all fields have working defaults except ``base_url``/``model``)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """Endpoint root; ``/chat/completions`` is appended (vLLM, SGLang or a hosted API)."""
    model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """Model name sent in the request; part of the cache key."""
    api_key_env: str = "OPENAI_API_KEY"
    """NAME of the environment variable holding the API key; unset or empty means no auth header."""
    system_prompt: str = QWENLONG_SYSTEM_PROMPT
    """System message; default is the QwenLong-L1 equivalence prompt."""
    user_template: str = QWENLONG_USER_TEMPLATE
    """User message with ``{problem}``, ``{answer_1}`` (model answer), ``{answer_2}`` (gold)."""
    strict_verdict: bool = True
    """True: YES only for ``[[YES]]`` (a reply with neither tag is an error). False: QwenLong-L1's
    loose rule, any "YES" substring counts."""
    temperature: float = 0.0
    """Sampling temperature (QwenLong-L1: 0.0)."""
    max_tokens: int = 512
    """Cap on the judge's reply length."""
    timeout_s: float = 30.0
    """Deadline of one request in seconds, for the whole request (a server trickling keep-alive bytes
    cannot extend it)."""
    max_retries: int = 4
    """Retries after the first attempt, for timeouts, connection errors, 429, 5xx and malformed bodies."""
    backoff_s: float = 0.5
    """First backoff delay; doubles each retry (with up to 25% jitter)."""
    backoff_max_s: float = 8.0
    """Upper bound on one backoff delay (also caps a server's Retry-After)."""
    max_concurrency: int = 8
    """Requests in flight at once in ``judge_many``."""
    cache_path: str | None = None
    """SQLite file caching verdicts by hash of (model, messages, settings); ``"auto"``: the machine's own
    ``$LOONGRL_CACHE/judge/verdicts.sqlite`` (default ``~/.cache/loongrl``), resolved where the judge runs (each
    node of a cluster keeps its own file: SQLite's locks are not to be trusted on network filesystems);
    None disables caching. Training recipes default to ``"auto"`` (docs/rewards.md)."""
    extra_body: dict = field(default_factory=dict)
    """Extra JSON fields merged into each request (e.g. ``{"top_p": 1.0}``)."""

    def __post_init__(self):
        check_max_retries(self.max_retries, "judge ")


@dataclass
class JudgeResult:
    verdict: float | None
    """1.0 (equivalent), 0.0 (not), or None when no verdict could be obtained."""
    status: str
    """"yes", "no", "cached-yes", "cached-no" or "error: <reason>"."""


class VerdictCache:
    """Verdicts on disk in SQLite (atomic commits, safe across threads and processes)."""

    def __init__(self, path: str):
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict REAL, reply TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, key: str) -> float | None:
        conn = self._connect()
        try:
            row = conn.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone()
        finally:
            conn.close()
        return None if row is None else float(row[0])

    def put(self, key: str, verdict: float, reply: str) -> None:
        conn = self._connect()
        try:
            with conn:  # one transaction: the row is written whole or not at all
                conn.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)", (key, verdict, reply))
        finally:
            conn.close()


def cache_key(model: str, messages: list[dict], settings: dict | None = None) -> str:
    """Hash of what decides a verdict: model, messages and the sampling/parsing settings."""
    payload = json.dumps([model, messages, settings or {}], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


AUTO_CACHE = "auto"


def resolve_cache_path(cache_path: str | None) -> str | None:
    """``JudgeConfig.cache_path`` as a file name (``"auto"``: this machine's loongrl cache), or None.

    Example:
        >>> resolve_cache_path("auto").endswith("/judge/verdicts.sqlite"), resolve_cache_path(None)
        (True, None)
    """
    if cache_path != AUTO_CACHE:
        return cache_path or None
    from loongrl.generation.models import cache_dir

    return os.path.join(cache_dir(), "judge", "verdicts.sqlite")


class LLMJudge:
    """Thread-safe judge client. ``stats`` counts requests, retries, cache hits, errors and the duplicate
    items of a batch that were judged once (``deduplicated``)."""

    def __init__(self, config: JudgeConfig):
        self.config = config
        path = resolve_cache_path(config.cache_path)
        self.cache = VerdictCache(path) if path else None
        self.stats: Counter = Counter()
        self._lock = threading.Lock()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def messages(self, question: str, prediction: str, gold: str) -> list[dict]:
        user = self.config.user_template.format(problem=question, answer_1=prediction, answer_2=gold)
        return [{"role": "system", "content": self.config.system_prompt}, {"role": "user", "content": user}]

    def _post(self, messages: list[dict]) -> str:
        cfg = self.config
        body = {"model": cfg.model, "messages": messages, "temperature": cfg.temperature,
                "max_tokens": cfg.max_tokens, "n": 1, **cfg.extra_body}
        return post_chat(cfg.base_url, body, cfg.api_key_env, cfg.timeout_s)["choices"][0]["message"]["content"]

    def _parse_verdict(self, reply: str) -> float | None:
        if not self.config.strict_verdict:
            return 1.0 if "YES" in reply else 0.0
        yes, no = reply.rfind("[[YES]]"), reply.rfind("[[NO]]")
        if yes < 0 and no < 0:
            return None
        return 1.0 if yes > no else 0.0

    def judge(self, question: str, prediction: str, gold: str) -> JudgeResult:
        """One verdict on whether ``prediction`` is equivalent to ``gold``. Never raises."""
        cfg = self.config
        messages = self.messages(question, prediction, gold)
        key = cache_key(cfg.model, messages, {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens,
                                              "strict_verdict": cfg.strict_verdict, "extra_body": cfg.extra_body})
        if self.cache is not None:
            try:
                cached = self.cache.get(key)
            except sqlite3.Error as err:  # a broken cache must not stop scoring
                log.warning("judge cache read failed: %s", err)
                cached = None
            if cached is not None:
                self._count("cache_hits")
                return JudgeResult(cached, "cached-yes" if cached >= 1.0 else "cached-no")
        def attempt(i: int) -> None:
            self._count("requests")
            if i:
                self._count("retries")

        def ask() -> tuple[float, str]:
            reply = self._post(messages)
            verdict = self._parse_verdict(reply)
            if verdict is None:  # deterministic (temperature 0) replies would repeat it
                raise NoRetry("no [[YES]]/[[NO]] verdict in reply")
            return verdict, reply

        try:
            verdict, reply = with_retries(ask, cfg.max_retries, cfg.backoff_s, cfg.backoff_max_s, attempt)
        except RequestError as err:
            self._count("errors")
            reason = redact(str(err), cfg.api_key_env)
            log.warning("judge failed for model %s: %s", cfg.model, reason)
            return JudgeResult(None, f"error: {reason}")
        if self.cache is not None:
            try:
                self.cache.put(key, verdict, reply)
            except sqlite3.Error as err:
                log.warning("judge cache write failed: %s", err)
        return JudgeResult(verdict, "yes" if verdict >= 1.0 else "no")

    def judge_any(self, question: str, prediction: str, golds: list[str]) -> JudgeResult:
        """Judge against each gold in turn; the first YES wins. An error on one gold is
        returned only if no other gold got a verdict."""
        result = JudgeResult(None, "error: no gold answers")
        for gold in golds:
            current = self.judge(question, prediction, gold)
            if current.verdict is not None and current.verdict >= 1.0:
                return current
            if result.verdict is None:
                result = current
        return result

    def judge_many(self, items: list[tuple[str, str, list[str]]]) -> list[JudgeResult]:
        """``judge_any`` over (question, prediction, golds) items, ``max_concurrency`` at a time. Identical
        items are judged once: a GRPO group often repeats an answer, and a cache cannot help within one batch
        (the copies would all be in flight before the first verdict is stored)."""
        if not items:
            return []
        unique = list(dict.fromkeys((q, p, tuple(golds)) for q, p, golds in items))
        if len(unique) < len(items):
            self._count("deduplicated", len(items) - len(unique))
        with ThreadPoolExecutor(max_workers=max(1, self.config.max_concurrency)) as pool:
            verdicts = dict(zip(unique, pool.map(lambda k: self.judge_any(k[0], k[1], list(k[2])), unique)))
        return [verdicts[(q, p, tuple(golds))] for q, p, golds in items]


def status_counts(statuses) -> dict[str, int]:
    """Judge statuses counted by kind, every ``"error: ..."`` as ``"error"``: what reports and training
    metrics show, so that a judge failing quietly (its rows keep the rule score) is seen.

    Example:
        >>> status_counts(["yes", "error: timed out", "error: HTTP 500", "cached-no"])
        {'yes': 1, 'error': 2, 'cached-no': 1}
    """
    return dict(Counter(s.split(":")[0] for s in statuses))


def hybrid_score(rule: float, judge_result: JudgeResult | None) -> tuple[float, str]:
    """QwenLong-L1 hybrid: max(rule, judge). With no judge verdict the rule score stands
    and the status says why (never a silent 0 for a failed judge).

    Example:
        >>> hybrid_score(0.0, JudgeResult(1.0, "yes")), hybrid_score(1.0, JudgeResult(None, "error: timeout"))
        ((1.0, 'yes'), (1.0, 'error: timeout'))
    """
    if judge_result is None:
        return rule, "skipped"
    if judge_result.verdict is None:
        return rule, judge_result.status
    return max(rule, judge_result.verdict), judge_result.status
