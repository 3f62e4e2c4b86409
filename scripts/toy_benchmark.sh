#!/usr/bin/env bash
# The mode-coverage benchmarks (docs/toy.md): ring (8 modes) and grid (25 modes), 1 server
# + 4 workers (the standalone GAN: one process), each dataset's defaults (5,000 generator
# updates, scored every 500 on 2,500 points), seeds 0, 1 and 2:
#   mdgan-k1          MD-GAN, k = 1 (2 batches; with 4 workers the same run as k = ceil(log2 4))
#   mdgan-k1-no-ema   MD-GAN k = 1 scoring G itself (--g-ema 0), as FL-GAN does
#   mdgan-k1-topk     MD-GAN k = 1, each worker's feedback compressed to its largest half
#                     (top-k, no residual: a residual belongs to last iteration's samples)
#   flgan             FL-GAN (its G is the FedAvg of the workers': no moving average)
#   standalone        the standalone GAN
# then `mpi_gan.analyze`, whose groups.csv holds the mean, std, min and max over seeds.
# Usage: [DATASETS="ring grid"] bash scripts/toy_benchmark.sh [OUT_DIR] [SEEDS...]
# (run `make setup` first)
# Re-running it skips finished runs and resumes interrupted ones from their checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/runs.sh
out_and_seeds runs/toy "$@"
BIN=.venv/bin

COMMON=()
LOG_RUNS=1

mkdir -p "$OUT"
for seed in "${SEEDS[@]}"; do
  for ds in ${DATASETS:-ring grid}; do
    common=(--dataset "$ds" --seed "$seed")  # each dataset's own defaults otherwise
    run "$ds-mdgan-k1-s$seed"         5 mpi_gan.mdgan "${common[@]}" --k 1
    run "$ds-mdgan-k1-no-ema-s$seed"  5 mpi_gan.mdgan "${common[@]}" --k 1 --g-ema 0
    run "$ds-mdgan-k1-topk-s$seed"    5 mpi_gan.mdgan "${common[@]}" --k 1 \
        --compress topk:ratio=0.5 --no-residual
    run "$ds-flgan-s$seed"            5 mpi_gan.flgan "${common[@]}"
    run "$ds-standalone-s$seed"       1 mpi_gan.standalone "${common[@]}"
  done
done
$BIN/python -m mpi_gan.analyze "$OUT"/*/run.h5 --out "$OUT/analysis"
