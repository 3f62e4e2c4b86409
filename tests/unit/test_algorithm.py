"""Unit tests (no MPI) for MD-GAN's pure functions."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from mpi_gan.algorithms.mdgan import plan as alg
from mpi_gan.gan.losses import error_feedback, generator_loss_per_sample, latent_batch
from mpi_gan.algorithms.mdgan.config import MdganConfig
from mpi_gan.models import make_discriminator, make_generator
from mpi_gan.algorithms.mdgan.traffic_model import expected_async_traffic, expected_traffic
from mpi_gan.algorithms.mdgan.protocol import ALL_KINDS as KINDS


@pytest.mark.parametrize("model,acgan,saturating", [("mlp", True, False), ("mlp", False, True),
                                                    ("cnn", True, True)])
def test_feedback_path_equals_autograd_through_composed_model(model, acgan, saturating):
    """Server-side backward of the workers' feedback == autograd of the composed loss."""
    torch.manual_seed(0)
    workers, b, latent = 3, 4, 100
    batches = alg.generated_batches(2)
    outputs = 11 if acgan else 1
    discs = {n: make_discriminator(model, outputs, 0, n) for n in range(1, workers + 1)}
    latents = [latent_batch(latent, 10 if acgan else 0, b, 0, 0, j) for j in range(batches)]
    assign = {n: alg.batch_assignment(n, batches)[0] for n in discs}

    g1 = make_generator(model, latent, 0)
    generated = [g1(z) for z, _ in latents]
    feedbacks = [error_feedback(discs[n], generated[assign[n]].detach(),
                                    latents[assign[n]][1], saturating)[0] for n in sorted(discs)]
    grads = alg.feedback_gradients(feedbacks, [assign[n] for n in sorted(discs)], batches,
                                   1.0 / (workers * b))
    opt = torch.optim.SGD(g1.parameters(), lr=0.0)
    alg.generator_step(opt, generated, grads)
    # computing the feedback gave D's parameters no gradient
    assert all(p.grad is None for d in discs.values() for p in d.parameters())

    g2 = make_generator(model, latent, 0)
    generated2 = [g2(z) for z, _ in latents]
    total = sum(generator_loss_per_sample(discs[n](generated2[assign[n]]),
                                              latents[assign[n]][1], saturating).mean()
                for n in sorted(discs)) / workers
    total.backward()
    for p1, p2 in zip(g1.parameters(), g2.parameters()):
        assert torch.allclose(p1.grad, p2.grad, rtol=1e-5, atol=1e-7)


def test_batch_assignment_paper_rule_and_distinct():
    # paper: X_n^(g) = X^((n mod k)+1), X_n^(d) = X^(((n+1) mod k)+1), here 0-based
    assert alg.batch_assignment(1, 3) == (1, 2)
    assert alg.batch_assignment(2, 3) == (2, 0)
    assert alg.batch_assignment(3, 3) == (0, 1)
    for k in range(1, 8):
        batches = alg.generated_batches(k)
        assert batches == max(k, 2)
        for n in range(1, 20):
            g, d = alg.batch_assignment(n, batches)
            assert g != d and 0 <= g < batches and 0 <= d < batches
        # with N >= K every generated batch gets feedback from someone
        assert {alg.batch_assignment(n, batches)[0] for n in range(1, batches + 1)} == \
            set(range(batches))


@pytest.mark.parametrize("workers", [2, 3, 4, 7, 16])
def test_derangement(workers):
    seen = set()
    for s in range(1, 30):
        dest = alg.derangement(11, s, workers)
        assert sorted(dest) == list(range(1, workers + 1))
        assert all(dest[n - 1] != n for n in range(1, workers + 1))
        assert dest == alg.derangement(11, s, workers)  # same on every rank
        for n in range(1, workers + 1):
            assert dest[alg.swap_source(dest, n) - 1] == n
        seen.add(tuple(dest))
    if workers > 2:
        assert len(seen) > 1  # varies between swaps
    assert alg.derangement(11, 1, 1) is None


