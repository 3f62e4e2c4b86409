#!/usr/bin/env bash
# MD-GAN with compressed error feedback (the design card's "sparse AdaComp updates"): the
# setting of scripts/compare.sh (MNIST i.i.d., 1 server + 4 workers, k=1, MLP, batch 32,
# the paper's evaluation every 1,000 iterations) once per feedback compressor SPEC and seed.
# A SPEC is a --compress value, optionally ending in "+noresidual" (--no-residual: a
# worker's unsent feedback is dropped instead of added to its next batch's, which holds
# other samples). Settings are chosen on the MNIST score, which scores generated images with
# the score classifier and looks at no test image; the FID (against test images) is only
# reported. Then the analysis of OUT (groups.csv: mean, std, min, max over the seeds; the
# feedback bytes of each run in its /traffic).
# Usage: [SEEDS="0"] bash scripts/feedback_sweep.sh [ITERATIONS] [OUT_DIR] SPEC ...
#   e.g. bash scripts/feedback_sweep.sh 5000 runs/feedback adacomp+noresidual topk:ratio=0.5
# Re-running it skips finished runs and resumes interrupted ones. Run `make setup` first.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERATIONS=${1:-5000}
OUT=${2:-runs/feedback}
shift $(( $# < 2 ? $# : 2 ))
SPECS=("$@")
[ ${#SPECS[@]} -gt 0 ] || { echo "feedback_sweep: give at least one SPEC" >&2; exit 2; }
read -r -a SEEDS <<< "${SEEDS:-0}"
BIN=.venv/bin
COMMON=(--iterations "$ITERATIONS" --batch-size 32 --model mlp --dataset mnist --split iid
        --k 1 --eval-every 1000 --eval-samples 500 --log-every 500 --checkpoint-every 1000)
# shellcheck source=scripts/runs.sh
source scripts/runs.sh
files=()
for seed in "${SEEDS[@]}"; do
  for spec in "${SPECS[@]}"; do
    name=${spec//[:,=+]/_}-s$seed
    compress=${spec%+noresidual}
    case $compress in *+*) echo "feedback_sweep: bad SPEC $spec (only +noresidual)" >&2; exit 2;; esac
    flags=(--compress "$compress" --residual)
    [ "$spec" = "$compress" ] || flags+=(--no-residual)
    run "$name" 5 mpi_gan.mdgan --seed "$seed" "${flags[@]}"
    files+=("$OUT/$name/run.h5")
  done
done
$BIN/python -m mpi_gan.analyze "${files[@]}" --out "$OUT/analysis"
