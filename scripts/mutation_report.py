"""Summarise a `mutmut run` (make mutation): counts per module, the score, and every survivor.

Reads mutmut's results under mutants/ and docs/mutation-equivalent.tsv (mutant name, the mutated line as
mutmut wrote it, reason). A listed mutant counts as **equivalent** (the change cannot alter behaviour), or as
**untestable here** when its reason starts with "untestable here:" (a GPU-only branch, a launch of verl, the
hub's network). A listed mutant whose line no longer matches is reported as stale and counts as live. The score is

    killed / (mutants run - equivalent - skipped)

where a timeout counts as killed (the mutant hangs a test, which the suite's timeouts would catch) and
"untestable here" stays in the denominator (the score without them is printed beside it). Mutants that
were not run yet ("not checked": an interrupted or partial run) are counted apart and left out of both.
Exit status 1 when the score is below --min (default 90 %). Run from the repository root.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter, defaultdict
from importlib.metadata import version
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files

EQUIVALENT = Path("docs/mutation-equivalent.tsv")
KILLED = ("killed", "timeout")
UNTESTABLE = "untestable here:"
COLUMNS = ("killed", "timeout", "survived", "no tests", "equivalent", "untestable", "pending")


def mutated_line(diff: str) -> str:
    """The added lines of a mutant's diff, stripped and joined (its identity beside the name)."""
    return " / ".join(line[1:].strip() for line in diff.splitlines()
                      if line.startswith("+") and not line.startswith("+++"))


def load_equivalent() -> dict[str, tuple[str, str]]:
    if not EQUIVALENT.exists():
        return {}
    with open(EQUIVALENT, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r and not r[0].startswith("#")]
    return {name: (line, reason) for name, line, reason in rows}


def collect(equivalent):
    """Counts per module, live survivors (module, name, status) and stale equivalence entries."""
    per_module: dict[str, Counter] = defaultdict(Counter)
    survivors, stale = [], []
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        module = str(path).removeprefix("src/")
        for name, code in data.exit_code_by_key.items():
            status = status_by_exit_code[code]
            if status == "not checked":
                per_module[module]["pending"] += 1
                continue
            if status in ("survived", "no tests") and name in equivalent:
                line = mutated_line(get_diff_for_mutant(name, path=path))
                if line == equivalent[name][0]:
                    untestable = equivalent[name][1].startswith(UNTESTABLE)
                    per_module[module]["untestable" if untestable else "equivalent"] += 1
                    continue
                stale.append(name)
            per_module[module][status] += 1
            if status not in KILLED and status != "skipped":
                survivors.append((module, name, status))
    return per_module, survivors, stale


def score(c: Counter) -> tuple[float, float, int]:
    """(score, score without the untestable ones, non-equivalent mutants run)."""
    killed = c["killed"] + c["timeout"]
    tested = sum(c.values()) - c["pending"] - c["equivalent"] - c["skipped"]
    return 100 * killed / max(1, tested), 100 * killed / max(1, tested - c["untestable"]), tested


def table(per_module) -> tuple[list[str], Counter]:
    total = Counter()
    lines = ["| module | mutants | " + " | ".join(COLUMNS) + " | score | w/o untestable |",
             "|---|" + "---:|" * (len(COLUMNS) + 3)]
    for module in sorted(per_module):
        c = per_module[module]
        total.update(c)
        s, s2, _ = score(c)
        lines.append(f"| {module} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in COLUMNS)
                     + f" | {s:.1f}% | {s2:.1f}% |")
    s, s2, _ = score(total)
    lines.append(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[k]) for k in COLUMNS)
                 + f" | **{s:.1f}%** | {s2:.1f}% |")
    return lines, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min", type=float, default=90.0, help="lowest acceptable score in percent")
    parser.add_argument("--tsv", action="store_true", help="print live survivors as TSV rows (name, line, '')")
    parser.add_argument("--markdown", help="also write the table and the survivors to this Markdown file")
    parser.add_argument("--run-minutes", type=int, help="the run's wall time, recorded in the Markdown file")
    parser.add_argument("--note", default="", help="a sentence recorded under the Markdown file's title")
    args = parser.parse_args()

    equivalent = load_equivalent()
    per_module, survivors, stale = collect(equivalent)
    if not per_module:
        print("no mutation results under mutants/: run `make mutation`", file=sys.stderr)
        return 1
    lines, total = table(per_module)
    s, s2, tested = score(total)
    pending = total["pending"]
    summary = (f"mutation score {s:.1f}% of {tested} non-equivalent mutants run ({s2:.1f}% without the "
               f"{total['untestable']} untestable here; minimum {args.min:g}%)")
    if pending:
        summary += f"; INCOMPLETE: {pending} mutants not run"
    if args.tsv:
        for module, name, status in survivors:
            print(f"{name}\t{mutated_line(get_diff_for_mutant(name, path=Path('src') / module))}\t")
        return 0
    live = [f"- `{name}` ({status}): `{mutated_line(get_diff_for_mutant(name, path=Path('src') / module))[:140]}`"
            for module, name, status in survivors]
    print("\n".join(lines))
    for name in stale:
        print(f"STALE equivalence entry (the mutant changed): {name}")
    print(f"\n{len(survivors)} live mutants (survived, no tests, suspicious):")
    print("\n".join(live))
    print("\n" + summary)
    if args.markdown:
        text = ["<!-- written by scripts/mutation_report.py --markdown; do not edit by hand -->",
                "# Mutation testing: the last recorded run", "",
                f"mutmut {version('mutmut')}, `make mutation`"
                + (f", {args.run_minutes} min of wall time" if args.run_minutes is not None else "")
                + f" (docs/mutation.md). {summary}.", "", *([args.note, ""] if args.note else []), *lines, ""]
        if stale:
            text += ["Stale equivalence entries (the mutant changed):", *[f"- `{n}`" for n in stale], ""]
        text += [f"## Live mutants ({len(survivors)})", "", *live, ""]
        Path(args.markdown).write_text("\n".join(text), encoding="utf-8")
    return 0 if s >= args.min and not pending else 1


if __name__ == "__main__":
    sys.exit(main())