def test_swap_schedule():
    period = alg.swap_period(2, 1000, 100)
    assert period == 20
    assert [t for t in range(60) if alg.swap_after(t, period)] == [19, 39, 59]
    assert alg.swap_after(39, period) == 2
    assert alg.swap_after(5, 0) is None


def test_latent_batch_deterministic_and_acgan_one_hot():
    z, y = latent_batch(100, 10, 16, 3, 7, 1)
    z2, y2 = latent_batch(100, 10, 16, 3, 7, 1)
    assert torch.equal(z, z2) and torch.equal(y, y2)
    assert z.shape == (16, 100) and y.shape == (16,)
    assert torch.equal(z[:, 90:].argmax(1), y) and torch.equal(z[:, 90:].sum(1), torch.ones(16))
    z3, _ = latent_batch(100, 10, 16, 3, 7, 2)
    assert not torch.equal(z, z3)
    z4, y4 = latent_batch(64, 0, 5, 3, 7, 1)
    assert z4.shape == (5, 64) and y4 is None


def test_generator_losses():
    logits = torch.tensor([[0.0], [2.0]])
    sat = generator_loss_per_sample(logits, None, saturating=True)
    ns = generator_loss_per_sample(logits, None, saturating=False)
    d = torch.sigmoid(logits[:, 0])
    assert torch.allclose(sat, torch.log(1 - d))
    assert torch.allclose(ns, -torch.log(d))


def test_traffic_model_hand_computed():
    cfg = MdganConfig(dataset="synthetic", synthetic_size=120, batch_size=10, iterations=8, k=1,
                 swap_epochs=1, checkpoint_every=5, acgan=True, swap_adam="reset", seed=3)
    # world 4: N = 3, shard 40, 4 iterations per epoch: swaps after iterations 3 and 7
    nbytes, msgs = expected_traffic(cfg, 4, sample_floats=784, mean_shard=40, d_state_bytes=400,
                                    d_param_tensors=2, d_param_floats=100, report_bytes=56)
    kind = {k: i for i, k in enumerate(KINDS)}
    assert nbytes[kind["batch_g"], 0, 2] == 8 * 10 * 784 * 4
    assert msgs[kind["batch_d"], 0, 3] == 8
    assert nbytes[kind["labels"], 0, 1] == 8 * 2 * 10 * 8
    assert nbytes[kind["feedback"], 1, 0] == 8 * 10 * 784 * 4
    assert nbytes[kind["losses"], 3, 0] == 8 * 8
    assert msgs[kind["swap"]].sum() == 2 * 3 and nbytes[kind["swap"]].sum() == 6 * 400
    assert (nbytes[kind["swap"]].diagonal() == 0).all()
    # checkpoints at 5 and 8: one report each (the state stays in the worker's shard)
    assert nbytes[kind["checkpoint"], 2, 0] == 2 * 56
    assert nbytes[kind["restore"]].sum() == 0
    assert nbytes[:, 1:, 1:][[i for i in range(len(KINDS)) if KINDS[i] != "swap"]].sum() == 0


def test_bounded_staleness_traffic_model_hand_computed():
    """S > 0: the schedule's step counts decide the batches; commands are bare headers."""
    cfg = MdganConfig(dataset="synthetic", synthetic_size=120, batch_size=10, iterations=8, k=1,
                      swap_epochs=1, checkpoint_every=5, acgan=True, swap_adam="travel",
                      seed=3, staleness_bound=2)
    nbytes, msgs = expected_async_traffic(cfg, 4, np.array([0, 9, 7, 3]), sample_floats=784,
                                          mean_shard=40, d_state_bytes=400, d_param_tensors=2,
                                          d_param_floats=100, report_bytes=56)
    kind = {k: i for i, k in enumerate(KINDS)}
    batch = 10 * 784 * 4
    # worker 3: 3 batches with a 32-byte header each, then 2 SWAP (after versions 4 and 8),
    # 2 STATE (checkpoints 5 and 8) and 1 STOP: 5 bare headers
    assert nbytes[kind["batch_g"], 0, 3] == 3 * (32 + batch) + 5 * 32
    assert msgs[kind["batch_g"], 0, 3] == 3 + 5
    assert nbytes[kind["batch_g"], 0, 1] == 9 * (32 + batch) + 5 * 32
    assert nbytes[kind["batch_d"], 0, 2] == 7 * batch and msgs[kind["batch_d"], 0, 2] == 7
    assert nbytes[kind["labels"], 0, 1] == 9 * 2 * 10 * 8
    assert nbytes[kind["feedback"], 3, 0] == 3 * batch and msgs[kind["feedback"], 3, 0] == 3
    assert nbytes[kind["losses"], 2, 0] == 7 * 8
    # travel: D's 400 bytes and Adam's 2 x 100 float32 moments and 2 step counts
    assert msgs[kind["swap"]].sum() == 2 * 3
    assert nbytes[kind["swap"]].sum() == 6 * (400 + 800 + 8)
    assert nbytes[kind["checkpoint"], 1, 0] == 2 * 56 and msgs[kind["checkpoint"], 1, 0] == 2
    assert nbytes[:, 1:, 1:][[i for i in range(len(KINDS)) if KINDS[i] != "swap"]].sum() == 0
    assert nbytes[:, 0, 0].sum() == 0


