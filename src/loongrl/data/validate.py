"""Independent re-check of synthesised rows: chains, keys and the token budget.

Nothing here trusts the synthesiser: chains are re-parsed from the prompt text, and the prompt is
rendered with the tokenizer's chat template and tokenised whole (the reference way), by default with
`tokenizers` and jinja2 (tokens.py; proven identical to transformers in the tests), or with transformers
itself (`engine="transformers"`).
"""

from __future__ import annotations

import os

import re
from collections import Counter
from dataclasses import dataclass, field

from loongrl.data.io import iter_rows
from loongrl.data.keychain import key_length, key_regex
from loongrl.data.tokens import get_counter

REQUIRED = ("data_source", "prompt", "ability", "reward_model", "extra_info")


@dataclass
class Report:
    rows: int = 0
    failed_rows: int = 0
    errors: list[str] = field(default_factory=list)
    other_tokenizer: int = 0  # rows made with another tokenizer: budget checked, recorded count not

    @property
    def ok(self) -> bool:
        return self.rows > 0 and self.failed_rows == 0


def parse_pairs(user: str, key_format: str) -> tuple[list[tuple[str, str]], list[str]]:
    """All `{"key": "value"}.` pairs in a prompt, in text order, and parse problems.

    A value is another key, or a question running to the first `"}.` after it.
    """
    k = key_regex(key_format)
    head = re.compile(r'\{"(' + k + r')": "')
    link = re.compile(r'(' + k + r')"\}\.')
    pairs, problems = [], []
    for m in head.finditer(user):
        rest = m.end()
        lm = link.match(user, rest)
        if lm:
            pairs.append((m.group(1), lm.group(1)))
            continue
        end = user.find('"}.', rest)
        if end < 0:
            problems.append(f"pair for key {m.group(1)} is not closed")
            continue
        pairs.append((m.group(1), user[rest:end]))
    return pairs, problems


def check_chains(user: str, info: dict) -> list[str]:
    """Problems with the key chains of one KeyChain row (empty list: fine)."""
    fmt, head, question = info["key_format"], info["chain_head"], info["question"]
    pairs, errors = parse_pairs(user, fmt)
    key_count = Counter(k for k, _ in pairs)
    errors += [f"key {k} occurs {n} times as a key" for k, n in key_count.items() if n > 1]
    expected = info["num_chains"] * info["hops"]
    if len(pairs) != expected:
        errors.append(f"{len(pairs)} pairs in the prompt, expected {expected}")
    value_of = dict(pairs)
    keys = set(value_of)
    values_as_keys = Counter(v for _, v in pairs if v in keys)
    errors += [f"key {k} is the value of {n} pairs" for k, n in values_as_keys.items() if n > 1]
    # Follow the chain from the head; it must end in exactly the real question.
    walk, node = [], head
    while node in value_of and len(walk) <= len(pairs):
        walk.append(node)
        node = value_of[node]
    if node != question:
        errors.append(f"chain from head {head} ends in {node[:80]!r}, not the real question")
    if walk != list(info["chain"]):
        errors.append(f"chain from head {walk} differs from the recorded chain {list(info['chain'])}")
    # No other chain may reach the real question.
    heads = [k for k in keys if k not in values_as_keys and k != head]
    for h in heads:
        node, steps = h, 0
        while node in value_of and steps <= len(pairs):
            node, steps = value_of[node], steps + 1
        if node == question:
            errors.append(f"distractor chain from {h} reaches the real question")
    last = walk[-1] if walk else None
    if any(v == question and k != last for k, v in pairs):
        errors.append("the real question is the value of a distractor pair")
    # A key appears only where the pairs (and, for the head, the instruction) put it.
    for key in keys:
        expected_n = 1 + values_as_keys.get(key, 0) + (1 if key == head else 0)
        if user.count(key) != expected_n:
            errors.append(f"key {key} occurs {user.count(key)} times in the prompt, expected {expected_n}")
    if f'starting from "{head}"' not in user:
        errors.append(f"instruction does not name the head {head}")
    return errors


