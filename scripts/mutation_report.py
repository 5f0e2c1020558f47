"""Summarise a `mutmut run` (make mutation): counts per module, the score, and every survivor.

Reads mutmut's results under mutants/ and the equivalent mutants listed in docs/mutation-equivalent.tsv
(mutant name, the mutated line as mutmut wrote it, reason). A listed mutant whose line no longer matches
is reported as stale and counts as a live survivor. The score is

    killed / (mutants - equivalent - skipped)

where a timeout counts as killed (the mutant hangs a test, which the suite's timeouts would catch).
Exit status 1 when the score is below --min (default 90 %). Run from the repository root.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter, defaultdict
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files

EQUIVALENT = Path("docs/mutation-equivalent.tsv")
KILLED = ("killed", "timeout")


def mutated_line(diff: str) -> str:
    """The added lines of a mutant's diff, stripped and joined (its identity beside the name)."""
    return " / ".join(line[1:].strip() for line in diff.splitlines()
                      if line.startswith("+") and not line.startswith("+++"))


def load_equivalent() -> dict[str, tuple[str, str]]:
    if not EQUIVALENT.exists():
        return {}
    with open(EQUIVALENT, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if r and not r[0].startswith("#")]
    return {name: (line, reason) for name, line, reason in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min", type=float, default=90.0, help="lowest acceptable score in percent")
    parser.add_argument("--tsv", action="store_true", help="print unlisted survivors as TSV rows (name, line, '')")
    args = parser.parse_args()

    equivalent = load_equivalent()
    per_module: dict[str, Counter] = defaultdict(Counter)
    survivors, stale = [], []
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        module = str(path).removeprefix("src/")
        for name, code in data.exit_code_by_key.items():
            status = status_by_exit_code[code]
            if status in KILLED:
                per_module[module]["killed"] += 1
                continue
            if status == "survived" and name in equivalent:
                line = mutated_line(get_diff_for_mutant(name, path=path))
                if line == equivalent[name][0]:
                    per_module[module]["equivalent"] += 1
                    continue
                stale.append(name)
            per_module[module][status] += 1
            if status != "skipped":
                survivors.append((module, name, status))

    if not per_module:
        print("no mutation results under mutants/: run `make mutation`", file=sys.stderr)
        return 1
    total = Counter()
    print(f"{'module':42} {'mutants':>8} {'killed':>7} {'equiv':>6} {'live':>5}  score")
    for module in sorted(per_module):
        c = per_module[module]
        total.update(c)
        n = sum(c.values())
        live = n - c["killed"] - c["equivalent"] - c["skipped"]
        tested = n - c["equivalent"] - c["skipped"]
        print(f"{module:42} {n:8} {c['killed']:7} {c['equivalent']:6} {live:5}  {100 * c['killed'] / max(1, tested):5.1f}%")
    n = sum(total.values())
    tested = n - total["equivalent"] - total["skipped"]
    score = 100 * total["killed"] / max(1, tested)
    print(f"{'all':42} {n:8} {total['killed']:7} {total['equivalent']:6} {tested - total['killed']:5}  {score:5.1f}%")
    print("statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(total.items())))
    for name in stale:
        print(f"STALE equivalence entry (the mutant changed): {name}")
    if survivors:
        print(f"\n{len(survivors)} live mutants (survived, no tests, suspicious):")
        for module, name, status in survivors:
            line = mutated_line(get_diff_for_mutant(name, path=Path("src") / module))
            if args.tsv:
                print(f"{name}\t{line}\t")
            else:
                print(f"  {status:10} {name}: {line[:150]}")
    print(f"\nmutation score {score:.1f}% of {tested} non-equivalent mutants (minimum {args.min:g}%)")
    return 0 if score >= args.min else 1


if __name__ == "__main__":
    sys.exit(main())
