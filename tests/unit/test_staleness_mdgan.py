"""Bounded-staleness MD-GAN's server mathematics (mpi_gan/algorithms/mdgan/staleness.py)
against values computed here by hand: a two-layer tanh generator, whose Jacobian depends on
its weights (a feedback differentiated at the wrong version shows) and whose backward needs
the weights of the forward (differentiating through weights Adam changed in place fails)."""
import numpy as np
import pytest
import torch

from mpi_gan.algorithms.mdgan.staleness import (SCALES, RoundTrips, ServerCore, accepted,
                                                async_latents, hands_on, quorum_of,
                                                slower_than, staleness_scale)
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


def core(bound=2, rule="inverse", lookahead=0.0):
    g = TanhG()
    return ServerCore(g, Adam(g.parameters(), LR, BETAS, EPS), [1, 2], bound, rule, B,
                      LATENT, 0, seed=3, lookahead=lookahead)


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


def z_of(version, index, batch):
    """z of batch ``batch`` of pair ``index`` of G's version ``version`` (float64 numpy):
    worker 1's X_g is batch 1, worker 2's batch 0 (n mod 2, as synchronous k = 1)."""
    return async_latents(LATENT, 0, B, 3, version, index)[batch][0].double().numpy()


def test_pair_0_is_synchronous_md_gans_batches_and_the_workers_split_them():
    from mpi_gan.gan.losses import latent_batch
    for version in (0, 5):  # the synchronous server's latents of iteration ``version``
        for j in (0, 1):
            assert torch.equal(async_latents(LATENT, 0, B, 3, version, 0)[j][0],
                               latent_batch(LATENT, 0, B, 3, version, j)[0])
    later = async_latents(LATENT, 0, B, 3, 0, 1)
    assert not torch.equal(later[0][0], async_latents(LATENT, 0, B, 3, 0, 0)[0][0])
    server = ServerCore(TanhG(), Adam(TanhG().parameters(), LR, BETAS, EPS), [1, 2, 3],
                        2, "inverse", B, LATENT, 0, seed=3)
    out = {n: server.hand_out(n)[:2] for n in (1, 2, 3)}
    assert torch.equal(out[1][0], out[3][0]) and torch.equal(out[1][1], out[3][1])
    assert torch.equal(out[1][0], out[2][1]) and torch.equal(out[1][1], out[2][0])
    assert not torch.equal(out[1][0], out[1][1])
    # a batch's feedback is summed in rank order, whatever the order of arrival
    fb = {n: torch.randn(B, OUT, generator=torch.Generator().manual_seed(n)) for n in (1, 3)}
    server.take(3, fb[3]), server.take(1, fb[1])
    expected = fb[1].clone().add_(fb[3])
    sums = server.pairs[0, 0].sums(1.0)
    assert torch.equal(sums[1], expected) and sums[0] is None  # worker 2's in flight
    # ACGAN: the labels of X_g then X_d, each batch's own
    classes = 2
    acgan = ServerCore(TanhG(), Adam(TanhG().parameters(), LR, BETAS, EPS), [1, 2], 2,
                       "inverse", B, LATENT, classes, seed=3)
    ys = [latent_batch(LATENT, classes, B, 3, 0, j)[1] for j in (0, 1)]
    assert torch.equal(acgan.hand_out(1)[2], torch.cat([ys[1], ys[0]]))
    assert torch.equal(acgan.hand_out(2)[2], torch.cat([ys[0], ys[1]]))


