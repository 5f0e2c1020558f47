"""``loongrl score PREDICTIONS.jsonl``: offline scoring of generations.

Input: JSON Lines, one generated sample per line. Fields:

- ``id`` (or ``item_id``): the item the sample answers; samples with the same id form a group.
- ``response`` (or ``prediction``/``completion``): the full generated text.
- ground truth: ``ground_truth`` (str or list, verl style), ``answers`` (list) or
  ``reward_model.ground_truth``.
- ``data_source``: routes to the scorer (or pass ``--data-source`` for all rows).
- optional ``ability`` (routing fallback) and ``question`` (used by the LLM judge).

Output: a table per data_source and overall (items, samples, accuracy = mean over
samples of the binary ``acc``, mean score, unbiased pass@k from the Codex paper) and,
with ``--summary-out``, the same as JSON plus skipped-row counts and judge statistics.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from statistics import fmean

from loongrl.rewards.judge import JudgeConfig, LLMJudge, status_counts
from loongrl.rewards.router import resolve_task, score_batch

RESPONSE_FIELDS = ("response", "prediction", "completion")
ID_FIELDS = ("id", "item_id")


class RowError(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) (Chen et al. 2021), as a stable product."""
    if n - c < k:
        return 1.0
    result = 1.0
    for i in range(n - c + 1, n + 1):
        result *= 1.0 - k / i
    return 1.0 - result


def _first(row: dict, names: tuple[str, ...]):
    for name in names:
        if row.get(name) is not None:
            return row[name]
    return None


def parse_row(row: object, default_data_source: str | None) -> dict:
    """Validate one input row into score_batch's form; RowError names the bad field."""
    if not isinstance(row, dict):
        raise RowError("not_an_object", "row is not a JSON object")
    item_id = _first(row, ID_FIELDS)
    if item_id is None:
        raise RowError("missing_id", "missing field 'id' (or 'item_id')")
    response = _first(row, RESPONSE_FIELDS)
    if not isinstance(response, str):
        raise RowError("missing_response", "field 'response' (or 'prediction'/'completion') must be a string")
    gold = _first(row, ("ground_truth", "answers"))
    if gold is None and isinstance(row.get("reward_model"), dict):
        gold = row["reward_model"].get("ground_truth")
    if not (isinstance(gold, str) or (isinstance(gold, list) and gold and all(isinstance(g, str) for g in gold))):
        raise RowError("bad_ground_truth", "field 'ground_truth' (or 'answers') must be a string or non-empty list of strings")
    data_source = row.get("data_source") or default_data_source
    if not isinstance(data_source, str):
        raise RowError("missing_data_source", "missing field 'data_source' (or pass --data-source)")
    try:
        resolve_task(data_source, row.get("ability"))
    except ValueError as err:
        raise RowError("unknown_data_source", f"field 'data_source': {err}") from None
    return {"id": str(item_id), "response": response, "ground_truth": gold, "data_source": data_source,
            "ability": row.get("ability"), "question": row.get("question")}


def read_rows(path: str, default_data_source: str | None, strict: bool) -> tuple[list[dict], Counter]:
    rows, skipped = [], Counter()
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as err:
                    raise RowError("invalid_json", f"invalid JSON ({err.msg})") from None
                rows.append(parse_row(raw, default_data_source))
            except RowError as err:
                if strict:
                    raise RowError(err.reason, f"{path}:{line_no}: {err}") from None
                print(f"skipping {path}:{line_no}: {err}", file=sys.stderr)
                skipped[err.reason] += 1
    return rows, skipped


def _groups(rows: list[dict], results: list | None = None) -> dict[tuple[str, str], list]:
    """Samples (or their results) by item: (data_source, id)."""
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for row, result in zip(rows, results if results is not None else rows):
        groups[(row["data_source"], row["id"])].append(result)
    return groups


def summarise(rows: list[dict], results: list[dict], ks: list[int]) -> dict:
    """Group samples by (data_source, id); report accuracy, mean score and pass@k."""
    groups = _groups(rows, results)

    def block(items: list[list[dict]]) -> dict:
        out = {"items": len(items), "samples": sum(len(s) for s in items),
               "accuracy": fmean(fmean(r["acc"] for r in s) for s in items),
               "mean_score": fmean(fmean(r["score"] for r in s) for s in items), "pass_at_k": {}}
        for k in ks:
            eligible = [s for s in items if len(s) >= k]
            if eligible:  # items with fewer than k samples cannot estimate pass@k
                out["pass_at_k"][str(k)] = fmean(
                    pass_at_k(len(s), int(sum(r["acc"] for r in s)), k) for s in eligible)
        return out

    by_source: dict[str, list[list[dict]]] = defaultdict(list)
    for (source, _), samples in groups.items():
        by_source[source].append(samples)
    return {"overall": block(list(groups.values())),
            "by_data_source": {s: block(v) for s, v in sorted(by_source.items())},
            "judge_status": status_counts(r["judge"] for r in results)}


