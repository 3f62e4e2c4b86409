"""Bounded-staleness MD-GAN's server mathematics (mpi_gan/algorithms/mdgan/staleness.py)
against values computed here by hand: a two-layer tanh generator, whose Jacobian depends on
its weights (a feedback differentiated at the wrong version shows) and whose backward needs
the weights of the forward (differentiating through weights Adam changed in place fails)."""
import numpy as np
import pytest
import torch

from mpi_gan.algorithms.mdgan.staleness import (SCALES, ServerCore, accepted, async_latents,
                                                staleness_scale)
from mpi_gan.gan.adam import Adam

B, LATENT, OUT = 4, 3, 2  # batch, latent size, sample size
LR, BETAS, EPS = 0.01, (0.5, 0.999), 1e-8


class TanhG(torch.nn.Module):
    """h = tanh(z W1^T), x = tanh(h W2^T)."""

    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.tensor([[0.3, -0.2, 0.5], [0.1, 0.4, -0.6],
                                                   [-0.5, 0.2, 0.3]]))
        self.w2 = torch.nn.Parameter(torch.tensor([[0.7, -0.1, 0.2], [-0.3, 0.5, 0.4]]))

    def forward(self, z):
        return torch.tanh(torch.tanh(z @ self.w1.T) @ self.w2.T)


def weights(g):
    return [p.detach().double().numpy().copy() for p in (g.w1, g.w2)]


def grads_of(g):
    return [p.grad.double().numpy() for p in (g.w1, g.w2)]


def test_scales_and_the_bound():
    assert [staleness_scale("inverse", t) for t in range(4)] == [1.0, 1.0, 0.5, 1 / 3]
    assert [staleness_scale("none", t) for t in range(4)] == [1.0] * 4
    assert SCALES == ("inverse", "none")
    with pytest.raises(ValueError, match="unknown staleness scale 'sqrt'"):
        staleness_scale("sqrt", 1)
    with pytest.raises(ValueError, match=">= 0"):
        staleness_scale("inverse", -1)
    assert accepted(0, 2) and accepted(2, 2) and not accepted(3, 2) and not accepted(1, 0)


def core(bound=2, rule="inverse"):
    g = TanhG()
    return ServerCore(g, Adam(g.parameters(), LR, BETAS, EPS), [1, 2], bound, rule, B,
                      LATENT, 0, seed=3)


def by_hand_gradient(w, z, feedback):
    """[d/dW1, d/dW2] of sum(F * x) at weights w = [W1, W2], by the chain rule."""
    w1, w2 = w
    h = np.tanh(z @ w1.T)
    x = np.tanh(h @ w2.T)
    dx = feedback * (1 - x ** 2)
    dh = (dx @ w2) * (1 - h ** 2)
    return np.array([dh.T @ z, dx.T @ h], dtype=object)


def adam_first_step(w, grad):
    """One Adam step from zero moments: m = (1-b1) g, v = (1-b2) g^2, bias-corrected."""
    out = []
    for wi, gi in zip(w, grad):
        m, v = (1 - BETAS[0]) * gi, (1 - BETAS[1]) * gi ** 2
        m_hat, v_hat = m / (1 - BETAS[0]), v / (1 - BETAS[1])
        out.append(wi - LR * m_hat / (np.sqrt(v_hat) + EPS))
    return out


def assert_close(got, expected):
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_stale_feedback_is_differentiated_at_its_version_scaled_and_a_staler_one_dropped():
    server = core(bound=1)
    w0 = weights(server.g)
    rng = np.random.default_rng(0)
    feedback = {key: rng.normal(size=(B, OUT)) for key in ("1a", "1b", "2a", "1c", "2b")}
    t = lambda key: torch.tensor(feedback[key], dtype=torch.float32)  # noqa: E731
    z = {(n, j): async_latents(LATENT, 0, B, 3, n, j)[0][0].double().numpy()
         for n in (1, 2) for j in range(3)}
    x_g, _, labels, version, step = server.hand_out(1)
    assert labels is None and (version, step) == (0, 0)
    np.testing.assert_allclose(x_g.double().numpy(),
                               np.tanh(np.tanh(z[1, 0] @ w0[0].T) @ w0[1].T), atol=1e-6)
    server.hand_out(2)                                   # worker 2, step 0, at version 0
    assert server.take(1, t("1a")).tau == 0              # worker 1's step 0
    server.hand_out(1)                                   # worker 1, step 1, at version 0
    assert not server.update_due()
    arrival = server.take(1, t("1b"))
    assert (arrival.worker, arrival.step, arrival.tau, arrival.applied) == (1, 1, 0, True)
    assert server.update_due()
    server.update()                                      # version 1: 1a and 1b
    grad = (by_hand_gradient(w0, z[1, 0], feedback["1a"]) +
            by_hand_gradient(w0, z[1, 1], feedback["1b"])) / (2 * B)
    w1 = adam_first_step(w0, grad)
    assert_close(weights(server.g), w1)
    assert server.version == 1
    server.hand_out(1)                                   # worker 1, step 2, at version 1
    late = server.take(2, t("2a"))                       # generated at 0, arrives at 1
    assert (late.step, late.sent_version, late.tau, late.applied) == (0, 0, 1, True)
    server.take(1, t("1c"))
    server.update()                                      # version 2: 2a (at w0!) and 1c
    # 2a is differentiated at the weights that generated its batch, w0, not w1
    grad2 = (by_hand_gradient(w0, z[2, 0], feedback["2a"]) * staleness_scale("inverse", 1) +
             by_hand_gradient(w1, z[1, 2], feedback["1c"])) / (2 * B)
    wrong = (by_hand_gradient(w1, z[2, 0], feedback["2a"]) +
             by_hand_gradient(w1, z[1, 2], feedback["1c"])) / (2 * B)
    got = grads_of(server.g)
    assert_close(got, grad2)
    assert max(np.abs(a - b).max() for a, b in zip(got, wrong)) > 1e-4
    # worker 2's step 1, handed out at version 2, answered after two more updates: dropped
    server.hand_out(2)
    for _ in range(2):
        server.hand_out(1)
        server.take(1, t("1a"))
        server.hand_out(1)
        server.take(1, t("1b"))
        server.update()
    before = weights(server.g)
    dropped = server.take(2, t("2b"))
    assert (dropped.tau, dropped.applied) == (2, False) and server.dropped == 1
    assert server.pending_count == 0
    assert all(np.array_equal(a, b) for a, b in zip(weights(server.g), before))
    assert server.applied == 8


