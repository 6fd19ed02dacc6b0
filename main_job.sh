#!/usr/bin/env bash
# The main job on embedded defaults: a tour of the registry in a fresh temporary home.
# Set RETAIN_DB_URL (an empty database) to run the same tour on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")"

WORK="$(mktemp -d -t retain-main-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export RETAIN_HOME="$WORK/home"
retain() { echo; echo "\$ retain $*"; python cli.py "$@"; }

# Two small base checkpoints, made without torch: one file, and one sharded Hugging Face folder.
python - "$WORK" <<'PY'
import sys
import numpy as np
from registry.checkpoint import save_tensors

work = sys.argv[1]
for name, seed, shard in (("base-a.safetensors", 0, None), ("base-b", 1, 4096)):
    rng = np.random.default_rng(seed)
    shapes = {"vision.encoder.weight": (32, 48), "language.embed.weight": (64, 32), "action.head.weight": (7, 32),
              "action.head.bias": (7,)}
    tensors = {n: ("F32", s, rng.standard_normal(s).astype("<f4").tobytes()) for n, s in shapes.items()}
    save_tensors(f"{work}/{name}", tensors, max_shard_bytes=shard)
PY

retain init
retain base import "$WORK/base-a.safetensors" --name tiny-a -m "first base"
retain base import "$WORK/base-b" --name tiny-b -m "second base, sharded"
retain lineage
retain lineage --format mermaid
retain show main
retain scores
retain rollback v0 -m "tour: go back to the first base"
retain log
retain export main -o "$WORK/exported"
ls "$WORK/exported"
retain verify
retain gc --dry-run
echo
echo "main_job.sh: registry tour finished"
