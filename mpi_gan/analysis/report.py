"""``report.html``: one self-contained page about a set of runs, written by
``python -m mpi_gan.analyze RUN... --out DIR`` beside its CSV and PNG files.

Everything is inside the one file: the figures as PNG data URIs, the tables as HTML, a
few lines of script that sort a table by the column whose header is clicked (numbers as
numbers) and a stylesheet. The page asks for nothing over a network, so it opens offline:
on a cluster's login node, or copied to a laptop.

Sections, each shown only when a run has something for it:
  runs          the summary table (one row per run) and the groups over seeds
  scores        scores against generator updates, wall time and bytes through rank 0
                (mean and min-max band over the seeds of a group)
  losses        D and G losses against generator updates
  events        launches (the first start, then each resume: a preemption, a stop or a
                crash before it), stops by a signal, workers lost under --fault-tolerant,
                resumes on another number of workers
  cost          per rank: compute seconds, timed steps, seconds per step, FLOPs per step
  traffic       per run: bytes and messages per message kind, per link, and the heatmap
  where         the host, process, device and MPI library of every rank
  configuration every option of every run, the options that differ between runs first
  samples       each run's sample grid
"""
from __future__ import annotations

import base64
import html
import os
import signal
import time

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from .placement import where_lines


def signal_name(number: int) -> str:
    """SIGTERM for 15; the number where Python knows no such signal."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead ? table.tHead.rows[table.tHead.rows.length - 1].cells : [];
  Array.prototype.forEach.call(heads, function (th, column) {
    th.title = "click to sort";
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("data-order") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("data-order"); });
      th.setAttribute("data-order", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var text = row.cells[column].textContent.trim();
        var number = Number(text);
        return text !== "" && !isNaN(number) ? number : text.toLowerCase();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0)
                                          : (typeof x === "number" ? -1 : 1);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1250px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; cursor: pointer; white-space: nowrap; }
th[data-order=ascending]::after { content: " \\25B2"; }
th[data-order=descending]::after { content: " \\25BC"; }
td:first-child, th:first-child { text-align: left; }
tr.differs td { background: #fff6d5; }
img { max-width: 100%; border: 1px solid #eee; }
div.wide { overflow-x: auto; max-width: 100%; }
.note { color: #555; font-size: 0.9em; }
details { margin: 0.5em 0; }
"""