def test_stale_feedback_is_differentiated_at_its_version_scaled_and_a_staler_one_dropped():
    server = core(bound=1)
    w0 = weights(server.g)
    rng = np.random.default_rng(0)
    feedback = {key: rng.normal(size=(B, OUT)) for key in ("1a", "1b", "2a", "1c", "2b")}
    t = lambda key: torch.tensor(feedback[key], dtype=torch.float32)  # noqa: E731
    x_g, x_d, labels, version, step = server.hand_out(1)
    assert labels is None and (version, step) == (0, 0)
    for x, batch in ((x_g, 1), (x_d, 0)):
        np.testing.assert_allclose(x.double().numpy(), np.tanh(np.tanh(
            z_of(0, 0, batch) @ w0[0].T) @ w0[1].T), atol=1e-6)
    shared_g, shared_d, _, _, _ = server.hand_out(2)     # worker 2, step 0: the same pair,
    assert torch.equal(shared_g, x_d) and torch.equal(shared_d, x_g)  # the roles swapped
    arrival = server.take(1, t("1a"))                    # worker 1's step 0
    assert (arrival.tau, arrival.pair) == (0, 0)
    second, _, _, _, step = server.hand_out(1)           # its second batch at version 0:
    assert step == 1 and not torch.equal(second, x_g)    # the version's second pair
    assert not server.update_due()
    arrival = server.take(1, t("1b"))
    assert (arrival.worker, arrival.step, arrival.tau, arrival.applied, arrival.pair) == (
        1, 1, 0, True, 1)
    assert server.update_due()
    server.update()                                      # version 1: 1a and 1b
    grad = (by_hand_gradient(w0, z_of(0, 0, 1), feedback["1a"]) +
            by_hand_gradient(w0, z_of(0, 1, 1), feedback["1b"])) / (2 * B)
    w1 = adam_first_step(w0, grad)
    assert_close(weights(server.g), w1)
    assert server.version == 1
    assert sorted(server.pairs) == [(0, 0)]              # worker 2 still holds it
    server.hand_out(1)                                   # worker 1, step 2: pair (1, 0)
    late = server.take(2, t("2a"))                       # generated at 0, arrives at 1
    assert (late.step, late.sent_version, late.tau, late.applied) == (0, 0, 1, True)
    server.take(1, t("1c"))
    server.update()                                      # version 2: 2a (at w0!) and 1c
    # 2a is differentiated at the weights that generated its batch, w0, not w1
    grad2 = (by_hand_gradient(w0, z_of(0, 0, 0), feedback["2a"]) *
             staleness_scale("inverse", 1) +
             by_hand_gradient(w1, z_of(1, 0, 1), feedback["1c"])) / (2 * B)
    wrong = (by_hand_gradient(w1, z_of(0, 0, 0), feedback["2a"]) +
             by_hand_gradient(w1, z_of(1, 0, 1), feedback["1c"])) / (2 * B)
    got = grads_of(server.g)
    assert_close(got, grad2)
    assert max(np.abs(a - b).max() for a, b in zip(got, wrong)) > 1e-4
    assert server.pairs == {}                            # nobody can use them any more
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
    assert server.pending_count == 0 and server.pairs == {}
    assert all(np.array_equal(a, b) for a, b in zip(weights(server.g), before))
    assert server.applied == 8


def test_no_scaling_more_pending_than_workers_and_one_backward_per_pair(monkeypatch):
    server = core(bound=3, rule="none")
    w0 = weights(server.g)
    rng = np.random.default_rng(1)
    fbs = [rng.normal(size=(B, OUT)) for _ in range(3)]
    server.hand_out(1)
    server.hand_out(2)                                   # both on pair (0, 0)
    server.take(1, torch.tensor(fbs[0], dtype=torch.float32))
    server.hand_out(1)                                   # pair (0, 1)
    server.take(1, torch.tensor(fbs[1], dtype=torch.float32))
    server.take(2, torch.tensor(fbs[2], dtype=torch.float32))  # three pending: one step
    backwards = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: backwards.append(1) or grad(
        *a, **k))
    server.update()
    assert len(backwards) == 2                           # one per pair, not per feedback
    expected = (by_hand_gradient(w0, z_of(0, 0, 1), fbs[0]) +
                by_hand_gradient(w0, z_of(0, 0, 0), fbs[2]) +
                by_hand_gradient(w0, z_of(0, 1, 1), fbs[1])) / (3 * B)
    assert_close(grads_of(server.g), expected)


