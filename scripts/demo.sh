#!/usr/bin/env bash
# `make demo`: the main job on the shipped sample data.
# KeyChain and plain long-context QA rows at 16K tokens for HotpotQA, MuSiQue and 2WikiMultihopQA,
# each file re-checked independently by `loongrl data validate`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
SHARED=${LOONGRL_SHARED:-../shared}
TOK=$SHARED/data/tokenizers/qwen2.5
OUT=${DEMO_OUT:-demo_out}
mkdir -p "$OUT"
declare -A INPUT=(
  [hotpotqa]=$SHARED/data/hotpotqa/hotpotqa_distractor_subset.json.gz
  [musique]=$SHARED/data/musique/musique_ans_subset.jsonl.gz
  [2wikimqa]=$SHARED/data/2wikimqa/2wikimqa_subset.json
)
for src in hotpotqa musique 2wikimqa; do
  # Disjoint questions: KeyChain from item 50 on, plain QA from the first 50 (as the paper's split).
  $BIN/loongrl data keychain --source $src --input "${INPUT[$src]}" --tokenizer "$TOK" \
    --max-prompt-tokens 16384 --num 50 --start 50 --seed 1 --workers 2 --out "$OUT/keychain_$src.parquet"
  $BIN/loongrl data qa --source $src --input "${INPUT[$src]}" --tokenizer "$TOK" \
    --max-prompt-tokens 16384 --num 50 --seed 1 --workers 2 --out "$OUT/qa_$src.parquet"
  $BIN/loongrl data validate "$OUT/keychain_$src.parquet" --tokenizer "$TOK" --quiet
  $BIN/loongrl data validate "$OUT/qa_$src.parquet" --tokenizer "$TOK" --quiet
done
echo "demo rows in $OUT/"

# Any tokenizer (issue 12): SmolLM2's (GPT-2-style BPE, digits split; a passage join costs a token more than
# its pieces) at 2K and 4K tokens; every prompt is counted whole, 50 of 50 rows, validated.
SMOL=$($BIN/loongrl model fetch smollm2-135m-instruct | tail -n 1)
for budget in 2048 4096; do
  for kind in keychain qa; do
    $BIN/loongrl data $kind --source hotpotqa --input "${INPUT[hotpotqa]}" --tokenizer "$SMOL" \
      --max-prompt-tokens $budget --num 50 --seed 1 --quiet --out "$OUT/smollm2_${kind}_$budget.parquet"
    $BIN/loongrl data validate "$OUT/smollm2_${kind}_$budget.parquet" --tokenizer "$SMOL" --quiet
  done
done

# demo-cpu training (issues 4, 12): tiny Qwen2 model, SFT -> GRPO Stage I -> hard mining -> GRPO Stage II,
# held-out accuracy at 1x, 4x and 8x length after every stage, once per seed in $DEMO_SEEDS; then the mean and
# spread per stage: the table below (also $OUT/train/seeds.md) and the plot $OUT/train/seeds.png. One torch
# thread (fixed, so results do not depend on the core count; on a shared 2-core machine two threads were 6x
# slower under load) and deterministic algorithms: the same machine and seed give the same numbers. A rerun
# resumes (completed stages are kept); delete $OUT/train to train again.
TRAIN="$(cd "$OUT" && pwd)/train"
mkdir -p "$TRAIN"
# Seeds train side by side, $DEMO_JOBS at a time (default: one per core); each is one process with one thread,
# so running them together changes no number, only the wall time.
JOBS=${DEMO_JOBS:-$(nproc)}
train_seed() {
  local seed=$1 start=$SECONDS
  # the demo makes its task files and tiny model (python -m loongrl.demo), then the library trains on them
  if (export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 DEMO_SEED=$seed LOONGRL_DEMO_DIR="$TRAIN/seed$seed"
      $BIN/python -m loongrl.demo recipes/demo-cpu.yaml &&
      $BIN/loongrl train recipes/demo-cpu.yaml --out "$TRAIN/seed$seed/run") > "$TRAIN/seed$seed.log" 2>&1; then
    echo "demo-cpu seed $seed: trained and evaluated in $((SECONDS - start)) s (report: $TRAIN/seed$seed/run/report.md)"
  else
    echo "demo-cpu seed $seed failed after $((SECONDS - start)) s; full log: $TRAIN/seed$seed.log" >&2
    return 1
  fi
}
runs=()
pids=()
for seed in ${DEMO_SEEDS:-0 1 2}; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done  # failures are read below, per seed
  train_seed "$seed" &
  pids+=($!)
  runs+=("$TRAIN/seed$seed/run")
done
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    failed=1
    tail -n 40 "$(dirname "${runs[$i]}").log"
  fi
done
[ "$failed" = 0 ] || exit 1
$BIN/python -m loongrl.demo.seeds "${runs[@]}" --out "$TRAIN"

# Real model, real server (issues 9, 21): SmolLM2-135M-Instruct through vLLM (its CPU build, .venv-vllm).
bash scripts/demo_real_eval.sh
