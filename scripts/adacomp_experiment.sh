#!/usr/bin/env bash
# The AdaComp paper's experiment (Hardy et al. 2017) on full MNIST, 1 server + WORKERS workers:
# uncompressed asynchronous SGD, then each compressor spec at the same number of pushes with
# the staleness-aware step, then the table of worker->server traffic reduction and test
# accuracy (scripts/traffic_report.py).
# Usage: bash scripts/adacomp_experiment.sh [PUSHES] [OUT_DIR] [WORKERS] [SPEC ...]
#   defaults: 30000 pushes, runs/adacomp-experiment-<time>, 4 workers, spec "adacomp"
#   (the compressor's defaults with the workers' residual memory: the best measured
#   setting); a spec may end in "+noresidual" to run without the residual memory
#   (--no-residual, the paper's released code). BASELINE_STALENESS=adacomp gives the
#   uncompressed run the staleness-aware step too (lr / delay for dense pushes): with 16
#   workers the plain step diverges at lr 0.1. Run `make setup` first.
set -euo pipefail
cd "$(dirname "$0")/.."
PUSHES=${1:-30000}
OUT=${2:-runs/adacomp-experiment-$(date +%Y%m%d-%H%M%S)}
WORKERS=${3:-4}
shift $(( $# < 3 ? $# : 3 ))
SPECS=("$@")
[ ${#SPECS[@]} -gt 0 ] || SPECS=(adacomp)
BIN=.venv/bin
common=(--iterations "$PUSHES" --batch-size 10 --lr 0.1 --eval-every 2500 --log-every 2500 --seed 0)
run() { $BIN/mpiexec -n $((WORKERS + 1)) $BIN/python -m mpi_gan.asgd "${common[@]}" "$@"; }
[ -f "$OUT/asgd/run.h5" ] || run --compress none --staleness "${BASELINE_STALENESS:-none}" \
    --out "$OUT/asgd"
files=("$OUT/asgd/run.h5")
for spec in "${SPECS[@]}"; do
  name=${spec//[:,=+]/_}
  flags=(--compress "${spec%+*}" --staleness adacomp --residual)
  [ "$spec" = "${spec%+noresidual}" ] || flags+=(--no-residual)
  [ -f "$OUT/$name/run.h5" ] || run "${flags[@]}" --out "$OUT/$name"
  files+=("$OUT/$name/run.h5")
done
$BIN/python scripts/traffic_report.py "${files[@]}"