def test_with_skip_a_non_finite_feedback_is_dropped_and_counted():
    server = core()
    server.skip_nonfinite = True
    server.hand_out(1)
    bad = torch.ones(B, OUT)
    bad[0, 0] = float("nan")
    arrival = server.take(1, bad)
    assert not arrival.applied and (server.nonfinite, server.dropped) == (1, 1)
    assert server.pending_count == 0 and not server.pairs[0, 0].has_feedback
    server.hand_out(1)
    assert server.take(1, torch.ones(B, OUT)).applied and server.pending_count == 1
    plain = core()  # without skip the NaN goes into the sum (the watch then stops the run)
    plain.hand_out(1)
    assert plain.take(1, bad).applied
    plain.close()
    assert torch.isnan(plain.pending[0]).any()


def test_closing_reduces_the_pairs_and_its_state_round_trips():
    server = core()
    first, _, _, _, _ = server.hand_out(1)
    server.take(1, torch.ones(B, OUT))
    server.hand_out(2)
    with pytest.raises(RuntimeError, match="already has step 0 in flight"):
        server.hand_out(2)
    server.take(2, torch.ones(B, OUT))
    server.update()
    server.hand_out(1)
    with pytest.raises(RuntimeError, match="nothing is in flight"):
        server.close()
    server.take(1, torch.full((B, OUT), 0.5))
    assert server.pending is None and server.pairs[1, 0].has_feedback
    server.close()
    assert server.pairs == {} and server.pending is not None
    state = dict(server.state())
    other = core()
    other.load_state(state)
    other.g.load_state_dict(server.g.state_dict())  # G itself: the role's checkpoint part
    assert (other.version, other.pending_count, other.applied, other.steps, other.handed) == (
        1, 1, 3, {1: 2, 2: 1}, {1: 1, 2: 0})
    assert all(torch.equal(a, b) for a, b in zip(other.pending, server.pending))
    # after closing, pairs asked for at the same version come anew: worker 2 gets the
    # version's first pair again (the same batches), worker 1 its second
    for s in (server, other):
        again, _, _, _, _ = s.hand_out(2)
        assert torch.equal(again, s.hand_out(1)[0]) is False
        assert sorted(s.pairs) == [(1, 0), (1, 1)]
    assert all(torch.equal(a, b) for a, b in zip(server.pairs[1, 0].x, other.pairs[1, 0].x))
    assert not torch.equal(first, again)                 # version 0's pair, not version 1's
    del state["async/pair_batches"]  # written when every worker's X_g was one batch
    with pytest.raises(ValueError, match="every worker's X_g was the same batch"):
        core().load_state(state)


def test_feedback_two_versions_old_counts_half_under_the_inverse_rule():
    server = core(bound=2, rule="inverse")
    w0 = weights(server.g)
    rng = np.random.default_rng(2)
    server.hand_out(2)                                   # pair (0, 0), at version 0
    for _ in range(2):                                   # versions 1 and 2 from worker 1
        for _ in range(2):
            server.hand_out(1)
            server.take(1, torch.tensor(rng.normal(size=(B, OUT)), dtype=torch.float32))
        server.update()
    w2 = weights(server.g)
    late, own = rng.normal(size=(B, OUT)), rng.normal(size=(B, OUT))
    # pair (0, 0) was differentiated for worker 1's feedback at version 0's update, and
    # kept (worker 2 held it): differentiated again now
    arrival = server.take(2, torch.tensor(late, dtype=torch.float32))
    assert (arrival.tau, arrival.applied, arrival.pair) == (2, True, 0)
    server.hand_out(1)                                   # pair (2, 0)
    server.take(1, torch.tensor(own, dtype=torch.float32))
    server.update()
    grad = (0.5 * by_hand_gradient(w0, z_of(0, 0, 0), late) +
            by_hand_gradient(w2, z_of(2, 0, 1), own)) / (2 * B)
    assert_close(grads_of(server.g), grad)


