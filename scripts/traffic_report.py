"""Traffic reduction next to model quality, for two or more asgd / mdgan run files.

Usage: ``python scripts/traffic_report.py runs/a/run.h5 runs/b/run.h5 [...]``

For each run: steps (pushes or iterations), bytes workers sent to the server
(kind ``push`` for asgd, ``feedback`` for mdgan; other kinds and directions are
not counted), the reduction factor against the first uncompressed run of the
same kind among the files (per step, so runs of different lengths compare), or
against the analytic uncompressed size when there is none, and the final test
accuracy (asgd) or mean losses over the last 10% of iterations (mdgan).
"""
from __future__ import annotations

import argparse
import sys

import h5py
import numpy as np

WORKER_KIND = {"mpi-gan-asgd-run": "push", "mpi-gan-mdgan-run": "feedback"}


def summarise(path: str) -> dict:
    with h5py.File(path, "r") as f:
        fmt = f.attrs["format"]
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt not in WORKER_KIND:
            raise SystemExit(f"traffic_report: {path} is not an mpi-gan run file ({fmt!r})")
        config = dict(f["config"].attrs)
        kind = WORKER_KIND[fmt]
        nbytes = f[f"traffic/kinds/{kind}/bytes"][()]
        messages = f[f"traffic/kinds/{kind}/messages"][()]
        row = {"path": path, "format": fmt, "compress": str(config.get("compress", "none")),
               "steps": int(f.attrs["iteration"]), "bytes": int(nbytes[1:, 0].sum()),
               "messages": int(messages[1:, 0].sum())}
        if fmt == "mpi-gan-asgd-run":
            tensors = [d for d in f["model/model"].values() if isinstance(d, h5py.Dataset)]
            # a dense push: 8-byte version + per tensor a 'none' payload (header + float32s)
            row["dense_per_message"] = 8 + sum(24 + 4 * len(d.shape) + 4 * int(np.prod(d.shape))
                                               for d in tensors)
            row["quality"] = f"accuracy {f['metrics/eval/accuracy'][-1]:.4f}"
        else:
            row["dense_per_message"] = int(config["batch_size"]) * 784 * 4
            d, g = f["metrics/d_loss"][()], f["metrics/g_loss"][()]
            tail = max(1, len(d) // 10)
            row["quality"] = f"D loss {d[-tail:].mean():.3f}, G loss {g[-tail:].mean():.3f}"
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run.h5 files of mpi_gan.asgd or mpi_gan.mdgan")
    args = parser.parse_args(argv)
    rows = [summarise(p) for p in args.runs]
    baselines = {}
    for r in rows:
        if r["compress"] == "none":
            baselines.setdefault(r["format"], r)
    print(f"{'run':<40} {'compress':<34} {'steps':>7} {'w->s MB':>10} {'reduction':>10}  quality")
    for r in rows:
        per_message = r["bytes"] / max(r["messages"], 1)
        base = baselines.get(r["format"])
        reference = base["bytes"] / max(base["messages"], 1) if base else r["dense_per_message"]
        label = "x" if base else "x*"
        print(f"{r['path'][-40:]:<40} {r['compress'][:34]:<34} {r['steps']:>7} "
              f"{r['bytes'] / 1e6:>10.2f} {reference / per_message:>9.1f}{label}  {r['quality']}")
    if any(r["format"] not in baselines for r in rows):
        print("x*: against the analytic size of uncompressed messages (no uncompressed run given)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
