#!/usr/bin/env bash
# Behaviour unchanged across a refactoring: one short seeded run of each algorithm (MD-GAN with
# compressed feedback, FL-GAN, standalone, ASGD with AdaComp), trained by the code of CHECKOUT,
# into OUT. Run it for the tree before and the tree after, then compare the two directories:
#   scripts/same_runs.sh /path/to/old-checkout /tmp/before
#   scripts/same_runs.sh . /tmp/after
#   .venv/bin/python scripts/compare_run_files.py /tmp/before /tmp/after
# BIN: the venv's bin (default: this checkout's .venv/bin). The runs read MNIST from the
# offline copy, 4 ranks at most, about a minute and a half in all on 2 cores.
set -euo pipefail
checkout=$(cd "$1" && pwd); out=$2
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$here/.venv/bin}
rm -rf "$out" && mkdir -p "$out"
cd "$out"
run() {  # run NAME RANKS MODULE ARGS...
  local name=$1 ranks=$2 module=$3; shift 3
  local launch=()
  [ "$ranks" = 1 ] || launch=("$BIN/mpiexec" -n "$ranks")
  echo "== $name"
  PYTHONPATH="$checkout" "${launch[@]}" "$BIN/python" -m "$module" --out "$out/$name" \
    --seed 7 --checkpoint-every 10 --keep-checkpoints 5 "$@" > "$out/$name.log" 2>&1 \
    || { tail -n 20 "$out/$name.log"; exit 1; }
}
run mdgan 4 mpi_gan.mdgan --iterations 30 --batch-size 16 --eval-every 15 --eval-samples 200 \
  --dataset synthetic --synthetic-size 192 --swap-epochs 1 --compress adacomp:ratio=0.1 \
  --no-residual --g-ema 0.99
run flgan 3 mpi_gan.flgan --iterations 30 --batch-size 16 --eval-every 15 --eval-samples 200 \
  --split labels:5
run standalone 1 mpi_gan.standalone --iterations 30 --batch-size 16 --eval-every 15 \
  --eval-samples 200 --model cnn
run asgd 2 mpi_gan.asgd --iterations 60 --eval-every 30 --eval-size 200 --compress adacomp
# the other residual paths: the binned AdaComp's own residual, a dense payload's residual
run asgd-bins 2 mpi_gan.asgd --iterations 40 --eval-every 20 --eval-size 200 \
  --compress adacomp_bins:bin_size=64
run mdgan-fp16 3 mpi_gan.mdgan --iterations 12 --batch-size 16 --eval-every 0 \
  --dataset synthetic --synthetic-size 192 --compress fp16 --residual
echo "runs in $out"