def test_with_a_lookahead_batches_come_from_g_extrapolated_along_its_last_step():
    server = core(bound=2, lookahead=0.5)
    w0 = weights(server.g)
    rng = np.random.default_rng(4)
    fb = [rng.normal(size=(B, OUT)) for _ in range(4)]
    x_g, _, _, _, _ = server.hand_out(1)                 # version 0: no step yet, G itself
    np.testing.assert_allclose(x_g.double().numpy(),
                               np.tanh(np.tanh(z_of(0, 0, 1) @ w0[0].T) @ w0[1].T), atol=1e-6)
    server.hand_out(2)
    for n in (1, 2):
        server.take(n, torch.tensor(fb[n - 1], dtype=torch.float32))
    server.update()
    w1 = adam_first_step(w0, (by_hand_gradient(w0, z_of(0, 0, 1), fb[0]) +
                              by_hand_gradient(w0, z_of(0, 0, 0), fb[1])) / (2 * B))
    assert_close(weights(server.g), w1)
    ahead = [a + 0.5 * (a - b) for a, b in zip(w1, w0)]  # theta_1 + L (theta_1 - theta_0)
    x_g, _, _, version, _ = server.hand_out(1)
    assert version == 1
    np.testing.assert_allclose(x_g.double().numpy(),
                               np.tanh(np.tanh(z_of(1, 0, 1) @ ahead[0].T) @ ahead[1].T),
                               atol=1e-6)
    server.take(1, torch.tensor(fb[2], dtype=torch.float32))
    server.hand_out(2)
    server.take(2, torch.tensor(fb[3], dtype=torch.float32))
    server.close()                                       # a checkpoint here resumes exactly
    state = dict(server.state())
    assert_close([state["async/previous/w1"].double().numpy(),
                  state["async/previous/w2"].double().numpy()], w0)
    other = core(bound=2, lookahead=0.5)
    other.load_state(state)
    assert_close([p.double().numpy() for p in other.previous], w0)
    other.g.load_state_dict(server.g.state_dict())
    # the feedback is differentiated at the extrapolated weights, applied to G's own
    grad = (by_hand_gradient(ahead, z_of(1, 0, 1), fb[2]) +
            by_hand_gradient(ahead, z_of(1, 0, 0), fb[3])) / (2 * B)
    for s in (server, other):
        s.update()
        assert_close(grads_of(s.g), grad)
    assert all(torch.equal(a, b) for a, b in zip(server.previous, other.previous))
    del state["async/previous/w1"], state["async/previous/w2"]
    with pytest.raises(ValueError, match="G before its last step"):
        core(bound=2, lookahead=0.5).load_state(state)  # a lookahead needs it from version 1


def test_a_worker_gets_its_next_batches_at_once_unless_a_drain_follows_the_update():
    # (update due, version, swap period, workers, checkpoint every, iterations)
    assert hands_on(False, 3, 4, 2, 5, 10)                # no update yet: always
    assert hands_on(True, 1, 4, 2, 5, 10)                 # version 2 drains for nothing
    assert not hands_on(True, 3, 4, 2, 5, 10)             # version 4: a swap
    assert hands_on(True, 3, 4, 1, 5, 10)                 # one worker: no swap
    assert not hands_on(True, 4, 4, 2, 5, 10)             # version 5: a checkpoint
    assert hands_on(True, 4, 4, 2, 0, 10)                 # no checkpoints
    assert not hands_on(True, 9, 0, 2, 0, 10)             # version 10: the end


