"""KeyChain synthesis against the reference pipeline: start-up, rows end to end, peak memory (issues 2, 12).

The reference is Wangmerlyn/KeyChain's `qa.py` (fill HotpotQA contexts to the token budget) followed by
`qa_add_distractor.py` (insert the key chains), as its scripts run them (`--tokenizer_type hf`, template
`{context}`, 128 tokens to generate). It is set up at run time in a temporary folder from those two files
of a local copy of the public repository (not part of this project): pass `--reference PATH`, a checkout or
a bare git directory. Their two helper modules are replaced by the few lines the scripts use
(`tokenizer.HFTokenizer`: AutoTokenizer `.tokenize`; `uuid_test`: uuid4 chains), because the original
`tokenizer.py` imports packages (tenacity, NeMo) the hf path never uses; and one bug that stops
`qa_add_distractor.py` before its first row is patched (`"hotpotqa" in args.save_dir` on a Path).

Ours: `loongrl data keychain` with the same source and tokenizer at the same budget, with the reference's
key format and chain count (`--key-format uuid36`: 16 chains of 4 canonical UUIDs at 16K). Every
measurement is a fresh process (ours: median of --repeats; the reference: one run, it is slow):
  - start-up: the whole command writing 0 rows (imports, tokenizer, source file, calibration);
  - end to end: the whole command writing --rows rows (the reference: both scripts);
  - peak RSS of the process (the reference: the larger of its two processes).
Also reported: ours with 2 workers, rows/s while building rows, peak RSS at 4x the rows, identical bytes.

    python benchmarks/bench_keychain.py --reference /work/.mirror/Wangmerlyn+KeyChain/repo [--rows 400]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("LOONGRL_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
INPUT = os.path.join(SHARED, "data", "hotpotqa", "hotpotqa_distractor_subset.json.gz")
TOKENIZER = os.path.join(SHARED, "data", "tokenizers", "qwen2.5")
BUDGET = 16384

# The reference's helper modules, reduced to what `--tokenizer_type hf` and the chain functions run.
REF_TOKENIZER = '''from transformers import AutoTokenizer


def select_tokenizer(tokenizer_type, tokenizer_path):
    assert tokenizer_type == "hf", tokenizer_type
    return HFTokenizer(model_path=tokenizer_path)


class HFTokenizer:
    def __init__(self, model_path):
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=True)

    def text_to_tokens(self, text):
        return self.tokenizer.tokenize(text)
'''
REF_UUID = '''import uuid


def generate_uuid_chain(num_uuids=4, format="default"):
    return [str(uuid.uuid4()) for _ in range(num_uuids)]


def generate_uuid_string_from_chain(uuids, end_with="uuid"):
    out = [f'{{"{uuids[i]}": "{uuids[i + 1]}"}}' for i in range(len(uuids) - 1)]
    out.append(f'{{"{uuids[-1]}": "{end_with}"}}')
    return out
'''


def reference_file(ref: str, name: str) -> str:
    """A file of the reference repository: from a checkout, or from HEAD of a (bare) git directory."""
    if os.path.isfile(os.path.join(ref, name)):
        with open(os.path.join(ref, name), encoding="utf-8") as f:
            return f.read()
    return subprocess.run(["git", "--git-dir", ref, "show", f"HEAD:{name}"], check=True, capture_output=True,
                          text=True).stdout


def setup_reference(ref: str, work: str) -> str:
    """The reference pipeline in `work/ref`: its two scripts, the two helpers, the data as it expects it."""
    code = os.path.join(work, "ref")
    os.makedirs(os.path.join(code, "hotpotqa"), exist_ok=True)
    with open(os.path.join(code, "qa.py"), "w") as f:
        f.write(reference_file(ref, "qa.py"))
    add = reference_file(ref, "qa_add_distractor.py")
    patched = add.replace("in args.save_dir:", "in str(args.save_dir):")
    assert patched.count("in str(args.save_dir):") == 3, "qa_add_distractor.py changed upstream: check the patch"
    with open(os.path.join(code, "qa_add_distractor.py"), "w") as f:
        f.write(patched)
    with open(os.path.join(code, "tokenizer.py"), "w") as f:
        f.write(REF_TOKENIZER)
    with open(os.path.join(code, "uuid_test.py"), "w") as f:
        f.write(REF_UUID)
    with gzip.open(INPUT, "rb") as src, open(os.path.join(code, "hotpot_train_subset.json"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    return code


def run_measured(cmd: list[str], cwd: str | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of `cmd` run alone in a fresh process (rusage of that child only)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):  # ours exits 1 when it wrote no rows (the start-up run)
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def reference_run(code: str, rows: int) -> dict:
    """Both reference scripts for `rows` rows: wall time, peak RSS; the output row count as a check."""
    common = ["--save_dir", os.path.join(code, "hotpotqa"), "--save_name", "hotpotqa", "--subset", "train",
              "--tokenizer_path", TOKENIZER, "--tokenizer_type", "hf", "--max_seq_length", str(BUDGET),
              "--tokens_to_generate", "128", "--num_samples", str(rows), "--template", "{context}",
              "--dataset", os.path.join(code, "hotpot_train_subset.json")]
    out_dir = os.path.join(code, "hotpotqa", "hotpotqa")
    shutil.rmtree(out_dir, ignore_errors=True)
    w1, m1 = run_measured([sys.executable, "qa.py", *common], cwd=code)
    # qa_add_distractor.py reads qa.py's output under a name that also carries the tokenizer's folder name.
    written = os.path.join(out_dir, f"train-num_sample_{rows}-max_seq_{BUDGET}.jsonl")
    os.replace(written, os.path.join(out_dir, f"train-{os.path.basename(TOKENIZER)}-num_sample_{rows}-max_seq_{BUDGET}.jsonl"))
    w2, m2 = run_measured([sys.executable, "qa_add_distractor.py", *common], cwd=code)
    final = [f for f in os.listdir(out_dir) if "-dis_" in f]
    with open(os.path.join(out_dir, final[0])) as f:
        n = sum(1 for line in f if "distractor_context" in line)
    return {"wall_s": w1 + w2, "rss_mib": max(m1, m2), "rows": n}


def ours_run(rows: int, workers: int, out: str) -> dict:
    cmd = [os.path.join(os.path.dirname(sys.executable), "loongrl"), "data", "keychain", "--source", "hotpotqa",
           "--input", INPUT, "--tokenizer", TOKENIZER, "--max-prompt-tokens", str(BUDGET), "--num", str(rows),
           "--seed", "1", "--key-format", "uuid36", "--workers", str(workers), "--quiet", "--out", out]
    wall, rss = run_measured(cmd)
    summary = json.load(open(out + ".summary.json"))
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"wall_s": wall, "rss_mib": rss, "rows": summary["written"], "rows_s": summary["rows_seconds"],
            "sha256": digest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="local copy of github.com/Wangmerlyn/KeyChain (checkout or git dir)")
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3, help="runs of ours per measurement (median)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench_keychain_")
    try:
        code = setup_reference(os.path.abspath(args.reference), work)
        ref_start = reference_run(code, 0)
        ref = reference_run(code, args.rows)
        ours_start = [ours_run(0, 1, os.path.join(work, f"s{r}.parquet")) for r in range(args.repeats)]
        ours = {w: [ours_run(args.rows, w, os.path.join(work, f"w{w}_{r}.parquet")) for r in range(args.repeats)]
                for w in (1, 2)}
        big = ours_run(4 * args.rows, 1, os.path.join(work, "big.parquet"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    assert ref["rows"] == args.rows and all(r["rows"] == args.rows for w in (1, 2) for r in ours[w])
    same = len({r["sha256"] for w in (1, 2) for r in ours[w]}) == 1
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; load average "
          f"{os.getloadavg()[0]:.2f} at the end")
    print(f"{args.rows} HotpotQA KeyChain rows at {BUDGET:,} tokens, Qwen2.5 tokenizer, 16 chains x 4 uuid36 keys; "
          f"ours = median of {args.repeats} runs, reference = 1 run")
    rows = [("start-up (0 rows)", ref_start["wall_s"], med(ours_start, "wall_s"), "s"),
            (f"{args.rows} rows end to end", ref["wall_s"], med(ours[1], "wall_s"), "s"),
            (f"peak RSS, {args.rows} rows", ref["rss_mib"], med(ours[1], "rss_mib"), "MiB")]
    print(f"{'':<28}{'reference':>12}{'ours':>10}{'ours/ref':>10}")
    for name, r, o, unit in rows:
        print(f"{name:<28}{r:>10.1f} {unit:<3}{o:>7.1f} {unit:<3}{o / r:>8.3f}x")
    per_row_ref = (ref["wall_s"] - ref_start["wall_s"]) / args.rows * 1000
    print(f"per row: reference {per_row_ref:.1f} ms (end to end minus start-up), ours "
          f"{med(ours[1], 'rows_s') / args.rows * 1000:.2f} ms building rows")
    print(f"ours with 2 workers: {med(ours[2], 'wall_s'):.1f} s end to end ({med(ours[1], 'wall_s') / med(ours[2], 'wall_s'):.2f}x "
          f"1 worker), {args.rows / med(ours[2], 'rows_s'):.0f} rows/s building rows "
          f"(1 worker: {args.rows / med(ours[1], 'rows_s'):.0f})")
    print(f"ours peak RSS {4 * args.rows} rows vs {args.rows}: {big['rss_mib']:.0f} / {med(ours[1], 'rss_mib'):.0f} MiB "
          f"= {big['rss_mib'] / med(ours[1], 'rss_mib'):.2f}x")
    print(f"ours: output identical across runs and worker counts: {same}")


if __name__ == "__main__":
    main()
