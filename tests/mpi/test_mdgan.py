"""MPI tests (pytest-mpi): run with ``mpiexec -n S python -m pytest --with-mpi``, S = 2, 3, 4.

The MD-GAN run under test uses real MPI ranks; rank 0 then checks it against
the single-process reference and the analytic traffic model.
"""
import os

import h5py
import numpy as np
import pytest
import torch

from mpi_gan.io.runlog import read_traffic
from mpi_gan.algorithms.mdgan.protocol import ALL_KINDS as KINDS
from mpi_gan.algorithms.mdgan.reference import run_reference
from mpi_gan.algorithms.mdgan.traffic_model import expected_async_traffic, expected_traffic
from mpi_gan.algorithms.mdgan.staleness import quorum_of
from mpi_gan.algorithms.mdgan.config import MdganConfig
from mpi_gan.config import disc_outputs
from mpi_gan.data import spec_of
from mpi_gan.train.cost import COST_FIELDS
from mpi_gan.train.loop import report_layout
from mpi_gan.mdgan import run, worker_template
from mpi_gan.models import count_params, make_discriminator, make_generator
from mpi_gan.io.integrity import read
from tests.conftest import all_params, assert_replayed, schedule_of, shard_of
from tests.unit.test_data import write_cifar_dir

pytestmark = pytest.mark.mpi(min_size=2)

CASES = {
    # id: config changes; each case swaps discriminators several times
    "mlp-acgan-travel": dict(model="mlp", acgan=True, swap_adam="travel", g_loss="nonsaturating"),
    "mlp-plain-reset-saturating": dict(model="mlp", acgan=False, swap_adam="reset",
                                       g_loss="saturating", disc_steps=2),
    "cnn-acgan-reset": dict(model="cnn", acgan=True, swap_adam="reset", latent_dim=32),
    "mlp-topk-residual": dict(model="mlp", compress="topk:ratio=0.05", residual=True),
    "mlp-adacomp_bins-sign": dict(model="mlp", compress="adacomp_bins:bin_size=64,values=sign"),
    # exact values: packed into the wire by the selection pass, a bitmap when dense
    "mlp-adacomp_bins": dict(model="mlp", compress="adacomp_bins"),
    "mlp-randomk-fp16": dict(model="mlp", compress="randomk:ratio=0.3,values=fp16",
                             residual=False),
    # fewer generated batches than workers (k < N) where N > 1
    "mlp-k1": dict(model="mlp", k=1),
    # --exchange tree: batches relayed along binomial trees, feedback summed up them
    "mlp-tree": dict(model="mlp", exchange="tree"),
    "mlp-acgan-tree-k1-travel": dict(model="mlp", exchange="tree", k=1, swap_adam="travel"),
    # 3x32x32 images: CIFAR-10 binary batches written by the test, the paper's CIFAR10 CNN
    "cifar10-cnn": dict(dataset="cifar10", model="cnn", latent_dim=32),
    "cifar10-mlp-labels2": dict(dataset="cifar10", model="mlp", split="labels:2"),
}


def cifar_dir(mpi_tmp_path):
    """Small CIFAR-10 binary batches (5 x 24 training images) shared by every rank."""
    from mpi4py import MPI
    folder = mpi_tmp_path / "cifar"
    if MPI.COMM_WORLD.Get_rank() == 0 and not folder.exists():
        write_cifar_dir(str(folder), per_batch=24)
    MPI.COMM_WORLD.Barrier()
    return folder


def small_config(out, world, **changes):
    workers = world - 1
    # shards of 24 samples, batch 8: 3 iterations per local epoch, a swap every 3
    base = dict(dataset="synthetic", synthetic_size=24 * workers, batch_size=8, iterations=7,
                k=workers, swap_epochs=1, checkpoint_every=4, seed=5, out=str(out),
                log_every=100, lr_g=1e-3, lr_d=1e-3, cache_dir=str(out) + "-cache")
    base.update(changes)
    if base["dataset"] == "cifar10":
        base["data_dir"] = str(cifar_dir(out.parent))
    return MdganConfig(**base)