def test_fresh_batches_wait_for_the_next_version_and_only_fresh_feedback_makes_the_quorum():
    g = TanhG()
    server = ServerCore(g, Adam(g.parameters(), LR, BETAS, EPS), [1, 2, 3], 4, "inverse", B,
                        LATENT, 0, seed=3, quorum=2, fresh=True)
    fb = torch.ones(B, OUT)
    assert server.ready([3, 1, 2]) == [1, 2, 3]           # nothing in flight: every one
    for n in (1, 2, 3):
        server.hand_out(n)
    # (update due, version, swap period, workers, checkpoint every, iterations, fresh,
    # behind): a fresh worker waits for the next version, one behind does not
    assert not hands_on(False, 3, 0, 3, 0, 10, fresh=True, behind=False)
    assert hands_on(False, 3, 0, 3, 0, 10, fresh=True, behind=True)
    assert not hands_on(True, 3, 0, 3, 0, 10, fresh=True, behind=True)
    assert server.take(1, fb).tau == 0 and not server.update_due()
    assert server.ready([1]) == []                        # it had version 0's batches
    assert server.take(2, fb).tau == 0 and server.update_due()  # Q = 2 fresh: due
    server.update()
    assert server.ready([2, 1]) == [1, 2]                 # version 1: both get batches
    for n in (1, 2):
        server.hand_out(n)
    late = server.take(3, fb)                             # version 0's, taken at 1
    assert (late.tau, late.applied) == (1, True)
    assert (server.pending_count, server.fresh_count) == (1, 0)
    assert not server.update_due()                        # stale: not part of the quorum
    _, _, _, version, _ = server.hand_out(3)              # behind: version 1's at once
    assert version == 1 and server.take(1, fb).tau == 0 and not server.update_due()
    state = dict(server.state())
    assert state["async/counters"].tolist()[-1] == 1      # the fresh count is kept
    server.quorum = 3                                     # 2 fresh of Q = 3, but N = 3
    assert server.take(3, fb).tau == 0 and server.update_due()  # pending: due all the same
    assert (server.pending_count, server.fresh_count) == (3, 2)
    # an old checkpoint's five counters load with no fresh feedback counted
    state["async/counters"] = state["async/counters"][:5]
    other = ServerCore(TanhG(), Adam(TanhG().parameters(), LR, BETAS, EPS), [1, 2, 3], 4,
                       "inverse", B, LATENT, 0, seed=3, quorum=2, fresh=True)
    other.load_state(state)
    assert (other.version, other.pending_count, other.fresh_count) == (1, 2, 0)


def test_fresh_idle_workers_get_batches_again_when_nothing_is_in_flight():
    g = TanhG()
    server = ServerCore(g, Adam(g.parameters(), LR, BETAS, EPS), [1, 2], 2, "inverse", B,
                        LATENT, 0, seed=3, quorum=2, fresh=True, skip_nonfinite=True)
    server.hand_out(1), server.hand_out(2)
    server.take(1, torch.ones(B, OUT))
    assert server.ready([1]) == []                        # worker 2's step is in flight
    server.take(2, torch.full((B, OUT), float("nan")))    # dropped: non-finite
    assert not server.update_due()
    assert server.ready([2, 1]) == [1, 2]                 # else nothing would ever arrive
    _, _, _, version, _ = server.hand_out(1)
    assert version == 0 and server.in_flight[1].pair.index == 1  # the version's 2nd pair


def test_the_default_quorum_waits_for_the_workers_keeping_pace_and_no_one_behind():
    assert [quorum_of(0, True, 4, 2.0), quorum_of(0, True, 4, 0.0), quorum_of(0, True, 1, 0.0),
            quorum_of(0, False, 4, 2.0), quorum_of(3, True, 4, 2.0)] == [0, 3, 1, 4, 3]
    g = TanhG()
    server = ServerCore(g, Adam(g.parameters(), LR, BETAS, EPS), [1, 2, 3], 4, "inverse", B,
                        LATENT, 0, seed=3, fresh=True)
    fb = torch.ones(B, OUT)
    assert server.awaited() == [1, 2, 3] and not server.update_allowed()
    for n in (1, 2, 3):
        server.hand_out(n)
    assert not server.update_due(frozenset({1, 2, 3}))     # nothing pending yet
    server.take(1, fb)
    assert server.awaited() == [2, 3]
    assert not server.update_due() and not server.update_due(frozenset({2}))
    assert server.update_due(frozenset({2, 3})) and server.update_allowed()
    server.take(2, fb)
    assert server.update_due(frozenset({3})) and not server.update_due(frozenset({1, 2}))
    server.update()                                       # version 1, worker 3 still out
    assert server.awaited() == [1, 2]                     # 3 holds version 0's batches
    server.hand_out(1), server.hand_out(2)
    assert server.take(3, fb).tau == 1                    # stale: no one waits for it
    server.hand_out(3)                                    # behind: version 1's at once
    assert server.awaited() == [1, 2, 3]
    server.take(1, fb), server.take(2, fb)
    assert (server.pending_count, server.fresh_count) == (3, 2)
    assert server.update_due()                            # N pending: due whoever is out


