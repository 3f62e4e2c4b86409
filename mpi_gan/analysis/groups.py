"""Groups of runs that differ only in their seed, and their aggregate table.

Two runs (dicts of ``runs.read_run``) belong to one group when their algorithm, world
size, length (the iteration the file reached) and every configuration field are equal,
except ``seed`` and the fields that do not change the mathematics: the ``RESUMABLE``
fields of the run configurations (out, resume, data_dir, cache_dir, device, threads,
checkpoint_every, keep_checkpoints, log_every, eval_every, eval_size, fault_tolerant)
but for those that change what a score measures (eval_samples, inception_weights) and
MD-GAN's stragglers (slow), which change its speed. The Inception preprocessing is part
of the key of runs with Inception scores only, as the summary gives it
(``summary.inception_preprocessing``: ``legacy`` for files written before the choice, the
offline evaluation's for scores taken from it).
``iterations`` is resumable but is part of the key through the reached iteration: runs
of different length are never grouped. A field a run file lacks (written before the field
existed) counts as the value that run used: its default, or what the configuration's
``from_attrs`` reads it as (an MD-GAN run of S > 0 written before --staleness-batches was
eager; one of fresh batches written before --staleness-patience waited for N - 1).

``groups.csv`` (``group_table``): one row per group with its settings (algorithm,
dataset, split, model, workers, k, batch_size, iterations, inception_preprocessing when
some run has Inception scores, setting: a readable label),
seeds (how many runs), seed_list, finished (how many finished), and for every numeric
column of the summary table ``<col>_mean``, ``<col>_std`` (sample standard deviation,
ddof=1: NaN for one seed), ``<col>_min`` and ``<col>_max``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

import dataclasses

from ..algorithms import REGISTRY
from .summary import inception_preprocessing

_CONFIGS = {name: entry.configuration() for name, entry in REGISTRY.items()}
# configuration fields that do not take part in the group key
IGNORED = frozenset(set().union(*(cls.RESUMABLE for cls in _CONFIGS.values())) | {"seed"}) \
    - {"iterations", "eval_samples", "inception_weights", "inception_preprocessing", "slow"}
# each algorithm's configuration defaults: the value of a field its older run files lack
DEFAULTS = {name: dataclasses.asdict(cls()) for name, cls in _CONFIGS.items()}
# group-table columns that are settings (the same for every run of a group), not aggregated
SETTINGS = ("algorithm", "dataset", "split", "model", "workers", "k", "batch_size",
            "iterations", "inception_preprocessing")
STATS = ("mean", "std", "min", "max")
# key fields the base label shows (world as workers, k for MD-GAN)
_LABELLED = {"algorithm", "world", "iterations", "dataset", "split", "model", "batch_size",
             "k"}


def _hashable(value):
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    return value.item() if isinstance(value, np.generic) else value


def group_fields(run: dict) -> dict:
    """The fields that decide a run's group, by name."""
    config = {**DEFAULTS.get(run["algorithm"], {}), **run["config"]}
    if run["algorithm"] in _CONFIGS:  # as the run file reads back: what that run used
        config.update(dataclasses.asdict(_CONFIGS[run["algorithm"]].from_attrs(run["config"])))
    fields = {k: _hashable(v) for k, v in config.items() if k not in IGNORED}
    fields.pop("inception_preprocessing", None)  # it changed nothing without Inception
    preprocessing = inception_preprocessing(run)  # scores; the summary's, with them
    if preprocessing is not None:
        fields["inception_preprocessing"] = preprocessing
    fields.update(algorithm=run["algorithm"], world=int(run["world"]),
                  iterations=int(run["iteration"]))
    return fields


def group_key(run: dict) -> tuple:
    """A hashable key, equal for two runs exactly when they belong to one group."""
    return tuple(sorted(group_fields(run).items()))


def group_runs(runs: list[dict]) -> list[list[dict]]:
    """The runs partitioned into groups, groups in order of their first run, runs in input
    order within a group."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    return list(groups.values())


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting_labels(groups: list[list[dict]]) -> list[str]:
    """A readable, unique label per group: ``<algorithm> <dataset>/<split> <model> <n>w
    [k=<k>] b=<batch> <iterations>it`` and then ``name=value`` for every other key field
    whose value differs between the groups of the same algorithm (e.g. ``lr_d=0.002``;
    a field an algorithm does not have is never shown for it)."""
    fields = [group_fields(g[0]) for g in groups]
    names = sorted({n for f in fields for n in f} - _LABELLED)

    def varies(name: str, algorithm: str) -> bool:
        return len({repr(f.get(name)) for f in fields if f["algorithm"] == algorithm}) > 1
    labels = []
    for f in fields:
        label = (f"{f['algorithm']} {f.get('dataset')}/{f.get('split')} {f.get('model')} "
                 f"{max(f['world'] - 1, 1)}w")
        if f["algorithm"] == "mdgan" and "k" in f:
            label += f" k={f['k']}"
        label += f" b={f.get('batch_size')} {f['iterations']}it"
        labels.append(" ".join([label] + [f"{n}={_text(f[n])}" for n in names
                                          if n in f and varies(n, f["algorithm"])]))
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):  # cannot happen with distinct keys; kept unique anyway
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} #{seen[label]}"
    return labels


def label_runs(runs: list[dict], table: pd.DataFrame) -> pd.DataFrame:
    """The summary table (one row per run, rows in ``runs`` order) with ``seed`` and
    ``group`` (the group's setting label) columns added."""
    groups = group_runs(runs)
    of_run = {id(run): label for group, label in zip(groups, setting_labels(groups))
              for run in group}
    table = table.copy()
    table.insert(1, "seed", [run["config"].get("seed", np.nan) for run in runs])
    table["group"] = [of_run[id(run)] for run in runs]
    return table


def aggregated_columns(table: pd.DataFrame) -> list[str]:
    """The numeric summary columns a group table aggregates (not the settings)."""
    skip = set(SETTINGS) | {"seed", "finished"}
    return [c for c in table.select_dtypes("number").columns if c not in skip]


def group_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per group of a summary table that has ``seed`` and ``group`` columns (see
    ``label_runs``), groups in order of first appearance; columns in the module docstring."""
    by = table.groupby("group", sort=False)
    settings = by[[c for c in SETTINGS if c in table]].first()
    settings["setting"] = settings.index
    counts = by.agg(seeds=("seed", "size"), finished=("finished", "sum"),
                    seed_list=("seed", lambda s: " ".join(_text(v) for v in sorted(s))))
    columns = aggregated_columns(table)
    stats = by[columns].agg(list(STATS))
    stats.columns = [f"{column}_{stat}" for column, stat in stats.columns]
    return pd.concat([settings, counts[["seeds", "seed_list", "finished"]], stats],
                     axis=1).reset_index(drop=True)
