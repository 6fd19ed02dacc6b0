#!/usr/bin/env bash
# GPU verification of the training path (issue 23), for a fresh GPU machine with torch installed.
# Run from the repository root; results go under $OUT (4 JSON/text files, well under 1 MiB):
#
#   OUT=/some/dir bash benchmarks/device_check.sh            # on the GPU machine: at most about 6 minutes
#   OUT=/tmp/dc bash benchmarks/device_check.sh --cpu-smoke  # here, without a GPU: the same steps, tiny, on the CPU
#   OUT=/some/dir bash benchmarks/device_check.sh --throughput-only  # GPU: env.json + train_step only, under 250 s
#     (with --cpu-smoke as a second argument: the same, tiny, on the CPU)
#
#   env.json               torch/CUDA/GPU, and which non-torch packages the checks imported
#   train_step_cuda.json   samples/s at batch 256: shipped and 7.65M configs, fp32 and bf16, and fp32 through
#                          torch.compile (CUDA graphs; its compile time is the warm-up's warmup_s) (benchmarks/train_step.py);
#                          written after every timed run, so a time limit keeps what was measured before it
#   finetune_devices.json  200-step finetune loss curves, CPU vs CUDA (fp32, bf16), with the seed-to-seed gap as noise
#   log.txt                everything printed
# Imports besides torch (env.json lists what was imported): numpy, gymnasium (+ farama_notifications,
# typing_extensions) for the simulator, tqdm; not click, sqlalchemy, safetensors or fsspec.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
smoke=0; only_bench=0
for a in "$@"; do
  case "$a" in
    --cpu-smoke) smoke=1 ;;
    --throughput-only) only_bench=1 ;;
    *) echo "Error: unknown option $a (use --cpu-smoke and/or --throughput-only)"; exit 2 ;;
  esac
done
mkdir -p "$OUT"
log="$OUT/log.txt"
: > "$log"
start=$(date +%s)

python - "$OUT/env.json" <<'EOF' 2>&1 | tee -a "$log"
import json, sys, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpus": torch.cuda.device_count()}
import retain.pretrain, retain.train, retain.batches, retain.sim  # what the checks import
std = set(sys.stdlib_module_names)
info["third_party_imported"] = sorted({m.split(".")[0] for m in sys.modules} - std - {"retain", "registry", "torch", "__main__"}
                                      - {m for m in {m.split(".")[0] for m in sys.modules} if m.startswith("_")})
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info))
EOF

t_bench=235; t_ft=120  # seconds: the compiles of the two networks' fp32 steps take most of t_bench
# (the eager variants fitted in the 140 s it had before); alone, the whole run stays under 250 s
if [ $smoke = 1 ]; then
  t_bench=600; t_ft=600  # a CPU shared with other work is slow
  # the compile path at the tiny sizes: compiling the real networks takes minutes on a CPU
  bench=(--device cpu --configs shipped,7.65M,tiny --compile tiny --batch 8 --steps 2 --blocks 1 --episodes 6 --threads 2)
  ft=(--device cpu --steps 6 --episodes 3 --log-every 2 --batch 4 --threads 2)
else
  bench=(--device cuda --blocks 2 --steps 100 --compile)
  ft=(--device cuda --steps 200 --episodes 50 --threads 8)
fi
echo "== train_step ${bench[*]}" | tee -a "$log"
timeout $t_bench python -m benchmarks.train_step "${bench[@]}" --json-out "$OUT/train_step_cuda.json" 2>&1 | tail -n 8 | tee -a "$log"
if [ $only_bench = 0 ]; then
echo "== finetune_devices ${ft[*]}" | tee -a "$log"
timeout $t_ft python -m benchmarks.finetune_devices "${ft[@]}" --out "$OUT/finetune_devices.json" 2>&1 | tail -n 8 | tee -a "$log"
fi
echo "== done in $(( $(date +%s) - start )) s" | tee -a "$log"