def test_make_up_steps_g_on_n_fresh_feedbacks_the_workers_keeping_pace_making_up():
    """--staleness-make-up, 3 workers, worker 3 slow: G does not step on the fresh
    feedbacks of the workers keeping pace alone, nor on a stale one; the first of them
    back is handed the version's next pair while fewer fresh feedbacks than workers are
    pending or coming from workers not slow, and its feedback on it, fresh, makes the
    third."""
    g = TanhG()
    server = ServerCore(g, Adam(g.parameters(), LR, BETAS, EPS), [1, 2, 3], 4, "inverse", B,
                        LATENT, 0, seed=3, fresh=True, make_up=True)
    fb, slow = torch.ones(B, OUT), frozenset({3})
    for n in (1, 2, 3):
        server.hand_out(n)
    server.take(1, fb)
    # 1 fresh pending, worker 2 coming (3 is slow): 2 < 3, make up; were 3 not slow, no
    assert server.make_up_wanted(slow) and not server.make_up_wanted()
    assert not server.update_due(slow) and not server.update_allowed()
    # (update due, version, swap period, workers, checkpoint every, iterations, fresh,
    # behind, make up): a fresh worker that makes up is handed on, unless G is due
    assert hands_on(False, 0, 0, 3, 0, 10, fresh=True, behind=False, make_up=True)
    assert not hands_on(True, 0, 0, 3, 0, 10, fresh=True, behind=False, make_up=True)
    server.hand_out(1)
    assert server.in_flight[1].pair.index == 1            # the version's second pair
    assert not server.make_up_wanted(slow)                # 1 pending + 1 and 2 coming
    server.take(2, fb)
    assert (server.fresh_count, server.update_due(slow)) == (2, False)
    server.take(1, fb)                                    # its made-up feedback: fresh
    assert (server.fresh_count, server.pending_count) == (3, 3) and server.update_due()
    server.update()
    server.hand_out(1), server.hand_out(2)
    assert server.take(3, fb).tau == 1                    # stale: pending, not fresh
    server.hand_out(3)
    server.take(1, fb), server.take(2, fb)
    # 3 pending (N), 2 of them fresh: not due, unlike the rule without make-up
    assert (server.pending_count, server.fresh_count) == (3, 2)
    assert not server.update_due(slow)
    server.make_up = False
    assert server.update_due(slow) and not server.make_up_wanted()


def test_round_trips_mark_a_worker_slower_than_patience_times_the_others_median():
    trips = RoundTrips(2.0, weight=0.5)
    trips.observe(1, 1.0)
    assert trips.slow == frozenset()                      # one estimate: nobody to compare
    for n, seconds in ((2, 1.2), (3, 0.9), (4, 5.0)):
        trips.observe(n, seconds)
    assert trips.slow == {4}                              # 5.0 > 2 x median(0.9, 1.0, 1.2)
    assert slower_than(trips.seconds, 0.0) == frozenset()
    assert slower_than(trips.seconds, 5.0) == frozenset()  # 5 is not above 5 x 1.0
    trips.observe(4, 1.0)                                 # moving average: 3.0
    assert trips.seconds[4] == pytest.approx(3.0) and trips.slow == {4}
    trips.observe(4, 1.0)                                 # 2.0 of the others' 1.0: waited
    assert trips.slow == frozenset()
    # an even number of others: the mean of the middle two; one other: its time
    assert slower_than({1: 1.0, 2: 1.2, 3: 2.3}, 2.0) == {3}      # 2.3 > 2 x 1.1
    assert slower_than({1: 1.0, 2: 1.2, 3: 2.1}, 2.0) == frozenset()  # 2.1 < 2.2
    assert slower_than({1: 1.0, 2: 1.4, 3: 2.3}, 2.0) == frozenset()  # 2.3 > 2 x 1.0 only
    assert slower_than({7: 1.0, 9: 4.0}, 2.0) == {9}
    assert slower_than({7: 1.0, 9: 4.0}, 4.0) == frozenset()
    # against a median computed here, for workers in any order and ties
    rng = np.random.default_rng(0)
    for n in (2, 3, 4, 5, 8):
        seconds = {int(k): float(v) for k, v in zip(rng.permutation(50)[:n],
                                                    rng.choice([0.5, 1.0, 3.0], n))}
        expect = {k for k, v in seconds.items()
                  if v > 1.5 * np.median([u for j, u in seconds.items() if j != k])}
        assert slower_than(seconds, 1.5) == expect, seconds


