"""docs/results.md's score table from ``mpi_gan.analyze``'s groups.csv: one row per setting
(runs that differ only in their seed), each score as mean +- std (min..max) over the seeds.

Usage: ``python scripts/results_table.py runs/compare/analysis/groups.csv [real-*.txt ...]``

A value is bolded only where it is a real winner within its data and split: its worst
seed beats every other setting's best seed (higher MNIST score, lower FID). The real test
images' ceilings come from ``evaluate --real`` outputs given after the CSV (the files
``scripts/compare.sh`` writes), read from their ``mnist_score=`` and
``classifier_fid=`` lines.
"""
from __future__ import annotations

import os
import re
import sys

import pandas as pd

NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
SCORES = (("mnist_score", True), ("classifier_fid", False))  # (column, higher is better)


def setting_name(row) -> str:
    """e.g. ``MD-GAN k=1``, ``MD-GAN k=1, feedback adacomp:ratio=0.1, no residual`` (the
    residual memory is named only where the analysed runs differ in it)."""
    if row.algorithm == "mdgan":
        name = f"MD-GAN k={int(row.k)}"
        compress = re.search(r"compress=(\S+)", str(row.setting))
        if compress and compress.group(1) != "none":
            name += f", feedback {compress.group(1)}"
            if re.search(r"residual=False", str(row.setting)):
                name += ", no residual"
            elif re.search(r"residual=True", str(row.setting)):
                name += ", residual"
        return name
    return {"flgan": "FL-GAN", "standalone": "standalone GAN"}.get(row.algorithm, row.algorithm)


def cell(row, column: str, bold: bool) -> str:
    mean, std = row[f"{column}_mean"], row[f"{column}_std"]
    low, high = row[f"{column}_min"], row[f"{column}_max"]
    digits = 2 if column == "mnist_score" else 1
    text = f"{mean:.{digits}f}" if row.seeds == 1 else \
        f"{mean:.{digits}f} +- {std:.{digits}f} ({low:.{digits}f}..{high:.{digits}f})"
    return f"**{text}**" if bold else text


def winners(group: pd.DataFrame, column: str, higher: bool) -> set:
    """Index of the setting whose worst seed beats every other's best, if one does."""
    best = None
    for i, row in group.iterrows():
        worst = row[f"{column}_min"] if higher else row[f"{column}_max"]
        others = group.drop(index=i)
        rivals = others[f"{column}_max"] if higher else others[f"{column}_min"]
        if len(others) and ((worst > rivals).all() if higher else (worst < rivals).all()):
            best = i
    return {best} if best is not None else set()


def ceiling(paths: list[str], dataset: str) -> str | None:
    for path in paths:
        text = open(path).read()
        if os.path.basename(path) == f"real-{dataset}.txt":
            score = re.search(r"mnist_score=([\d.]+)", text)
            fid = re.search(r"classifier_fid=([\d.]+)", text)
            if score and fid:
                return f"| {NAMES[dataset]} | real test images (ceiling) | - | - | " \
                       f"{float(score.group(1)):.2f} | {float(fid.group(1)):.1f} |"
    return None


def main(argv: list[str]) -> None:
    groups = pd.read_csv(argv[0])
    groups = groups[groups.dataset.isin(NAMES)]
    print("| data | split | setting | seeds | MNIST score (higher is better) | "
          "classifier FID (lower is better) |")
    print("|---|---|---|---|---|---|")
    for (dataset, split), group in groups.groupby(["dataset", "split"], sort=False):
        line = ceiling(argv[1:], dataset) if split == "iid" else None
        if line:
            print(line)
        bold = {column: winners(group, column, higher) for column, higher in SCORES}
        for i, row in group.iterrows():
            print(f"| {NAMES[dataset]} | {split} | {setting_name(row)} | {row.seed_list} | "
                  f"{cell(row, 'mnist_score', i in bold['mnist_score'])} | "
                  f"{cell(row, 'classifier_fid', i in bold['classifier_fid'])} |")
    feedback_table(groups)


def feedback_table(groups: pd.DataFrame) -> None:
    """MD-GAN's feedback through the server, dense against AdaComp-compressed, with the
    scores: quality against bytes."""
    rows = groups[(groups.algorithm == "mdgan") & (groups.dataset == "mnist") &
                  (groups.split == "iid") & (groups.k == 1)]
    if len(rows) < 2:
        return
    dense = rows[rows.setting.str.contains("compress=none")]
    if not len(dense):  # no uncompressed run among them: nothing to measure against
        return
    dense = dense.iloc[0]
    print("\n| MNIST iid | seeds | feedback into the server (MB) | reduction | server sent + "
          "feedback (GB) | MNIST score | classifier FID |\n|---|---|---|---|---|---|---|")
    for _, row in rows.sort_values("bytes_feedback_mean", ascending=False).iterrows():
        print(f"| {setting_name(row)} | {row.seed_list} | {row.bytes_feedback_mean / 1e6:.1f} | "
              f"{dense.bytes_feedback_mean / row.bytes_feedback_mean:.1f}x | "
              f"{(row.server_bytes_sent_mean + row.bytes_feedback_mean) / 1e9:.2f} | "
              f"{cell(row, 'mnist_score', False)} | {cell(row, 'classifier_fid', False)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
