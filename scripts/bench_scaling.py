"""How each cost of an MD-GAN run grows with the number of ranks P, measured in real runs at
several P, each cost's growth exponent fitted, and its value extrapolated to 1,000 ranks.

Usage: ``python scripts/bench_scaling.py [--ranks 4 8 16 32 64] [--json FILE] [--before FILE] [--measured FILE]
[--plot FILE]``

Each P is a real ``mpiexec -n P python -m mpi_gan.mdgan`` run (rank 0 the server, P - 1
workers) with the smallest models on synthetic data: ``--dataset synthetic`` (MNIST-shaped,
seeded; ``--synthetic-size`` fixed, so each worker's shard shrinks as P grows), the MLP,
batches of 10, 20 iterations, a checkpoint at iteration 10 and one at the end, ``--log-every
1``, no scoring, p2p exchange. All ranks run on this machine, oversubscribed when P exceeds
its cores: the seconds measure the ranks' compute sharing the cores, not a network.

Costs, read from the run's files and logs:
  * ``startup_s``: from the launch to rank 0's log line of iteration 1 (what a user waits
    for; iteration 1 included);
  * ``iteration_s``: the median of rank 0's ``metrics/seconds`` (iterations 3.. but the
    checkpoint's);
  * ``rank0_peak_mb``, ``worker_peak_mb`` (the largest), ``all_peak_mb`` (the sum):
    peak resident set sizes, from each rank's ``peak resident memory`` log line;
  * ``checkpoint_s``: rank 0's log, from its line of iteration 10 to its line of the
    checkpoint of iteration 10 (writing it and updating the run file);
  * ``rank0_checkpoint_bytes``, ``worker_checkpoint_bytes`` (the largest): the bytes each
    rank writes for the checkpoint of iteration 10 (one file written by rank 0, or a
    directory of shards and rank 0's manifest);
  * ``traffic_counter_bytes``: the storage of every dataset under /traffic in run.h5 (HDF5
    allocates whole chunks: a resizable dataset takes at least one chunk), and
    ``traffic_counter_data_bytes``: the bytes of the values they hold;
  * ``run_file_bytes``: run.h5's size.

Prints a table, then ``name=value`` lines: every cost at every P (``<cost>_p<P>``), each
cost's fitted exponent b of cost = a * P^b (least squares on log-log; ``<cost>_exponent``),
its extrapolation to 1,000 ranks (``<cost>_p1000``), and the issue's floors:
``rank0_peak_ratio`` (rank 0's peak at the largest P over the smallest; floor 1.3),
``rank0_checkpoint_bytes_ratio`` (the same for its checkpoint bytes) and
``traffic_counter_ratio`` and ``traffic_counter_data_ratio`` (storage and values of the
counters at the largest P over those at P = 16; floor 4).
``--json`` keeps the measurements, ``--before`` draws an earlier run's beside them in the
``--plot`` (PNG, one panel per cost, log-log).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

BIN = os.path.dirname(sys.executable)
MPIEXEC = os.path.join(BIN, "mpiexec")
ITERATIONS, CHECKPOINT_AT = 20, 10
RUN_ARGS = ["--dataset", "synthetic", "--synthetic-size", "6400", "--model", "mlp",
            "--batch-size", "10", "--iterations", str(ITERATIONS), "--checkpoint-every",
            str(CHECKPOINT_AT), "--keep-checkpoints", "2", "--log-every", "1",
            "--eval-every", "0", "--exchange", "p2p", "--seed", "0"]
COSTS = {  # name: (unit, what)
    "startup_s": ("s", "launch to iteration 1"),
    "iteration_s": ("s", "seconds per iteration"),
    "rank0_peak_mb": ("MB", "rank 0's peak memory"),
    "worker_peak_mb": ("MB", "a worker's peak memory (largest)"),
    "all_peak_mb": ("MB", "every rank's peak memory, summed"),
    "checkpoint_s": ("s", "checkpoint time"),
    "rank0_checkpoint_bytes": ("B", "bytes rank 0 writes per checkpoint"),
    "worker_checkpoint_bytes": ("B", "bytes a worker writes per checkpoint (largest)"),
    "traffic_counter_bytes": ("B", "traffic counters in run.h5 (storage)"),
    "traffic_counter_data_bytes": ("B", "traffic counters in run.h5 (values)"),
    "run_file_bytes": ("B", "run.h5"),
}
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def stamp(line: str) -> float:
    """Unix time of a log line (``logging``'s default asctime, local time)."""
    text = _STAMP.match(line).group(1)
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def first_line(lines: list[str], pattern: str) -> str:
    found = [line for line in lines if re.search(pattern, line)]
    if not found:
        raise SystemExit(f"no log line matches {pattern!r}")
    return found[0]


def storage_bytes(group) -> int:
    """The bytes the datasets under an h5py group take in the file."""
    sizes = []
    group.visititems(lambda name, obj: sizes.append(obj.id.get_storage_size())
                     if isinstance(obj, h5py.Dataset) else None)
    return int(sum(sizes))


def checkpoint_bytes(out: str, iteration: int, ranks: int) -> list[int]:
    """Bytes each rank wrote for the checkpoint of ``iteration``: the file
    ``ckpt_<iteration>.h5`` is rank 0's (the whole checkpoint before shards, the manifest
    since), and so is its row segment (``rows/<shard directory>.h5``, since format 5),
    and each ``rank_<r>.h5`` of the shard directory it names is rank r's."""
    path = os.path.join(out, "checkpoints", f"ckpt_{iteration:08d}.h5")
    per_rank = [0] * ranks
    per_rank[0] = os.path.getsize(path)
    with h5py.File(path, "r") as f:
        directory = f["shards"].attrs["directory"] if "shards" in f else None
    segment = os.path.join(out, "checkpoints", "rows", f"{directory}.h5")
    if directory is not None and os.path.exists(segment):
        per_rank[0] += os.path.getsize(segment)
    if directory is not None:
        directory = os.path.join(os.path.dirname(path), directory)
        for name in os.listdir(directory):
            match = re.fullmatch(r"rank_(\d+)\.h5", name)
            per_rank[int(match.group(1))] += os.path.getsize(os.path.join(directory, name))
    return per_rank


def data_bytes(group) -> int:
    """The bytes of the values of the datasets under an h5py group (what they hold)."""
    sizes = []
    group.visititems(lambda name, obj: sizes.append(obj.size * obj.dtype.itemsize)
                     if isinstance(obj, h5py.Dataset) else None)
    return int(sum(sizes))


def measure(ranks: int, cache: str) -> dict[str, float]:
    """One run on ``ranks`` ranks and its costs (``COSTS``)."""
    with tempfile.TemporaryDirectory() as out:
        launched = time.time()
        run = subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mpi_gan.mdgan",
                              "--out", out, "--cache-dir", cache, *RUN_ARGS],
                             capture_output=True, text=True, timeout=3600)
        if run.returncode != 0:
            sys.exit(f"{ranks} ranks failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
        logs = os.path.join(out, "logs")
        rank0 = open(os.path.join(logs, "rank0.log")).read().splitlines()
        peaks = []
        for r in range(ranks):
            text = open(os.path.join(logs, f"rank{r}.log")).read()
            peaks.append(float(re.findall(r"peak resident memory ([\d.]+) MB", text)[-1]))
        iteration_at = stamp(first_line(rank0, rf"INFO iter {CHECKPOINT_AT}/"))
        written_at = stamp(first_line(rank0, rf"INFO checkpoint \S*ckpt_{CHECKPOINT_AT:08d}"))
        with h5py.File(os.path.join(out, "run.h5"), "r") as f:
            seconds = f["metrics/seconds"][()]
            counters = storage_bytes(f["traffic"])
            counter_data = data_bytes(f["traffic"])
        steady = [s for i, s in enumerate(seconds, start=1) if i >= 3 and i != CHECKPOINT_AT]
        written = checkpoint_bytes(out, CHECKPOINT_AT, ranks)
        return {"startup_s": stamp(first_line(rank0, r"INFO iter 1/")) - launched,
                "iteration_s": float(np.median(steady)),
                "rank0_peak_mb": peaks[0], "worker_peak_mb": max(peaks[1:]),
                "all_peak_mb": sum(peaks), "checkpoint_s": written_at - iteration_at,
                "rank0_checkpoint_bytes": written[0],
                "worker_checkpoint_bytes": max(written[1:]),
                "traffic_counter_bytes": counters, "traffic_counter_data_bytes": counter_data,
                "run_file_bytes": os.path.getsize(os.path.join(out, "run.h5"))}


def fit(ps: list[int], values: list[float]) -> tuple[float, float]:
    """(a, b) of value = a * P^b by least squares on log-log; NaNs if a value is not > 0."""
    v = np.asarray(values, dtype=float)
    if len(ps) < 2 or not np.all(v > 0):
        return float("nan"), float("nan")
    b, log_a = np.polyfit(np.log(ps), np.log(v), 1)
    return float(np.exp(log_a)), float(b)


def plot(path: str, results: dict, before: dict | None) -> None:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 6, figsize=(24, 7.5), constrained_layout=True)
    for ax in axes.flat[len(COSTS):]:
        ax.set_visible(False)
    for ax, (cost, (unit, what)) in zip(axes.flat, COSTS.items()):
        for label, data, style, color in (("before", before, "--o", "tab:blue"),
                                          ("now", results, "-o", "tab:orange")):
            if not data:
                continue
            ps = sorted(int(p) for p in data)
            values = [data[str(p)].get(cost, 0) for p in ps]
            if any(v > 0 for v in values):
                ax.plot(ps, [v if v > 0 else np.nan for v in values], style, label=label,
                        color=color)
        ax.set(xscale="log", yscale="log", title=what, xlabel="ranks P", ylabel=unit)
        ax.set_xticks(ps, [str(p) for p in ps])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if ax.lines:
            ax.legend()
    fig.suptitle("MD-GAN costs against the number of ranks (synthetic data, MLP, "
                 "one machine, oversubscribed)")
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16, 32, 64],
                        help="world sizes P (rank 0 and P - 1 workers), each at least 2")
    parser.add_argument("--json", default="", help="write the measurements to this file")
    parser.add_argument("--before", default="", help="an earlier --json, drawn in the plot")
    parser.add_argument("--plot", default="", help="write a PNG of every cost against P")
    parser.add_argument("--measured", default="",
                        help="an earlier --json to report (and plot) instead of measuring")
    args = parser.parse_args()
    if min(args.ranks) < 2:
        parser.error("--ranks: every world size must be at least 2")
    if args.measured:
        results = json.load(open(args.measured))
        ps = sorted(int(p) for p in results)
    else:
        ps = sorted(set(args.ranks))
        with tempfile.TemporaryDirectory() as cache:
            measure(2, cache)  # fills the dataset cache: its one-off conversion not counted
            results = {str(p): measure(p, cache) for p in ps}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        before = json.load(open(args.before)) if args.before else None
        plot(args.plot, results, before)
    print(f"{'cost':24}" + "".join(f"{'P=' + str(p):>12}" for p in ps) + f"{'exponent':>10}"
          f"{'P=1000':>12}")
    lines = []
    for cost in COSTS:
        values = [results[str(p)][cost] for p in ps]
        a, b = fit(ps, values)
        at_1000 = a * 1000 ** b
        print(f"{cost:24}" + "".join(f"{v:>12.4g}" for v in values) + f"{b:>10.2f}"
              f"{at_1000:>12.4g}")
        lines += [f"{cost}_p{p}={v:.6g}" for p, v in zip(ps, values)]
        lines += [f"{cost}_exponent={b:.3f}", f"{cost}_p1000={at_1000:.6g}"]
    lo, hi = results[str(ps[0])], results[str(ps[-1])]
    lines.append(f"rank0_peak_ratio={hi['rank0_peak_mb'] / lo['rank0_peak_mb']:.3f}")
    lines.append("rank0_checkpoint_bytes_ratio="
                 f"{hi['rank0_checkpoint_bytes'] / lo['rank0_checkpoint_bytes']:.3f}")
    if "16" in results:
        for name in ("traffic_counter_bytes", "traffic_counter_data_bytes"):
            if name in results["16"]:
                lines.append(f"{name[:-6]}_ratio={hi[name] / results['16'][name]:.3f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
