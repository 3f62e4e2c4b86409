#!/usr/bin/env bash
# The AdaComp paper's experiment (Hardy et al. 2017) on full MNIST, 1 server + WORKERS workers,
# tuned honestly: every run holds out VALIDATION training samples (--validation, seeded and
# stratified per class, never in a worker's shard) and evaluates on them every 2,500 pushes;
# the test set is evaluated once, at the end of each run. Settings: uncompressed
# asynchronous SGD, then each compressor spec with the staleness-aware step, each with every
# seed of SEEDS; then the table (scripts/traffic_report.py) of worker->server traffic
# reduction, validation accuracy (choose on it) and test accuracy (report it), as mean, std
# and min..max over the seeds, and the difference from the uncompressed setting.
# Usage: bash scripts/adacomp_experiment.sh [PUSHES] [OUT_DIR] [WORKERS] [SPEC ...]
#   defaults: 30000 pushes, runs/adacomp-experiment-<time>, 4 workers, spec "adacomp"
#   (the compressor's defaults with the workers' residual memory); a spec may end in
#   "+noresidual" to run without the residual memory (--no-residual, the paper's released
#   code). Environment: SEEDS (default "0 1 2"), VALIDATION (default 10000 held-out
#   samples), BASELINE_STALENESS=adacomp gives the uncompressed run the staleness-aware step
#   too (lr / delay for dense pushes): with 16 workers the plain step diverges at lr 0.1;
#   LOG_RUNS=1 sends each run's output to OUT_DIR/<run>.log. Re-runnable: finished runs are
#   skipped, unfinished ones resume from their checkpoints (scripts/runs.sh); the report is
#   also written to OUT_DIR/report.txt (and, its settings table as Markdown, report.md). Run directories: OUT_DIR/<setting>-seed<S>.
#   Run `make setup` first.
set -euo pipefail
cd "$(dirname "$0")/.."
PUSHES=${1:-30000}
OUT=${2:-runs/adacomp-experiment-$(date +%Y%m%d-%H%M%S)}
WORKERS=${3:-4}
shift $(( $# < 3 ? $# : 3 ))
SPECS=("$@")
[ ${#SPECS[@]} -gt 0 ] || SPECS=(adacomp)
read -r -a SEED_LIST <<< "${SEEDS:-0 1 2}"
[ ${#SEED_LIST[@]} -gt 0 ] || { echo "adacomp_experiment: SEEDS is empty" >&2; exit 2; }
BIN=.venv/bin
COMMON=(--iterations "$PUSHES" --batch-size 10 --lr 0.1 --eval-every 2500 --log-every 2500
        --validation "${VALIDATION:-10000}")
# shellcheck source=scripts/runs.sh
source scripts/runs.sh
mkdir -p "$OUT"
files=()
for seed in "${SEED_LIST[@]}"; do  # a complete comparison per seed, seed after seed
  run "asgd-seed$seed" $((WORKERS + 1)) mpi_gan.asgd --seed "$seed" --compress none \
      --staleness "${BASELINE_STALENESS:-none}"
  files+=("$OUT/asgd-seed$seed/run.h5")
  for spec in "${SPECS[@]}"; do
    name=${spec//[:,=+]/_}-seed$seed
    flags=(--compress "${spec%+*}" --staleness adacomp --residual)
    [ "$spec" = "${spec%+noresidual}" ] || flags+=(--no-residual)
    run "$name" $((WORKERS + 1)) mpi_gan.asgd --seed "$seed" "${flags[@]}"
    files+=("$OUT/$name/run.h5")
  done
done
# per run, then per setting in the order run: the uncompressed baseline first
$BIN/python scripts/traffic_report.py "${files[@]}" | tee "$OUT/report.txt"
$BIN/python scripts/traffic_report.py --markdown "${files[@]}" > "$OUT/report.md"