def model_sizes(cfg, mean_shard, report):
    """The traffic model's sizes of ``cfg``'s images and D, as the test computes them."""
    shape = spec_of(cfg).shape
    d = make_discriminator(cfg.model, disc_outputs(cfg), 0, 1, shape)
    return dict(sample_floats=int(np.prod(shape)), mean_shard=mean_shard,
                d_state_bytes=sum(t.numel() * t.element_size() for t in d.state_dict().values()),
                d_param_tensors=len(list(d.parameters())), d_param_floats=count_params(d),
                report_bytes=report)


@pytest.mark.parametrize("case", sorted(CASES))
def test_equivalence_with_single_process_reference(mpi_tmp_path, case):
    from mpi4py import MPI
    world = MPI.COMM_WORLD.Get_size()
    cfg = small_config(mpi_tmp_path / case, world, **CASES[case])
    result = run(cfg)
    if MPI.COMM_WORLD.Get_rank() != 0:
        return
    ref_g, ref_discs = run_reference(cfg, world)
    g = result.role.g
    for (name, p), q in zip(g.state_dict().items(), ref_g.state_dict().values()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6), f"G {name} differs"
    with h5py.File(result.checkpoint, "r") as f:
        for n, d in ref_discs.items():
            for key, value in d.state_dict().items():
                stored = torch.from_numpy(read(f[f"state/rank_{n}/model/{key}"]))
                assert torch.allclose(stored, value, rtol=0, atol=1e-6), f"D_{n} {key} differs"
    # training moved G: compared with the run's own seeded initial G, every weight changed
    initial = make_generator(cfg.model, cfg.latent_dim, cfg.seed, spec_of(cfg).shape)
    for (name, p), q in zip(g.named_parameters(), initial.parameters()):
        assert p.shape == q.shape and not torch.equal(p, q), f"G {name} did not move"


@pytest.mark.parametrize("swap_adam,compress,dataset,exchange", [
    ("reset", "none", "synthetic", "p2p"), ("travel", "none", "synthetic", "p2p"),
    ("reset", "topk:count=100", "synthetic", "p2p"), ("travel", "none", "cifar10", "p2p"),
    ("travel", "none", "synthetic", "tree")])
def test_traffic_counters_equal_analytic_model(mpi_tmp_path, swap_adam, compress, dataset,
                                               exchange):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    world = comm.Get_size()
    cfg = small_config(mpi_tmp_path / f"traffic-{swap_adam}-{compress}-{dataset}-{exchange}",
                       world, swap_adam=swap_adam, iterations=9, checkpoint_every=5,
                       compress=compress, dataset=dataset, exchange=exchange)
    result = run(cfg)
    sent = comm.gather(getattr(result.role, "feedback_bytes", 0), root=0)  # test bookkeeping
    if comm.Get_rank() != 0:
        return
    mean_shard = 24 if dataset == "synthetic" else 5 * 24 // (world - 1)
    # a checkpoint's report: rank, size and a 16-byte digest of the shard (4 int64), and
    # the cost counters (float64 each); the state itself stays in the worker's shard
    report = 4 * 8 + 8 * len(COST_FIELDS)
    assert report_layout(worker_template(cfg), True).nbytes == report
    exp_bytes, exp_msgs = expected_traffic(cfg, world, **model_sizes(cfg, mean_shard, report))
    with h5py.File(result.run_file, "r") as f:
        assert f["traffic"].attrs["header_bytes_per_message"] == 0
        feedback = KINDS.index("feedback")
        if compress != "none":  # data-dependent sizes: equal to what each worker sent
            got = read_traffic(f).matrix("feedback")
            for w in range(1, world):
                assert got[w, 0] == sent[w] and got[w].sum() == sent[w]
                # 100 of 8 x 784 values: far below the uncompressed float32 feedback
                assert sent[w] < exp_bytes[feedback, w, 0] / 5
            exp_bytes[feedback] = got
        for i, kind in enumerate(KINDS):
            assert np.array_equal(read_traffic(f).matrix(kind), exp_bytes[i]), kind
            assert np.array_equal(read_traffic(f).matrix(kind, "messages"), exp_msgs[i]), kind
        assert np.array_equal(read_traffic(f).matrix(), exp_bytes.sum(axis=0))
        # stored as the links used: one row each, per-kind totals beside them
        assert f["traffic"].attrs["layout"] == "links"
        assert len(f["traffic/links/bytes"]) == np.count_nonzero(exp_msgs)
        assert np.array_equal(f["traffic/kind_bytes"][()], exp_bytes.sum(axis=(1, 2)))
        if world > 2:  # swaps happened peer to peer
            assert read_traffic(f).matrix("swap")[1:, 1:].sum() > 0
        assert f["metrics/iteration"][()].tolist() == list(range(1, 10))
        assert f["metrics/d_loss"].shape == (9, world - 1)
        assert f["metrics/d_loss"].maxshape == (None, world - 1)
        assert f.attrs["finished"] == 1
        # what each worker's shard holds, stored for the analysis
        assert f["data/shard_sizes"][()].tolist() == [mean_shard] * (world - 1)
        hist = f["data/label_histogram"][()]
        assert hist.shape == (world - 1, 10) and hist.sum(axis=1).tolist() == [mean_shard] * (
            world - 1)


