#!/usr/bin/env bash
# The AdaComp paper's experiment (Hardy et al. 2017) on full MNIST, 1 server + 4 workers:
# uncompressed asynchronous SGD vs AdaComp at the same number of pushes, then the table of
# worker->server traffic reduction and test accuracy.
# Usage: bash scripts/adacomp_experiment.sh [PUSHES] [OUT_DIR]   (run `make setup` first)
set -euo pipefail
cd "$(dirname "$0")/.."
PUSHES=${1:-30000}
OUT=${2:-runs/adacomp-experiment-$(date +%Y%m%d-%H%M%S)}
BIN=.venv/bin
common=(--iterations "$PUSHES" --batch-size 10 --lr 0.1 --eval-every 2500 --log-every 2500 --seed 0)
$BIN/mpiexec -n 5 $BIN/python -m mpi_gan.asgd "${common[@]}" --compress none --staleness none \
    --out "$OUT/asgd"
$BIN/mpiexec -n 5 $BIN/python -m mpi_gan.asgd "${common[@]}" \
    --compress adacomp:ratio=0.01,values=fp16 --staleness adacomp --out "$OUT/adacomp"
$BIN/python scripts/traffic_report.py "$OUT/asgd/run.h5" "$OUT/adacomp/run.h5"