def test_snapshots_share_g_buffers_so_batch_norm_statistics_move_as_synchronously():
    g = torch.nn.Sequential(torch.nn.Linear(LATENT, 5), torch.nn.BatchNorm1d(5),
                            torch.nn.Linear(5, OUT))
    server = ServerCore(g, Adam(g.parameters(), LR, BETAS, EPS), [1, 2], 2, "inverse", B,
                        LATENT, 0, seed=3)
    mean, tracked = g[1].running_mean, g[1].num_batches_tracked
    server.hand_out(1)                                    # X_g and X_d: two batches
    assert int(tracked) == 2 and g[1].running_mean is mean and mean.abs().sum() > 0
    z_0, z_1 = (z for (z, _) in async_latents(LATENT, 0, B, 3, 0, 0))
    reference = torch.nn.BatchNorm1d(5)                   # what G's own forwards give
    with torch.no_grad():
        for z in (z_0, z_1):
            reference(g[0](z))
    assert torch.allclose(mean, reference.running_mean)
    server.hand_out(2)                                    # the same pair: no forward
    assert int(tracked) == 2
    for worker in (1, 2):
        server.take(worker, torch.ones(B, OUT))
    server.update()
    server.hand_out(1)                                    # version 1, a reused snapshot
    assert int(tracked) == 4
    assert g[1].running_mean is mean