def test_resume_is_bit_identical_to_an_uninterrupted_run(mpi_tmp_path):
    """12 iterations in one go == 6, then a resume up to 12, in process at this world size:
    every rank's saved state (models, Adam, RNG, the compressor's call counter and residual,
    G's moving average), the run file's tables and generator, bit for bit. (The command
    line's resume, mpiexec included: tests/e2e/test_cli.py, at 3 ranks.)"""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    world = comm.Get_size()
    # swaps every 3 iterations; Adam travels with D; compressed feedback with its residual
    common = dict(swap_adam="travel", compress="randomk:ratio=0.2", residual=True, g_ema=0.9,
                  checkpoint_every=6, keep_checkpoints=5)
    straight, split = mpi_tmp_path / "straight", mpi_tmp_path / "split"
    run(small_config(straight, world, iterations=12, **common))
    run(small_config(split, world, iterations=6, **common))
    result = run(small_config(split, world, iterations=12, resume=str(split), **common))
    assert result.start == 6
    if comm.Get_rank() != 0:
        return
    name = "checkpoints/ckpt_00000012.h5"
    for run_dir in (straight, split):  # every rank's state in its own shard, none in the manifest
        with h5py.File(run_dir / name, "r") as f:
            assert f["shards/rank"][()].tolist() == list(range(world))
            assert [os.path.basename(shard_of(run_dir / name, r)) for r in range(world)] == \
                sorted(os.listdir(os.path.dirname(shard_of(run_dir / name, 0))),
                       key=lambda n: int(n[5:-3]))
            for rank in range(world):
                link = f["state"].get(f"rank_{rank}", getlink=True)
                assert isinstance(link, h5py.ExternalLink)
    a, b = all_params(straight / name), all_params(split / name)
    assert {k.split("/")[0] for k in a} == {f"rank_{r}" for r in range(world)}
    assert a.keys() == b.keys() and any("rng" in k for k in a)
    assert any("residual" in k for k in a) and any("g_ema" in k for k in a)
    assert [k for k in a if not np.array_equal(a[k], b[k])] == []
    with h5py.File(straight / "run.h5", "r") as f1, h5py.File(split / "run.h5", "r") as f2:
        for table in ("metrics/iteration", "metrics/d_loss", "metrics/g_loss"):
            assert np.array_equal(f1[table][()], f2[table][()]), table
        assert len(f2["metrics/iteration"]) == 12
        for key in f1["generator/model"]:
            assert np.array_equal(f1[f"generator/model/{key}"][()],
                                  f2[f"generator/model/{key}"][()]), key
        assert f2.attrs["finished"] == 1 and f2.attrs["iteration"] == 12


