"""Unit tests (no MPI) of scripts/traffic_report.py's per-setting aggregation, on hand-made
numbers: reduction, validation and test accuracy over seeds, difference from the baseline."""
import importlib.util
import math
import os

import numpy as np
import pytest

from tests.conftest import REPO



def load_report():
    spec = importlib.util.spec_from_file_location(
        "traffic_report", os.path.join(REPO, "scripts", "traffic_report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = load_report()

# seed -> (validation, test) accuracy of each setting
DENSE = {0: (0.9890, 0.9898), 1: (0.9902, 0.9881), 2: (0.9870, 0.9905)}
ADA = {0: (0.9880, 0.9882), 1: (0.9861, 0.9896), 2: (0.9899, 0.9870)}


def run(key, compress, seed, accuracies, bytes_per_push, pushes=100):
    return {"key": key, "setting": f"setting {key}", "compress": compress, "seed": seed,
            "bytes": bytes_per_push * pushes, "messages": pushes, "dense_per_message": 1000,
            "validation_accuracy": accuracies[0], "test_accuracy": accuracies[1]}


def hand_made():
    runs = []
    for seed in (0, 1, 2):  # interleaved, as the experiment script lists them
        runs.append(run("dense", "none", seed, DENSE[seed], 1000))
        runs.append(run("ada", "adacomp", seed, ADA[seed], 5 + seed))  # 5, 6, 7 bytes
    return runs


def test_aggregate_mean_spread_reduction_and_difference():
    settings = report.aggregate(hand_made())
    assert [s["setting"] for s in settings] == ["setting dense", "setting ada"]
    dense, ada = settings
    assert dense["seeds"] == ada["seeds"] == [0, 1, 2]
    for setting, runs in ((dense, DENSE), (ada, ADA)):
        for i, which in enumerate(("validation", "test")):
            values = np.array([runs[s][i] for s in (0, 1, 2)])
            stats = setting[which]
            assert stats["mean"] == pytest.approx(values.mean(), abs=1e-15)
            assert stats["std"] == pytest.approx(values.std(ddof=1), abs=1e-15)  # sample std
            assert (stats["min"], stats["max"]) == (values.min(), values.max())
    # bytes per push pooled over the seeds: (5 + 6 + 7) / 3 = 6; the baseline's 1000
    assert ada["bytes_per_push"] == pytest.approx(6.0)
    assert ada["reduction"] == pytest.approx(1000 / 6) and dense["reduction"] == 1.0
    assert not ada["analytic"]
    for which, i in (("validation", 0), ("test", 1)):
        expected = 100 * (np.mean([ADA[s][i] for s in ADA]) - np.mean([DENSE[s][i] for s in DENSE]))
        assert ada[f"{which}_vs_dense"] == pytest.approx(expected, abs=1e-12)
        assert dense[f"{which}_vs_dense"] == 0.0


def test_aggregate_one_seed_no_baseline_and_missing_validation():
    runs = [run("ada", "adacomp", 4, (float("nan"), 0.97), 10)]
    (ada,) = report.aggregate(runs)
    assert math.isnan(ada["test"]["std"]) and ada["test"]["mean"] == 0.97  # one seed: no std
    assert math.isnan(ada["validation"]["mean"])  # a run without --validation
    assert ada["analytic"] and ada["reduction"] == pytest.approx(100.0)  # 1000 / 10
    assert math.isnan(ada["test_vs_dense"])
    lines = report.settings_lines([ada])
    assert "100.0x*" in lines[1] and "0.9700" in lines[1]


def test_settings_table_says_which_numbers_are_validation_and_which_test():
    settings = report.aggregate(hand_made())
    lines = report.settings_lines(settings)
    assert "VALIDATION acc mean" in lines[0] and "TEST acc mean" in lines[0]
    assert lines[0].index("VALIDATION") < lines[0].index("TEST")
    ada = lines[2]
    assert f"{np.mean([ADA[s][1] for s in ADA]):.4f}" in ada
    assert f"{min(v for v, _ in ADA.values()):.4f}..{max(v for v, _ in ADA.values()):.4f}" in ada
    assert " pt" in ada and " pt" not in lines[1]  # the baseline has no difference to itself
    markdown = report.settings_lines(settings, markdown=True)
    assert markdown[0].startswith("| setting |") and markdown[1].startswith("|---|")
    assert len(markdown) == 4 and "choose" in report.NOTE and "do not choose" in report.NOTE


def eval_file(path, accuracy, validation=None):
    import h5py
    with h5py.File(path, "w") as f:
        f["metrics/eval/accuracy"] = np.asarray(accuracy, np.float64)
        if validation is not None:
            f["metrics/eval/validation"] = np.asarray(validation, np.int64)
    return h5py.File(path, "r")


def test_final_accuracies_take_the_last_evaluation_of_each_set(tmp_path):
    # evaluations on the validation set every so often, the test set once at the end
    with eval_file(tmp_path / "a.h5", [0.5, 0.7, 0.8, 0.91, 0.9], [1, 1, 1, 1, 0]) as f:
        assert report.final_accuracies(f) == (0.91, 0.9)
    # a run stopped before its test evaluation: the test accuracy is NaN, never a validation one
    with eval_file(tmp_path / "b.h5", [0.5, 0.7], [1, 1]) as f:
        validation, test = report.final_accuracies(f)
        assert validation == 0.7 and math.isnan(test)
    # a file from before --validation: every evaluation was on the test set
    with eval_file(tmp_path / "c.h5", [0.5, 0.6, 0.65]) as f:
        validation, test = report.final_accuracies(f)
        assert math.isnan(validation) and test == 0.65
