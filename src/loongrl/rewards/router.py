"""Route rows to scorers by ``data_source`` prefix; the verl and TRL adapters.

This file is what verl loads by path (``reward.custom_reward_function.path``), so it imports only
the stdlib and sibling modules of this package; math-verify runs in a worker process.

verl::

    reward.custom_reward_function.path=<site-packages>/loongrl/rewards/router.py
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.require_think=True
    +reward.custom_reward_function.reward_kwargs.judge_config.base_url=http://judge:8000/v1

TRL::

    GRPOTrainer(..., reward_funcs=[make_trl_reward()])   # or the ready-made ``trl_reward``

Every task is one function ``(response, golds, options) -> (answer, rule score)``. The
LoongRL-style tasks read the answer with ``extract.final_answer``; ``options.faithful`` switches
every task to its reference implementation, departures included (docs/rewards.md lists them).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import NamedTuple

try:
    from . import extract, scorers
    from .judge import JudgeConfig, JudgeResult, LLMJudge, hybrid_score
except ImportError:  # loaded by file path (verl's load_extern_object): no parent package
    from loongrl.rewards import extract, scorers
    from loongrl.rewards.judge import JudgeConfig, JudgeResult, LLMJudge, hybrid_score


class Options(NamedTuple):  # not a dataclass: those fail in modules loaded by path (not in sys.modules)
    """The scoring options a recipe stage states in ``reward_kwargs`` (besides ``judge_config``)."""

    require_think: bool = True
    """No ``</think>`` means no answer (reward 0). With ``faithful``, only the tasks whose reference
    requires it (LoongRL's two-way QA, QwenLong-L1's three); False never requires it."""
    word_boundary: bool = False
    """Containment matches whole words only ("no" does not match "norway"); the references match substrings."""
    faithful: bool = False
    """Score every task exactly as its reference implementation does (docs/rewards.md, departures)."""
    math_timeout_s: float = scorers.MATH_TIMEOUT_S
    """Wall-clock budget of one math-verify check (the check runs in a worker process, killed after it)."""


REWARD_KWARGS = (*Options._fields, "judge_config")


class Task(NamedTuple):
    name: str
    score: Callable[[str, list[str], Options], tuple[str | None, float]]
    """(response, golds, options) -> (extracted answer or None, rule score in [0, 1])."""
    judgeable: bool
    """Free-form answers where an LLM judge can add recall (the judge sees the task's golds)."""
    golds: Callable[[list[str], Options], list[str]] | None = None
    """Gold normalisation, if any (QwenLong-L1 parses its golds with the answer parser)."""


def _think(response: str, o: Options, reference_requires_it: bool) -> str | None:
    """The answer region: after ``</think>``; the whole response where a faithful reference reads it."""
    if o.faithful and not reference_requires_it:
        return response.strip()
    return extract.after_think(response, require=o.require_think)


def _longqa(response: str, golds: list[str], o: Options):
    if o.faithful:  # LoongRL's SUBEM path: the last box after </think>, no fallback
        region = _think(response, o, True)
        pred = None if region is None else extract.last_boxed(region.replace("*", ""), loongrl_rules=True)
    else:
        pred = extract.final_answer(response, o.require_think)
    return pred, scorers.two_way_match(pred, golds, o.word_boundary, empty_guard=not o.faithful)


def _longbench(response: str, golds: list[str], o: Options):
    if not o.faithful:
        return _longqa(response, golds, o)
    # LoongRL's analysis code: correct if the boxed answer OR the "the answer is" answer matches
    region = _think(response, o, True)
    if region is None:
        return None, 0.0
    text = region.replace("*", "").replace("\\boxed{}", "")
    boxed, direct = extract.last_boxed(text), extract.after_answer_is(text)
    score = max(scorers.two_way_match(a, golds, o.word_boundary, empty_guard=False) for a in (boxed, direct))
    return (boxed if boxed is not None else direct), score


def _ruler_niah(response: str, golds: list[str], o: Options):
    if o.faithful:  # LoongRL ruler_multi pure_exact_match: last box of the whole response, any value
        pred = extract.last_boxed(response.strip(), loongrl_rules=True)
        return pred, scorers.covered_match(pred, golds, empty_guard=False)
    pred = extract.final_answer(response, o.require_think)
    return pred, scorers.covered_match(pred, golds, require_all=True, word_boundary=o.word_boundary)


def _math_choice(response: str, golds: list[str], o: Options):
    # LoongRL mathqa_choice.py: more than 4 boxes in the response, a box longer than 32 characters or
    # with more than one "{", "}" or "\" scores 0; then the first "(X)" is the answer.
    pred = (extract.last_boxed(response.strip(), loongrl_rules=True) if o.faithful
            else extract.final_answer(response, o.require_think))
    if (pred is None or extract.count_boxed(response) > 4 or len(pred) > 32
            or any(pred.count(c) > 1 for c in "{}\\")):
        return pred, 0.0
    return pred, scorers.choice_match(pred, golds, bare_letter=not o.faithful)


def _math_dapo(response: str, golds: list[str], o: Options):
    if o.faithful:  # verl math_dapo: the last 300 characters; Minerva "Answer:", else a box in the last 100
        tail = response[-300:]
        answer = extract.minerva_answer(tail)
        if answer is not None:
            return answer, scorers.minerva_match(answer, golds)
        box = extract.verl_last_boxed(tail[-100:])
        return box, float(box is not None and box in golds)
    region = _think(response, o, False)
    if region is None:
        return None, 0.0
    answer = extract.minerva_answer(region)
    answer = answer if answer is not None else extract.last_boxed(region)
    return answer, scorers.math_verify_match(answer, golds, o.math_timeout_s)


# QwenLong-L1 stores golds as "...the answer is X" and parses them like the response; a gold without
# the phrase is used whole. Cached: golds repeat across a group's samples.
@lru_cache(maxsize=1 << 16)
def _docqa_gold(gold: str, case_sensitive: bool) -> str:
    answer = extract.after_answer_is(gold, case_sensitive=case_sensitive)
    return gold if answer is None else answer


@lru_cache(maxsize=1 << 16)
def _docmath_gold(gold: str) -> str:
    return extract.docmath_number(gold) or gold


@lru_cache(maxsize=1 << 16)
def _choice_gold(gold: str) -> str:
    return extract.correct_choice(gold) or gold


def _qwenlong_docqa(response: str, golds: list[str], o: Options):
    region = _think(response, o, True)
    pred = None if region is None else extract.after_answer_is(region.replace("*", ""), case_sensitive=o.faithful)
    return pred, scorers.two_way_match(pred, golds, o.word_boundary, empty_guard=not o.faithful)


def _qwenlong_docmath(response: str, golds: list[str], o: Options):
    region = _think(response, o, True)
    pred = None if region is None else extract.docmath_number(region)
    return pred, scorers.docmath_match(pred, golds, unparsable_is_zero=o.faithful)


def _qwenlong_choice(response: str, golds: list[str], o: Options):
    region = _think(response, o, True)
    pred = None if region is None else extract.correct_choice(region)
    return pred, scorers.choice_match(pred, golds)


TASKS = {t.name: t for t in (
    Task("longqa", _longqa, judgeable=True),
    Task("longbench", _longbench, judgeable=True),
    Task("ruler_niah", _ruler_niah, judgeable=False),
    Task("math_choice", _math_choice, judgeable=False),
    Task("math_dapo", _math_dapo, judgeable=False),
    Task("qwenlong_docqa", _qwenlong_docqa, judgeable=True,
         golds=lambda golds, o: [_docqa_gold(g, o.faithful) for g in golds]),
    Task("qwenlong_docmath", _qwenlong_docmath, judgeable=True, golds=lambda golds, o: list(map(_docmath_gold, golds))),
    Task("qwenlong_choice", _qwenlong_choice, judgeable=False, golds=lambda golds, o: list(map(_choice_gold, golds))),
)}

# Exact prefixes; none is a prefix of another, so the order does not matter. The project's own
# names, then LoongRL's (custom_*), then QwenLong-L1's (its code matched them as substrings).
DATA_SOURCE_PREFIXES = (
    ("keychain_", "longqa"),
    ("longqa_", "longqa"),
    ("book_ruler_", "ruler_niah"),
    ("mathqa_choice", "math_choice"),
    ("math_dapo", "math_dapo"),
    ("longbench_", "longbench"),
    ("custom_longcontextqa_", "longqa"),
    # The reference dispatcher scored KeyChain one-way; the paper (and we) use two-way.
    ("custom_longcontext_needle_qa_", "longqa"),
    ("custom_rulerniah_", "ruler_niah"),
    ("custom_mathqa_choice_", "math_choice"),
    ("docmath", "qwenlong_docmath"),
    ("long_toc_choices", "qwenlong_choice"),
    ("multihoprag", "qwenlong_docqa"),
    ("musique", "qwenlong_docqa"),
)
# Only for a data_source that matches no prefix (TRL passes the column; verl reads extra_info).
ABILITIES = {"longcontext_qa": "longqa", "ruler_niah": "ruler_niah", "math_qa_choices": "math_choice"}


_ROUTES: dict[tuple, Task] = {}  # a run has a handful of data_sources: route each once


def resolve_task(data_source: str, ability: str | None = None) -> Task:
    """The task for a row: the ``DATA_SOURCE_PREFIXES`` entry its data_source starts with, else its
    ``ability``; ``ValueError`` naming the known prefixes if neither matches.

    Example:
        >>> resolve_task("keychain_hotpotqa").name, resolve_task("longbench_musique").name
        ('longqa', 'longbench')
    """
    key = (data_source, ability)
    task = _ROUTES.get(key)
    if task is not None:
        return task
    for prefix, name in DATA_SOURCE_PREFIXES:
        if data_source.startswith(prefix):
            task = TASKS[name]
            break
    else:
        task = TASKS[ABILITIES[ability]] if ability in ABILITIES else None
    if task is not None:
        if len(_ROUTES) < 10000:
            _ROUTES[key] = task
        return task
    raise ValueError(
        f"no reward scorer for data_source={data_source!r} ability={ability!r}; known data_source prefixes: "
        f"{', '.join(p for p, _ in DATA_SOURCE_PREFIXES)}; abilities: {', '.join(sorted(ABILITIES))}")


_DEFAULTS = Options()


def options(**reward_kwargs) -> Options:
    """``Options`` from reward kwargs; unknown names are a ``ValueError`` listing the known ones."""
    if not reward_kwargs:
        return _DEFAULTS
    try:
        return Options(**reward_kwargs)
    except TypeError:
        unknown = sorted(set(reward_kwargs) - set(Options._fields))
        raise ValueError(f"unknown reward_kwargs {unknown}; known: {', '.join(REWARD_KWARGS)}") from None


_JUDGES: dict[str, LLMJudge] = {}
_JUDGES_LOCK = threading.Lock()


def get_judge(judge_config: JudgeConfig | Mapping | None) -> LLMJudge | None:
    """One judge per distinct config per process (verl passes plain dicts from Hydra)."""
    if judge_config is None:
        return None
    config = judge_config if isinstance(judge_config, JudgeConfig) else JudgeConfig(**dict(judge_config))
    key = json.dumps(config.__dict__, sort_keys=True, default=str)
    with _JUDGES_LOCK:
        if key not in _JUDGES:
            _JUDGES[key] = LLMJudge(config)
        return _JUDGES[key]


def score_input(row: Mapping, response: str) -> dict:
    """``score_batch`` input for a row of the canonical parquet schema and one response."""
    return {"data_source": row["data_source"], "ability": row.get("ability"), "response": response,
            "ground_truth": row["reward_model"]["ground_truth"],
            "question": (row.get("extra_info") or {}).get("question")}


def score_batch(rows: list[Mapping], *, judge: LLMJudge | None = None, **reward_kwargs) -> list[dict]:
    """Score rows of {data_source, response, ground_truth, ability?, question?}; ``reward_kwargs``
    are ``Options`` fields. A ``None`` response or ground truth scores 0; a scalar gold is a string.

    Returns one dict per row: ``score`` (hybrid when a judge is given), ``acc`` (score >= 1),
    ``rule`` (rule-only score), ``pred`` ("" when none was found), ``task`` and ``judge`` ("off",
    "skipped", "yes", "no", "cached-...", "error: ..."). The judge runs only for judgeable tasks
    with an answer and a rule score below 1, all such rows concurrently.

    Example:
        >>> [r["score"] for r in score_batch([{"data_source": "keychain_x", "response": "</think> \\\\boxed{Paris}",
        ...                                     "ground_truth": ["paris"]},
        ...                                    {"data_source": "docmath_x", "response": None, "ground_truth": 1990}])]
        [1.0, 0.0]
    """
    o = options(**reward_kwargs)
    results, pending = [], []
    for row in rows:
        task = resolve_task(row["data_source"], row.get("ability"))
        golds = scorers.as_gold_list(row["ground_truth"])
        if task.golds is not None:
            golds = task.golds(golds, o)
        response = row["response"]
        pred, rule = task.score(response if isinstance(response, str) else "" if response is None else str(response),
                                golds, o)
        results.append({"score": rule, "acc": 0.0, "rule": rule, "pred": pred or "", "task": task.name,
                        "judge": "off" if judge is None else "skipped"})
        if judge is not None and task.judgeable and pred and golds and rule < 1.0:
            pending.append((len(results) - 1, (row.get("question") or "", pred, golds)))
    verdicts: list[JudgeResult] = judge.judge_many([item for _, item in pending]) if pending else []
    for (index, _), verdict in zip(pending, verdicts):
        results[index]["score"], results[index]["judge"] = hybrid_score(results[index]["rule"], verdict)
    for result in results:
        result["acc"] = float(result["score"] >= 1.0)
    return results


def row_scorer(reward_kwargs: Mapping | None = None, judge: bool = True) -> Callable[..., list[dict]]:
    """``score(rows, responses)`` over rows of the canonical parquet schema, with a recipe stage's
    ``reward_kwargs``: the scorer that sample-and-score (mining, retrospective sampling, evaluation)
    is given, so they read each response exactly as the training reward does. Each result also has
    ``exact``: the extracted answer equals a gold after normalisation. ``judge=False`` is rule-only."""
    kw = dict(reward_kwargs or {})
    judge_config = kw.pop("judge_config", None)  # a known key even when the judge is off
    llm_judge = get_judge(judge_config) if judge else None
    options(**kw)  # unknown keys fail here, before any generation

    def score(rows, responses) -> list[dict]:
        results = score_batch([score_input(r, t) for r, t in zip(rows, responses)], judge=llm_judge, **kw)
        for row, res in zip(rows, results):
            res["exact"] = scorers.exact_match(res["pred"] or None, row["reward_model"]["ground_truth"])
        return results

    return score


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """verl custom reward: ``compute_score(data_source, solution_str, ground_truth, extra_info)``.

    Recognised ``reward_kwargs``: the ``Options`` fields (``require_think``, ``word_boundary``,
    ``faithful``, ``math_timeout_s``), ``judge_config`` (a ``JudgeConfig`` field dict; enables the
    hybrid judge) and ``ability``. Other kwargs (``reward_router_address``, ...) and extra keys in
    ``extra_info`` (verl adds ``num_turns``, ``rollout_reward_scores``) are ignored; ``extra_info``
    is only read. Safe to call from any thread; math-verify is bounded by ``math_timeout_s``.

    Example:
        >>> compute_score("math_dapo", "<think>x</think> The final answer: 13", 13)["score"]
        1.0
    """
    info = extra_info if isinstance(extra_info, Mapping) else {}
    row = {"data_source": data_source, "response": solution_str, "ground_truth": ground_truth,
           "ability": kwargs.get("ability") or info.get("ability"), "question": info.get("question")}
    opts = {k: kwargs[k] for k in Options._fields if k in kwargs} if kwargs else {}
    return score_batch([row], judge=get_judge(kwargs.get("judge_config")), **opts)[0]


def _completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"]  # conversational: [{"role": "assistant", "content": ...}]


def _ground_truth(columns: Mapping, i: int):
    if "reward_model" in columns:
        return columns["reward_model"][i]["ground_truth"]
    for name in ("ground_truth", "answers", "answer"):
        if name in columns:
            return columns[name][i]
    raise ValueError("TRL reward needs a 'reward_model', 'ground_truth', 'answers' or 'answer' column")


def make_trl_reward(judge_config: JudgeConfig | Mapping | None = None, require_think: bool = True,
                    word_boundary: bool = False, faithful: bool = False,
                    math_timeout_s: float = scorers.MATH_TIMEOUT_S) -> Callable[..., list[float]]:
    """A TRL reward function ``(prompts, completions, **columns) -> list[float]`` over the
    same scorers; judge calls for the whole batch run concurrently. It also logs the pass rate
    (mean ``acc``) through TRL's ``log_metric``."""
    judge = get_judge(judge_config)
    opts = dict(require_think=require_think, word_boundary=word_boundary, faithful=faithful,
                math_timeout_s=math_timeout_s)

    def loongrl_reward(prompts, completions, **columns) -> list[float]:
        rows = []
        for i, completion in enumerate(completions):
            info = (columns.get("extra_info") or [None] * len(completions))[i] or {}
            rows.append({
                "data_source": columns["data_source"][i],
                "ability": (columns.get("ability") or [None] * len(completions))[i],
                "response": _completion_text(completion),
                "ground_truth": _ground_truth(columns, i),
                "question": info.get("question"),
            })
        results = score_batch(rows, judge=judge, **opts)
        log_metric = columns.get("log_metric")  # TRL >= 1.0 passes it: the pass rate lands in its logs
        if callable(log_metric):
            log_metric("pass_rate", sum(r["acc"] for r in results) / max(1, len(results)))
            if judge is not None:  # the share of samples whose verdict failed (their rule score stood)
                log_metric("judge_errors", sum(r["judge"].startswith("error") for r in results) / max(1, len(results)))
        return [r["score"] for r in results]

    return loongrl_reward


trl_reward = make_trl_reward()
