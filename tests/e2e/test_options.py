"""Option checking before any work (issue 19, item 6): a bad value is one ``error:`` line
with a pointer to ``--help``, never the whole usage; integers fit the 64-bit type the run
file stores. Real entry points, one process each (no MPI needed for a parse error)."""
import argparse
import subprocess
import sys

import pytest

from mpi_gan.algorithms.mdgan.config import parse_args, validate
from mpi_gan.argtypes import INT64_MAX, integer, nonnegative_int, rank_factor, slow_factors
from mpi_gan.errors import ConfigError
from mpi_gan.train.straggler import Straggler

CASES = [
    ("mpi_gan.standalone", ["--lr-g", "abc"], "argument --lr-g: must be a number, got 'abc'"),
    ("mpi_gan.mdgan", ["--seed", "99999999999999999999"],
     "argument --seed: must fit a 64-bit integer"),
    ("mpi_gan.flgan", ["--iterations", "0"], "argument --iterations: must be a positive integer"),
    ("mpi_gan.asgd", ["--lr", "inf"], "argument --lr: must be a positive finite number"),
    ("mpi_gan.evaluate", ["--bogus"], "unrecognized arguments: --bogus"),
    ("mpi_gan.analyze", [], "the following arguments are required"),
    ("mpi_gan.mdgan", ["--slow", "2"], "argument --slow: must be RANK:FACTOR (e.g. 1:4), got '2'"),
]


@pytest.mark.parametrize("module,args,message", CASES)
def test_a_bad_option_is_one_line_pointing_to_help(module, args, message):
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    name = module if module in ("mpi_gan.evaluate", "mpi_gan.analyze") else "mpi_gan"
    assert line.startswith(f"{name}: error: {message}"), line  # as the command's other errors
    assert line.endswith(f"(see: python -m {module} --help)"), line
    assert "usage:" not in proc.stderr


def test_integers_must_fit_64_bits():
    assert integer(str(INT64_MAX)) == INT64_MAX and integer(str(-INT64_MAX - 1)) == -2 ** 63
    assert nonnegative_int(str(INT64_MAX)) == INT64_MAX
    for text in (str(INT64_MAX + 1), str(-INT64_MAX - 2), "1" + "0" * 30):
        with pytest.raises(argparse.ArgumentTypeError, match="must fit a 64-bit integer"):
            integer(text)


