"""``python -m mpi_gan.sample`` and mpi_gan/analysis/sampling.py: samples of trained
generators as .npy data and PNG pictures, and every bad input as one error line.

The run files come from tiny standalone trainings (synthetic ACGAN images, ring points)
and a tiny ASGD run (no generator). The command-line runs of each group start together
(``run_all``): on 2 cores most of their time is importing torch."""
import dataclasses
import io
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mpi_gan.io import integrity
from PIL import Image

from mpi_gan.analysis.runs import load_generator
from mpi_gan.analysis.sampling import auto_scale, draw, image_grid, latents, sample_figure
from mpi_gan.data.toy import mixture
from tests.conftest import MPIEXEC

PY = sys.executable
N = 12
ERROR = "mpi_gan.sample: error: "
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot"]


def run_all(commands: dict, timeout=300) -> dict:
    """Start every command (name -> argv) at once; name -> CompletedProcess. ``timeout``
    (each, seconds) only catches a hang: a dozen commands importing torch at once on a
    loaded 2-core machine once took over 120 s."""
    procs = {name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for name, argv in commands.items()}
    done = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs.values():
                p.kill()
            pytest.fail(f"{name}: {commands[name]} hung for {timeout} s")
        done[name] = subprocess.CompletedProcess(commands[name], proc.returncode, out, err)
    return done


