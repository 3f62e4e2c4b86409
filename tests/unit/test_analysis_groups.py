"""Grouping of runs that differ only in their seed (mpi_gan/analysis/groups.py): the key,
the aggregate table, the bands of the score plots, and ``python -m mpi_gan.analyze`` end to
end on three tiny standalone runs of the ring mixture."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from PIL import Image

from mpi_gan.io.traffic import Traffic
from mpi_gan.analysis.groups import (group_key, group_runs, group_table, label_runs,
                                     setting_labels)
from mpi_gan.analysis.plots import score_figure, score_plots, seed_curve
from mpi_gan.analysis.summary import summary_table
from mpi_gan.algorithms.mdgan.config import MdganConfig
from mpi_gan.config import GanConfig
from mpi_gan.metrics.evaluator import SCORES


def make_run(name, seed=0, iterations=40, algorithm="standalone", evals=(20, 40),
             modes=(1.0, 2.0), wall=2.0, sent=0, **config):
    """A run dict shaped like ``read_run``'s, built by hand (no training)."""
    cls = MdganConfig if algorithm == "mdgan" else GanConfig
    world = 3 if algorithm == "mdgan" else 1
    cfg = cls(dataset="ring", model="mlp", seed=seed, iterations=iterations,
              out=f"runs/{name}", **config).as_attrs()
    n = len(evals)
    scores = {"iteration": np.array(evals, dtype=np.int64),
              "wall_seconds": np.linspace(wall / n, wall, n),
              "server_bytes": np.linspace(sent / n, sent, n).astype(np.int64),
              "eval_seconds": np.full(n, 0.01)}
    for score in SCORES:
        scores[score] = np.full(n, np.nan)
    scores["modes"] = np.asarray(modes, dtype=np.float64)
    scores["mode_kl"] = 2.0 - scores["modes"] / 4
    traffic = np.zeros((1, world, world), dtype=np.int64)
    traffic[0, 0, 1:] = sent // max(world - 1, 1)
    steps = np.full(world, iterations - 1)
    return {"path": f"runs/{name}/run.h5", "algorithm": algorithm, "name": name,
            "config": cfg, "iteration": iterations, "finished": 1, "world": world,
            "metrics": {"iteration": np.arange(1, iterations + 1),
                        "d_loss": np.ones((iterations, max(world - 1, 1)), np.float32),
                        "g_loss": np.ones((iterations, max(world - 1, 1)), np.float32)},
            "scores": scores, "kinds": ("batches",),
            "traffic": Traffic.from_dense(("batches",), traffic, (traffic > 0).astype(np.int64)),
            "cost": {"compute_seconds": np.full(world, wall / 2), "steps": steps,
                     "flops_per_step": np.full(world, 1e6), "wall_seconds": np.float64(wall)},
            "evaluation": {}}


def names_of(groups):
    return [[run["name"] for run in group] for group in groups]


def test_runs_that_differ_only_in_their_seed_form_one_group():
    runs = [make_run(f"s{s}", seed=s) for s in range(3)]
    assert len({group_key(r) for r in runs}) == 1
    assert names_of(group_runs(runs)) == [["s0", "s1", "s2"]]


def test_bookkeeping_fields_do_not_split_a_group():
    a = make_run("a", seed=0, data_dir="/data", cache_dir="/c1", threads=1, device="cpu",
                 checkpoint_every=5, log_every=1, eval_every=20)
    b = make_run("b", seed=7, data_dir="/other", cache_dir="/c2", threads=4, device="cuda",
                 checkpoint_every=0, log_every=9, eval_every=10, resume="runs/x/ckpt.h5")
    assert a["config"]["out"] != b["config"]["out"]
    assert group_key(a) == group_key(b)
    assert names_of(group_runs([a, b])) == [["a", "b"]]