def test_no_scaling_and_more_pending_than_workers():
    server = core(bound=3, rule="none")
    w0 = weights(server.g)
    rng = np.random.default_rng(1)
    fbs = [rng.normal(size=(B, OUT)) for _ in range(3)]
    server.hand_out(1)
    server.hand_out(2)
    server.take(1, torch.tensor(fbs[0], dtype=torch.float32))
    server.hand_out(1)
    server.take(1, torch.tensor(fbs[1], dtype=torch.float32))
    server.take(2, torch.tensor(fbs[2], dtype=torch.float32))  # three pending: one step
    server.update()
    z = [async_latents(LATENT, 0, B, 3, n, j)[0][0].double().numpy()
         for n, j in ((1, 0), (1, 1), (2, 0))]
    grad = sum(by_hand_gradient(w0, zi, f) for zi, f in zip(z, fbs)) / (3 * B)
    assert_close(grads_of(server.g), grad)


def test_with_skip_a_non_finite_feedback_is_dropped_and_counted():
    server = core()
    server.skip_nonfinite = True
    server.hand_out(1)
    bad = torch.ones(B, OUT)
    bad[0, 0] = float("nan")
    arrival = server.take(1, bad)
    assert not arrival.applied and (server.nonfinite, server.dropped) == (1, 1)
    assert server.pending is None and server.pending_count == 0
    server.hand_out(1)
    assert server.take(1, torch.ones(B, OUT)).applied and server.pending_count == 1
    plain = core()  # without skip the NaN goes into the sum (the watch then stops the run)
    plain.hand_out(1)
    assert plain.take(1, bad).applied and torch.isnan(plain.pending[0]).any()


def test_its_state_round_trips_with_a_pending_sum():
    server = core()
    server.hand_out(1)
    server.take(1, torch.ones(B, OUT))
    server.hand_out(2)
    with pytest.raises(RuntimeError, match="already has step 0 in flight"):
        server.hand_out(2)
    server.take(2, torch.ones(B, OUT))
    server.update()
    server.hand_out(1)
    server.take(1, torch.full((B, OUT), 0.5))
    state = dict(server.state())
    other = core()
    other.load_state(state)
    assert (other.version, other.pending_count, other.applied, other.steps) == (
        1, 1, 3, {1: 2, 2: 1})
    assert all(torch.equal(a, b) for a, b in zip(other.pending, server.pending))


def test_feedback_two_versions_old_counts_half_under_the_inverse_rule():
    server = core(bound=2, rule="inverse")
    w0 = weights(server.g)
    rng = np.random.default_rng(2)
    server.hand_out(2)                                   # at version 0
    for _ in range(2):                                   # versions 1 and 2 from worker 1
        for _ in range(2):
            server.hand_out(1)
            server.take(1, torch.tensor(rng.normal(size=(B, OUT)), dtype=torch.float32))
        server.update()
    w2 = weights(server.g)
    late, own = rng.normal(size=(B, OUT)), rng.normal(size=(B, OUT))
    arrival = server.take(2, torch.tensor(late, dtype=torch.float32))
    assert (arrival.tau, arrival.applied) == (2, True)
    _, _, _, _, step = server.hand_out(1)
    server.take(1, torch.tensor(own, dtype=torch.float32))
    server.update()
    z_late = async_latents(LATENT, 0, B, 3, 2, 0)[0][0].double().numpy()
    z_own = async_latents(LATENT, 0, B, 3, 1, step)[0][0].double().numpy()
    grad = (0.5 * by_hand_gradient(w0, z_late, late) + by_hand_gradient(w2, z_own, own)) / (2 * B)
    assert_close(grads_of(server.g), grad)
