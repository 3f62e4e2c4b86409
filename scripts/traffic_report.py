"""Traffic reduction next to model quality, for two or more asgd / mdgan run files.

Usage: ``python scripts/traffic_report.py [--markdown] runs/a/run.h5 runs/b/run.h5 [...]``

Per run: steps (pushes or iterations), bytes workers sent to the server (kind
``push`` for asgd, ``feedback`` for mdgan; other kinds and directions are not
counted), the reduction factor against the first uncompressed run of the same
kind among the files (per step, so runs of different lengths compare), or
against the analytic uncompressed size when there is none, and the quality:
for asgd the final accuracy on the validation samples (``--validation``, held
out from the training set) and on the test set, for mdgan the mean losses over
the last 10% of iterations.

Per setting (asgd runs that differ only in their seed, ``mpi_gan.analysis.groups``):
seeds, bytes per push, reduction against the first uncompressed setting, and
the validation and test accuracy as mean, sample std (ddof=1; NaN for one seed)
and min..max over the seeds, each with its difference of means from that
uncompressed setting in points. Validation accuracy is what settings are
chosen on; test accuracy is measured once per run, at its end, and only
reported. ``--markdown`` prints only the settings table, as Markdown (docs/asgd.md).
"""
from __future__ import annotations

import argparse
import sys

import h5py
import numpy as np

from mpi_gan.analysis.groups import group_key
from mpi_gan.analysis.runs import config_of
from mpi_gan.io.runlog import read_traffic

WORKER_KIND = {"mpi-gan-asgd-run": "push", "mpi-gan-mdgan-run": "feedback"}


def final_accuracies(f) -> tuple[float, float]:
    """(validation, test) accuracy of an asgd run file: the last evaluation on each set
    (NaN where there is none: a run without --validation, or one not finished). Files
    written before the ``validation`` column evaluated on the test set only."""
    accuracy = f["metrics/eval/accuracy"][()]
    flag = f["metrics/eval/validation"][()] if "validation" in f["metrics/eval"] else \
        np.zeros(len(accuracy), np.int64)
    last = {v: float(accuracy[flag == v][-1]) if (flag == v).any() else float("nan")
            for v in (0, 1)}
    return last[1], last[0]


def setting_label(config: dict) -> str:
    """A short label of an asgd setting: compressor, residual memory, staleness step."""
    compress = str(config.get("compress", "none"))
    parts = [compress]
    if compress != "none":
        parts.append("residual" if bool(config.get("residual", True)) else "no residual")
    parts.append(f"staleness {config.get('staleness', 'adacomp')}")
    return ", ".join(parts)


def summarise(path: str) -> dict:
    with h5py.File(path, "r") as f:
        fmt = f.attrs["format"]
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt not in WORKER_KIND:
            raise SystemExit(f"traffic_report: {path} is not an mpi-gan run file ({fmt!r})")
        config = config_of(f)
        kind = WORKER_KIND[fmt]
        traffic = read_traffic(f)
        nbytes, messages = traffic.matrix(kind), traffic.matrix(kind, "messages")
        row = {"path": path, "format": fmt, "compress": str(config.get("compress", "none")),
               "steps": int(f.attrs["iteration"]), "bytes": int(nbytes[1:, 0].sum()),
               "messages": int(messages[1:, 0].sum()), "finished": int(f.attrs["finished"])}
        if fmt == "mpi-gan-asgd-run":
            tensors = [d for d in f["model/model"].values() if isinstance(d, h5py.Dataset)]
            # a dense push: 8-byte version + per tensor a 'none' payload (header + float32s)
            row["dense_per_message"] = 8 + sum(24 + 4 * len(d.shape) + 4 * int(np.prod(d.shape))
                                               for d in tensors)
            validation, test = final_accuracies(f)
            row.update(validation_accuracy=validation, test_accuracy=test,
                       seed=int(config.get("seed", 0)), setting=setting_label(config),
                       key=group_key({"config": config, "algorithm": "asgd",
                                      "world": int(f.attrs["world_size"]),
                                      "iteration": row["steps"]}))
            row["quality"] = (f"accuracy: validation {validation:.4f}, test {test:.4f}"
                              if not np.isnan(validation) else f"accuracy: test {test:.4f}")
        else:
            row["dense_per_message"] = int(config["batch_size"]) * 784 * 4
            d, g = f["metrics/d_loss"][()], f["metrics/g_loss"][()]
            tail = max(1, len(d) // 10)
            row["quality"] = f"D loss {d[-tail:].mean():.3f}, G loss {g[-tail:].mean():.3f}"
    return row


def spread(values) -> dict:
    """mean, std (sample, ddof=1: NaN for one value), min, max of ``values`` (NaN in,
    NaN out: a missing accuracy is never averaged away)."""
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else float("nan"),
            "min": float(a.min()), "max": float(a.max())}


