#!/usr/bin/env bash
# The chains matrix of issue 25 on the built-in testbed: plates then whiteboard, four ways, over seeds,
# in parallel processes; then the ID and OOD of both skills after the chain and the suite, per config
# and seed, with means (python -m benchmarks.chains_summary). Runs from the repository root.
#
#   old       both learns as before --keep:   --alpha-strategy language --keep none
#   new       both learns with the defaults:  (broad candidates, --keep all>=0.8x, soft)
#   rehearse  plates as "new", whiteboard:    --rehearse 0.2
#   coft      plates as "new", whiteboard:    --mode co-ft --mix 0.2
#
# plates is learned once per plates recipe (seed 0, as docs/chains.md's protocol), whiteboard with
# --seed S for each seed on a copy of that registry. Results go under $OUT when set (else
# ./chains-matrix), one folder per run with its log and `scores --ref main --json`, and
# summary.json / summary.md at the top.
#
# Environment: SEEDS ("0 1 2"), JOBS (parallel learns, default 4), EPISODES (50), and for a smoke
# test STEPS, DEMO_EPISODES, KEEP_EPISODES, GRID (e.g. STEPS=8 EPISODES=2 DEMO_EPISODES=4
# KEEP_EPISODES=2 GRID=0.5). Each learn's evaluation workers: the cores / JOBS (at least 1).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

SEEDS="${SEEDS:-0 1 2}"
JOBS="${JOBS:-4}"
EPISODES="${EPISODES:-50}"
DEST="${OUT:-$PWD/chains-matrix}"
mkdir -p "$DEST"
CORES="$(python -c 'import os; print(len(os.sched_getaffinity(0)))')"
export RETAIN_EVAL_WORKERS="${RETAIN_EVAL_WORKERS:-$(( CORES / JOBS > 0 ? CORES / JOBS : 1 ))}"

COMMON=(-n "$EPISODES" -q)
[[ -n "${STEPS:-}" ]] && COMMON+=(--steps "$STEPS")
[[ -n "${DEMO_EPISODES:-}" ]] && COMMON+=(--demo-episodes "$DEMO_EPISODES")
[[ -n "${GRID:-}" ]] && COMMON+=(--alpha-grid "$GRID")
NEW=()
[[ -n "${KEEP_EPISODES:-}" ]] && NEW+=(--keep-episodes "$KEEP_EPISODES")
OLD=(--alpha-strategy language --keep none)

config_flags() {  # the whiteboard flags of a config
  case "$1" in
    old) echo "${OLD[*]}" ;;
    new) echo "${NEW[*]}" ;;
    rehearse) echo "${NEW[*]} --rehearse 0.2" ;;
    coft) echo "${NEW[*]} --mode co-ft --mix 0.2" ;;
  esac
}

plates() {  # $1: old|new -> a registry whose main learned plates
  local name="$1" home="$DEST/plates-$1/home"
  local flags; flags="$( [[ $name == old ]] && echo "${OLD[*]}" || echo "${NEW[*]}")"
  rm -rf "$DEST/plates-$name"; mkdir -p "$DEST/plates-$name"
  {
    python cli.py --home "$home" init
    python cli.py --home "$home" pretrain --shipped
    # shellcheck disable=SC2086
    python cli.py --home "$home" learn plates "${COMMON[@]}" $flags
  } > "$DEST/plates-$name/log.txt" 2>&1
}

whiteboard() {  # $1 config, $2 seed
  local config="$1" seed="$2" run="$DEST/$1-s$2"
  local from; from="$DEST/plates-$( [[ $config == old ]] && echo old || echo new)/home"
  rm -rf "$run"; mkdir -p "$run"; cp -r "$from" "$run/home"
  local t0=$SECONDS
  # shellcheck disable=SC2046
  if python cli.py --home "$run/home" learn whiteboard "${COMMON[@]}" --seed "$seed" $(config_flags "$config") \
      > "$run/log.txt" 2>&1; then
    python cli.py --home "$run/home" scores --ref main --json > "$run/scores.json"
  else
    echo "learn whiteboard failed (exit $?): see $run/log.txt" > "$run/failed.txt"
  fi
  echo "{\"config\": \"$config\", \"seed\": $seed, \"seconds\": $(( SECONDS - t0 ))}" > "$run/run.json"
  rm -rf "$run/home/store"  # the weights are not needed for the figures; keep the database
}
export -f whiteboard config_flags
export DEST EPISODES
export COMMON_S="${COMMON[*]}" NEW_S="${NEW[*]}" OLD_S="${OLD[*]}"

START=$SECONDS
echo "chains matrix: seeds [$SEEDS], $JOBS parallel learns, $RETAIN_EVAL_WORKERS eval workers each, $EPISODES episodes a split -> $DEST"
plates old & plates new & wait
echo "plates learned (old and new recipes) in $(( SECONDS - START )) s"
for s in $SEEDS; do for c in old new rehearse coft; do echo "$c $s"; done; done \
  | xargs -P "$JOBS" -L 1 bash -c 'COMMON=($COMMON_S); NEW=($NEW_S); OLD=($OLD_S); whiteboard "$0" "$1"'
python -m benchmarks.chains_summary "$DEST"
echo "chains matrix: finished in $(( SECONDS - START )) s"
