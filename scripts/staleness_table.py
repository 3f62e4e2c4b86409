"""docs/results.md's bounded-staleness table from the run files of
``scripts/staleness_benchmark.sh``: per dataset, straggler, staleness bound S and variant
(``--staleness-batches``, ``--staleness-quorum`` Q, ``--staleness-patience`` P and
``--staleness-lookahead`` L: e.g. ``eager``, ``fresh Q3``, ``fresh P2``, ``eager L1``), over
the seeds (mean +- std, and min..max where it
decides a floor):

* G updates per second of training: updates over the training loop's wall time
  (``/cost/wall_seconds``: checkpoints and drains included, start-up not) less the
  evaluations' seconds (``/scores/eval_seconds``: workers of S > 0 go on computing their
  step in flight meanwhile, as they would meanwhile anyway), and its ratio to S = 0 of
  the same seed: the reference is measured in the same benchmark, one run after the
  other;
* the feedbacks dropped (staler than S) and the mean staleness of those applied;
* quality at equal G updates (the last evaluation: ring and grid's modes covered,
  high-quality share and mode KL; MNIST's MNIST score and classifier FID) and at equal
  training time: the first score at the last evaluation each run had reached when S = 0
  of its seed had trained for half its updates (training time at an evaluation: its
  ``wall_seconds`` less the evaluations' seconds so far; its G updates in brackets).

Usage: ``python scripts/staleness_table.py RUN.h5 ...``. Its last lines are the issue's
floors as ``name=value``: ``speedup_straggler_S2_min`` (>= 2: S = 2 against S = 0, with
one worker 4 times slower, the worst seed), ``quality_S2_within_spread`` (1: S = 2's mean
first score at equal updates, modes or MNIST score, no worse than the worst seed of S = 0,
on each dataset, with the straggler),
``speedup_no_straggler_min`` (>= 1: the slowest S > 0 against S = 0, no straggler, mean
over seeds), once per variant, each name ending in ``_<variant>`` (``_eager``,
``_fresh_Q3``, ...).
"""
from __future__ import annotations

import sys

import h5py
import numpy as np
import pandas as pd

QUALITY = {"toy": ("modes", "high_quality", "mode_kl"),  # the first: the floor's score
           "mnist": ("mnist_score", "classifier_fid")}
HIGHER = {"modes": True, "high_quality": True, "mode_kl": False, "mnist_score": True,
          "classifier_fid": False}


def scores_of(dataset: str) -> tuple[str, ...]:
    return QUALITY["mnist" if dataset in ("mnist", "fashion-mnist") else "toy"]


def read(path: str) -> dict:
    with h5py.File(path, "r") as f:
        cfg = dict(f["config"].attrs)
        dataset = str(cfg["dataset"])
        scores = {k: f[f"scores/{k}"][()] for k in ("iteration", "wall_seconds",
                                                     "eval_seconds", *scores_of(dataset))}
        scores["train_seconds"] = scores["wall_seconds"] - np.cumsum(scores["eval_seconds"])
        updates = len(f["metrics/iteration"])
        train = float(np.ravel(f["cost/wall_seconds"][()])[0]) - scores["eval_seconds"].sum()
        row = dict(dataset=dataset, straggler=str(cfg["slow"]) or "none",
                   S=int(cfg["staleness_bound"]), variant=variant(cfg),
                   seed=int(cfg["seed"]), updates=updates,
                   rate=updates / train, scores=scores, dropped=0.0, tau=0.0)
        if "schedule" in f:
            s = {k: f[f"schedule/{k}"][()] for k in ("event", "version", "sent_version",
                                                      "applied")}
            arrivals = s["event"] == 0
            applied = s["applied"][arrivals] == 1
            tau = (s["version"] - s["sent_version"])[arrivals]
            row.update(dropped=100 * (1 - applied.mean()), tau=tau[applied].mean())
    for k in scores_of(dataset):
        row[k] = scores[k][-1]
    return row


def variant(cfg: dict) -> str:
    """How an S > 0 run steps G: ``--staleness-batches``, then Q, P (fresh batches with
    the default quorum), L and "make-up" (``--staleness-make-up``) where set ("-" for S =
    0)."""
    if not int(cfg["staleness_bound"]):
        return "-"
    quorum, lookahead = int(cfg.get("staleness_quorum", 0)), float(cfg.get(
        "staleness_lookahead", 0.0))
    batches = str(cfg.get("staleness_batches", "eager"))
    # fresh, the default quorum: G waits for the workers keeping pace (patience P), or
    # before --staleness-patience (P 0) for N - 1 fresh feedbacks
    patience = float(cfg.get("staleness_patience", 0.0)) \
        if batches == "fresh" and not quorum else 0.0
    return " ".join([batches] + ([f"Q{quorum}"] if quorum else []) +
                    ([f"P{patience:g}"] if patience else []) +
                    ([f"L{lookahead:g}"] if lookahead else []) +
                    (["make-up"] if bool(cfg.get("staleness_make_up", False)) else []))