# extra_info fields check_chains reads, and their types.
KEYCHAIN_FIELDS = {"key_format": str, "chain_head": str, "question": str, "num_chains": int, "hops": int,
                   "chain": list}


def _type_error(name: str, value, expected: str) -> str:
    return f"{name}: expected {expected}, got {type(value).__name__}"


def schema_errors(row) -> list[str]:
    """Missing fields and fields of the wrong type (empty list: the other checks can read the row)."""
    if not isinstance(row, dict):
        return [_type_error("row", row, "an object with the fields " + ", ".join(REQUIRED))]
    errs = [f"missing field '{k}'" for k in REQUIRED if k not in row]
    msgs = row.get("prompt", [])
    if not isinstance(msgs, list):
        errs.append(_type_error("prompt", msgs, "a list of {role, content} messages"))
    else:
        errs += [f"prompt[{j}]: expected a {{role, content}} message of strings, got {str(m)[:60]!r}"
                 for j, m in enumerate(msgs)
                 if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str))]
    errs += [_type_error(k, row[k], "an object") for k in ("reward_model", "extra_info")
             if k in row and not isinstance(row[k], dict)]
    info = row.get("extra_info")
    if isinstance(info, dict):
        budget = info.get("max_prompt_tokens")
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool)):
            errs.append(_type_error("extra_info.max_prompt_tokens", budget, "int"))
        if info.get("kind") == "keychain":
            wrong = [k for k, t in KEYCHAIN_FIELDS.items()
                     if not isinstance(info.get(k), t) or isinstance(info.get(k), bool)]
            errs += [f"extra_info.{k}: missing" if k not in info else
                     _type_error(f"extra_info.{k}", info[k], KEYCHAIN_FIELDS[k].__name__) for k in wrong]
            if isinstance(info.get("key_format"), str):
                try:
                    key_length(info["key_format"])
                except ValueError as e:
                    errs.append(f"extra_info.key_format: {e}")
    return errs


def recorded_tokenizer(path: str) -> str | None:
    """The tokenizer the file's first row says it was made with, when it is a local folder here."""
    row = next(iter_rows(path), None)
    info = row.get("extra_info") if isinstance(row, dict) else None
    name = info.get("tokenizer") if isinstance(info, dict) else None
    return name if isinstance(name, str) and os.path.isdir(name) else None


def validate_file(path: str, tokenizer: str, max_prompt_tokens: int | None = None, progress=None,
                  engine: str = "auto") -> Report:
    """Check every row of a row file; see `check_chains` and the token rules in the CLI help."""
    counter = get_counter(tokenizer, engine)
    report = Report()
    keysets = None
    for i, row in enumerate(iter_rows(path)):
        report.rows += 1
        errs = schema_errors(row)
        if not errs:
            info = row["extra_info"]
            keysets = keysets or set(info)
            if set(info) != keysets:
                errs.append(f"extra_info keys differ from row 0: {sorted(set(info) ^ keysets)}")
            msgs = row["prompt"]
            if not msgs or msgs[-1].get("role") != "user":
                errs.append("prompt: last message is not a user message")
            gt = row["reward_model"].get("ground_truth")
            if not gt:
                errs.append("reward_model.ground_truth: empty")
            user = msgs[-1]["content"] if msgs else ""
            if info.get("kind") == "keychain":
                errs += check_chains(user, info)
            n = counter.count_chat(msgs)
            budget = max_prompt_tokens or info.get("max_prompt_tokens")
            if budget and n > budget:
                errs.append(f"prompt has {n} tokens, over the budget of {budget}")
            if info.get("tokenizer_fingerprint") == counter.fingerprint:
                if n != info.get("prompt_tokens"):
                    errs.append(f"recorded prompt_tokens {info.get('prompt_tokens')} != actual {n}")
            elif info.get("tokenizer_fingerprint"):
                report.other_tokenizer += 1
        if errs:
            report.failed_rows += 1
            report.errors += [f"{path}: row {i}: {e}" for e in errs]
        if progress:
            progress(1)
    if not report.rows:  # nothing checked is not a pass, and says why
        raise ValueError(f"{path}: holds no rows")
    return report