@pytest.mark.parametrize("change", [dict(lr_d=1e-3), dict(lr_g=1e-3), dict(batch_size=50),
                                    dict(split="noniid"), dict(latent_dim=8),
                                    dict(g_ema=0.99), dict(eval_samples=100),
                                    dict(inception_weights="/w.pt")])
def test_a_setting_that_changes_the_math_makes_two_groups(change):
    runs = [make_run("a", seed=0), make_run("b", seed=1), make_run("c", seed=2, **change)]
    assert names_of(group_runs(runs)) == [["a", "b"], ["c"]]
    labels = setting_labels(group_runs(runs))
    assert len(set(labels)) == 2
    name = next(iter(change))
    if name not in ("batch_size", "split"):  # those are in the base label
        assert f"{name}=" in labels[1]


def test_k_algorithm_and_length_split_groups():
    md = [make_run("k1", seed=0, algorithm="mdgan", k=1),
          make_run("k1b", seed=1, algorithm="mdgan", k=1),
          make_run("k2", seed=0, algorithm="mdgan", k=2)]
    assert names_of(group_runs(md)) == [["k1", "k1b"], ["k2"]]
    labels = setting_labels(group_runs(md))
    assert "k=1" in labels[0] and "k=2" in labels[1]
    long = [make_run("short", seed=0, iterations=40), make_run("long", seed=1, iterations=80)]
    assert names_of(group_runs(long)) == [["short"], ["long"]]
    assert names_of(group_runs([make_run("alone", seed=0), md[0]])) == [["alone"], ["k1"]]


def test_group_table_aggregates_match_numpy():
    modes = {0: (1.0, 3.0), 1: (2.0, 5.0), 2: (0.0, 7.5)}
    walls = {0: 2.0, 1: 3.5, 2: 2.25}
    runs = [make_run(f"a{s}", seed=s, modes=modes[s], wall=walls[s]) for s in (2, 0, 1)]
    runs += [make_run("b0", seed=4, modes=(1.0, 6.0), wall=9.0, lr_d=1e-3),
             make_run("b1", seed=3, modes=(0.0, 4.0), wall=8.0, lr_d=1e-3)]
    runs.append(make_run("solo", seed=0, modes=(0.0, 1.0), wall=1.0, algorithm="mdgan",
                         sent=3000))
    table = label_runs(runs, summary_table(runs))
    assert table.group.nunique() == 3 and list(table.seed) == [2, 0, 1, 4, 3, 0]
    groups = group_table(table)
    assert len(groups) == 3
    assert list(groups.seeds) == [3, 2, 1]
    assert list(groups.seed_list) == ["0 1 2", "3 4", "0"]
    assert list(groups.setting) == list(dict.fromkeys(table.group))
    for column in ("algorithm", "dataset", "split", "model", "workers", "k", "batch_size",
                   "iterations", "finished"):
        assert column in groups, column
    assert list(groups.algorithm) == ["standalone", "standalone", "mdgan"]
    assert list(groups.iterations) == [40, 40, 40] and list(groups.workers) == [1, 1, 2]
    for row, members in zip(groups.itertuples(), (runs[:3], runs[3:5], runs[5:])):
        finals = np.array([r["scores"]["modes"][-1] for r in members])
        kls = np.array([r["scores"]["mode_kl"][-1] for r in members])
        seconds = np.array([float(r["cost"]["wall_seconds"]) for r in members])
        for name, values in (("modes", finals), ("mode_kl", kls), ("wall_seconds", seconds)):
            assert getattr(row, f"{name}_mean") == pytest.approx(values.mean()), name
            assert getattr(row, f"{name}_min") == values.min(), name
            assert getattr(row, f"{name}_max") == values.max(), name
            std = getattr(row, f"{name}_std")
            if len(values) == 1:
                assert np.isnan(std), name
            else:
                assert std == pytest.approx(np.std(values, ddof=1)), name
                assert std != pytest.approx(np.std(values, ddof=0)), name
    assert groups.server_bytes_sent_mean.tolist() == [0, 0, 3000]
    for score in SCORES:  # a column per statistic for every score, NaN where none was taken
        for stat in ("mean", "std", "min", "max"):
            assert f"{score}_{stat}" in groups
    assert groups.mnist_score_mean.isna().all()
    for column in ("seconds_per_iteration_per_worker", "flops_per_iteration_per_worker",
                   "bytes_sent_per_worker"):
        assert f"{column}_std" in groups, column


