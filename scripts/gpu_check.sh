#!/usr/bin/env bash
# The GPU check: one command, a few minutes on one GPU (budget: 8), for a machine with a
# CUDA GPU. CI never runs it. Record what it prints in docs/performance.md ("GPU check").
#
#   scripts/gpu_check.sh [OUT]          (OUT: where the runs go, default /tmp/mpi_gan-gpu-check)
#
# PYTHON: the interpreter with torch (CUDA), mpi4py, h5py and mpi-gan's requirements
#         (default: this checkout's .venv/bin/python, else python3); mpi-gan is imported
#         from this checkout. MPIEXEC: the launcher of mpi4py's MPI (default: the one beside
#         PYTHON, else mpiexec on PATH).
# GPU_CHECK_DEVICE=cpu runs every step on the CPU instead (a dry run of the script itself,
#         on a machine without a GPU; every comparison must then be exact).
#
# Steps, all MD-GAN with 1 server + 4 workers (5 ranks) sharing the one GPU, the paper's
# MLP on MNIST-shaped synthetic data (nothing to download), seed 3:
#   1. 40 iterations on the GPU and the same 40 on the CPU: G, D and Adam's state must
#      agree within TOLERANCE (max |gpu - cpu| over every tensor, relative to the
#      tensor's largest magnitude; float32 kernels of two devices round differently and
#      40 GAN updates amplify it: 1e-3 is the documented bound).
#   2. a resume on the GPU: 20 iterations, then --resume to 40: equal to step 1's GPU run,
#      bit for bit (deterministic CUDA algorithms are on, docs/hpc.md "GPU nodes").
#   3. CUDA-aware MPI: if a 2-rank probe can send a CUDA buffer through mpi4py, step 1's
#      GPU run again with MPI_GAN_CUDA_AWARE=1, which must be bit-identical to the staged
#      one; otherwise cuda_aware=unsupported and the step is skipped.
#   4. speed: 300 iterations on the GPU and on the CPU; iterations per second of each.
# Last lines: name=value (gpu_cpu_max_rel_diff, resume_exact, cuda_aware,
# cuda_aware_exact, gpu_iterations_per_s, cpu_iterations_per_s, gpu_speedup).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-/tmp/mpi_gan-gpu-check}
PYTHON=${PYTHON:-$here/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=$(command -v python3 || echo python3)
MPIEXEC=${MPIEXEC:-$(dirname "$PYTHON")/mpiexec}
[ -x "$MPIEXEC" ] || MPIEXEC=$(command -v mpiexec || true)
DEVICE=${GPU_CHECK_DEVICE:-cuda}
if [ "$DEVICE" = cuda ]; then TOLERANCE=${TOLERANCE:-1e-3}; else TOLERANCE=0; fi
export PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# as root, Open MPI needs these; more ranks than cores need oversubscription (harmless to MPICH)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export PRTE_MCA_rmaps_default_mapping_policy=${PRTE_MCA_rmaps_default_mapping_policy:-:oversubscribe}

fail() { echo "gpu_check: $*" >&2; exit 1; }
[ -n "$MPIEXEC" ] || fail "no mpiexec beside $PYTHON or on PATH (pip install mpich, or carry its wheel)"
"$PYTHON" -c "import torch, mpi4py, h5py" 2>/dev/null || fail "$PYTHON lacks torch, mpi4py or h5py"
if [ "$DEVICE" = cuda ]; then
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || fail "torch.cuda.is_available() is False on this machine (GPU_CHECK_DEVICE=cpu for a dry run)"
  "$PYTHON" -c "import torch; print('device:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
fi
"$PYTHON" -c "from mpi4py import MPI; print('mpi:', MPI.Get_library_version().splitlines()[0])"
# OUT is emptied first: only a folder this script made (its marker inside), or a new one
if [ -e "$out" ] && [ ! -e "$out/.gpu_check" ] && [ -n "$(ls -A "$out")" ]; then
  fail "$out exists and is not an earlier output of this script: choose another OUT"
fi
rm -rf "$out" && mkdir -p "$out" && touch "$out/.gpu_check"
failures=()

mdgan() {  # mdgan NAME DEVICE ITERATIONS [FLAGS...]: 5 ranks, into $out/NAME
  local name=$1 device=$2 iterations=$3; shift 3
  local start=$SECONDS
  "$MPIEXEC" -n 5 "$PYTHON" -m mpi_gan.mdgan --dataset synthetic --synthetic-size 4000 \
    --batch-size 100 --seed 3 --device "$device" --iterations "$iterations" \
    --checkpoint-every 20 --keep-checkpoints 10 --eval-every 0 --log-every 100 \
    --out "$out/$name" "$@" > "$out/$name.log" 2>&1 \
    || { tail -n 30 "$out/$name.log"; fail "$name failed (log: $out/$name.log)"; }
  echo "ran $name ($device, $iterations iterations) in $((SECONDS - start)) s"
}

compare() {  # compare A B TOLERANCE: print the max relative difference of every state tensor
  "$PYTHON" - "$@" <<'EOF'
import sys
import h5py
import numpy as np
a_path, b_path, tolerance = sys.argv[1], sys.argv[2], float(sys.argv[3])
worst, where = 0.0, ""


def names(f):
    found = []
    f["state"].visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
    return sorted(found)


with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
    if names(a) != names(b):
        sys.exit(f"different state tensors: {sorted(set(names(a)) ^ set(names(b)))[:5]}")
    for name in names(a):
        x, y = a["state"][name][()], b["state"][name][()]
        if x.shape != y.shape or x.dtype != y.dtype:
            sys.exit(f"{name}: {x.shape} {x.dtype} against {y.shape} {y.dtype}")
        if x.dtype.kind != "f":
            # the RNG states of two devices differ; elsewhere (and when exact) integers agree
            if not np.array_equal(x, y) and (tolerance == 0 or "rng" not in name):
                sys.exit(f"{name}: integers differ")
            continue
        if x.size == 0:
            continue
        scale = max(float(np.abs(x).max()), 1e-30)
        rel = float(np.abs(x.astype(np.float64) - y).max()) / scale
        if not np.isfinite(rel):  # a NaN or an infinity anywhere fails, whatever the bound
            sys.exit(f"{name}: not finite")
        if rel > worst:
            worst, where = rel, name
print(f"{worst:.3g} {where or '(every tensor equal)'}")
sys.exit(0 if worst <= tolerance else 1)
EOF
}

last=checkpoints/ckpt_00000040.h5
mdgan device "$DEVICE" 40
mdgan cpu cpu 40
if diff=$(compare "$out/device/$last" "$out/cpu/$last" "$TOLERANCE"); then ok=yes; else ok=no; fi
echo "GPU against CPU after 40 iterations: max relative difference $diff (tolerance $TOLERANCE)"
gpu_cpu=${diff%% *}
# recorded, not fatal at once: the other steps still run (a GPU machine's time is scarce)
[ "$ok" = yes ] || failures+=("the $DEVICE run differs from the CPU run: $diff (tolerance $TOLERANCE)")

mdgan resume-a "$DEVICE" 20
cp -r "$out/resume-a" "$out/resume"
mdgan resume "$DEVICE" 40 --resume "$out/resume/checkpoints/ckpt_00000020.h5"
if compare "$out/device/$last" "$out/resume/$last" 0 > /dev/null; then resume_exact=1; else resume_exact=0; fi
echo "resumed at 20 on $DEVICE, against uninterrupted at 40: exact=$resume_exact"

cuda_aware=unsupported cuda_aware_exact=
if [ "$DEVICE" = cuda ]; then
  # a CUDA buffer straight through mpi4py: a library without CUDA support fails or crashes
  if timeout 120 "$MPIEXEC" -n 2 "$PYTHON" -c "
import torch
from mpi4py import MPI
comm = MPI.COMM_WORLD
x = torch.full((1 << 20,), float(comm.rank + 1), device='cuda')
y = torch.empty_like(x)
torch.cuda.synchronize()
comm.Sendrecv(x, dest=1 - comm.rank, recvbuf=y, source=1 - comm.rank)
assert float(y[0]) == float(2 - comm.rank), float(y[0])
" > "$out/cuda-aware-probe.log" 2>&1; then
    cuda_aware=supported
    MPI_GAN_CUDA_AWARE=1 mdgan aware cuda 40
    if compare "$out/device/$last" "$out/aware/$last" 0 > /dev/null; then cuda_aware_exact=1
    else cuda_aware_exact=0; fi
  fi
fi
echo "CUDA-aware MPI: $cuda_aware (probe log: $out/cuda-aware-probe.log)"

speed() {  # speed NAME DEVICE: iterations per second of a 300-iteration run (its own loop time)
  mdgan "$1" "$2" 300 --checkpoint-every 1000 >&2
  "$PYTHON" -c "
import h5py, sys
with h5py.File(sys.argv[1], 'r') as f:
    print(f'{300 / float(f[\"cost/wall_seconds\"][()].reshape(-1)[0]):.1f}')" "$out/$1/run.h5"
}
gpu_speed=$(speed speed-device "$DEVICE")
cpu_speed=$(speed speed-cpu cpu)
echo "gpu_cpu_max_rel_diff=$gpu_cpu"
echo "resume_exact=$resume_exact"
echo "cuda_aware=$cuda_aware"
[ -z "$cuda_aware_exact" ] || echo "cuda_aware_exact=$cuda_aware_exact"
echo "gpu_iterations_per_s=$gpu_speed"
echo "cpu_iterations_per_s=$cpu_speed"
echo "gpu_speedup=$("$PYTHON" -c "print(f'{$gpu_speed / $cpu_speed:.2f}')")"
[ "$resume_exact" = 1 ] || failures+=("the resumed $DEVICE run is not exact")
[ "$cuda_aware_exact" != 0 ] || failures+=("the CUDA-aware run differs from the staged one")
for failure in "${failures[@]}"; do echo "gpu_check: FAILED: $failure" >&2; done
[ ${#failures[@]} -eq 0 ]
