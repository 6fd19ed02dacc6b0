#!/usr/bin/env bash
# Pretrain the MiniLM base (the larger network) on a GPU machine in under 5 minutes; writes
# trainable-0.safetensors, trainable-1.safetensors (< 16 MiB each: every weight but MiniLM's,
# which stays frozen) and device_pretrain.json (recipe, loss curve, cost) under $OUT.
# Needs, carried beside the working tree: .minilm-pack/ (python -m benchmarks.device_pretrain pack
# --out .minilm-pack; 35 MiB). Extra arguments go to `device_pretrain.py train` (e.g. --tiny).
set -euo pipefail
: "${OUT:?set OUT to the folder the results go to}"
if [ ! -f .minilm-pack/pruned.safetensors.z ]; then
  echo "Error: .minilm-pack/ is missing; run 'python -m benchmarks.device_pretrain pack --out .minilm-pack' and carry it" >&2
  exit 2
fi
export PYTHONPATH="$PWD" RETAIN_MINILM_DIR="$PWD/.minilm-pack"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null || true
# the budget leaves 30 s of the 5 minutes for python's start and a slow save; stage one's weights
# are already on disk when the DAgger stage starts, so an overrun still returns a base
timeout 290 python -m benchmarks.device_pretrain train --out "$OUT" --budget "${BUDGET:-255}" --reserve "${RESERVE:-75}" \
  --batch "${BATCH:-128}" --threads "${THREADS:-8}" "$@"
ls -la "$OUT"
