"""Where each rank of a run ran (the run file's /ranks): a table of every run's ranks and
one line per run that groups them by host."""
from __future__ import annotations

import pandas as pd

COLUMNS = ["run", "rank", "host", "pid", "device", "mpi_library"]


def ranks_table(runs: list[dict]) -> pd.DataFrame:
    """One row per rank of every run that records /ranks (``read_run``'s ``ranks``)."""
    rows = []
    for run in runs:
        ranks = run.get("ranks") or {}
        for rank, pid in enumerate(ranks.get("pid", [])):
            rows.append({"run": run["name"], "rank": rank, "pid": int(pid),
                         **{k: ranks[k][rank].decode(errors="replace")
                            for k in ("host", "device", "mpi_library")}})
    return pd.DataFrame(rows, columns=COLUMNS)


def where_lines(table: pd.DataFrame) -> list[str]:
    """Per run: ``<run>: ranks 0-1 on h1, ranks 2-3 on h2 (cpu; MPICH Version: 5.0.2)``."""
    lines = []
    for run, rows in table.groupby("run", sort=False):
        hosts = ", ".join(f"{_spans(list(group['rank']))} on {host}"
                          for host, group in rows.groupby("host", sort=False))
        devices = ", ".join(dict.fromkeys(rows["device"]))
        libraries = ", ".join(dict.fromkeys(rows["mpi_library"]))
        lines.append(f"{run}: {hosts} ({devices}; {libraries})")
    return lines


def _spans(ranks: list[int]) -> str:
    """[0, 1, 2, 5] -> 'ranks 0-2, 5'; [3] -> 'rank 3'."""
    parts, start = [], None
    for i, r in enumerate(ranks):
        if start is None:
            start = r
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:
            parts.append(str(start) if start == r else f"{start}-{r}")
            start = None
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(parts)
