"""Option checking before any work (issue 19, item 6): a bad value is one ``error:`` line
with a pointer to ``--help``, never the whole usage; integers fit the 64-bit type the run
file stores. Real entry points, one process each (no MPI needed for a parse error)."""
import argparse
import subprocess
import sys

import pytest

from mpi_gan.argtypes import INT64_MAX, integer, nonnegative_int

CASES = [
    ("mpi_gan.standalone", ["--lr-g", "abc"], "argument --lr-g: must be a number, got 'abc'"),
    ("mpi_gan.mdgan", ["--seed", "99999999999999999999"],
     "argument --seed: must fit a 64-bit integer"),
    ("mpi_gan.flgan", ["--iterations", "0"], "argument --iterations: must be a positive integer"),
    ("mpi_gan.asgd", ["--lr", "inf"], "argument --lr: must be a positive finite number"),
    ("mpi_gan.evaluate", ["--bogus"], "unrecognized arguments: --bogus"),
    ("mpi_gan.analyze", [], "the following arguments are required"),
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