def test_slow_is_repeatable_checked_and_stored_as_one_text():
    cfg = parse_args(["--dataset", "synthetic", "--slow", "2:4", "--slow", "1:1.5"])
    assert cfg.slow == "2:4,1:1.5" and slow_factors(cfg.slow) == {2: 4.0, 1: 1.5}
    assert parse_args(["--dataset", "synthetic"]).slow == "" and slow_factors("") == {}
    assert rank_factor("3:2.50") == "3:2.5"
    for text, why in (("0:2", "a worker's rank"), ("1:0.5", ">= 1"), ("1:inf", "finite"),
                      ("a:2", "RANK:FACTOR"), ("1:nan", ">= 1")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            rank_factor(text)
    validate(cfg, 3)  # 1 server + 2 workers: ranks 1 and 2
    with pytest.raises(ConfigError, match="--slow names rank 2, but the workers are ranks 1..1"):
        validate(cfg, 2)
    with pytest.raises(ConfigError, match="--slow: rank 2 is given twice"):
        validate(parse_args(["--dataset", "synthetic", "--slow", "2:4", "--slow", "2:3"]), 3)


def test_a_straggler_sleeps_factor_minus_one_times_its_compute_time(monkeypatch):
    slept = []
    monkeypatch.setattr("mpi_gan.train.straggler.time.sleep", slept.append)
    straggler = Straggler(4.0)
    assert straggler.pad(0.5) == 1.5 and straggler.pad(0.25) == 0.75 and straggler.pad(0) == 0
    assert slept == [1.5, 0.75] and straggler.padded == 2.25
    assert Straggler(1.0).pad(3.0) == 0 and slept == [1.5, 0.75]
    with pytest.raises(ValueError, match=">= 1"):
        Straggler(0.5)


def test_a_staleness_bound_refuses_what_it_cannot_do_yet():
    base = ["--dataset", "synthetic", "--staleness-bound", "2"]
    cfg = parse_args(base)
    assert (cfg.staleness_bound, cfg.staleness_scale) == (2, "inverse")
    validate(cfg, 3)
    with pytest.raises(ConfigError, match="it needs --exchange p2p"):
        validate(parse_args(base + ["--exchange", "tree"]), 3)
    with pytest.raises(ConfigError, match="as --k 1 does: leave --k out"):
        validate(parse_args(base + ["--k", "2"]), 3)
    with pytest.raises(ConfigError, match="drop --fault-tolerant"):
        validate(parse_args(base + ["--fault-tolerant"]), 3)
    with pytest.raises(SystemExit):
        parse_args(base + ["--staleness-scale", "sqrt"], quiet=True)
    with pytest.raises(SystemExit):
        parse_args(["--staleness-bound", "-1"], quiet=True)
    assert parse_args(base + ["--staleness-lookahead", "0"]).staleness_lookahead == 0
    validate(parse_args(base + ["--staleness-lookahead", "1.5"]), 3)
    assert parse_args(base + ["--staleness-lookahead", "1.5"]).staleness_lookahead == 1.5
    with pytest.raises(ConfigError, match="it needs --staleness-bound > 0"):
        validate(parse_args(["--dataset", "synthetic", "--staleness-lookahead", "1"]), 3)
    for bad in ("-1", "inf", "nan", "two"):
        with pytest.raises(SystemExit):
            parse_args(base + ["--staleness-lookahead", bad], quiet=True)


def test_fresh_batches_and_waiting_for_the_workers_keeping_pace_are_the_default():
    from mpi_gan.algorithms.mdgan.config import MdganConfig
    from mpi_gan.algorithms.mdgan.staleness import quorum_of
    from mpi_gan.io.checkpoint import mismatched_fields
    base = ["--dataset", "synthetic", "--staleness-bound", "2"]
    cfg = parse_args(base)
    assert (cfg.staleness_batches, cfg.staleness_quorum, cfg.staleness_patience) == \
        ("fresh", 0, 2.0)
    assert [quorum_of(0, True, n, 2.0) for n in (1, 4)] == [0, 0]    # the adaptive rule
    assert [quorum_of(0, True, n) for n in (1, 2, 4)] == [1, 1, 3]   # N - 1, at least 1
    assert [quorum_of(0, False, n) for n in (1, 4)] == [1, 4]        # eager: N
    assert quorum_of(2, True, 4) == quorum_of(2, False, 4) == 2
    validate(parse_args(base + ["--staleness-quorum", "2", "--staleness-batches", "eager"]), 3)
    with pytest.raises(ConfigError, match=r"1 <= Q <= number of workers \(2\)"):
        validate(parse_args(base + ["--staleness-quorum", "3"]), 3)
    for extra in (["--staleness-quorum", "1"], ["--staleness-batches", "eager"]):
        with pytest.raises(ConfigError, match="they need --staleness-bound > 0"):
            validate(parse_args(["--dataset", "synthetic", *extra]), 3)
    for extra in (["--staleness-patience", "3"], ["--staleness-patience", "0"]):
        assert parse_args(base + extra).staleness_patience == float(extra[1])
        validate(parse_args(base + extra), 3)
        for other in ([], ["--staleness-bound", "0"], ["--staleness-quorum", "1"],
                      ["--staleness-batches", "eager"]):
            if other:
                with pytest.raises(ConfigError, match="--staleness-patience sets whom G "):
                    validate(parse_args(base + extra + other), 3)
    with pytest.raises(ConfigError, match=r"--staleness-patience must be >= 1 \(or 0"):
        validate(parse_args(base + ["--staleness-patience", "0.5"]), 3)
    for bad in (["--staleness-quorum", "-1"], ["--staleness-batches", "late"],
                ["--staleness-patience", "-1"], ["--staleness-patience", "nan"]):
        with pytest.raises(SystemExit):
            parse_args(base + bad, quiet=True)
    # a run file written before the option: its run was eager, and a resume must say so
    old = {k: v for k, v in cfg.as_attrs().items()
           if k not in ("staleness_batches", "staleness_patience")}
    assert MdganConfig.from_attrs(old).staleness_batches == "eager"
    assert MdganConfig.from_attrs(old).staleness_patience == 2.0  # eager: not read as 0
    assert mismatched_fields(MdganConfig.from_attrs(old), cfg) == ["staleness_batches"]
    # one written with fresh batches before --staleness-patience stepped G on N - 1
    old = {k: v for k, v in cfg.as_attrs().items() if k != "staleness_patience"}
    assert MdganConfig.from_attrs(old).staleness_patience == 0.0
    assert mismatched_fields(MdganConfig.from_attrs(old), cfg) == ["staleness_patience"]
    old["staleness_quorum"] = 2  # a quorum of its own: patience plays no part
    assert MdganConfig.from_attrs(old).staleness_patience == 2.0
    synchronous = parse_args(["--dataset", "synthetic"])  # S = 0: nothing to read as eager
    old = {k: v for k, v in synchronous.as_attrs().items() if k != "staleness_batches"}
    assert MdganConfig.from_attrs(old) == synchronous
    # --staleness-make-up: off by default (a run file from before it reads as off); it
    # needs a bound, fresh batches, the default quorum and a patience that names the slow
    assert not cfg.staleness_make_up
    assert not MdganConfig.from_attrs({k: v for k, v in cfg.as_attrs().items()
                                       if k != "staleness_make_up"}).staleness_make_up
    validate(parse_args(base + ["--staleness-make-up"]), 3)
    for other in (["--staleness-bound", "0"], ["--staleness-quorum", "1"],
                  ["--staleness-batches", "eager"], ["--staleness-patience", "0"]):
        with pytest.raises(ConfigError, match="--staleness-make-up has the workers keeping"):
            validate(parse_args(base + ["--staleness-make-up"] + other), 3)