def test_binomial_tree_by_hand():
    assert [alg.tree_parent(p) for p in range(1, 12)] == [0, 0, 1, 0, 1, 2, 3, 0, 1, 2, 3]
    assert alg.tree_children(0, 8) == [1, 2, 4] and alg.tree_children(1, 8) == [3, 5]
    assert alg.tree_children(3, 8) == [7] and alg.tree_children(4, 8) == [] == \
        alg.tree_children(0, 1)
    for size in range(1, 40):  # parents and children agree; depth ceil(log2 size)
        for p in range(size):
            assert all(alg.tree_parent(c) == p for c in alg.tree_children(p, size))
        assert sorted(c for p in range(size) for c in alg.tree_children(p, size)) == \
            list(range(1, size))
        depth = max(bin(p).count("1") for p in range(size))  # hops from position 0
        assert depth <= (size - 1).bit_length()


def test_tree_exchange_routes_by_hand():
    # N = 3, k = 1 (K = 2): g, d of workers 1, 2, 3 = (1, 0), (0, 1), (1, 0)
    batches, assignment = alg.batch_plan(1, [1, 2, 3])
    assert alg.batch_recipients(batches, assignment) == [
        [(2, "batch_g"), (1, "batch_d"), (3, "batch_d")],
        [(1, "batch_g"), (3, "batch_g"), (2, "batch_d")]]
    links, feedback = alg.exchange_links("tree", batches, assignment)
    L = alg.Link
    assert links == [L(0, 0, 2, "batch_g"), L(0, 2, 1, "batch_d"), L(0, 2, 3, "batch_d"),
                     L(1, 0, 1, "batch_g"), L(1, 1, 3, "batch_g"), L(1, 1, 2, "batch_d")]
    assert feedback == [L(0, 2, 0, "feedback"), L(1, 1, 0, "feedback"),
                        L(1, 3, 1, "feedback")]
    p2p_links, p2p_feedback = alg.exchange_links("p2p", batches, assignment)
    assert all(link.sender == 0 for link in p2p_links) and len(p2p_links) == 6
    assert p2p_feedback == [L(1, 1, 0, "feedback"), L(0, 2, 0, "feedback"),
                            L(1, 3, 0, "feedback")]
    with pytest.raises(ValueError, match="exchange must be one of"):
        alg.exchange_links("ring", batches, assignment)


