#!/usr/bin/env bash
# The prepared GPU check (BENCHMARKS.md, "GPU"): bf16 training throughput of model=base and GPU batch scoring.
# Runs on a machine with torch + CUDA + pytorch-lightning already installed; other packages come as wheels
# in .whl/ when that machine has no package index, fetched beforehand where pip works:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 \
#     -d .whl polars==2.1.0 polars-runtime-32==2.1.0 hydra-core==1.3.8 omegaconf==2.3.1
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
# Results go to $OUT (or outputs/benchmarks/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/benchmarks/gpu}
mkdir -p "$OUT"
if ! python3 -c "import polars, hydra" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
WORK=/tmp/seqfraud_gpu
SESSIONS=${SESSIONS:-100000}
TRAINER=${TRAINER:-gpu}        # TRAINER=default DEVICES=cpu SESSIONS=2000 tries the script on a CPU machine
DEVICES=${DEVICES:-cuda cpu}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
  python3 -c "import torch, polars, pytorch_lightning as L; print('torch', torch.__version__, 'polars', polars.__version__, 'lightning', L.__version__, 'cpus', __import__('os').cpu_count())"
  echo "## training throughput, model=base, bf16"
  python3 benchmarks/train_throughput.py --model base --sessions "$SESSIONS" --epochs 3 --work "$WORK" \
    trainer="$TRAINER" loader.batch_size=512 loader.num_workers=4
  echo "## export"
  python3 export.py run_dir="$WORK/base" out="$WORK/artifact" overwrite=true formats=[torchscript] \
    hydra.run.dir="$WORK/export" 2>&1 | tail -3
  echo "## batch scoring, the whole synthetic log (events of every split)"
  for device in $DEVICES; do
    python3 -m seqfraud score --artifact "$WORK/artifact" --events "$WORK/data/synthetic/events.parquet" \
      --out "$WORK/scores_$device.parquet" --device "$device" --batch-size 1024 --no-progress
  done
} 2>&1 | tee "$OUT/gpu.log"