def test_the_replay_refuses_a_step_before_a_fresh_feedback_and_one_missed():
    """The replay steps G where the record's versions say, checked against the rule:
    with fresh batches and the default quorum, G may step once a fresh feedback is
    pending, and must once no worker is left to wait for."""
    from mpi_gan.algorithms.mdgan.async_roles import (ARRIVAL, CLOSED, DRAIN,
                                                      SCHEDULE_COLUMNS, SLOW)
    from mpi_gan.algorithms.mdgan.config import MdganConfig
    from mpi_gan.algorithms.mdgan.replay import ReplayError, replay

    cfg = MdganConfig(dataset="synthetic", synthetic_size=16, batch_size=4, iterations=2,
                      k=1, staleness_bound=1, swap_epochs=0, seed=1)

    def schedule(*rows):  # (event, worker, step, sent_version, pair, batch, version,
        return {c: np.array([r[i] for r in rows], dtype=np.int64)  # applied, handed_on)
                for i, c in enumerate(SCHEDULE_COLUMNS)}
    # worker 1's X_g is batch 1 of the pair, worker 2's batch 0
    one, two = (ARRIVAL, 1, 0, 0, 0, 1, 0, 1, 0), (ARRIVAL, 2, 0, 0, 0, 0, 0, 1, 0)
    drain = (DRAIN, 0, 0, 1, 0, 0, 1, 0, 0)
    replay(cfg, 3, schedule(one, two, drain))            # both back: G steps
    replay(cfg, 3, schedule(one, drain))                 # worker 2 slow: it may
    with pytest.raises(ReplayError, match=r"recorded \(step, sent version, pair, batch"):
        replay(cfg, 3, schedule(two[:5] + (1,) + two[6:]))  # worker 2's X_g: batch 0
    old = schedule(one, two, drain)
    del old["batch"]  # recorded when every worker's X_g was one batch
    with pytest.raises(ReplayError, match="no column batch: it was written by an earlier"):
        replay(cfg, 3, old)
    with pytest.raises(ReplayError, match="fewer than its quorum"):
        replay(cfg, 3, schedule(drain))                  # nothing pending
    with pytest.raises(ReplayError, match="handed on after a fresh feedback"):
        replay(cfg, 3, schedule(one[:-1] + (1,)))
    with pytest.raises(ReplayError, match="G should have stepped first"):
        replay(cfg, 3, schedule(one, two, (ARRIVAL, 1, 1, 0, 1, 1, 0, 1, 0)))
    with pytest.raises(ReplayError, match="fewer than its quorum"):  # Q = 2: both fresh
        replay(MdganConfig(**{**cfg.__dict__, "staleness_quorum": 2}), 3,
               schedule(one, drain))
    # --staleness-make-up: G steps on N fresh feedbacks only, and a worker is handed on
    # after a fresh feedback only while fresh ones are wanting (made up on pair 1)
    make_up = MdganConfig(**{**cfg.__dict__, "staleness_make_up": True})
    with pytest.raises(ReplayError, match="fewer than its quorum"):
        replay(make_up, 3, schedule(one, drain))         # worker 2 slow: 1 fresh of 2
    one_on = one[:-1] + (1,)
    replay(make_up, 3, schedule(one_on, two, (ARRIVAL, 1, 1, 0, 1, 1, 1, 1, 0)))
    with pytest.raises(ReplayError, match="none to make up for"):
        replay(make_up, 3, schedule(one, two[:-1] + (1,)))  # 2 fresh of 2: G is due
    # with the workers the server's round trips called slow recorded (a process starts
    # with none, then worker n called slow before the feedback whose round trip did it)
    # both are checked against the rule to the letter: G steps without worker 2 only once
    # it is called slow, and a worker keeping pace is handed on exactly when it makes up
    def called(n, slow=1, version=0):
        return (SLOW, n, 0, version, 0, 0, version, slow, 0)
    start = called(0, 0)
    replay(cfg, 3, schedule(start, called(2), one, drain))
    with pytest.raises(ReplayError, match=r"fewer than its quorum \(workers called slow: "
                                          r"\[\]\)"):
        replay(cfg, 3, schedule(start, one, drain))  # worker 2 was still waited for
    with pytest.raises(ReplayError, match=r"fewer than its quorum \(workers called slow: "
                                          r"\[\]\)"):  # called slow, then no longer
        replay(cfg, 3, schedule(start, called(2), called(2, 0), one, drain))
    with pytest.raises(ReplayError, match="fewer than its quorum"):  # a new process
        replay(cfg, 3, schedule(called(2), start, one, drain))      # forgets the call
    # a call counts from its feedback's take: before it, worker 2 was still waited for
    replay(cfg, 3, schedule(start, one, called(2), two, drain))
    # a run begun before the calls were recorded (G on worker 1's feedback alone at
    # versions 0 and 1, worker 2's dropped by the checkpoint's drain), resumed since:
    # loose up to the resumed process's first step, strict from it on (G steps on worker
    # 1's alone again only with worker 2 called slow)
    before = (one, (ARRIVAL, 1, 1, 1, 0, 1, 1, 1, 0), (DRAIN, 0, 0, 2, 0, 0, 2, 0, 0),
              (ARRIVAL, 2, 0, 0, 0, 0, 2, 0, 0), (CLOSED, 0, 0, 2, 0, 0, 2, 0, 0))
    again, end = (ARRIVAL, 1, 2, 2, 0, 1, 2, 1, 0), (DRAIN, 0, 0, 3, 0, 0, 3, 0, 0)
    replay(cfg, 3, schedule(*before, again, end))
    replay(cfg, 3, schedule(*before, called(0, 0, 2), called(2, 1, 2), again, end))
    with pytest.raises(ReplayError, match=r"fewer than its quorum \(workers called slow: "
                                          r"\[\]\)"):
        replay(cfg, 3, schedule(*before, called(0, 0, 2), again, end))
    replay(make_up, 3, schedule(start, called(2), one_on, (ARRIVAL, 1, 1, 0, 1, 1, 0, 1, 0),
                                drain))
    with pytest.raises(ReplayError, match=r"worker 1 left idle .* \(make-up wanted\)"):
        replay(make_up, 3, schedule(start, called(2), one))
    with pytest.raises(ReplayError, match=r"worker 1 handed on .* \(make-up not wanted\)"):
        replay(make_up, 3, schedule(start, called(1), one_on))  # the slow one: never
    with pytest.raises(ReplayError, match=r"worker 1 handed on .* workers called slow "
                                          r"\[\]: the rule says"):
        replay(cfg, 3, schedule(start, one_on))  # fresh, not behind: it waits
