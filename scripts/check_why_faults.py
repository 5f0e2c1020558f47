"""Plant each fault of issue 13's list ("Why") in a scratch copy of the tree and run the test that must catch it.

    .venv/bin/python scripts/check_why_faults.py [--only SUBSTRING] [--keep]

For every entry of FAULTS: copy src/, tests/ and the files the tests read into a temporary folder, replace
`old` by `new` in `path` (it must occur exactly once), run the named tests there with the copied package
first on the path, and report KILLED (the tests fail, as they must), SURVIVED, or STALE (the code changed:
the fault no longer applies). The unmodified copy is checked first: every named test must pass on it.
Exit status 1 unless every fault is killed. Needs ../shared beside the checkout (or LOONGRL_SHARED).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COPY = ("src", "tests", "recipes", "docs", "README.md", "pyproject.toml")

# (behaviour, file, old, new, tests that must fail)
FAULTS = [
    ("prompt counter counts characters instead of tokens", "src/loongrl/train/transitions.py",
     "        return len(ids)\n", "        return len(str(messages))\n",
     ["tests/test_train_transitions.py::test_prompt_token_counter_counts_tokens_of_the_rendered_chat"]),
    ("length filter's bound off by one", "src/loongrl/train/transitions.py",
     "if max_tokens is not None and n > max_tokens:", "if max_tokens is not None and n >= max_tokens:",
     ["tests/test_train_transitions.py::test_length_filter_bounds_are_exclusive_below_and_inclusive_above"]),
    ("hard mining keeps every item", "src/loongrl/train/transitions.py",
     'if st["mean_acc"] >= solved_threshold:', "if False:",
     ["tests/test_train_transitions.py::test_hard_mining_keeps_exactly_the_unsolved_rows",
      "tests/test_train_e2e.py::test_multi_stage_run_and_resume"]),
    ("hard mining's per-item statistics misaligned with the rows", "src/loongrl/generation/sample.py",
     "            for group in sample_and_score(rows, backend, sampling, grouped(score), desc=desc)]",
     "            for group in sample_and_score(rows, backend, sampling, grouped(score), desc=desc)][::-1]",
     ["tests/test_train_transitions.py::test_mining_statistics_line_up_with_their_rows"]),
    ("retrospective sampling draws uniformly instead of by difficulty", "src/loongrl/train/transitions.py",
     'rng.random() ** (1.0 / max(1e-3, 1.0 - rs[1]["mean_reward"]))', "rng.random()",
     ["tests/test_train_transitions.py::test_retrospective_sampling_draws_by_difficulty"]),
    ("TRL loss_type mapping swapped between dapo and grpo", "src/loongrl/train/trl_backend.py",
     'LOSS_TYPES = {"token-mean": "dapo", "seq-mean-token-mean": "grpo",',
     'LOSS_TYPES = {"token-mean": "grpo", "seq-mean-token-mean": "dapo",',
     ["tests/test_train_trl_mapping.py::test_loss_aggregation_maps_to_trl_loss_type"]),
    ("TRL reward adapter returns a constant 0", "src/loongrl/train/trl_backend.py",
     "    return make_trl_reward(**reward_kwargs)\n",
     "    return lambda prompts, completions, **kw: [0.0] * len(completions)\n",
     ["tests/test_train_trl_mapping.py::test_grpo_rewards_are_the_shared_scorer_and_the_overlong_shaping"]),
    ("judge cache key ignores sampling settings", "src/loongrl/rewards/judge.py",
     'payload = json.dumps([model, messages, settings or {}]', "payload = json.dumps([model, messages]",
     ["tests/test_rewards_judge.py::test_cache_key_covers_sampling_and_verdict_settings"]),
    ("eval resume ignores scoring settings", "src/loongrl/eval/cli.py",
     '"preset": asdict(preset), ', "",
     ["tests/test_eval_scoring.py::test_longbench_resume_refuses_changed_scoring_settings"]),
    ("resume without the missing-newline repair", "src/loongrl/eval/run.py",
     'if len(good) != len(lines) or (text and not text.endswith("\\n")):', "if len(good) != len(lines):",
     ["tests/test_eval_scoring.py::test_resume_repairs_a_torn_or_unterminated_last_line"]),
    ("--strip-think ignored by the CLI", "src/loongrl/eval/cli.py",
     "strip_think=args.strip_think or None", "strip_think=None",
     ["tests/test_eval_scoring.py::test_longbench_resume_refuses_changed_scoring_settings"]),
    ("fractional verl epochs silently rounded", "src/loongrl/train/verl_backend.py",
     "    if epochs < 1 or epochs != int(epochs):\n", "    if epochs < 1:\n",
     ["tests/test_train_verl_mapping.py::test_fractional_or_zero_epochs_are_refused_not_rounded"]),
    ("--no-resume ignored by the orchestrator", "src/loongrl/train/cli.py",
     "    run_recipe(recipe, out, resume=not args.no_resume)", "    run_recipe(recipe, out)",
     ["tests/test_train_e2e.py::test_cli_resumes_unless_told_not_to"]),
    ("the backoff cap applied before jitter", "src/loongrl/generation/http.py",
     "return min(backoff_max_s, backoff_s * 2**attempt * (1 + 0.25 * random.random()))",
     "return min(backoff_max_s, backoff_s * 2**attempt) * (1 + 0.25 * random.random())",
     ["tests/test_generation_retries.py::test_backoff_doubles_with_jitter_and_is_capped_after_it"]),
    ("data mix ignores its exclude list", "src/loongrl/data/mix.py",
     'exclude = read_id_list(recipe["exclude"], fold=True)', "exclude = frozenset()",
     ["tests/test_data_mix.py::test_mix_exclude_list_ids_and_disjoint_questions"]),
    ("id lists (--ids / include) ignored by synthesis", "src/loongrl/data/pipeline.py",
     "if config.include is not None and rec.id not in config.include:", "if False:",
     ["tests/test_data_mix.py::test_mix_exclude_list_ids_and_disjoint_questions"]),
    ("MathQA options shifted by one", "src/loongrl/data/math.py",
     "opts = [clean(options[m.end():e]) for m, e in zip(marks, ends)]",
     "opts = [clean(options[m.end():e]) for m, e in zip(marks, ends)][1:] + [\"?\"]",
     ["tests/test_data_mix.py::test_mathqa_prompts_keep_each_option_under_its_letter"]),
    ("RULER ignores require_think", "src/loongrl/eval/ruler.py",
     "extract.after_think(t, require=require_think) if reasoning", "extract.after_think(t, require=False) if reasoning",
     ["tests/test_eval_scoring.py::test_ruler_reasoning_scores_only_the_text_after_think"]),
    ("the RULER reasoning variant scores the whole text", "src/loongrl/eval/ruler.py",
     "extract.after_think(t, require=require_think) if reasoning else t", "t",
     ["tests/test_eval_scoring.py::test_ruler_reasoning_scores_only_the_text_after_think"]),
    ("the answer prefill dropped by the chat renderer", "src/loongrl/generation/backends.py",
     "        return tokenizer.apply_chat_template(messages, continue_final_message=True, tokenize=False)",
     "        return tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)",
     ["tests/test_eval_scoring.py::test_the_answer_prefill_is_rendered_for_the_reply_to_continue"]),
    ("LongBench prompts not truncated", "src/loongrl/eval/longbench.py",
     "                                       preset.max_input_tokens)", "                                       10**9)",
     ["tests/test_eval_scoring.py::test_longbench_prompts_are_middle_truncated_to_the_preset"]),
    ("--strip-think ignored (official preset)", "src/loongrl/eval/longbench.py",
     "extract.after_think(t, require=False) if preset.strip_think else t", "t",
     ["tests/test_eval_scoring.py::test_strip_think_scores_the_text_after_think"]),
    ("prompts left short of the budget (fill stops early)", "src/loongrl/data/fill.py",
     "    while misses < max_misses and", "    while misses < 1 and",
     ["tests/test_data_keychain.py::test_keychain_rows_resolve_and_fit_the_budget"]),
    ("chat count drops the generation prompt", "src/loongrl/data/tokens.py",
     "            return self.template.render(messages)\n",
     "            return self.template.render(messages, add_generation_prompt=False)\n",
     ["tests/test_data_keychain.py::test_keychain_rows_resolve_and_fit_the_budget",
      "tests/test_train_transitions.py::test_prompt_token_counter_equals_the_synthesizer_count_on_real_rows"]),
]


def run_tests(root: str, tests: list[str]) -> subprocess.CompletedProcess:
    shared = os.environ.get("LOONGRL_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
    env = {**os.environ, "PYTHONPATH": os.path.join(root, "src"), "LOONGRL_SHARED": shared, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests], cwd=root,
                          env=env, capture_output=True, text=True)


def copy_tree(dest: str) -> None:
    for name in COPY:
        src = os.path.join(REPO, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, name), ignore=shutil.ignore_patterns("__pycache__"))
        elif os.path.exists(src):
            shutil.copy2(src, os.path.join(dest, name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the faults whose behaviour contains this text")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders")
    args = parser.parse_args()
    faults = [f for f in FAULTS if not args.only or args.only in f[0]]
    with tempfile.TemporaryDirectory(prefix="why_clean_") as clean:
        copy_tree(clean)
        tests = sorted({t for *_, names in faults for t in names})
        result = run_tests(clean, tests)
        if result.returncode != 0:
            print(result.stdout[-3000:])
            print("the named tests fail on the unmodified tree")
            return 1
    failures = 0
    for behaviour, path, old, new, names in faults:
        scratch = tempfile.mkdtemp(prefix="why_fault_")
        try:
            copy_tree(scratch)
            target = os.path.join(scratch, path)
            with open(target, encoding="utf-8") as f:
                text = f.read()
            if text.count(old) != 1:
                print(f"STALE     {behaviour}: {path} holds the original {text.count(old)} times")
                failures += 1
                continue
            with open(target, "w", encoding="utf-8") as f:
                f.write(text.replace(old, new))
            result = run_tests(scratch, names)
            # a test must FAIL (exit status 1, "failed"), not break at import or collection
            killed = result.returncode == 1 and " failed" in result.stdout.strip().splitlines()[-1]
            failures += not killed
            print(f"{'KILLED' if killed else 'SURVIVED':9} {behaviour}: {' '.join(n.split('/')[-1] for n in names)}")
        finally:
            if not args.keep:
                shutil.rmtree(scratch, ignore_errors=True)
    print(f"{len(faults) - failures} of {len(faults)} planted faults caught")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
