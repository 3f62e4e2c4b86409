# Shared by the experiment scripts (compare.sh, toy_benchmark.sh, staleness_benchmark.sh):
# source it, then set OUT (the runs' directory) and BIN (the venv's bin) before calling
# run; COMMON (an array) is added to every run.
# finished DIR: its run file says finished=1.  run NAME RANKS MODULE ARGS...: train the run
# $OUT/NAME unless finished, resuming it from its checkpoints if it has some (RANKS 1: no
# mpiexec); its output goes to $OUT/NAME.log when LOG_RUNS=1, else to the terminal.
# out_and_seeds DEFAULT [OUT_DIR] [SEEDS...]: sets OUT (default DEFAULT) and the array SEEDS
# (default 0 1 2) from a script's arguments.

out_and_seeds() {
  OUT=${2:-$1}
  if [ $# -gt 2 ]; then SEEDS=("${@:3}"); else SEEDS=(0 1 2); fi
}

finished() {
  [ -f "$1/run.h5" ] && $BIN/python -c "import h5py,sys; sys.exit(0 if h5py.File(sys.argv[1],'r').attrs['finished'] == 1 else 1)" "$1/run.h5"
}

run() {
  local name=$1 ranks=$2 module=$3; shift 3
  local dir="$OUT/$name" resume=() launch=()
  if finished "$dir"; then echo "== $name: finished, skipped"; return; fi
  if compgen -G "$dir/checkpoints/ckpt_*.h5" >/dev/null; then resume=(--resume "$dir"); fi
  echo "== $name"
  mkdir -p "$OUT"
  [ "$ranks" = 1 ] || launch=("$BIN/mpiexec" -n "$ranks")
  if [ "${LOG_RUNS:-0}" = 1 ]; then
    "${launch[@]}" $BIN/python -m "$module" "${COMMON[@]}" --out "$dir" "${resume[@]}" "$@" \
      > "$dir.log" 2>&1
  else
    "${launch[@]}" $BIN/python -m "$module" "${COMMON[@]}" --out "$dir" "${resume[@]}" "$@"
  fi
}
