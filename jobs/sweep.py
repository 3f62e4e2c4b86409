#!/usr/bin/env python3
"""Submit one batch script of jobs/ over a grid of parameters: one job per combination.

    python jobs/sweep.py jobs/mdgan.sbatch --grid WORKERS 4 8 16 --grid K 1 2 \\
        --grid COMPRESS none adacomp --set ITERATIONS=5000 --submit

Every combination becomes ``sbatch --job-name=<script>-<name><value>... --ntasks=<WORKERS+1>
SCRIPT`` with the combination's variables (and ``--set`` ones) in sbatch's environment,
which the script passes on as flags (jobs/lib.sh). ``WORKERS`` sets ``--ntasks``; any
other name is an environment variable of the script (K, COMPRESS, ITERATIONS, ARGS, ...).
Without ``--submit`` the commands are printed, not run. With it, each job id is printed
and a line per job appended to the manifest (tab-separated: job id, job name, run
directory, the variables), for the offline analysis. Standard library only.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import shlex
import subprocess
import sys


def combinations(grid: list[list[str]]) -> list[dict[str, str]]:
    """[[NAME, v1, v2...], ...] -> every combination as {NAME: value}, in grid order."""
    names = [g[0] for g in grid]
    return [dict(zip(names, values)) for values in itertools.product(*(g[1:] for g in grid))]


def job_name(script: str, combo: dict[str, str]) -> str:
    """``mdgan-workers4-k1-compressnone``: the script's stem, then each name and value,
    anything outside [A-Za-z0-9._] dropped."""
    stem = os.path.basename(script).rsplit(".", 1)[0]
    parts = [stem] + [re.sub(r"[^A-Za-z0-9._]", "", f"{k.lower()}{v}") for k, v in combo.items()]
    return "-".join(parts)


def sbatch_command(script: str, name: str, variables: dict[str, str],
                   sbatch_args: list[str]) -> list[str]:
    """The sbatch command of one job (its variables go in sbatch's environment)."""
    command = ["sbatch", "--parsable", f"--job-name={name}"]
    if "WORKERS" in variables:
        command.append(f"--ntasks={int(variables['WORKERS']) + 1}")
    return command + sbatch_args + [script]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("script", help="batch script of jobs/ (the template)")
    p.add_argument("--grid", nargs="+", action="append", default=[], metavar="NAME VALUE",
                   help="a variable and its values (repeat for more variables)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a variable with one value for every job")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="passed to every sbatch (e.g. --sbatch-arg=--time=02:00:00)")
    p.add_argument("--submit", action="store_true", help="submit (default: print the commands)")
    p.add_argument("--manifest", default="sweep.tsv", help="file the submitted jobs are added to")
    args = p.parse_args(argv)
    if any(not re.fullmatch(r"\d+", w) or int(w) < 1 for g in args.grid if g[0] == "WORKERS"
           for w in g[1:]) or any(s.startswith("WORKERS=") and not s[8:].isdigit()
                                  for s in args.set):
        p.error("WORKERS: give positive whole numbers of workers")
    for g in args.grid:
        if len(g) < 2 or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", g[0]):
            p.error(f"--grid {' '.join(g)}: give an upper-case NAME and at least one value")
    for s in args.set:
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", s, re.S):
            p.error(f"--set {s}: give NAME=VALUE with an upper-case NAME")
    if not os.path.isfile(args.script):
        p.error(f"{args.script}: no such batch script")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    fixed = dict(s.split("=", 1) for s in args.set)
    runs = os.environ.get("RUNS", os.path.join(os.getcwd(), "runs"))
    for combo in combinations(args.grid) if args.grid else [{}]:
        variables, name = {**fixed, **combo}, job_name(args.script, combo)
        command = sbatch_command(args.script, name, variables, args.sbatch_arg)
        env_text = " ".join(f"{k}={shlex.quote(v)}" for k, v in variables.items())
        if not args.submit:
            print(f"{env_text} {shlex.join(command)}".strip())
            continue
        done = subprocess.run(command, capture_output=True, text=True,
                              env={**os.environ, **variables})
        if done.returncode != 0:
            print(f"sweep: {shlex.join(command)} failed: {done.stderr.strip()}", file=sys.stderr)
            return 1
        job = done.stdout.strip().split(";")[0]
        with open(args.manifest, "a") as f:
            f.write("\t".join([job, name, os.path.join(runs, f"{name}-{job}"), env_text]) + "\n")
        print(f"{job} {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