PAGE = jinja2.Environment(autoescape=True).from_string("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>{{ style }}</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="note">Written {{ written }} by <code>python -m mpi_gan.analyze</code> from
{{ runs|length }} run{{ "s" if runs|length != 1 }}. Click a table's header to sort it.</p>
<nav>{% for id, name, _ in sections %}<a href="#{{ id }}">{{ name }}</a>{% endfor %}</nav>
{% for id, name, parts in sections %}
<h2 id="{{ id }}">{{ name }}</h2>
{% for part in parts %}{{ part }}
{% endfor %}{% endfor %}
<script>{{ script }}</script>
</body>
</html>
""")


def figure(path: str, alt: str) -> str:
    """An <img> holding the PNG file ``path`` as a data URI ("" if there is no such file)."""
    if not path or not os.path.isfile(path):
        return ""
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"></p>'


def table(frame: pd.DataFrame, caption: str = "") -> str:
    """A sortable HTML table of ``frame`` (escaped; floats with 4 significant digits)."""
    if frame is None or not len(frame):
        return ""
    out = frame.to_html(index=False, classes="sortable", border=0, na_rep="",
                        float_format=lambda v: f"{v:.4g}", escape=True)
    return (f'<p class="note">{html.escape(caption)}</p>' if caption else "") + \
        f'<div class="wide">{out}</div>'


def text(words: str) -> str:
    return f"<p>{html.escape(words)}</p>"


def folded(summary: str, inner: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{inner}</details>" \
        if inner else ""


def config_table(runs: list[dict]) -> str:
    """Every option (rows) of every run (columns), those that differ between runs first
    and marked."""
    keys = sorted({k for run in runs for k in run["config"]})
    frame = pd.DataFrame({run["name"]: [run["config"].get(k, "") for k in keys] for run in runs},
                         index=keys).astype(str)
    differs = frame.nunique(axis=1) > 1
    frame = pd.concat([frame[differs], frame[~differs]])
    rows = []
    for key, values in frame.iterrows():
        mark = ' class="differs"' if differs[key] else ""
        cells = "".join(f"<td>{html.escape(v)}</td>" for v in values)
        rows.append(f"<tr{mark}><td>{html.escape(key)}</td>{cells}</tr>")
    heads = "".join(f"<th>{html.escape(n)}</th>" for n in ["option", *frame.columns])
    note = (f"{int(differs.sum())} options differ between the runs (shaded, first)"
            if len(runs) > 1 else "")
    return (f'<p class="note">{note}</p>' if note else "") + \
        f'<div class="wide"><table class="sortable"><thead><tr>{heads}</tr></thead><tbody>' \
        f'{"".join(rows)}</tbody></table></div>'


def events_table(run: dict) -> pd.DataFrame:
    """One row per event of a run, by iteration: each launch (the first start, then every
    resume), each worker lost under --fault-tolerant, each resume on another number of
    workers."""
    rows = []
    launches = run.get("launches") or {}
    for i, (it, unix, world) in enumerate(zip(launches.get("iteration", []),
                                              launches.get("started_unix", []),
                                              launches.get("world_size", []))):
        rows.append({"iteration": int(it), "event": "start" if i == 0 else "resume",
                     "detail": f"{int(world)} rank{'s' if world != 1 else ''}, "
                               f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(unix))} UTC"})
    faults = run.get("faults") or {}
    for it, rank, left in zip(faults.get("iteration", []), faults.get("rank", []),
                              faults.get("workers_left", [])):
        rows.append({"iteration": int(it), "event": "worker lost",
                     "detail": f"rank {int(rank)}; {int(left)} workers go on"})
    stops = run.get("stops") or {}
    for it, unix, number in zip(stops.get("iteration", []), stops.get("stopped_unix", []),
                                stops.get("signal", [])):
        rows.append({"iteration": int(it), "event": "stopped",
                     "detail": f"by {signal_name(int(number))} (a preemption, the job's time "
                               "limit or a user), checkpointed, "
                               f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(unix))} UTC"})
    elastic = run.get("elastic") or {}
    for it, before, after in zip(elastic.get("iteration", []),
                                 elastic.get("workers_before", []),
                                 elastic.get("workers_after", [])):
        rows.append({"iteration": int(it), "event": "workers changed",
                     "detail": f"{int(before)} workers before, {int(after)} after"})
    frame = pd.DataFrame(rows, columns=["iteration", "event", "detail"])
    order = {"stopped": 0, "start": 1, "resume": 1}  # a stop at I, then the resume at I
    if len(frame):
        frame = frame.assign(_order=frame.event.map(order).fillna(2)).sort_values(
            ["iteration", "_order"], kind="stable").drop(columns="_order")
    return frame


def cost_table(run: dict, ranks: pd.DataFrame) -> pd.DataFrame:
    """Per rank of a run: host, compute seconds, timed steps, seconds per step (ms), FLOPs
    per step."""
    cost = run.get("cost") or {}
    if "compute_seconds" not in cost:
        return pd.DataFrame()
    seconds = np.asarray(cost["compute_seconds"], dtype=np.float64)
    steps = np.asarray(cost["steps"], dtype=np.float64)
    hosts = dict(zip(ranks["rank"], ranks["host"])) if len(ranks) else {}
    with np.errstate(divide="ignore", invalid="ignore"):
        per_step = np.where(steps > 0, seconds / steps * 1e3, np.nan)
    return pd.DataFrame({"rank": np.arange(len(seconds)),
                         "host": [hosts.get(r, "") for r in range(len(seconds))],
                         "compute_seconds": seconds, "timed_steps": steps.astype(np.int64),
                         "ms_per_step": per_step,
                         "flops_per_step": np.asarray(cost["flops_per_step"], np.float64)})


def traffic_tables(run: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(bytes and messages per message kind, one row per link used: kind, source,
    destination, bytes, messages) of a run."""
    traffic = run["traffic"]
    kinds = pd.DataFrame({"kind": list(run["kinds"]), "bytes": traffic.per_kind(),
                          "messages": traffic.per_kind("messages")})
    kinds = kinds[kinds.messages > 0]
    links = pd.DataFrame({"kind": [run["kinds"][k] for k in traffic.column("kind")],
                          "source": traffic.column("source"),
                          "destination": traffic.column("destination"),
                          "bytes": traffic.column("bytes"),
                          "messages": traffic.column("messages")})
    return kinds, links


def sections(runs, summary, groups, ratios, ranks, out) -> list[tuple]:
    """(id, title, [html parts]) of each section that has something to show."""
    def fig(name, alt):
        return figure(os.path.join(out, name), alt)
    per_run = {run["name"]: run for run in runs}
    found = []
    found.append(("runs", "Runs", [
        table(summary, "One row per run: its settings, last scores (higher MNIST score and "
                       "Inception Score are better, lower FIDs are better), wall seconds of "
                       "the training loop, cost per iteration and bytes."),
        table(groups.dropna(axis=1, how="all") if len(groups) else groups,
              "Runs that differ only in their seed, grouped: the mean, standard deviation, "
              "min and max of each column over the seeds."),
        table(ratios, "MD-GAN worker cost over FL-GAN worker cost on the same data.")]))
    scores = [fig(f"scores_vs_{x}.png", f"scores against {x}")
              for x in ("iteration", "wall_seconds", "server_bytes")]
    if any(scores):
        found.append(("scores", "Scores", [text(
            "Each score against generator updates, training wall time and bytes through "
            "rank 0; a group of runs that differ only in their seed is drawn as its mean "
            "with a band from its min to its max."), *scores]))
    losses = fig("losses.png", "losses")
    if losses:
        found.append(("losses", "Losses", [losses]))
    events = [(name, events_table(run)) for name, run in per_run.items()]
    events = [(n, e) for n, e in events if len(e)]
    if events:
        found.append(("events", "Events", [text(
            "Launches (the first start, then each resume: after a preemption, a stop or a "
            "crash), stops by a signal (each ends with a checkpoint), workers lost under "
            "--fault-tolerant, and resumes on another number of workers.")] + [table(e, n) for n, e in events]))
    costs = [(name, cost_table(run, ranks[ranks.run == name])) for name, run in per_run.items()]
    costs = [(n, c) for n, c in costs if len(c)]
    if costs:
        found.append(("cost", "Cost per rank", [text(
            "Compute seconds: each rank's step time without the time it was blocked in MPI; "
            "the first step of each launch is counted in FLOPs instead of timed.")] +
            [table(c, n) for n, c in costs]))
    traffic = []
    for name, run in per_run.items():
        kinds, links = traffic_tables(run)
        traffic += [f"<h3>{html.escape(name)}</h3>", table(kinds, "per message kind"),
                    folded(f"{len(links)} links used", table(links)),
                    fig(f"traffic_{name}.png", f"traffic of {name}")]
    found.append(("traffic", "Traffic", traffic))
    if len(ranks):
        found.append(("where", "Where the ranks ran", [
            "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in where_lines(ranks))
            + "</ul>", folded(f"{len(ranks)} ranks", table(ranks))]))
    found.append(("configuration", "Configuration", [config_table(runs)]))
    samples = [fig(f"samples_{name}.png", f"samples of {name}") for name in per_run]
    samples = [f"<h3>{html.escape(n)}</h3>{s}" for n, s in zip(per_run, samples) if s]
    if samples:
        found.append(("samples", "Samples", samples))
    # each part is built here, its user text escaped: it goes into the page as it is
    return [(i, t, [Markup(p) for p in parts if p]) for i, t, parts in found]


def write_report(out: str, runs: list[dict], summary: pd.DataFrame, groups: pd.DataFrame,
                 ratios: pd.DataFrame, ranks: pd.DataFrame) -> str:
    """Write ``out/report.html`` (module docstring) from the runs and the tables and
    figures ``analyze`` wrote into ``out``; returns its path."""
    names = ", ".join(run["name"] for run in runs[:4]) + (", ..." if len(runs) > 4 else "")
    page = PAGE.render(title=f"mpi-gan report: {names}", style=Markup(STYLE),
                       script=Markup(SORT_SCRIPT),
                       written=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                       runs=runs, sections=sections(runs, summary, groups, ratios, ranks, out))
    path = os.path.join(out, "report.html")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path
