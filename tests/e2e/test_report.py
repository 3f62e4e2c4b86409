"""The run report (``analyze --out DIR`` writes DIR/report.html), opened in a real headless
Chromium started by the test: it loads with no console error, asks for nothing over a
network, every image decodes, its tables sort, and a screenshot of it is not blank."""
import io
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.conftest import MPIEXEC, PYTHON as PY
from tests.e2e import browser

RING = ["--dataset", "ring", "--eval-every", "50", "--log-every", "100"]
# four trainings and three analyses, on a loaded CI machine
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two standalone runs that differ only in their seed (one stopped by a signal after
    iteration 40, as a preemption stops it, and resumed: two launches) and an MD-GAN run
    on 4 ranks, analysed together."""
    root = tmp_path_factory.mktemp("report")

    def run(*args, ranks=1, status=0, env=None):
        launch = [MPIEXEC, "-n", str(ranks)] if ranks > 1 else []
        proc = subprocess.run([*launch, PY, "-m", *args], capture_output=True, text=True,
                              timeout=300, env={**os.environ, **(env or {})})
        assert proc.returncode == status, (args, proc.stderr)
    alone = ["mpi_gan.standalone", *RING, "--checkpoint-every", "50", "--iterations", "100"]
    run(*alone, "--out", str(root / "ring-s0"), status=75, env={"MPI_GAN_FAULT": "0:40:signal"})
    run(*alone, "--resume", "auto", "--out", str(root / "ring-s0"))
    run(*alone, "--seed", "1", "--out", str(root / "ring-s1"))
    run("mpi_gan.mdgan", *RING, "--iterations", "100", "--out", str(root / "md"), ranks=4)
    out = root / "analysis"
    proc = subprocess.run([PY, "-m", "mpi_gan.analyze", str(root / "ring-s0"),
                           str(root / "ring-s1"), str(root / "md"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"report: {out / 'report.html'}" in proc.stdout
    return out / "report.html"


def test_the_report_is_one_file_with_every_section(report):
    page = report.read_text()
    for section in ("Runs", "Scores", "Losses", "Events", "Cost per rank", "Traffic",
                    "Where the ranks ran", "Configuration", "Samples"):
        assert f'">{section}</h2>' in page, section
    # nothing from elsewhere: every image inline, no script or style file
    assert "http://" not in page and "https://" not in page and "src=\"data:image/png" in page
    assert 'src="' not in page.replace('src="data:image/png;base64,', "")
    # ring-s0's stop by a signal and its resume are events; the options that differ first
    stop = page.index("<td>stopped</td>")
    assert "by SIGUSR1" in page[stop:stop + 200] and "<td>resume</td>" in page[stop:]
    assert '<tr class="differs"><td>seed</td>' in page


@pytest.mark.skipif(not browser.available(), reason="Debian's chromium is not installed "
                    "(.ci/run installs it)")
def test_the_report_in_a_headless_browser(report):
    web = browser.Browser()
    try:
        web.open(report.as_uri())
        assert web.errors() == []
        assert all(url.startswith(("file:", "data:")) for url in web.requests()), \
            web.requests()
        # each image decoded and drawn whole: the figures are opaque, and a truncated PNG
        # leaves transparent rows (a browser shows what it could decode)
        images = web.evaluate("""Promise.all(Array.from(document.images).map(
            img => img.decode().then(() => {
                const canvas = document.createElement("canvas");
                canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
                const g = canvas.getContext("2d");
                g.drawImage(img, 0, 0);
                const pixels = g.getImageData(0, 0, canvas.width, canvas.height).data;
                let opaque = 0;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i] === 255) opaque++;
                return [img.alt, img.naturalWidth, img.naturalHeight,
                        opaque / (pixels.length / 4)];
            }, () => [img.alt, 0, 0, 0])))""")
        # 3 score figures, losses, MD-GAN's traffic, 3 sample scatters
        assert len(images) >= 8, images
        assert all(w > 100 and h > 100 and whole == 1 for _, w, h, whole in images), images
        # the runs table sorts by the clicked column, both ways
        order = """(() => { const t = document.querySelector("table.sortable");
            return Array.from(t.tBodies[0].rows, r => r.cells[0].textContent); })()"""
        click = """(() => { const t = document.querySelector("table.sortable");
            Array.from(t.tHead.rows[0].cells).find(c => c.textContent === "%s").click(); })()"""
        web.evaluate(click % "run")
        assert web.evaluate(order) == ["md", "ring-s0", "ring-s1"]
        web.evaluate(click % "run")
        assert web.evaluate(order) == ["ring-s1", "ring-s0", "md"]
        web.evaluate(click % "workers")
        assert web.evaluate(order)[-1] == "md"  # 3 workers after 1 and 1
        shot = np.asarray(Image.open(io.BytesIO(web.screenshot())).convert("L"))
        assert web.errors() == []
    finally:
        web.close()
    # the whole page (not one screen), as wide as the window: wide tables scroll in place
    assert shot.shape[0] > 2000 and 1200 < shot.shape[1] <= 1300, shot.shape
    inked = (shot < 250).mean()  # text, tables and figures on a white page
    assert inked > 0.02 and len(np.unique(shot)) > 50, (inked, len(np.unique(shot)))


def test_tensorboard_export_holds_the_run_files_numbers_and_tensorboard_shows_the_runs(
        report, tmp_path):
    """``analyze --tensorboard DIR``: one directory per run whose scalars are the run
    file's numbers (computed here from run.h5), its sample grid and configuration; the
    real ``tensorboard --logdir DIR``, started here, lists the runs and their tags."""
    import json
    import urllib.request

    import h5py
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    root, tb = report.parent.parent, tmp_path / "tb"
    proc = subprocess.run([PY, "-m", "mpi_gan.analyze", str(root / "ring-s0"), str(root / "md"),
                           "--out", str(tmp_path / "analysis"), "--tensorboard", str(tb)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"tensorboard: 2 runs in {tb}" in proc.stdout
    for name in ("ring-s0", "md"):
        events = EventAccumulator(str(tb / name), size_guidance={"scalars": 0, "images": 0,
                                                                 "tensors": 0})
        events.Reload()
        with h5py.File(root / name / "run.h5", "r") as f:
            d_loss = f["metrics/d_loss"][()].reshape(len(f["metrics/iteration"]), -1)
            iterations = f["metrics/iteration"][()]
            evaluated, modes = f["scores/iteration"][()], f["scores/modes"][()]
            seed = int(f["config"].attrs["seed"])
        loss = events.Scalars("loss/d")
        assert [e.step for e in loss] == list(iterations) == list(range(1, 101))
        assert np.allclose([e.value for e in loss], d_loss.mean(axis=1), rtol=1e-6)
        assert [(e.step, e.value) for e in events.Scalars("score/modes")] == \
            [(int(i), pytest.approx(v)) for i, v in zip(evaluated, modes)]
        assert len(events.Images("samples")) == 1
        text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
        assert f"| seed | {seed} |" in text
    server = subprocess.Popen([os.path.join(os.path.dirname(PY), "tensorboard"), "--logdir",
                               str(tb), "--host", "127.0.0.1", "--port", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        port = browser.listening_port(server, r"http://127\.0\.0\.1:(\d+)/", 180)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=60) as r:
            assert sorted(json.load(r)) == ["md", "ring-s0"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags",
                                    timeout=60) as r:
            tags = json.load(r)
        assert {"loss/d", "loss/g", "score/modes"} <= set(tags["md"])
    finally:
        browser.end_session(server)