def test_a_straggler_sleeps_in_its_steps_and_the_others_do_not(mpi_tmp_path):
    """--slow on the last worker: its role sleeps after computing (``padded`` grows); the
    other workers have no straggler. (That the numbers do not change: tests/e2e/test_cli.)"""
    from mpi4py import MPI
    world = MPI.COMM_WORLD.Get_size()
    rank = MPI.COMM_WORLD.Get_rank()
    cfg = small_config(mpi_tmp_path / "straggler", world, iterations=3, checkpoint_every=0,
                       slow=f"{world - 1}:2")
    role = run(cfg).role
    if rank == world - 1:
        assert role.straggler.factor == 2 and role.straggler.padded > 0
    elif rank > 0:
        assert role.straggler is None


@pytest.mark.parametrize("case", [dict(staleness_batches="eager"),
                                  dict(compress="topk:ratio=0.1", swap_adam="travel",
                                                g_ema=0.9, staleness_scale="none",
                                                staleness_lookahead=1.5, model="cnn",
                                                latent_dim=32),
                                  dict(staleness_batches="fresh", staleness_quorum=1)])
def test_bounded_staleness_with_a_straggler_equals_its_replay_resumed_or_not(mpi_tmp_path,
                                                                             case):
    """--staleness-bound 1 with the last worker 3 times slower: the run, and a run of 5
    iterations resumed from its last checkpoint up to 9, each equal the single-process
    replay of their recorded schedule: eager batches; fresh ones (the default: G steps once
    every worker keeping pace, by the server's timings, sent its fresh feedback) with a
    lookahead, whose G before its last step the checkpoint holds; fresh ones with G
    stepping on each fresh feedback (Q = 1). Feedback staler than the bound was dropped,
    the rest applied."""
    import dataclasses
    from mpi4py import MPI
    world, rank = MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()
    name = "-".join(f"{k}{v}" for k, v in case.items()) or "plain"
    common = dict(staleness_bound=1, k=1, slow=f"{world - 1}:3", checkpoint_every=4, **case)
    straight = small_config(mpi_tmp_path / f"stale-{name}", world, iterations=9, **common)
    result = run(straight)
    half = small_config(mpi_tmp_path / f"stale-half-{name}", world, iterations=5, **common)
    run(half)
    resumed = run(dataclasses.replace(half, iterations=9, resume=half.out))
    if rank != 0:
        return
    for cfg, outcome in ((straight, result), (half, resumed)):
        schedule = assert_replayed(dataclasses.replace(cfg, iterations=9), world,
                                   outcome.run_file, outcome.checkpoint)
        arrivals = schedule["event"] == 0
        tau = (schedule["version"] - schedule["sent_version"])[arrivals]
        assert (schedule["applied"][arrivals] == (tau <= 1)).all()
        assert outcome.role.core.dropped == int((tau > 1).sum())
        assert outcome.role.core.version == 9
        # a worker handed on at its feedback's arrival computes on the version it arrived
        # at, one that was not (fresh batches) on the next: between two feedbacks of a
        # worker with nothing else between them (no drain, swap or checkpoint), its next
        # batches came from the G the server then held, or the one after
        last, fresh = {}, cfg.staleness_batches == "fresh"
        for event, worker, sent, now, on in zip(schedule["event"], schedule["worker"],
                                                schedule["sent_version"], schedule["version"],
                                                schedule["handed_on"]):
            if event == 4:  # a round trip called a worker slow (or no longer)
                continue
            if event != 0:
                last = {}
                continue
            if worker in last:
                assert sent == last[worker][0] + (not last[worker][1]), (worker, sent,
                                                                         last[worker])
            last[worker] = (now, on)
        if fresh:  # a fresh feedback's worker waits for G's next version
            assert not (schedule["handed_on"][arrivals] & (tau == 0)).any()
    # the straight run's counters equal the model, given how many steps each worker made;
    # the checkpoint reports hold the shard's record (4 int64) and the cost counters
    steps = np.bincount(schedule_of(result.run_file)["worker"][
        schedule_of(result.run_file)["event"] == 0], minlength=world)
    quorum = quorum_of(straight.staleness_quorum, straight.staleness_batches == "fresh",
                       world - 1, straight.staleness_patience)
    assert steps[1:].sum() >= 9 * max(1, quorum) and steps[0] == 0
    exp_bytes, exp_msgs = expected_async_traffic(
        straight, world, steps, **model_sizes(straight, 24, 4 * 8 + 8 * len(COST_FIELDS)))
    with h5py.File(result.run_file, "r") as f:
        # every step timed but each process's first (counted in FLOPs): the server's 9
        # updates, each worker's steps as the schedule took them
        assert f["cost/steps"][()].tolist() == [8] + (steps[1:] - 1).tolist()
        assert (f["cost/flops_per_step"][()] > 0).all()
        assert (f["cost/compute_seconds"][()] > 0).all()
        rows = {k: f[f"metrics/{k}"][()] for k in ("applied", "dropped", "tau_sum")}
        traffic = read_traffic(f)
        for i, kind in enumerate(KINDS):
            if kind == "feedback" and straight.compress != "none":  # data-dependent sizes
                assert (traffic.matrix(kind) < exp_bytes[i]).all(where=exp_bytes[i] > 0)
                exp_bytes[i] = traffic.matrix(kind)
            assert np.array_equal(traffic.matrix(kind), exp_bytes[i]), kind
            assert np.array_equal(traffic.matrix(kind, "messages"), exp_msgs[i]), kind
    # the metrics rows count the feedbacks taken in each step: every one but those taken
    # by the drains before checkpoints (a drain that ends closing the pairs)
    sched, counted, segment, draining = schedule_of(result.run_file), [], [], False
    for i, event in enumerate(sched["event"]):
        if event == 4:  # a round trip's call, no feedback
            continue
        if event == 0:
            segment.append(i)
            continue
        if event == 3 and draining:
            segment = []  # a checkpoint's drain
        counted, segment = counted + segment, []  # a step's, a swap drain's
        draining = event == 1
    counted += segment
    applied = sched["applied"][counted] == 1
    tau = (sched["version"] - sched["sent_version"])[counted]
    assert len(rows["applied"]) == 9 and rows["applied"].sum() == applied.sum()
    assert rows["dropped"].sum() == (~applied).sum()
    assert rows["tau_sum"].sum() == tau[applied].sum()


