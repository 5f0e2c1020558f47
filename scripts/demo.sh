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

# demo-cpu training (issue 4): tiny Qwen2 model, SFT -> GRPO Stage I -> hard mining -> GRPO Stage II,
# held-out accuracy at 1x and 4x length after every stage; report in $OUT/train/run/report.md.
LOONGRL_DEMO_DIR="$(cd "$OUT" && pwd)/train" $BIN/loongrl train recipes/demo-cpu.yaml --out "$OUT/train/run"

# Real model, real server (issue 9): SmolLM2-135M-Instruct through `transformers serve`.
bash scripts/demo_real_eval.sh