def _print_table(summary: dict, ks: list[int]) -> None:
    header = ["data_source", "items", "samples", "accuracy", "mean"] + [f"pass@{k}" for k in ks]
    lines = [header]
    for name, block in [*summary["by_data_source"].items(), ("OVERALL", summary["overall"])]:
        lines.append([name, str(block["items"]), str(block["samples"]), f"{block['accuracy']:.4f}",
                      f"{block['mean_score']:.4f}"] + [f"{block['pass_at_k'].get(str(k), float('nan')):.4f}" for k in ks])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))


def parse_ks(text: str) -> list[int]:
    """The sorted distinct k values of ``--k`` ("1,2,4"); ValueError unless each is an integer >= 1."""
    ks = set()
    for part in text.split(","):
        try:
            k = int(part)
        except ValueError:
            k = 0
        if k < 1:
            raise ValueError(f"--k {text}: {part.strip()!r} is not an integer >= 1 (comma-separated k values of "
                             "pass@k, e.g. 1,2,4)")
        ks.add(k)
    return sorted(ks)


def run_score(args: argparse.Namespace) -> int:
    try:
        ks = parse_ks(args.k)  # before any row is read or scored
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        rows, skipped = read_rows(args.predictions, args.data_source, args.strict)
    except RowError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: no scorable rows in {args.predictions} (skipped: {dict(skipped)})", file=sys.stderr)
        return 2
    judge = None
    if args.judge_url:
        try:
            config = JudgeConfig(base_url=args.judge_url, model=args.judge_model,
                                 api_key_env=args.judge_api_key_env, cache_path=args.judge_cache,
                                 max_concurrency=args.judge_concurrency, timeout_s=args.judge_timeout,
                                 max_retries=args.judge_retries)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        judge = LLMJudge(config)
    results = score_batch(rows, require_think=not args.no_require_think, word_boundary=args.word_boundary,
                          faithful=args.faithful, judge=judge)
    summary = {"predictions": args.predictions, "rows_scored": len(rows), "rows_skipped": dict(skipped),
               **summarise(rows, results, ks),
               "judge_stats": dict(judge.stats) if judge else None}
    _print_table(summary, ks)
    sizes = Counter(len(v) for v in _groups(rows).values())
    for k in ks:
        short = sum(n for size, n in sizes.items() if size < k)
        if short:
            print(f"note: pass@{k} leaves out {short} of {sum(sizes.values())} items with fewer than {k} samples"
                  + (" (all of them: nan)" if short == sum(sizes.values()) else ""), file=sys.stderr)
    if skipped:
        print(f"skipped rows: {dict(skipped)}")
    if args.summary_out:
        with open(args.summary_out, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score", help="score generations offline (accuracy, pass@k)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", help="JSONL file, one generated sample per line (fields above)")
    parser.add_argument("--summary-out", help="write the summary as JSON here")
    parser.add_argument("--k", default="1", help="comma-separated k values for pass@k (default: 1)")
    parser.add_argument("--data-source", help="data_source for rows that have none")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad row (exit code 2)")
    parser.add_argument("--no-require-think", action="store_true",
                        help="score responses without </think> (default: they score 0, as in training)")
    parser.add_argument("--word-boundary", action="store_true", help="token-aligned sub-EM ('no' !~ 'norway')")
    parser.add_argument("--faithful", action="store_true",
                        help="score as the reference implementations do, departures included (docs/rewards.md)")
    parser.add_argument("--judge-url", help="OpenAI-compatible base URL (…/v1); enables the hybrid judge")
    parser.add_argument("--judge-model", default=JudgeConfig.model, help="judge model name")
    parser.add_argument("--judge-key-env", "--judge-api-key-env", dest="judge_api_key_env", default=JudgeConfig.api_key_env,
                        help="NAME of the env variable holding the judge API key")
    parser.add_argument("--judge-cache", help="SQLite verdict cache file (reruns pay nothing twice)")
    parser.add_argument("--judge-concurrency", type=int, default=JudgeConfig.max_concurrency,
                        help="judge requests in flight")
    parser.add_argument("--judge-timeout", type=float, default=JudgeConfig.timeout_s,
                        help="seconds for one whole judge request (default %(default)s)")
    parser.add_argument("--judge-retries", type=int, default=JudgeConfig.max_retries,
                        help="retries after a failed judge request (default %(default)s)")
    parser.set_defaults(func=run_score)