def sample_cmd(*args):
    return [PY, "-m", "mpi_gan.sample", *map(str, args)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run directories: "images" (synthetic, ACGAN, 10 classes, 1x28x28), "ring" (points,
    unconditional), "asgd" (no generator)."""
    root = tmp_path_factory.mktemp("sample-runs")
    alone = [PY, "-m", "mpi_gan.standalone", "--eval-every", "0", "--checkpoint-every", "0"]
    procs = run_all({
        "images": alone + ["--dataset", "synthetic", "--synthetic-size", "200", "--batch-size",
                           "20", "--iterations", "20", "--out", str(root / "images")],
        "ring": alone + ["--dataset", "ring", "--iterations", "50", "--out", str(root / "ring")],
        "asgd": [MPIEXEC, "-n", "2", PY, "-m", "mpi_gan.asgd", "--dataset", "synthetic",
                 "--synthetic-size", "200", "--batch-size", "10", "--iterations", "10",
                 "--eval-every", "10", "--eval-size", "20", "--out", str(root / "asgd")],
    }, timeout=240)
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, proc.stderr)
    return {name: root / name for name in procs}


@pytest.fixture(scope="module")
def outputs(runs, tmp_path_factory):
    """The files of successful command-line runs (name -> path) and their processes."""
    out = tmp_path_factory.mktemp("sample-out")
    images, ring = runs["images"], runs["ring"]
    cases = {
        "npy": (images / "run.h5", "--n", N, "--out", out / "npy.npy"),
        "class3": (images, "--n", N, "--class", 3, "--seed", 0, "--out", out / "class3.npy"),
        "ring_npy": (ring, "--n", 300, "--out", out / "ring_npy.npy"),
        "grid_png": (images, "--n", 20, "--out", out / "grid_png.png"),
        "class_png": (images, "--n", 4, "--class", 3, "--cols", 2, "--out",
                      out / "class_png.png"),
        "ring_png": (ring, "--n", 500, "--out", out / "ring_png.png"),
    }
    commands = {name: sample_cmd(*args) for name, args in cases.items()}
    # a checkpoint works too, and the command never imports MPI
    ckpt = sorted((images / "checkpoints").glob("ckpt_*.h5"))[-1]
    commands["ckpt"] = [PY, "-X", "importtime", "-m", "mpi_gan.sample", str(ckpt), "--n", str(N),
                        "--out", str(out / "ckpt.npy")]
    procs = run_all(commands)
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, proc.stderr)
        assert proc.stdout.startswith("wrote "), (name, proc.stdout)
    return {name: out / f"{name}.{'png' if 'png' in name else 'npy'}" for name in procs}, procs


def test_npy_images_are_float32_pixel_values_of_the_generator(runs, outputs):
    files, _ = outputs
    x = np.load(files["npy"])
    assert x.shape == (N, 1, 28, 28) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 255 and x.max() > 1  # pixel values, not [-1, 1]
    g, cfg = load_generator(str(runs["images"] / "run.h5"))
    # drawn again in this process (other thread pools: equal up to float rounding)
    assert np.allclose(x, draw(g, cfg, N, seed=0), rtol=0, atol=1e-3)
    assert np.array_equal(np.load(files["ckpt"]), x)  # the final checkpoint's G is the run's


def test_npy_ring_points_are_in_the_plane_s_units(runs, outputs):
    files, _ = outputs
    x = np.load(files["ring_npy"])
    assert x.shape == (300, 2) and x.dtype == np.float32
    assert (x < 0).any()  # not mapped to pixel values
    g, cfg = load_generator(str(runs["ring"] / "run.h5"))
    assert np.allclose(x, draw(g, cfg, 300, seed=0), rtol=0, atol=1e-5)


def test_seed_gives_identical_bytes_and_another_seed_other_samples(runs, outputs):
    files, _ = outputs
    g, cfg = load_generator(str(runs["images"] / "run.h5"))
    # two runs of the command with the same seed (from the run file and from its final
    # checkpoint, each in its own process): the same bytes
    assert files["npy"].read_bytes() == files["ckpt"].read_bytes()
    assert not np.allclose(draw(g, cfg, N, seed=1), np.load(files["npy"]))


def test_class_sets_the_one_hot_part_and_changes_the_samples(runs, outputs):
    files, _ = outputs
    three = np.load(files["class3"])
    assert three.shape == (N, 1, 28, 28)
    g, cfg = load_generator(str(runs["images"] / "run.h5"))
    assert np.array_equal(three, draw(g, cfg, N, 0, 3))
    assert not np.allclose(three, draw(g, cfg, N, 0, 5))
    z, z5 = latents(cfg, N, 0, 3), latents(cfg, N, 0, 5)
    assert (z[:, -10:].argmax(1) == 3).all() and z[:, -10:].sum() == N
    assert np.array_equal(z[:, :-10], z5[:, :-10])  # same noise, only the class differs


def test_the_command_never_imports_mpi(outputs):
    _, procs = outputs
    assert "mpi4py" not in procs["ckpt"].stderr
    assert "mpi_gan.analysis.sampling" in procs["ckpt"].stderr  # -X importtime did report


def test_class_grid_png_has_one_named_row_per_class(runs, outputs):
    files, _ = outputs
    with Image.open(files["grid_png"]) as image:
        assert image.format == "PNG"
        width, height = image.size
    scale = auto_scale(28)
    assert scale * 28 >= 56
    # 10 rows (one per class) of ceil(20 / 10) = 2 samples, 2 white pixels apart
    assert height == 10 * (28 * scale + 2) - 2
    assert width > 2 * (28 * scale + 2) - 2  # the names at the left
    with Image.open(files["class_png"]) as image:  # --class 3 --n 4 --cols 2: 2 rows + title
        assert image.size[1] < height and image.size[0] == 2 * (28 * scale + 2) - 2
    g, cfg = load_generator(str(runs["images"] / "run.h5"))
    # row r holds class r: the PNG's tiles are those samples, scaled up
    with Image.open(files["grid_png"]) as image:
        pixels = np.asarray(image.convert("L")).astype(np.float32)
    expected = np.round(draw(g, cfg, 20, 0, np.repeat(np.arange(10), 2)))
    side = 28 * scale
    for i, sample in enumerate(expected):
        y, x = i // 2 * (side + 2), width - 2 * (side + 2) + 2 + i % 2 * (side + 2)
        assert np.array_equal(pixels[y:y + side, x:x + side],
                              sample[0].repeat(scale, 0).repeat(scale, 1)), i
    fig = sample_figure(g, cfg, 20)
    assert [ax.get_ylabel() for ax in fig.axes] == [str(c) for c in range(10)]
    fashion = dataclasses.replace(cfg, dataset="fashion-mnist")  # same shapes, named classes
    fig = sample_figure(g, fashion, 30)
    assert [ax.get_ylabel() for ax in fig.axes] == FASHION
    assert all(ax.yaxis.label.get_visible() for ax in fig.axes)
    assert fig.get_size_inches()[1] * fig.dpi == pytest.approx(height)  # 10 rows again
    fig = sample_figure(g, fashion, 4, cls=9, cols=2)
    assert fig.get_suptitle() == "class 9: Ankle boot"


def test_grid_pixels_are_the_samples_scaled_up_nearest_neighbour():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 1, 28, 28)).astype(np.float32)
    fig = image_grid(images, cols=3, row_names=["a", "b"], scale=2, gap=2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    pixels = np.asarray(Image.open(buf).convert("L")).astype(np.float32)
    top, right = 0, pixels.shape[1]
    for i, image in enumerate(images):
        r, c = divmod(i, 3)
        y, x = top + r * 58, right - 3 * 58 + 2 + c * 58
        assert np.array_equal(pixels[y:y + 56, x:x + 56], image[0].repeat(2, 0).repeat(2, 1)), i
    assert (pixels[58:, right - 58 + 2:] == 255).all()  # the sixth cell is blank


def test_toy_png_is_a_scatter_with_the_centres_marked(runs, outputs):
    files, _ = outputs
    with Image.open(files["ring_png"]) as image:
        image.verify()
        assert image.format == "PNG"
    g, cfg = load_generator(str(runs["ring"] / "run.h5"))
    [ax] = sample_figure(g, cfg, 500).axes
    points, centres = (c.get_offsets() for c in ax.collections)
    assert np.allclose(points, draw(g, cfg, 500)) and np.allclose(centres, mixture("ring").centres)
    assert ax.get_aspect() == 1.0


def test_help_shows_the_groups_and_defaults():
    proc = subprocess.run(sample_cmd("--help"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for text in ("input:", "output:", "sampling:", "--class C", "(default: 100)", "(default: 0)"):
        assert text in proc.stdout, text


@pytest.fixture(scope="module")
def failures(runs, tmp_path_factory):
    """Every bad input: name -> (process, its output directory)."""
    root = tmp_path_factory.mktemp("sample-bad")
    (root / "junk.h5").write_bytes(b"not an HDF5 file\n" * 10)
    with h5py.File(root / "plain.h5", "w") as f:
        f["x"] = np.arange(3)
    (root / "a_file").write_text("x")
    images = runs["images"]
    untrained, diverged = root / "untrained.h5", root / "diverged.h5"
    for path in (untrained, diverged):
        shutil.copyfile(images / "run.h5", path)
    with h5py.File(untrained, "r+") as f:  # a run file before the run's first checkpoint
        f.attrs["iteration"] = 0
    with h5py.File(diverged, "r+") as f:  # a run whose losses went to NaN
        names = []
        f["generator"].visititems(
            lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        dataset = f["generator"][names[0]]  # written as a writer would: its CRC follows
        integrity.overwrite(dataset, np.full(dataset.shape, np.nan))
    cases = {
        "untrained": (untrained, "holds the untrained generator of iteration 0"),
        "diverged": (diverged, "has non-finite values (NaN or inf) in"),
        "missing": (root / "none.h5", "no run file or checkpoint"),
        "not_hdf5": (root / "junk.h5", "not a readable HDF5 file"),
        "not_a_run": (root / "plain.h5", "not an mpi-gan run file"),
        "asgd": (runs["asgd"], "holds no generator (algorithm asgd)"),
        "n_zero": (images, "--n: must be a positive integer", "--n", 0),
        "extension": (images, "unknown extension '.jpg'", "--out", "{dir}/x.jpg"),
        "unwritable": (images, "is not a directory", "--out", "{dir}/a_file/x.npy"),
        "no_such_dir": (images, "does not exist", "--out", "{dir}/none/x.png"),
        "class_unconditional": (runs["ring"], "unconditional ring generator", "--class", 0),
        "class_range": (images, "class 10 is out of range", "--class", 10),
    }
    procs, dirs = {}, {}
    for name, (run, message, *extra) in cases.items():
        dirs[name] = out = root / name
        out.mkdir()
        extra = [str(a).format(dir=root) for a in extra]
        if "--out" not in extra:
            extra += ["--out", str(out / "x.npy")]
        procs[name] = sample_cmd(run, "--n", 5, *extra)
    done = run_all(procs)
    return {name: (done[name], dirs[name], cases[name][1]) for name in cases}


@pytest.mark.parametrize("case", ["untrained", "diverged",
                                  "missing", "not_hdf5", "not_a_run", "asgd", "n_zero",
                                  "extension", "unwritable", "no_such_dir",
                                  "class_unconditional", "class_range"])
def test_bad_input_is_one_error_line_exit_2_and_no_file(failures, case):
    proc, out, message = failures[case]
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR) and message in lines[0], proc.stderr
    assert proc.stdout == "" and os.listdir(out) == []
    assert not [p for p in os.listdir(out.parent) if p.startswith("x.")]  # --out elsewhere


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(runs, tmp_path, monkeypatch,
                                                                  capsys):
    from mpi_gan import sample
    target = tmp_path / "x.npy"
    target.write_bytes(b"previous")

    def save_half(f, data):  # writes part of the file, then the disk is full
        f.write(b"\x93NUMPY half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", save_half)
    assert sample.main([str(runs["images"]), "--n", "3", "--out", str(target)]) == 2
    assert capsys.readouterr().err.startswith(ERROR + "no space left on device writing")
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["x.npy"]
