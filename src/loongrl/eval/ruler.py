"""RULER evaluation: the 13 synthetic tasks at any length, with RULER's metrics.

The generators are ``loongrl.tasks.ruler`` (shared with Book RULER data); this module turns a
sample into a prompt that fits ``length - tokens_to_generate`` exactly (chat template included,
counted with the tokenizer) and scores it: string_match_all for niah/vt/cwe/fwe, string_match_part
for qa (both from ``loongrl.rewards.scorers``).

Non-reasoning mode appends RULER's answer prefix as an assistant prefill and scores the raw
continuation. Reasoning mode (LoongRL A.8) drops the prefix, allows 8,192 new tokens and scores
the text after ``</think>``.

Window: a request is prompt + ``max_new_tokens``, and it must fit the model's context window
(``window``, default 128K = 131,072). The prompt budget is RULER's (``length`` minus the task's
``tokens_to_generate``) or ``window - max_new_tokens``, whichever is smaller: at 128K in reasoning
mode the prompt shrinks by 8,192 - tokens_to_generate instead of the server rejecting the request.
A ``length`` above the window is an error.
"""

from __future__ import annotations

import random

from loongrl.eval.run import EvalItem
from loongrl.rewards import extract, scorers
from loongrl.tasks.ruler import GENERATORS, UNIT_SIZES, RulerData, RulerTask, Sample, fit, tasks  # noqa: F401

LENGTHS = (4096, 8192, 16384, 32768, 65536, 131072)
REASONING_MAX_NEW_TOKENS = 8192
DEFAULT_WINDOW = 131072
METRICS = {"niah": scorers.string_match_all, "variable_tracking": scorers.string_match_all,
           "common_words_extraction": scorers.string_match_all, "freq_words_extraction": scorers.string_match_all,
           "qa": scorers.string_match_part}


def _messages(sample: Sample, reasoning: bool) -> list[dict]:
    msgs = [{"role": "user", "content": sample.user}]
    return msgs if reasoning else msgs + [{"role": "assistant", "content": sample.answer_prefix}]


def _body_tokens(counter, sample: Sample, reasoning: bool) -> int:
    return counter.count(sample.user) + (0 if reasoning else counter.count(sample.answer_prefix))


def chat_tokens(tokenizer, messages: list[dict]) -> int:
    """Exact prompt length: the chat template rendered (prefill-aware) and tokenised once."""
    from loongrl.generation.backends import render_chat

    return len(tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"])


def prompt_budget(length: int, tokens_to_generate: int, max_new_tokens: int, window: int) -> int:
    """Prompt tokens allowed: RULER's ``length - tokens_to_generate``, capped so that prompt +
    ``max_new_tokens`` fits ``window``.

    Example:
        >>> prompt_budget(131072, 128, 8192, 131072), prompt_budget(4096, 128, 8192, 131072)
        (122880, 3968)
    """
    if length > window:
        raise ValueError(f"RULER length {length} exceeds the model window {window} (pass the model's --window)")
    budget = min(length - tokens_to_generate, window - max_new_tokens)
    if budget <= 0:
        raise ValueError(f"no room for a prompt: window {window} - {max_new_tokens} new tokens")
    return budget


def generate(task: RulerTask, length: int, index: int, data: RulerData, counter, seed: int = 0,
             reasoning: bool = False, window: int = DEFAULT_WINDOW, max_new_tokens: int | None = None) -> EvalItem:
    """Sample ``index`` of ``task`` at ``length`` tokens (same seed, same sample); prompt +
    ``max_new_tokens`` (default: 8,192 in reasoning mode, else the task's) never exceeds ``window``."""
    spec = data.templates["tasks"][task.kind]
    to_generate = max_new_tokens or (REASONING_MAX_NEW_TOKENS if reasoning else spec["tokens_to_generate"])
    budget = prompt_budget(length, spec["tokens_to_generate"], to_generate, window)
    gen = GENERATORS[task.kind]

    def build(size: int) -> Sample:
        return gen(data, task.args, random.Random(f"{seed}/{task.name}/{length}/{index}"), size)

    small = build(1)
    overhead = chat_tokens(counter.tokenizer, _messages(small, reasoning)) - _body_tokens(counter, small, reasoning)

    def count(sample: Sample) -> int:  # the parts counted fast; the template overhead measured once
        return _body_tokens(counter, sample, reasoning) + overhead

    first = int(UNIT_SIZES[task.kind](task.args) * length / 1024)
    try:
        sample, tokens, probes = fit(build, count, budget, first)
    except ValueError as err:
        raise ValueError(f"RULER {task.name} at {length} tokens: {err} (qa gold documents alone can exceed short "
                         "lengths; RULER's lengths start at 4K)") from None
    if not counter.fast:  # piecewise counts are only exact for additive tokenizers (tokens.py): check
        exact = chat_tokens(counter.tokenizer, _messages(sample, reasoning))
        if exact > budget:
            sample, tokens, more = fit(build, lambda s: count(s) + exact - tokens, budget, sample.meta["units"])
            probes += more
        tokens = chat_tokens(counter.tokenizer, _messages(sample, reasoning))
    meta = {"length": length, "prompt_tokens": tokens, "probes": probes, "max_new_tokens": to_generate,
            "window": window, "prompt_budget": budget, "reasoning": reasoning, **sample.meta}
    return EvalItem(f"{task.name}/{length}/{index}", task.name, _messages(sample, reasoning), sample.answers, "", meta)


def make_scorer(kinds: dict[str, str], reasoning: bool, require_think: bool = True):
    """RULER's metric per task kind; reasoning mode scores the text after ``</think>``."""

    def score(items, responses):
        out = []
        for item, texts in zip(items, responses):
            metric = METRICS[kinds[item.task]]
            preds = [extract.after_think(t, require=require_think) if reasoning else t for t in texts]
            out.append([{"pred": p, "score": metric(p, item.golds)} for p in preds])
        return out

    return score


def summarize(records) -> tuple[dict, list[list]]:
    """Score per task and length, per-length averages over tasks (RULER's headline)."""
    from loongrl.eval.report import group_scores, mean100

    cells = group_scores(records, lambda r: (r["task"], r["meta"]["length"]))
    tasks_ = list(dict.fromkeys(t for t, _ in cells))
    lengths = sorted({n for _, n in cells})
    table = {t: {n: mean100(cells[(t, n)]) for n in lengths if (t, n) in cells} for t in tasks_}
    averages = {n: round(sum(table[t][n] for t in tasks_ if n in table[t]) / sum(n in table[t] for t in tasks_), 2)
                for n in lengths}
    rows = [[t] + [table[t].get(n, "") for n in lengths] for t in tasks_] + [["average"] + [averages[n] for n in lengths]]
    return {"scores": {t: {str(n): v for n, v in table[t].items()} for t in tasks_},
            "average": {str(n): v for n, v in averages.items()}, "lengths": lengths}, rows