def test_g_does_not_wait_for_workers_whose_round_trips_are_slow(mpi_tmp_path, monkeypatch):
    """Fresh batches, the default quorum: the server steps G without the workers its round
    trips call slow. Every measured worker called slow here (the timings themselves are not
    the test's: tests/unit/test_staleness_mdgan.py), G waits for every worker in the first
    version (none measured yet) and from then on steps on the first fresh feedback of each
    version; the replay of the schedule equals the run."""
    from mpi4py import MPI
    from mpi_gan.algorithms.mdgan import staleness
    monkeypatch.setattr(staleness, "slower_than", lambda seconds, patience: frozenset(seconds))
    world, rank = MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()
    cfg = small_config(mpi_tmp_path / "slow-trips", world, iterations=9, k=1,
                       staleness_bound=2, slow=f"{world - 1}:2")
    result = run(cfg)
    if rank != 0:
        return
    schedule = assert_replayed(cfg, world, result.run_file, result.checkpoint)
    fresh, draining = {}, False  # version -> fresh feedbacks taken outside drains
    for event, sent, version in zip(schedule["event"], schedule["sent_version"],
                                    schedule["version"]):
        if event == 4:  # a round trip's call
            continue
        draining = event == 1 or (draining and event == 0)
        if event == 0 and not draining and sent == version:
            fresh[int(version)] = fresh.get(int(version), 0) + 1
    assert fresh[0] == world - 1                      # the first version waits for all
    assert all(count == 1 for version, count in fresh.items() if version > 0), fresh