def aggregate(runs: list[dict]) -> list[dict]:
    """One dict per setting, in order of first appearance, from per-run dicts with
    ``key`` (equal for runs of one setting), ``setting`` (its label), ``compress``,
    ``seed``, ``bytes`` and ``messages`` (worker->server), ``dense_per_message``,
    ``validation_accuracy`` and ``test_accuracy``.

    Each: setting, compress, seeds (sorted), bytes_per_push (pooled: bytes / messages
    over the runs), reduction (against the first setting with compress 'none', else
    against ``dense_per_message``: ``analytic`` True), validation and test (``spread``
    over the runs), validation_vs_dense and test_vs_dense (difference of means from that
    uncompressed setting, in accuracy points: x 100; NaN without one)."""
    groups: dict = {}
    for run in runs:
        groups.setdefault(run["key"], []).append(run)
    out = []
    for group in groups.values():
        first = group[0]
        out.append({
            "setting": first["setting"], "compress": first["compress"],
            "seeds": sorted(r["seed"] for r in group),
            "bytes_per_push": sum(r["bytes"] for r in group) / max(sum(r["messages"]
                                                                       for r in group), 1),
            "dense_per_message": first["dense_per_message"],
            "validation": spread([r["validation_accuracy"] for r in group]),
            "test": spread([r["test_accuracy"] for r in group])})
    base = next((s for s in out if s["compress"] == "none"), None)
    for s in out:
        reference = base["bytes_per_push"] if base else s["dense_per_message"]
        s["reduction"] = reference / s["bytes_per_push"]
        s["analytic"] = base is None
        for which in ("validation", "test"):
            s[f"{which}_vs_dense"] = (100 * (s[which]["mean"] - base[which]["mean"])
                                      if base else float("nan"))
    return out


def _acc(stats: dict) -> tuple[str, str, str]:
    if np.isnan(stats["mean"]):
        return "-", "-", "-"
    std = "-" if np.isnan(stats["std"]) else f"{stats['std']:.4f}"
    return f"{stats['mean']:.4f}", std, f"{stats['min']:.4f}..{stats['max']:.4f}"


def _points(value: float, is_base: bool) -> str:
    return "" if is_base or np.isnan(value) else f"{value:+.2f} pt"


def settings_lines(settings: list[dict], markdown: bool = False) -> list[str]:
    """The settings table as text lines (``markdown``: a Markdown table)."""
    head = ["setting", "seeds", "bytes/push", "reduction",
            "VALIDATION acc mean", "std", "min..max", "vs dense",
            "TEST acc mean", "std", "min..max", "vs dense"]
    rows = []
    for s in settings:
        is_base = s["compress"] == "none" and not s["analytic"]
        rows.append([s["setting"], str(len(s["seeds"])), f"{s['bytes_per_push']:,.0f}",
                     f"{s['reduction']:.1f}x" + ("*" if s["analytic"] else ""),
                     *_acc(s["validation"]), _points(s["validation_vs_dense"], is_base),
                     *_acc(s["test"]), _points(s["test_vs_dense"], is_base)])
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
            ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(head)] + [fmt(r) for r in rows]


NOTE = ("VALIDATION: accuracy on the training samples held out by --validation (never "
        "trained on): choose settings on these.\nTEST: accuracy on the test set, measured "
        "once at the end of each run: report these, do not choose on them.\nmean over the "
        "seeds; std: sample standard deviation (ddof=1, '-' for one seed); vs dense: "
        "difference of means from the uncompressed setting, in accuracy points.")

ANALYTIC = "*: against the analytic size of uncompressed pushes (no uncompressed run given)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run.h5 files of mpi_gan.asgd or mpi_gan.mdgan")
    parser.add_argument("--markdown", action="store_true",
                        help="print only the per-setting table of the asgd runs, as Markdown")
    args = parser.parse_args(argv)
    rows = [summarise(p) for p in args.runs]
    asgd = [r for r in rows if r["format"] == "mpi-gan-asgd-run"]
    if args.markdown:
        settings = aggregate(asgd)
        print("\n".join(settings_lines(settings, markdown=True)))
        print("\n" + NOTE.replace("\n", "\n\n"))
        if any(s["analytic"] for s in settings):
            print("\n" + ANALYTIC)
        return 0
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
              f"{r['bytes'] / 1e6:>10.2f} {reference / per_message:>9.1f}{label}  {r['quality']}"
              + ("" if r["finished"] else "  (not finished)"))
    if any(r["format"] not in baselines for r in rows):
        print("x*: against the analytic size of uncompressed messages (no uncompressed run given)")
    if asgd:
        settings = aggregate(asgd)
        print("\nper setting (asgd runs that differ only in their seed):")
        print("\n".join(settings_lines(settings, args.markdown)))
        print(NOTE)
        if any(s["analytic"] for s in settings):
            print(ANALYTIC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
