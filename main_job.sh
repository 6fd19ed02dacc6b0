#!/usr/bin/env bash
# The main job on embedded defaults, in a fresh temporary home: the shipped default base, two
# skills learned one after the other (plates, then whiteboard) with alpha chosen with the lineage
# in view (each learn prints what its candidate keeps of the earlier skills and the suite before
# committing), the lineage and the continual-learning scores (ending with what the chain kept and
# lost against each skill's and the suite's best recorded figure), a rollback to the plates
# version, and a replay of whiteboard that verifies the recorded weight hashes bit for bit. Then
# the rest of the registry's commands on that history.
# Set RETAIN_DB_URL (an empty database) to run the same job on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")"

WORK="$(mktemp -d -t retain-main-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export RETAIN_HOME="$WORK/home"
retain() { echo; echo "\$ retain $*"; python cli.py "$@"; }
START=$SECONDS

retain init
retain pretrain --shipped
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
