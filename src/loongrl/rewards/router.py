"""Route rows to scorers by ``data_source`` / ``ability``; verl and TRL adapters.

This file is what verl loads by path (``reward.custom_reward_function.path``), so it
imports only the stdlib and sibling modules of this package; math-verify is lazy.

verl::

    reward.custom_reward_function.path=<site-packages>/loongrl/rewards/router.py
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.require_think=True
    +reward.custom_reward_function.reward_kwargs.judge_config.base_url=http://judge:8000/v1

TRL::

    GRPOTrainer(..., reward_funcs=[make_trl_reward()])   # or the ready-made ``trl_reward``
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import NamedTuple

try:
    from . import extract, scorers
    from .judge import JudgeConfig, JudgeResult, LLMJudge, hybrid_score
except ImportError:  # loaded by file path (verl's load_extern_object): no parent package
    from loongrl.rewards import extract, scorers
    from loongrl.rewards.judge import JudgeConfig, JudgeResult, LLMJudge, hybrid_score


class Task(NamedTuple):  # not a dataclass: those fail in modules loaded by path (not in sys.modules)
    name: str
    extract: Callable[[str, bool], str | None]
    """(response, require_think) -> answer or None."""
    score: Callable[[str | None, list[str]], float]
    """(answer, golds) -> score in [0, 1]; ``word_boundary`` is forwarded where accepted."""
    judgeable: bool
    """Free-form answers where an LLM judge can add recall."""


def _loongrl_choice_score(pred: str | None, golds: list[str]) -> float:
    # LoongRL mathqa_choice.py format rules: one short box content with a single "(X)".
    if pred is None or len(pred) > 32 or any(pred.count(c) > 1 for c in "{}\\"):
        return 0.0
    return scorers.choice_match(pred, golds)


def _loongrl_choice_extract(response: str, require_think: bool) -> str | None:
    if extract.count_boxed(response) > 4:  # reference: more than 4 boxes scores 0
        return None
    return extract.loongrl_answer(response, require_think)


def _ruler_all_of(pred: str | None, golds: list[str]) -> float:
    # Training reward is binary: every needle value must be in the boxed answer.
    return float(scorers.string_match_all(pred, golds) == 1.0)


def _minerva_or_boxed(response: str, require_think: bool) -> str | None:
    region = extract.after_think(response, require=require_think)  # the answer, not the reasoning
    if region is None:
        return None
    answer = extract.minerva_answer(region)
    return answer if answer is not None else extract.last_boxed(region)


def _qwenlong_choice(response: str, require_think: bool) -> str | None:
    region = extract.after_think(response, require=require_think)
    return None if region is None else extract.correct_choice(region)


TASKS = {
    t.name: t
    for t in (
        Task("longqa", extract.loongrl_answer, scorers.two_way_match, judgeable=True),
        Task("ruler_niah", extract.loongrl_answer, _ruler_all_of, judgeable=False),
        Task("math_choice", _loongrl_choice_extract, _loongrl_choice_score, judgeable=False),
        Task("math_dapo", _minerva_or_boxed, scorers.math_verify_match, judgeable=False),
        Task("qwenlong_docqa", extract.qwenlong_answer, scorers.two_way_match, judgeable=True),
        Task("qwenlong_docmath", extract.docmath_number, scorers.numeric_match, judgeable=True),
        Task("qwenlong_choice", _qwenlong_choice, scorers.choice_match, judgeable=False),
    )
}

# Checked in order; the project's own names first, then the reference code's.
DATA_SOURCE_PREFIXES = (
    ("keychain_", "longqa"),
    ("longqa_", "longqa"),
    ("math_dapo", "math_dapo"),
    ("mathqa_choice", "math_choice"),
    ("book_ruler_", "ruler_niah"),
    ("custom_longcontextqa_", "longqa"),
    # The reference dispatcher scored KeyChain one-way; the paper (and we) use two-way.
    ("custom_longcontext_needle_qa_", "longqa"),
    ("custom_rulerniah_", "ruler_niah"),
    ("custom_mathqa_choice_", "math_choice"),
)
# QwenLong-L1 routes by substring (verl/utils/reward_score/__init__.py there).
DATA_SOURCE_SUBSTRINGS = (
    ("docmath", "qwenlong_docmath"),
    ("long_toc_choices", "qwenlong_choice"),
    ("multihoprag", "qwenlong_docqa"),
    ("musique", "qwenlong_docqa"),
)
ABILITIES = {"longcontext_qa": "longqa", "ruler_niah": "ruler_niah", "math_qa_choices": "math_choice"}


def resolve_task(data_source: str, ability: str | None = None) -> Task:
    """The scorer for a row; ``ValueError`` naming both keys if nothing matches."""
    for prefix, name in DATA_SOURCE_PREFIXES:
        if data_source.startswith(prefix):
            return TASKS[name]
    for part, name in DATA_SOURCE_SUBSTRINGS:
        if part in data_source:
            return TASKS[name]
    if ability in ABILITIES:
        return TASKS[ABILITIES[ability]]
    raise ValueError(
        f"no reward scorer for data_source={data_source!r} ability={ability!r}; known prefixes: "
        f"{[p for p, _ in DATA_SOURCE_PREFIXES]}, abilities: {sorted(ABILITIES)}")


def _rule(task: Task, response: str, golds: list[str], require_think: bool, word_boundary: bool):
    pred = task.extract(response, require_think)
    if word_boundary and task.score is scorers.two_way_match:
        return pred, scorers.two_way_match(pred, golds, word_boundary=True)
    return pred, task.score(pred, golds)


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


def score_batch(
    rows: list[Mapping],
    *,
    require_think: bool = True,
    word_boundary: bool = False,
    judge: LLMJudge | None = None,
) -> list[dict]:
    """Score rows of {data_source, response, ground_truth, ability?, question?}.

    Returns one dict per row: ``score`` (hybrid when a judge is given), ``acc``
    (score >= 1), ``rule`` (rule-only score), ``pred`` ("" when none was found),
    ``task`` and ``judge`` ("off", "skipped", "yes", "no", "cached-...", "error: ...").
    The judge runs only for judgeable tasks with an answer and a rule score below 1,
    all such rows concurrently.
    """
    results, pending = [], []
    for row in rows:
        task = resolve_task(row["data_source"], row.get("ability"))
        golds = scorers.as_gold_list(row["ground_truth"])
        pred, rule = _rule(task, row["response"], golds, require_think, word_boundary)
        results.append({"score": rule, "acc": 0.0, "rule": rule, "pred": pred or "", "task": task.name,
                        "judge": "off" if judge is None else "skipped"})
        if judge is not None and task.judgeable and pred and rule < 1.0:
            pending.append((len(results) - 1, (row.get("question") or "", pred, golds)))
    verdicts: list[JudgeResult] = judge.judge_many([item for _, item in pending]) if pending else []
    for (index, _), verdict in zip(pending, verdicts):
        results[index]["score"], results[index]["judge"] = hybrid_score(results[index]["rule"], verdict)
    for result in results:
        result["acc"] = float(result["score"] >= 1.0)
    return results


def row_scorer(reward_kwargs: Mapping | None = None, judge: bool = True) -> Callable[..., list[dict]]:
    """``score(rows, responses)`` over rows of the canonical parquet schema, with a recipe stage's
    ``reward_kwargs`` (``require_think``, ``word_boundary``, ``judge_config``): the scorer that
    sample-and-score (mining, retrospective sampling, evaluation) is given. Each result also has
    ``exact``: the extracted answer equals a gold after normalisation. ``judge=False`` is rule-only."""
    kw = dict(reward_kwargs or {})
    llm_judge = get_judge(kw.get("judge_config")) if judge else None

    def score(rows, responses) -> list[dict]:
        results = score_batch([score_input(r, t) for r, t in zip(rows, responses)],
                              require_think=kw.get("require_think", True),
                              word_boundary=kw.get("word_boundary", False), judge=llm_judge)
        for row, res in zip(rows, results):
            res["exact"] = scorers.exact_match(res["pred"] or None, row["reward_model"]["ground_truth"])
        return results

    return score


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """verl custom reward: ``compute_score(data_source, solution_str, ground_truth, extra_info)``.

    Recognised ``reward_kwargs``: ``require_think`` (default True), ``word_boundary``
    (default False), ``judge_config`` (a ``JudgeConfig`` field dict; enables the hybrid
    judge), ``ability``. Other kwargs (``reward_router_address``, ...) and extra keys in
    ``extra_info`` (verl adds ``num_turns``, ``rollout_reward_scores``) are ignored;
    ``extra_info`` is only read.
    """
    info = extra_info if isinstance(extra_info, Mapping) else {}
    row = {"data_source": data_source, "response": solution_str, "ground_truth": ground_truth,
           "ability": kwargs.get("ability") or info.get("ability"), "question": info.get("question")}
    return score_batch([row], require_think=kwargs.get("require_think", True),
                       word_boundary=kwargs.get("word_boundary", False),
                       judge=get_judge(kwargs.get("judge_config")))[0]


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
                    word_boundary: bool = False) -> Callable[..., list[float]]:
    """A TRL reward function ``(prompts, completions, **columns) -> list[float]`` over the
    same scorers; judge calls for the whole batch run concurrently. It also logs the pass rate
    (mean ``acc``) through TRL's ``log_metric``."""
    judge = get_judge(judge_config)

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
        results = score_batch(rows, require_think=require_think, word_boundary=word_boundary, judge=judge)
        log_metric = columns.get("log_metric")  # TRL >= 1.0 passes it: the pass rate lands in its logs
        if callable(log_metric):
            log_metric("pass_rate", sum(r["acc"] for r in results) / max(1, len(results)))
        return [r["score"] for r in results]

    return loongrl_reward


trl_reward = make_trl_reward()