@settings(max_examples=60, deadline=None)
@given(workers=st.integers(1, 40), k=st.integers(1, 40))
def test_tree_exchange_delivers_once_and_sums_every_feedback(workers, k):
    k = min(k, workers)
    ranks = list(range(1, workers + 1))
    batches, assignment = alg.batch_plan(k, ranks)
    links, feedback = alg.exchange_links("tree", batches, assignment)
    # the server sends each batch once; every worker gets its X_g and X_d exactly once,
    # from the server or from a worker that had it earlier in the list
    assert sorted(link.batch for link in links if link.sender == 0) == list(range(batches))
    has = {0: set(range(batches))}
    for link in links:
        assert link.batch in has.get(link.sender, ())
        has.setdefault(link.receiver, set()).add(link.batch)
    for n in ranks:
        got = {link.kind: link.batch for link in links if link.receiver == n}
        assert got == {"batch_g": assignment[n][0], "batch_d": assignment[n][1]}
    # feedback: each X_g holder sends once, to a holder of the same X_g or the server;
    # the server gets one sum per batch that has X_g holders
    assert sorted(link.sender for link in feedback) == ranks
    for link in feedback:
        assert link.receiver == 0 or assignment[link.receiver][0] == link.batch
    to_server = [link.batch for link in feedback if link.receiver == 0]
    assert to_server == sorted({g for g, _ in assignment.values()})
    # no worker relays more than ceil(log2(2N/K + 1)) copies of one batch
    for n in ranks:
        for j in assignment[n]:
            fan_out = sum(1 for link in links if link.sender == n and link.batch == j)
            assert fan_out <= (2 * workers).bit_length()


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 33), seed=st.integers(0, 2**31))
def test_tree_sum_is_the_sum_in_a_fixed_order(size, seed):
    values = [torch.randn(5, 7, generator=torch.Generator().manual_seed(seed + i))
              for i in range(size)]
    kept = [v.clone() for v in values]
    total = alg.tree_sum(values)
    assert torch.allclose(total, torch.stack(values).sum(0), rtol=0, atol=1e-6 * size)
    assert torch.equal(total, alg.tree_sum(values))  # deterministic
    assert all(torch.equal(v, k) for v, k in zip(values, kept))  # inputs untouched
    if size == 4:  # by hand: 3 hangs from 1, which adds it; 0 adds 1's sum, then 2
        assert torch.equal(total, (values[0] + (values[1] + values[3])) + values[2])


def test_traffic_model_tree_server_link():
    """--exchange tree: the server sends K batches and receives K feedback sums an
    iteration (p2p: 2N and N); workers receive one X_g and one X_d either way."""
    kind = {k: i for i, k in enumerate(KINDS)}
    sizes = dict(sample_floats=784, mean_shard=40, d_state_bytes=400, d_param_tensors=2,
                 d_param_floats=100, report_bytes=56)
    batch = 10 * 784 * 4
    for workers, k in ((16, 4), (7, 3), (3, 1), (1, 1)):
        rows = {}
        for exchange in ("p2p", "tree"):
            cfg = MdganConfig(dataset="synthetic", synthetic_size=40 * workers, batch_size=10,
                         iterations=3, k=k, acgan=False, exchange=exchange)
            nbytes, msgs = expected_traffic(cfg, workers + 1, **sizes)
            data = nbytes[[kind["batch_g"], kind["batch_d"], kind["feedback"]]].sum(0)
            rows[exchange] = data[0].sum(), data[:, 0].sum()
            for name in ("batch_g", "batch_d"):
                assert (msgs[kind[name]][:, 1:].sum(0) == 3).all()  # one each iteration
            assert msgs[kind["feedback"]].sum() == 3 * workers
        batches = max(k, 2)
        with_feedback = min(batches, workers)  # batches someone holds as X_g
        assert rows["p2p"] == (3 * 2 * workers * batch, 3 * workers * batch)
        assert rows["tree"] == (3 * batches * batch, 3 * with_feedback * batch)


