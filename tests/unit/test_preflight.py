"""mpi_gan/preflight.py: a training command line is read and checked for the world size
before torch is imported; the agreed set-up still checks it where no preflight ran."""
import subprocess
import sys

import pytest

from mpi_gan.algorithms import REGISTRY
from mpi_gan.algorithms.mdgan.config import MdganConfig
from mpi_gan.algorithms.mdgan.main import MDGAN
from mpi_gan.train import run_algorithm

# in a fresh interpreter (this one has torch already): one process, so a world of 1 rank
CHECK = """
import sys
from mpi_gan.preflight import preflight
try:
    preflight({algorithm!r}, {argv!r})
    print("passed")
except SystemExit as exc:
    print("exit", exc.code)
print("torch imported" if "torch" in sys.modules else "no torch")
"""

CASES = [  # algorithm, argv, what a 1-rank world makes of it, its one line on stderr
    ("standalone", ["--dataset", "synthetic", "--iterations", "3"], "passed", ""),
    ("standalone", ["--dataset", "ring", "--model", "cnn"], "exit 2",
     "mpi_gan: error: --model cnn: ring holds 2-D points"),
    ("standalone", ["--lr-g", "abc"], "exit 2",
     "mpi_gan: error: argument --lr-g: must be a number, got 'abc'"),
    ("mdgan", ["--dataset", "synthetic"], "exit 2",
     "mpi_gan: error: MD-GAN needs at least 2 MPI ranks"),
    ("flgan", ["--round-every", "5"], "exit 2", "mpi_gan: error: FL-GAN needs at least 2"),
    ("asgd", ["--split", "labels:x"], "exit 2", "mpi_gan: error: asynchronous SGD needs"),
    ("mdgan", ["--exchange", "ring"], "exit 2",
     "mpi_gan: error: argument --exchange: invalid choice: 'ring'"),
    ("mdgan", ["--help"], "exit 0", ""),
]


@pytest.mark.parametrize("algorithm,argv,verdict,line", CASES)
def test_a_command_line_is_checked_without_torch(algorithm, argv, verdict, line):
    proc = subprocess.run([sys.executable, "-c", CHECK.format(algorithm=algorithm, argv=argv)],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout.splitlines()
    assert out[-2] == verdict, (proc.stdout, proc.stderr)
    if line:
        assert proc.stderr.startswith(line) and proc.stderr.count("error:") == 1, proc.stderr
    else:
        assert "error" not in proc.stderr, proc.stderr
    # --help names the compressors, which imports them (and torch): only to print them
    assert out[-1] == ("torch imported" if argv == ["--help"] else "no torch"), proc.stdout
    if argv == ["--help"]:
        assert "(names: none, fp16, topk" in " ".join(proc.stdout.split())


def test_every_algorithm_has_a_preflight_in_its_entry_point():
    from mpi_gan import asgd, flgan, mdgan, standalone
    for module in (asgd, flgan, mdgan, standalone):
        name = module.__name__.rsplit(".", 1)[1]
        assert name in REGISTRY
        assert f'preflight("{name}")' in open(module.__file__).read(), name


def test_without_a_preflight_the_agreed_set_up_refuses_the_configuration(tmp_path, capsys):
    """A configuration built in code (or a console script) reaches the agreed set-up, which
    refuses it on every rank with the same one line and exit status 2."""
    cfg = MdganConfig(dataset="synthetic", out=str(tmp_path / "run"))
    with pytest.raises(SystemExit) as exit_info:
        run_algorithm(MDGAN(), cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mpi_gan: error: MD-GAN needs at least 2 MPI ranks"), err
    assert not (tmp_path / "run").exists()  # refused before --out is touched
