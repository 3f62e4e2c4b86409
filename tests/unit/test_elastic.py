"""The elastic-resume rule (train/elastic.py): who keeps, who drops, who copies whom."""
import collections

import pytest

from mpi_gan.train.elastic import sources


def test_shrinking_keeps_the_first_workers_whole_and_drops_the_rest():
    assert sources(0, 10, [1, 2, 3, 4], 2) == {1: (1, True), 2: (2, True)}


def test_growing_keeps_the_old_workers_and_new_ones_copy_an_old_one():
    got = sources(0, 10, [1, 2], 5)
    assert {n: got[n] for n in (1, 2)} == {1: (1, True), 2: (2, True)}
    assert all(got[n][0] in (1, 2) and got[n][1] is False for n in (3, 4, 5))
    assert got == sources(0, 10, [1, 2], 5)  # a pure function of seed and iteration


def test_a_worker_lost_before_the_checkpoint_is_replaced_by_a_copy():
    got = sources(3, 7, [1, 3], 3)  # worker 2 died earlier: no state of it
    assert got[1] == (1, True) and got[3] == (3, True)
    assert got[2][0] in (1, 3) and got[2][1] is False


def test_the_copied_worker_is_drawn_uniformly_and_by_the_seed():
    counts = collections.Counter(sources(0, t, [1, 2, 3], 4)[4][0] for t in range(3000))
    assert set(counts) == {1, 2, 3} and min(counts.values()) > 900  # 1000 each expected
    draws = {seed: [sources(seed, 5, [1, 2, 3], 10)[n][0] for n in range(4, 11)]
             for seed in range(5)}
    assert len({tuple(v) for v in draws.values()}) > 1


def test_no_worker_state_is_refused():
    with pytest.raises(ValueError, match="holds a worker's state"):
        sources(0, 1, [], 2)


def test_per_worker_columns_widen_with_nan_and_only_those_are_padded():
    """A table resumed on another number of workers: its per-worker columns become as wide
    as the wider of the two, NaN where a worker did not exist; a column that was not
    widened does not pad a short row (a role's mistake stays loud)."""
    import numpy as np

    from mpi_gan.io.runlog import Metrics

    def table(workers):
        return Metrics({"iteration": (np.int64, ()), "loss": (np.float32, (workers,)),
                        "other": (np.float32, (workers,))})
    old = table(4)
    old.append(iteration=1, loss=np.arange(4.0), other=np.ones(4))
    shrunk = table(2)
    stored = old.arrays()
    shrunk.load({"iteration": stored["iteration"], "loss": stored["loss"],
                 "other": stored["other"]})
    shrunk.append(iteration=2, loss=np.array([7.0, 8.0]), other=np.zeros(4))
    loss = shrunk.arrays()["loss"]
    assert loss.shape == (2, 4) and loss[0].tolist() == [0, 1, 2, 3]
    assert loss[1, :2].tolist() == [7, 8] and np.isnan(loss[1, 2:]).all()
    grown = table(6)
    grown.load(old.arrays())
    assert grown.arrays()["loss"].shape == (1, 6) and np.isnan(grown.arrays()["loss"][0, 4:]).all()
    same = table(4)
    same.load(old.arrays())
    same.append(iteration=2, loss=np.zeros(3), other=np.zeros(4))  # too short: not padded
    with pytest.raises(ValueError):
        same.arrays()