def at_time(run: dict, limit: float) -> tuple[float, float]:
    """(G updates, first score) of the run's last evaluation within ``limit`` training
    seconds (none: NaN)."""
    iters, first = run["scores"]["iteration"], scores_of(run["dataset"])[0]
    reached = [i for i, t in enumerate(run["scores"]["train_seconds"]) if t <= limit]
    if not reached:
        return np.nan, np.nan
    return iters[reached[-1]], run["scores"][first][reached[-1]]


def spread(values: pd.Series, digits: int = 1, span: bool = False) -> str:
    text = f"{values.mean():.{digits}f} ± {values.std(ddof=1) if len(values) > 1 else 0:.{digits}f}"
    return text + (f" ({values.min():.{digits}f}..{values.max():.{digits}f})" if span else "")


def floors_of(runs: pd.DataFrame, suffix: str) -> dict:
    """The issue's floors for the S > 0 runs of one variant against S = 0, each name
    with ``suffix``."""
    slow = runs[(runs.straggler != "none") & (runs.S == 2)]
    floors = {"speedup_straggler_S2_min": slow.speedup.min() if len(slow) else np.nan}
    within = []
    for dataset in sorted(set(runs.dataset)):
        first = scores_of(dataset)[0]
        rows = runs[(runs.dataset == dataset) & (runs.straggler != "none")]
        ref, two = rows[rows.S == 0][first], rows[rows.S == 2][first]
        if len(ref) and len(two):
            worst = ref.min() if HIGHER[first] else ref.max()
            within.append(two.mean() >= worst if HIGHER[first] else two.mean() <= worst)
    floors["quality_S2_within_spread"] = int(all(within)) if within else np.nan
    fast = runs[(runs.straggler == "none") & (runs.S > 0)].groupby(["dataset", "S"]).speedup
    floors["speedup_no_straggler_min"] = fast.mean().min() if len(fast.mean()) else np.nan
    return {name + suffix: value for name, value in floors.items()}


def main(paths: list[str]) -> None:
    finished = []
    for p in paths:
        with h5py.File(p, "r") as f:
            if f.attrs.get("finished") == 1:
                finished.append(p)
    for p in sorted(set(paths) - set(finished)):
        print(f"left out, not finished: {p}", file=sys.stderr)
    runs = pd.DataFrame([read(p) for p in finished])
    keys = ["dataset", "straggler", "S", "variant", "seed"]
    if runs.duplicated(keys).any():
        sys.exit(f"more than one run of {runs[runs.duplicated(keys)][keys].values.tolist()}")
    base = runs[runs.S == 0].set_index(["dataset", "straggler", "seed"])
    missing = {(r.dataset, r.straggler, r.seed) for r in runs.itertuples()} - set(base.index)
    if missing:
        sys.exit(f"no S = 0 run to compare with for {sorted(missing)}")
    runs["speedup"] = [r.rate / base.loc[(r.dataset, r.straggler, r.seed), "rate"]
                       for r in runs.itertuples()]
    timed = []
    for r in runs.itertuples():
        ref = base.loc[(r.dataset, r.straggler, r.seed)]
        if ref.updates // 2 not in list(ref.scores["iteration"]):
            sys.exit(f"S = 0 of {r.dataset}, {r.straggler}, seed {r.seed} was not evaluated "
                     f"at half its updates ({ref.updates // 2}): choose EVAL_EVERY so")
        half = list(ref.scores["iteration"]).index(ref.updates // 2)
        timed.append(at_time(r._asdict(), ref.scores["train_seconds"][half]))
    runs["t_iteration"], runs["t_score"] = zip(*timed)
    for dataset in sorted(set(runs.dataset)):
        names = scores_of(dataset)
        print(f"\n{dataset}:\n")
        print("| straggler | S | variant | seeds | G updates/s | vs S = 0 | dropped % | mean tau | "
              + " | ".join(names) + f" | at equal time: {names[0]} [updates] |")
        print("|---" * (9 + len(names)) + "|")
        for (straggler, s, name), g in runs[runs.dataset == dataset].groupby(
                ["straggler", "S", "variant"]):
            cells = [spread(g[n], 1 if n == "modes" else 3 if n != "classifier_fid" else 2,
                            span=n == names[0]) for n in names]
            print(f"| {straggler} | {s} | {name} | {len(g)} | {spread(g.rate)} | "
                  f"{spread(g.speedup, 2, span=True)} | {spread(g.dropped, 2)} | "
                  f"{g.tau.mean():.2f} | " + " | ".join(cells) +
                  f" | {spread(g.t_score, 2)} [{g.t_iteration.mean():.0f}] |")
    floors = {}
    for name in sorted(set(runs[runs.S > 0].variant)):
        floors.update(floors_of(runs[(runs.S == 0) | (runs.variant == name)],
                                "_" + name.replace(" ", "_")))
    print()
    for name, value in floors.items():
        print(f"{name}={value:.3f}" if isinstance(value, float) else f"{name}={value}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
