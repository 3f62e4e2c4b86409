#!/usr/bin/env bash
# Bounded-staleness MD-GAN against synchronous MD-GAN (docs/results.md, issue 24): 1 server
# + 4 workers, k = 1, for --staleness-bound S in {0, 1, 2, 4}, with worker 4 four times
# slower (--slow 4:4) and with no straggler, seeds 0, 1 and 2:
#   ring, grid   each toy dataset's defaults (docs/toy.md: 5,000 G updates scored every
#                500), or ITERATIONS updates scored every EVAL_EVERY
#   mnist        the MLP, batch 32 (as scripts/compare.sh), MNIST_ITERATIONS G updates
#                (default 1,000) scored every 250 on 500 samples
# S > 0 runs once per variant of VARIANTS (default "eager"): a --staleness-batches mode,
# then optionally :Q (--staleness-quorum), :L (--staleness-lookahead) and :P
# (--staleness-patience, fresh batches with Q 0 only) and :M (1: --staleness-make-up), e.g.
# "eager fresh fresh:3 eager:0:1 fresh:0:0:3 fresh:0:0:2:1" (fresh: the default quorum and
# patience 2; fresh:3, Q = 3, the default before --staleness-patience; fresh:0:0:2:1, the
# workers keeping pace making up for the slow one); BOUNDS chooses the S (default
# "0 1 2 4"), STRAGGLERS the stragglers (default "4:4 none").
# then scripts/staleness_table.py, whose last lines are the floors.
# Usage: [DATASETS="ring grid mnist"] [ITERATIONS=5000] [EVAL_EVERY=500]
#        [MNIST_ITERATIONS=1000] [VARIANTS="eager fresh:3"] [BOUNDS="0 2"] [STRAGGLERS=4:4]
#        bash scripts/staleness_benchmark.sh [OUT_DIR] [SEEDS...]
# (run `make setup` first; for the timings run nothing beside it)
# Re-running it skips finished runs and resumes interrupted ones from their checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/runs.sh
out_and_seeds runs/staleness "$@"
BIN=.venv/bin
COMMON=(--k 1)
LOG_RUNS=1

mkdir -p "$OUT"
for seed in "${SEEDS[@]}"; do
  for ds in ${DATASETS:-ring grid mnist}; do
    if [ "$ds" = mnist ]; then
      args=(--model mlp --batch-size 32 --iterations "${MNIST_ITERATIONS:-1000}"
            --eval-every 250 --eval-samples 500)
    else
      args=(--iterations "${ITERATIONS:-5000}" --eval-every "${EVAL_EVERY:-500}")
    fi
    for straggler in ${STRAGGLERS:-4:4 none}; do
      slow=(); [ "$straggler" = none ] || slow=(--slow "$straggler")
      for s in ${BOUNDS:-0 1 2 4}; do
        variants=${VARIANTS:-eager}
        [ "$s" = 0 ] && variants=-  # S = 0: the synchronous algorithm, once
        for variant in $variants; do
          how=(); name="$ds-slow${straggler/:/x}-S$s-s$seed"
          if [ "$variant" != - ]; then
            IFS=: read -r batches quorum lookahead patience makeup <<< "$variant"
            how=(--staleness-batches "$batches" --staleness-quorum "${quorum:-0}"
                 --staleness-lookahead "${lookahead:-0}")
            [ -z "${patience:-}" ] || how+=(--staleness-patience "$patience")
            [ "${makeup:-0}" = 0 ] || how+=(--staleness-make-up)
            # plain eager keeps the name of the runs made before VARIANTS (eager then)
            [ "$variant" = eager ] || name="$ds-slow${straggler/:/x}-S$s-${variant//:/-}-s$seed"
          fi
          run "$name" 5 mpi_gan.mdgan --dataset "$ds" --seed "$seed" "${args[@]}" \
              --staleness-bound "$s" "${slow[@]}" "${how[@]}"
        done
      done
    done
  done
done
$BIN/python scripts/staleness_table.py "$OUT"/*/run.h5 | tee "$OUT/table.md"