def test_with_make_up_g_steps_on_n_fresh_feedbacks_and_equals_its_replay(mpi_tmp_path,
                                                                        monkeypatch):
    """--staleness-make-up with the last worker 3 times slower and called slow once
    measured (the timings themselves are not the test's): every version after the first
    steps G on at least N fresh feedbacks, the workers keeping pace making up for the slow
    one on the version's next pairs (with more than one worker), the slow calls are
    recorded, and the replay of the schedule, which checks each step and hand-on against
    the rule given those calls, equals the run, resumed or not."""
    import dataclasses
    from mpi4py import MPI
    from mpi_gan.algorithms.mdgan import staleness
    world, rank = MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()
    monkeypatch.setattr(staleness, "slower_than",
                        lambda seconds, patience: frozenset({world - 1} & set(seconds)))
    common = dict(k=1, staleness_bound=2, staleness_make_up=True, slow=f"{world - 1}:3",
                  checkpoint_every=4)
    cfg = small_config(mpi_tmp_path / "make-up", world, iterations=9, **common)
    result = run(cfg)
    half = small_config(mpi_tmp_path / "make-up-half", world, iterations=5, **common)
    run(half)
    resumed = run(dataclasses.replace(half, iterations=9, resume=half.out))
    if rank != 0:
        return
    halves = assert_replayed(dataclasses.replace(half, iterations=9), world,
                             resumed.run_file, resumed.checkpoint)
    schedule = assert_replayed(cfg, world, result.run_file, result.checkpoint)
    # the slow calls are recorded (the replay checks the rule with them): the last worker
    # once measured, afresh in each process (two in the resumed run)
    for record, processes in ((schedule, 1), (halves, 2)):
        calls = record["event"] == 4
        assert (record["worker"][calls] == 0).sum() == processes
        assert set(record["worker"][calls & (record["applied"] == 1)]) == {world - 1}
        assert not (calls & (record["applied"] == 0) & (record["worker"] > 0)).any()
    fresh, made_up = {}, 0  # version -> fresh feedbacks applied at it
    for event, worker, sent, version, on in zip(schedule["event"], schedule["worker"],
                                                schedule["sent_version"], schedule["version"],
                                                schedule["handed_on"]):
        if event == 0 and sent == version:
            fresh[int(version)] = fresh.get(int(version), 0) + 1
            made_up += bool(on)
            assert not (on and worker == world - 1), "the slow worker made up"
    # G stepped on exactly N fresh feedbacks at every version (it steps once due)
    assert fresh == dict.fromkeys(range(9), world - 1), fresh
    if world > 2:
        assert made_up > 0 and (schedule["pair"][schedule["event"] == 0] > 0).any()


def test_with_no_worker_lagging_bounded_staleness_is_synchronous_md_gan(mpi_tmp_path):
    """--staleness-bound 1 with fresh batches and no worker called slow (patience beyond
    any timing): every feedback is fresh and G waits for all, each version's pair is
    synchronous MD-GAN's two batches of that iteration with k = 1, split among the
    workers as it splits them, and G steps on the feedback scaled as synchronous MD-GAN
    scales it. So G, its moving average and every D equal those of --staleness-bound 0
    bit for bit (at most two workers per batch here: their feedback sums alike in either
    order of arrival)."""
    import dataclasses
    from mpi4py import MPI
    world, rank = MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()
    synchronous = small_config(mpi_tmp_path / "sync", world, iterations=9, k=1, g_ema=0.9)
    reference = run(synchronous)
    stale = dataclasses.replace(synchronous, out=str(mpi_tmp_path / "stale"),
                                staleness_bound=1, staleness_patience=1e9)
    result = run(stale)
    if rank != 0:
        return
    tau = schedule_of(result.run_file)["version"] - schedule_of(result.run_file)["sent_version"]
    assert (tau == 0).all()
    ours = all_params(result.checkpoint)
    theirs = all_params(reference.checkpoint)
    compared = [key for key in ours if "/model/" in key or "/average/" in key]
    assert any(key.startswith("rank_0/") for key in compared) and len(compared) > 10
    for key in compared:
        assert np.array_equal(ours[key], theirs[key]), key
