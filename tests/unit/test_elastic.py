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
