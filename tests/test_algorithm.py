"""Unit tests (no MPI) for MD-GAN's pure functions."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from mpi_gan.algorithms.mdgan import plan as alg
from mpi_gan.gan.losses import error_feedback, generator_loss_per_sample, latent_batch
from mpi_gan.config import Config
from mpi_gan.models import make_discriminator, make_generator
from mpi_gan.algorithms.mdgan.traffic_model import expected_traffic
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
    cfg = Config(dataset="synthetic", synthetic_size=120, batch_size=10, iterations=8, k=1,
                 swap_epochs=1, checkpoint_every=5, acgan=True, swap_adam="reset", seed=3)
    # world 4: N = 3, shard 40, 4 iterations per epoch: swaps after iterations 3 and 7
    nbytes, msgs = expected_traffic(cfg, 4, sample_floats=784, mean_shard=40, d_state_bytes=400,
                                    d_param_tensors=2, d_param_floats=100, skeleton_bytes=16)
    kind = {k: i for i, k in enumerate(KINDS)}
    assert nbytes[kind["batch_g"], 0, 2] == 8 * 10 * 784 * 4
    assert msgs[kind["batch_d"], 0, 3] == 8
    assert nbytes[kind["labels"], 0, 1] == 8 * 2 * 10 * 8
    assert nbytes[kind["feedback"], 1, 0] == 8 * 10 * 784 * 4
    assert nbytes[kind["losses"], 3, 0] == 8 * 8
    assert msgs[kind["swap"]].sum() == 2 * 3 and nbytes[kind["swap"]].sum() == 6 * 400
    assert (nbytes[kind["swap"]].diagonal() == 0).all()
    # checkpoints at 5 and 8: D (400) + Adam (2*100*4 + 2*4) + RNG (16)
    assert nbytes[kind["checkpoint"], 2, 0] == 2 * (400 + 808 + 16)
    assert nbytes[kind["restore"]].sum() == 0
    assert nbytes[:, 1:, 1:][[i for i in range(len(KINDS)) if KINDS[i] != "swap"]].sum() == 0


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