def test_seed_curve_aligns_seeds_by_iteration():
    runs = [make_run("a", seed=0, evals=(20, 40), modes=(1.0, 3.0), wall=2.0),
            make_run("b", seed=1, evals=(10, 20, 40), modes=(9.0, 2.0, 6.0), wall=3.0),
            make_run("c", seed=2, evals=(20, 40), modes=(0.0, 4.5), wall=4.0)]
    x, mean, low, high = seed_curve(runs, "modes", "iteration")
    assert list(x) == [20, 40]  # iteration 10: one seed only
    at20, at40 = np.array([1.0, 2.0, 0.0]), np.array([3.0, 6.0, 4.5])
    assert mean == pytest.approx([at20.mean(), at40.mean()])
    assert list(low) == [0.0, 3.0] and list(high) == [2.0, 6.0]
    x, *_ = seed_curve(runs, "modes", "wall_seconds")
    walls = np.array([[1.0, 2.0], [2.0, 3.0], [2.0, 4.0]])  # each run's wall at 20 and 40
    assert x == pytest.approx(walls.mean(axis=0))


def test_score_plot_draws_a_band_per_group_of_seeds(tmp_path):
    runs = [make_run(f"a{s}", seed=s, modes=(s, 2 * s + 1)) for s in range(3)]
    runs.append(make_run("solo", seed=0, lr_d=1e-3))
    groups = group_runs(runs)
    fig = score_figure(groups, ["modes", "mode_kl"], "iteration")
    ax = fig.axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # the three seeds; the one-seed group is a plain line
    lows_highs = bands[0].get_paths()[0].vertices[:, 1]
    assert lows_highs.min() == 0.0 and lows_highs.max() == 5.0
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == [f"{setting_labels(groups)[0]} (3 seeds)", "solo"]
    paths = score_plots(runs, str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "scores_vs_iteration.png", "scores_vs_wall_seconds.png", "scores_vs_server_bytes.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (1200, 900)


SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def ring_runs(tmp_path_factory):
    """Three standalone runs of the ring mixture that differ only in their seed."""
    root = tmp_path_factory.mktemp("ring-seeds")
    paths = []
    for seed in SEEDS:
        out = root / f"seed{seed}"
        proc = subprocess.run([sys.executable, "-m", "mpi_gan.standalone", "--dataset", "ring",
                               "--iterations", "40", "--eval-every", "20",
                               "--checkpoint-every", "0", "--seed", str(seed), "--out", str(out)],
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr
        paths.append(out / "run.h5")
    return paths


def test_analyze_writes_groups_csv(ring_runs, tmp_path, capsys):
    from mpi_gan.analyze import main
    out = tmp_path / "analysis"
    assert main([*map(str, ring_runs), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2:] == ["groups=1", "runs=3"]
    summary = pd.read_csv(out / "summary.csv")
    groups = pd.read_csv(out / "groups.csv")
    assert len(summary) == 3 and summary.group.nunique() == 1
    assert len(groups) == 1 and groups.seeds[0] == 3 and groups.seed_list[0] == "0 1 2"
    assert groups.setting[0] == summary.group[0]
    assert (groups.dataset[0], groups.iterations[0], groups.algorithm[0]) == \
        ("ring", 40, "standalone")
    for column in ("modes", "high_quality", "mode_kl", "wall_seconds",
                   "seconds_per_iteration_per_worker", "server_bytes_sent"):
        values = summary[column].to_numpy(dtype=np.float64)
        assert groups[f"{column}_mean"][0] == pytest.approx(values.mean()), column
        assert groups[f"{column}_min"][0] == pytest.approx(values.min()), column
        assert groups[f"{column}_max"][0] == pytest.approx(values.max()), column
        assert groups[f"{column}_std"][0] == pytest.approx(np.std(values, ddof=1),
                                                           nan_ok=True), column
    with Image.open(out / "scores_vs_iteration.png") as image:
        assert image.size == (1200, 900)


def test_a_field_an_older_run_file_lacks_counts_as_its_default():
    """A run written before --g-ema existed has no g_ema attribute: it ran without an
    average, so it groups with a new run at --g-ema 0, not with one at 0.99."""
    old = make_run("old", seed=0)
    old["config"].pop("g_ema", None)
    new = make_run("new", seed=1, g_ema=0.0)
    averaged = make_run("avg", seed=2, g_ema=0.99)
    assert names_of(group_runs([old, new, averaged])) == [["old", "new"], ["avg"]]


def with_inception(run, fids=(300.0, 250.0)):
    """``run`` with Inception FIDs at its evaluations, as an RGB run has."""
    run["scores"]["inception_fid"] = np.asarray(fids, dtype=np.float64)
    return run


def test_the_inception_preprocessing_stands_beside_the_inception_scores():
    """The summary says how each run's Inception images were prepared, right after its
    Inception scores: its configuration's choice, ``legacy`` for a file written before the
    choice existed, the stored evaluation's for a score taken from it; runs without
    Inception scores leave it empty. Plots name it on the Inception axes."""
    new = with_inception(make_run("new", inception_preprocessing="clean-fid"))
    old = with_inception(make_run("old", seed=1))
    old["config"].pop("inception_preprocessing")
    offline = make_run("offline", seed=2)
    offline["evaluation"] = {"inception_fid": 99.0, "inception_preprocessing": "pytorch-fid"}
    plain = make_run("plain", seed=3)
    table = summary_table([plain, new, old, offline])
    columns = list(table.columns)
    assert columns.index("inception_preprocessing") == columns.index("inception_score") + 1
    assert table.inception_preprocessing.fillna("").tolist() == ["", "clean-fid", "legacy",
                                                                 "pytorch-fid"]
    assert table.inception_fid.tolist()[1:] == [250.0, 250.0, 99.0]
    fig = score_figure(group_runs([new]), ["inception_fid", "modes"], "iteration")
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "Inception FID, clean-fid input (lower is better)", "modes covered (higher is better)"]
    fig = score_figure(group_runs([new, old]), ["inception_fid"], "iteration")
    assert fig.axes[0].get_ylabel() == "Inception FID, mixed input (lower is better)"
    fig = score_figure(group_runs([new, plain]), ["inception_fid"], "iteration")  # plain: no
    assert fig.axes[0].get_ylabel() == "Inception FID, clean-fid input (lower is better)"
    from matplotlib import pyplot as plt
    plt.close("all")


def test_the_inception_preprocessing_splits_groups_only_of_runs_with_inception_scores():
    runs = [with_inception(make_run("tf", seed=0)),
            with_inception(make_run("tf2", seed=1, inception_preprocessing="tensorflow")),
            with_inception(make_run("clean", seed=2, inception_preprocessing="clean-fid")),
            with_inception(make_run("old", seed=3))]
    runs[-1]["config"].pop("inception_preprocessing")  # legacy: its own group
    assert names_of(group_runs(runs)) == [["tf", "tf2"], ["clean"], ["old"]]
    assert "inception_preprocessing=clean-fid" in setting_labels(group_runs(runs))[1]
    # without Inception scores the choice changed nothing: one group, old file or new
    plain = [make_run("a", seed=0), make_run("b", seed=1, inception_preprocessing="clean-fid"),
             make_run("c", seed=2)]
    plain[-1]["config"].pop("inception_preprocessing")
    assert names_of(group_runs(plain)) == [["a", "b", "c"]]
    # FIDs stored by an offline evaluation: grouped by the evaluation's preprocessing
    offline = [make_run(f"e{s}", seed=s) for s in range(3)]
    for run, choice in zip(offline, ("pytorch-fid", "tensorflow", "pytorch-fid")):
        run["evaluation"] = {"inception_fid": 10.0, "inception_preprocessing": choice}
    assert names_of(group_runs(offline)) == [["e0", "e2"], ["e1"]]
    table = group_table(label_runs(offline, summary_table(offline)))
    assert table.inception_preprocessing.tolist() == ["pytorch-fid", "tensorflow"]


def test_cost_ratios_average_every_uncompressed_mdgan_run_against_every_flgan_run():
    """Means over runs, computed here by hand: an MD-GAN run with compressed feedback (other
    work per step) and a run without cost are left out."""
    rows = [("md0", "mdgan", "none", 0.02, 3.0e8), ("md1", "mdgan", "none", 0.04, 3.0e8),
            ("mdc", "mdgan", "adacomp", 0.50, 3.0e8), ("mdx", "mdgan", "none", np.nan, np.nan),
            ("fl0", "flgan", "", 0.05, 4.0e8), ("fl1", "flgan", "", 0.07, 4.0e8),
            ("other", "flgan", "", 0.01, 4.0e8)]
    table = pd.DataFrame([{"run": r, "algorithm": a, "compress": c, "dataset": "mnist",
                           "split": "iid" if r != "other" else "labels:2", "batch_size": 32,
                           "seconds_per_iteration_per_worker": s, "flops_per_iteration_per_worker": f}
                          for r, a, c, s, f in rows])
    from mpi_gan.analysis.summary import cost_ratios
    [row] = cost_ratios(table).to_dict("records")
    assert row["mdgan_runs"] == "md0 md1" and row["flgan_runs"] == "fl0 fl1"
    assert row["seconds_ratio"] == pytest.approx(0.03 / 0.06)
    assert row["flops_ratio"] == pytest.approx(0.75)


def test_cost_ratios_with_nothing_to_compare_keep_their_header(tmp_path):
    """No FL-GAN run: no rows, and the CSV still says what its columns are."""
    from mpi_gan.analysis.summary import cost_ratios
    table = pd.DataFrame([{"run": "md0", "algorithm": "mdgan", "compress": "none",
                           "dataset": "mnist", "split": "iid", "batch_size": 32,
                           "seconds_per_iteration_per_worker": 0.1,
                           "flops_per_iteration_per_worker": 1e8}])
    for given in (table, table.drop(columns=["seconds_per_iteration_per_worker"])):
        cost_ratios(given).to_csv(tmp_path / "ratios.csv", index=False)
        header = (tmp_path / "ratios.csv").read_text().splitlines()
        assert header == ["dataset,split,batch_size,mdgan_runs,flgan_runs,seconds_ratio,"
                          "flops_ratio"]


def test_config_of_leaves_out_the_attributes_digest(tmp_path):
    """Two runs that differ only in their seed have different attribute digests: the
    configuration the analysis and traffic_report group by must not hold it."""
    import h5py

    from mpi_gan.analysis.runs import config_of
    from mpi_gan.io import integrity
    with h5py.File(tmp_path / "x.h5", "w") as f:
        group = f.create_group("config")
        group.attrs.update({"compress": "adacomp", "seed": np.int64(3), "lr": 0.1})
        integrity.seal(group)
        assert integrity.ATTRS_DIGEST in group.attrs
        config = config_of(f)
    assert config == {"compress": "adacomp", "seed": 3, "lr": 0.1}
    assert type(config["seed"]) is int


def test_figures_name_their_quantities_units_and_better_direction(tmp_path):
    """Score axes say which way is better; bytes read as 500 MB, 1 GB (no 1e9 offset);
    each heatmap's colour bar has its own unit; PNG and SVG; no heatmap for one process."""
    from mpi_gan.analysis.plots import loss_plot, traffic_plot
    runs = [make_run("md", algorithm="mdgan", sent=3 * 10 ** 9, iterations=40),
            make_run("alone", sent=0)]
    fig = score_figure(group_runs(runs[:1]), ["modes", "mode_kl"], "server_bytes")
    fig.canvas.draw()
    ylabels = [ax.get_ylabel() for ax in fig.axes]
    assert ylabels == ["modes covered (higher is better)",
                       "mode KL divergence (nats) (lower is better)"]
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ticks and all(t.endswith("B") for t in ticks), ticks  # 1.5 GB, 3 GB
    assert ax.xaxis.get_offset_text().get_text() == ""
    assert [line.get_marker() for line in ax.get_lines()] == ["o"]  # each evaluation marked
    path = traffic_plot(runs[0], str(tmp_path))
    assert path.endswith("traffic_md.png") and os.path.isfile(path[:-4] + ".svg")
    from matplotlib import pyplot as plt
    assert traffic_plot(runs[1], str(tmp_path)) is None  # one process: no links
    losses = loss_plot(runs, str(tmp_path))
    assert os.path.isfile(losses) and os.path.isfile(losses[:-4] + ".svg")
    plt.close("all")


def test_heatmap_units_and_ticks_follow_the_numbers():
    from mpi_gan.analysis.plots import TICK_EVERY_RANK, unit_of
    assert unit_of(5.2e9) == (1e9, "GB") and unit_of(800) == (1, "B")
    assert unit_of(150) == (1, "B") and unit_of(1.5e5) == (1e3, "kB") and unit_of(0) == (1, "B")
    assert TICK_EVERY_RANK <= 16  # 16 labels in a panel ran together


def test_runs_of_the_same_name_get_names_of_their_own():
    """a/x/run.h5 and b/x/run.h5 are both "x": each per-run file, report section and
    TensorBoard directory needs its own name."""
    from mpi_gan.analysis.analyze import unique_names
    runs = [{"name": "x", "path": "a/x/run.h5"}, {"name": "x", "path": "b/x/run.h5"},
            {"name": "ckpt_00000010", "path": "c/checkpoints/ckpt_00000010.h5"},
            {"name": "ckpt_00000010", "path": "d/checkpoints/ckpt_00000010.h5"},
            {"name": "y", "path": "y/run.h5"}]
    unique_names(runs)
    names = [r["name"] for r in runs]
    assert len(set(names)) == len(names) and names[-1] == "y", names


def test_the_reports_events_of_a_run_in_order():
    """Launches, a stop, a lost worker and a resume on fewer workers, from the tables as
    read_run gives them (written by hand here), in iteration order, the stop before the
    resume it led to."""
    from mpi_gan.analysis.report import events_table
    run = {"launches": {"iteration": np.array([0, 30, 60]),
                        "started_unix": np.array([0.0, 3600.0, 7200.0]),
                        "world_size": np.array([5, 5, 4])},
           "stops": {"iteration": np.array([30]), "stopped_unix": np.array([3000.0]),
                     "signal": np.array([15])},
           "faults": {"iteration": np.array([45]), "rank": np.array([3]),
                      "workers_left": np.array([3])},
           "elastic": {"iteration": np.array([60]), "workers_before": np.array([3]),
                       "workers_after": np.array([3])}}
    table = events_table(run)
    assert list(zip(table.iteration, table.event)) == [
        (0, "start"), (30, "stopped"), (30, "resume"), (45, "worker lost"), (60, "resume"),
        (60, "workers changed")]
    details = list(table.detail)
    assert details[0] == "5 ranks, 1970-01-01 00:00:00 UTC"
    assert details[1].startswith("by SIGTERM") and details[3] == "rank 3; 3 workers go on"
    assert details[5] == "3 workers before, 3 after"