def test_staleness_rule_by_hand():
    from mpi_gan.algorithms.asgd.staleness import apply_push, staleness
    theta = torch.zeros(5)
    touches = torch.zeros(5, dtype=torch.int64)
    at_pull_a = touches.clone()                    # worker a pulls at version 0
    apply_push(theta, touches, torch.tensor([0, 1]), torch.tensor([1.0, 1.0]), 0.5, None)
    apply_push(theta, touches, torch.tensor([1, 2]), torch.tensor([2.0, 2.0]), 0.5, None)
    idx = torch.tensor([0, 1, 3])
    tau = staleness(touches, at_pull_a, idx)       # a pushes after 2 updates
    assert tau.tolist() == [1, 2, 0]
    apply_push(theta, touches, idx, torch.tensor([4.0, 4.0, 4.0]), 0.5, tau)
    # theta_i -= lr * g_i / max(1, tau_i)
    assert theta.tolist() == [-0.5 - 2.0, -0.5 - 1.0 - 1.0, -1.0, -2.0, 0.0]
    assert touches.tolist() == [2, 3, 1, 1, 0]


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_touch_log_equals_per_pull_touch_copies(data):
    """The server's bounded log gives the same tau as a copy of the touch counts per pull,
    for any interleaving of pulls and sparse or dense pushes, and holds only the updates
    since the oldest pull still out."""
    from mpi_gan.algorithms.asgd.staleness import TouchLog, apply_parts, staleness
    layers = [(0, 7), (7, 40)]  # two layers of the flat vector
    size, workers = 40, data.draw(st.integers(1, 5))
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    theta_a, theta_b = torch.zeros(size), torch.zeros(size)
    touches_a, touches_b = torch.zeros(size, dtype=torch.int64), torch.zeros(size, dtype=torch.int64)
    log, version, pulled_at, copies = TouchLog(), 0, {}, {}
    for w in range(workers):
        pulled_at[w], copies[w] = 0, touches_a.clone()
    for _ in range(data.draw(st.integers(1, 40))):
        w = int(rng.integers(workers))
        parts = []
        for start, stop in layers:
            if rng.random() < 0.3:
                where = slice(start, stop)
            else:
                where = torch.from_numpy(np.sort(rng.choice(np.arange(start, stop),
                                                            rng.integers(0, stop - start + 1),
                                                            replace=False)).astype(np.int64))
            n = (stop - start) if isinstance(where, slice) else len(where)
            parts.append((where, torch.from_numpy(rng.normal(size=n).astype(np.float32))))
        a = apply_parts(theta_a, touches_a,
                        lambda layer, where: staleness(touches_a, copies[w], where), parts, 0.1, True)
        since = pulled_at[w]
        b = apply_parts(theta_b, touches_b, lambda layer, where: log.tau(layer, where, since),
                        parts, 0.1, True)
        assert a == b
        version += 1
        log.record(version, [where for where, _ in parts])
        pulled_at[w], copies[w] = version, touches_a.clone()  # the worker pulls again
        oldest = min(pulled_at.values())
        log.forget_up_to(oldest)
        assert list(log.entries) == list(range(oldest + 1, version + 1))
    assert torch.equal(theta_a, theta_b) and torch.equal(touches_a, touches_b)


def test_asgd_validation_flag_is_math_config():
    """--validation: a count >= 0 (0 by default: no hold-out), part of the mathematics
    (a resume must match it), absent from checkpoints written before it (read as 0)."""
    from mpi_gan.algorithms.asgd.config import AsgdConfig, parse_args as parse_asgd_config
    from mpi_gan.io.checkpoint import mismatched_fields
    assert parse_asgd_config([]).validation == 0
    assert parse_asgd_config(["--validation", "10000"]).validation == 10000
    with pytest.raises(SystemExit):
        parse_asgd_config(["--validation", "-1"], quiet=True)
    assert "validation" not in AsgdConfig.RESUMABLE
    assert mismatched_fields(AsgdConfig(), AsgdConfig(validation=10)) == ["validation"]
    old = {k: v for k, v in AsgdConfig(seed=4).as_attrs().items() if k != "validation"}
    assert AsgdConfig.from_attrs(old) == AsgdConfig(seed=4)


def test_asgd_eval_table_reads_old_checkpoints_as_test_rows():
    from mpi_gan.algorithms.asgd.main import eval_table
    table = eval_table()
    table.load({"push": np.array([5, 10]), "accuracy": np.array([0.5, 0.75]),
                "loss": np.array([1.0, 0.5])})  # no 'validation' column: all on the test set
    assert table.arrays()["validation"].tolist() == [0, 0]
    table.append(push=15, accuracy=0.8, loss=0.4, validation=1)
    assert table.arrays()["validation"].tolist() == [0, 0, 1]
    table.load(table.arrays())
    assert table.arrays()["push"].tolist() == [5, 10, 15]
