#!/usr/bin/env bash
# The demo from a built wheel, in a fresh venv outside the repository: synthetic -> train -> export -> score,
# all through the installed `seqfraud` command and the config packaged in the wheel (pkg://seqfraud.conf).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/seqfraud-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SECONDS=0

"$PYTHON" -m venv "$WORK/venv"
V="$WORK/venv/bin"
"$V/python" -m pip install -q --upgrade pip
# Built from a copy of the tracked and unignored files, so the build leaves nothing in the checkout.
mkdir "$WORK/src"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard | (cd "$ROOT" && xargs -0 tar -cf - --ignore-failed-read) \
  | tar -xf - -C "$WORK/src"
"$V/python" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/seqfraud-*.whl)
"$V/python" - "$WHEEL" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
missing = {"seqfraud/conf/train.yaml", "seqfraud/conf/export.yaml", "seqfraud/conf/experiment/smoke.yaml"} - names
assert not missing, f"the wheel lacks {sorted(missing)}"
PY
"$V/python" -m pip install -q "$TORCH_SPEC"  # the CPU wheel first, as make does
"$V/python" -m pip install -q "$WHEEL[train,serve]"
echo "wheel_demo: venv with $(basename "$WHEEL")[train,serve] in ${SECONDS}s"

cd "$WORK"  # outside the repository: nothing can come from the checkout
export WANDB_MODE=disabled
"$V/seqfraud" synthetic --sessions 3000 --seed 0 --out data/synthetic_smoke
"$V/seqfraud" train +experiment=smoke logger=none hydra.run.dir=run
"$V/seqfraud" export run_dir=run out=artifact hydra.run.dir=export
"$V/seqfraud" score --artifact artifact --events data/synthetic_smoke/events.parquet --out scores.parquet --no-progress
"$V/python" - <<'PY'
import polars as pl, seqfraud
assert "/venv/" in seqfraud.__file__, seqfraud.__file__
scores = pl.read_parquet("scores.parquet")
assert scores.height == pl.read_parquet("data/synthetic_smoke/labels.parquet").height, scores.height
assert scores["score"].is_between(0, 1).all()
PY
echo "wheel_demo: synthetic, train, export, score from the wheel passed in ${SECONDS}s"
