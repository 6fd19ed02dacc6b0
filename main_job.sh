#!/usr/bin/env bash
# The main job on embedded defaults, in a fresh temporary home: the shipped default base, two
# skills learned one after the other (plates, then whiteboard), the lineage and the continual-
# learning scores, a rollback to the plates version, and a replay of whiteboard that verifies the
# recorded weight hashes bit for bit. Then the rest of the registry's commands on that history.
# Set RETAIN_DB_URL (an empty database) to run the same job on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")"

WORK="$(mktemp -d -t retain-main-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export RETAIN_HOME="$WORK/home"
retain() { echo; echo "\$ retain $*"; python cli.py "$@"; }
START=$SECONDS

retain init
echo; echo "\$ (import the shipped default base, retain/assets/base.safetensors, with its recorded config and recipe)"
python - <<'PY'
from registry.api import Registry
from retain.pretrain import shipped_base

base = shipped_base()  # checked against the hash recorded beside it
with Registry.open() as reg:
    v = reg.import_base(base.weights_dir, name="default", how="pretrain", config=base.config,
                        recipe={"source": "retain pretrain (shipped)", **base.recipe.to_dict()}, message="the shipped default base")
print(f"{v.name}: the shipped default base ({v.weight_hash}); main -> {v.name}")
PY
retain learn plates -n 50
retain learn whiteboard -n 50
retain lineage
retain scores --ref main
retain rollback v1 -m "main job: back to the plates version"
retain replay whiteboard
retain log
retain show v2
retain export v1 -o "$WORK/exported"
ls "$WORK/exported"
retain verify
retain gc --dry-run
echo
echo "main_job.sh: finished in $(( SECONDS - START )) s"
