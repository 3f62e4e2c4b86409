"""Independent unit tests of the GAN mathematics (no MPI).

Checked: the discriminator loss and the per-sample generator loss (saturating and
non-saturating, with and without the ACGAN class terms), one discriminator step, the
error feedback of MD-GAN, the server's feedback sum and generator step, FL-GAN's local
step, and FedAvg with the server's and the reference's shard-size weights.

Every expected value is computed in this file from the formulas, with plain tensor
arithmetic on tiny float64 tensors (a linear discriminator D(x) = flat(x) @ W + c, a
linear generator G(z) = z @ A + a, sigmoid, softplus and log-softmax written out), never
by calling the project's other functions. Steps use ``torch.optim.SGD(lr=1)`` (or a small
lr) so that the gradient itself is checked: Adam's first step is sign-like and would hide
scale errors.
"""
import numpy as np
import pytest
import torch
from torch import nn

from mpi_gan.comm.transport import Request
from mpi_gan.gan.fedavg import fedavg, flatten
from mpi_gan.gan.losses import (discriminator_loss, discriminator_step, error_feedback,
                                gan_step, generator_loss_per_sample)
from mpi_gan.algorithms.mdgan.plan import feedback_gradients, generator_step

DT = torch.float64
TIGHT = dict(rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------ formulas, by hand
def sig(s):
    return 1.0 / (1.0 + torch.exp(-s))


def softplus(s):
    return torch.log(1.0 + torch.exp(s))


def log_softmax(logits):
    """log softmax over the last axis, written out."""
    return logits - torch.log(torch.exp(logits).sum(dim=-1, keepdim=True))


def softmax(logits):
    e = torch.exp(logits)
    return e / e.sum(dim=-1, keepdim=True)


def onehot(labels, classes):
    return (labels[:, None] == torch.arange(classes)[None, :]).to(DT)


def class_ce(class_logits, labels):
    """Per-sample cross-entropy -log softmax(l)[y], shape (b,)."""
    return -(log_softmax(class_logits) * onehot(labels, class_logits.shape[1])).sum(dim=1)


def d_loss_by_hand(s_real, s_fake, y_real=None, y_fake=None):
    """-(mean log sigmoid(s_r) + mean log(1 - sigmoid(s_f))) (+ mean class CEs)."""
    loss = -torch.log(sig(s_real[:, 0])).mean() - torch.log(1.0 - sig(s_fake[:, 0])).mean()
    if y_real is not None:
        loss = loss + class_ce(s_real[:, 1:], y_real).mean() \
            + class_ce(s_fake[:, 1:], y_fake).mean()
    return loss


def g_loss_by_hand(s_fake, y_fake, saturating):
    """log(1 - sigmoid(s)) (saturating) or -log sigmoid(s), plus the class CE; (b,)."""
    p = sig(s_fake[:, 0])
    loss = torch.log(1.0 - p) if saturating else -torch.log(p)
    if y_fake is not None:
        loss = loss + class_ce(s_fake[:, 1:], y_fake)
    return loss


def logit_grad_of_g_loss(s_fake, y_fake, saturating):
    """d g_loss_i / d s_i, (b, K): column 0 -sigmoid(s) (saturating) or -sigmoid(-s)
    (non-saturating); class columns softmax - onehot."""
    col0 = -sig(s_fake[:, 0]) if saturating else -sig(-s_fake[:, 0])
    if y_fake is None:
        return col0[:, None]
    cls = softmax(s_fake[:, 1:]) - onehot(y_fake, s_fake.shape[1] - 1)
    return torch.cat([col0[:, None], cls], dim=1)


def logit_grad_of_d_loss(s_real, s_fake, y_real=None, y_fake=None):
    """(dL/ds_real, dL/ds_fake) of D's loss, (b, K) each, the batch means included."""
    b_r, b_f = s_real.shape[0], s_fake.shape[0]
    g_r = torch.zeros_like(s_real)
    g_f = torch.zeros_like(s_fake)
    g_r[:, 0] = -(1.0 - sig(s_real[:, 0])) / b_r
    g_f[:, 0] = sig(s_fake[:, 0]) / b_f
    if y_real is not None:
        k = s_real.shape[1] - 1
        g_r[:, 1:] = (softmax(s_real[:, 1:]) - onehot(y_real, k)) / b_r
        g_f[:, 1:] = (softmax(s_fake[:, 1:]) - onehot(y_fake, k)) / b_f
    return g_r, g_f


def flat(x):
    return x.reshape(x.shape[0], -1)


# ------------------------------------------------------------ tiny models
SHAPE = (1, 2, 2)  # samples (b, 1, 2, 2): F = 4 features
F_IN = 4
CLASSES = 3


class LinearD(nn.Module):
    """D(x) = flat(x) @ W + c, W (F, K), hand-picked values."""

    def __init__(self, outputs):
        super().__init__()
        w = torch.tensor([[0.5, -0.3, 0.2, 0.1],
                          [-0.4, 0.25, -0.1, 0.3],
                          [0.3, 0.1, 0.4, -0.2],
                          [-0.2, -0.15, 0.05, 0.35]], dtype=DT)[:, :outputs]
        self.W = nn.Parameter(w.clone())
        self.c = nn.Parameter(torch.tensor([0.1, -0.05, 0.2, 0.0], dtype=DT)[:outputs].clone())

    def forward(self, x):
        return flat(x) @ self.W + self.c


class LinearG(nn.Module):
    """G(z) = (z @ A + a) as (b, 1, 2, 2), latent of 3, hand-picked values."""

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[0.3, -0.2, 0.5, 0.1],
                                            [-0.1, 0.4, 0.2, -0.3],
                                            [0.25, 0.05, -0.35, 0.2]], dtype=DT))
        self.a = nn.Parameter(torch.tensor([0.05, -0.1, 0.0, 0.2], dtype=DT))

    def forward(self, z):
        return (z @ self.A + self.a).reshape(z.shape[0], *SHAPE)


def samples(seed, b):
    return torch.randn(b, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=DT)


def labels(seed, b):
    return torch.randint(0, CLASSES, (b,), generator=torch.Generator().manual_seed(seed))


def outputs(acgan):
    return 1 + CLASSES if acgan else 1


# ------------------------------------------------------------ losses
def test_discriminator_loss_by_hand():
    """BCE(real, 1) + BCE(fake, 0), batch means, natural log, on hand-picked logits."""
    s_r = torch.tensor([[2.0], [-0.5], [0.3], [1.1]], dtype=DT)
    s_f = torch.tensor([[-1.0], [0.7], [1.5], [0.0]], dtype=DT)
    expected = d_loss_by_hand(s_r, s_f)
    assert torch.allclose(discriminator_loss(s_r, s_f, None, None), expected, **TIGHT)
    # one real logit 0 and one fake logit 0: log 2 + log 2
    zero = torch.zeros(1, 1, dtype=DT)
    assert torch.allclose(discriminator_loss(zero, zero, None, None),
                          torch.tensor(2 * np.log(2.0), dtype=DT), **TIGHT)
    # a D that is right (real high, fake low) has a lower loss than one that is wrong
    good = discriminator_loss(torch.full((2, 1), 3.0, dtype=DT),
                              torch.full((2, 1), -3.0, dtype=DT), None, None)
    bad = discriminator_loss(torch.full((2, 1), -3.0, dtype=DT),
                             torch.full((2, 1), 3.0, dtype=DT), None, None)
    assert good < 0.1 < 6.0 < bad


def test_discriminator_loss_acgan_class_terms_by_hand():
    """With labels: + CE(logits_real[:, 1:], y_real) + CE(logits_fake[:, 1:], y_fake)."""
    g = torch.Generator().manual_seed(1)
    s_r = torch.randn(4, 1 + CLASSES, generator=g, dtype=DT)
    s_f = torch.randn(4, 1 + CLASSES, generator=g, dtype=DT)
    y_r, y_f = torch.tensor([0, 2, 1, 2]), torch.tensor([1, 1, 0, 2])
    expected = d_loss_by_hand(s_r, s_f, y_r, y_f)
    assert torch.allclose(discriminator_loss(s_r, s_f, y_r, y_f), expected, **TIGHT)
    # the class terms are really there: more than the real/fake part alone
    assert expected > d_loss_by_hand(s_r[:, :1], s_f[:, :1]) + 0.1


@pytest.mark.parametrize("saturating", [False, True])
def test_generator_loss_per_sample_by_hand(saturating):
    """Saturating log(1 - sigmoid(s)) = -softplus(s); non-saturating -log sigmoid(s) =
    softplus(-s); per sample, shape (b,)."""
    s = torch.tensor([[-2.0], [-0.3], [0.0], [0.8], [2.5]], dtype=DT)
    got = generator_loss_per_sample(s, None, saturating)
    assert got.shape == (5,)
    assert torch.allclose(got, g_loss_by_hand(s, None, saturating), **TIGHT)
    assert torch.allclose(got, -softplus(s[:, 0]) if saturating else softplus(-s[:, 0]),
                          **TIGHT)
    # G wants D to call its samples real: the loss falls as the logit rises
    assert bool((got[1:] < got[:-1]).all())
    assert torch.allclose(got[2], torch.tensor(-np.log(2.0) if saturating else np.log(2.0),
                                               dtype=DT), **TIGHT)


@pytest.mark.parametrize("saturating", [False, True])
def test_generator_loss_per_sample_acgan_by_hand(saturating):
    """With labels each sample's loss adds its own class cross-entropy."""
    s = torch.randn(6, 1 + CLASSES, generator=torch.Generator().manual_seed(2), dtype=DT)
    y = torch.tensor([2, 0, 1, 1, 2, 0])
    got = generator_loss_per_sample(s, y, saturating)
    assert got.shape == (6,)
    assert torch.allclose(got, g_loss_by_hand(s, y, saturating), **TIGHT)
    ce = class_ce(s[:, 1:], y)
    assert bool((ce > 0.05).all())
    assert torch.allclose(got - ce, g_loss_by_hand(s, None, saturating), **TIGHT)


# ------------------------------------------------------------ discriminator step
@pytest.mark.parametrize("acgan", [False, True])
def test_discriminator_step_sgd_by_hand(acgan):
    """One SGD(lr=1) step: W_new = W - [x_r^T dL/ds_r + x_f^T dL/ds_f], with dL/ds_r =
    -(1 - sigmoid(s_r)) / b and dL/ds_f = sigmoid(s_f) / b (plus softmax - onehot for
    the class columns); returns the loss before the step."""
    d = LinearD(outputs(acgan))
    x_r, x_f = samples(10, 5), samples(11, 5)
    y_r, y_f = (labels(12, 5), labels(13, 5)) if acgan else (None, None)
    W, c = d.W.detach().clone(), d.c.detach().clone()
    s_r, s_f = flat(x_r) @ W + c, flat(x_f) @ W + c
    g_r, g_f = logit_grad_of_d_loss(s_r, s_f, y_r, y_f)
    grad_w = flat(x_r).T @ g_r + flat(x_f).T @ g_f
    grad_c = g_r.sum(0) + g_f.sum(0)
    if not acgan:  # the brief's form: mean_r(-(1 - sig(s_r)) x_r) + mean_f(sig(s_f) x_f)
        alt = (-(1 - sig(s_r)) * flat(x_r)).mean(0) + (sig(s_f) * flat(x_f)).mean(0)
        assert torch.allclose(grad_w[:, 0], alt, **TIGHT)
    opt = torch.optim.SGD(d.parameters(), lr=1.0)
    loss = discriminator_step(d, opt, x_r, y_r, x_f, y_f)
    assert loss == pytest.approx(float(d_loss_by_hand(s_r, s_f, y_r, y_f)), rel=1e-12)
    assert torch.allclose(d.W.detach(), W - grad_w, **TIGHT)
    assert torch.allclose(d.c.detach(), c - grad_c, **TIGHT)


def test_discriminator_steps_raise_real_logits_and_lower_fake_logits():
    """A few SGD steps of D: its logits on the real samples rise, on the fake ones fall,
    and its loss falls."""
    d = LinearD(1)
    x_r, x_f = samples(20, 6) + 1.0, samples(21, 6) - 1.0
    opt = torch.optim.SGD(d.parameters(), lr=0.2)
    with torch.no_grad():
        s_r0, s_f0 = d(x_r)[:, 0].clone(), d(x_f)[:, 0].clone()
    losses = [discriminator_step(d, opt, x_r, None, x_f, None) for _ in range(5)]
    with torch.no_grad():
        s_r1, s_f1 = d(x_r)[:, 0], d(x_f)[:, 0]
    assert s_r1.mean() > s_r0.mean() + 0.5
    assert s_f1.mean() < s_f0.mean() - 0.5
    assert all(b < a for a, b in zip(losses, losses[1:]))


# ------------------------------------------------------------ error feedback
@pytest.mark.parametrize("acgan", [False, True])
@pytest.mark.parametrize("saturating", [False, True])
def test_error_feedback_by_hand(saturating, acgan):
    """e_i = d g_loss(x_i) / d x_i: -sigmoid(-s_i) W[:, 0] (non-saturating) or
    -sigmoid(s_i) W[:, 0] (saturating), plus (softmax - onehot) W[:, 1:]^T with labels;
    the shape of x_g; the mean generator loss; no gradient into D."""
    d = LinearD(outputs(acgan))
    x = samples(30, 5)
    y = labels(31, 5) if acgan else None
    W, c = d.W.detach().clone(), d.c.detach().clone()
    s = flat(x) @ W + c
    expected = (logit_grad_of_g_loss(s, y, saturating) @ W.T).reshape(x.shape)
    if not acgan:
        col = -sig(s[:, 0]) if saturating else -sig(-s[:, 0])
        assert torch.allclose(expected, (col[:, None] * W[:, 0]).reshape(x.shape), **TIGHT)
    feedback, loss = error_feedback(d, x, y, saturating)
    assert feedback.shape == x.shape
    assert torch.allclose(feedback, expected, **TIGHT)
    assert loss == pytest.approx(float(g_loss_by_hand(s, y, saturating).mean()), rel=1e-12)
    assert d.W.grad is None and d.c.grad is None
    assert not x.requires_grad


@pytest.mark.parametrize("saturating", [False, True])
def test_error_feedback_is_a_per_sample_sum_independent_of_batch_size(saturating):
    """The feedback is the gradient of the SUM of the per-sample losses: each sample's
    e_i is what it gets alone (batch of 1), not divided by b."""
    d = LinearD(1 + CLASSES)
    x, y = samples(40, 6), labels(41, 6)
    whole, _ = error_feedback(d, x, y, saturating)
    for i in range(6):
        alone, _ = error_feedback(d, x[i:i + 1], y[i:i + 1], saturating)
        assert torch.allclose(whole[i:i + 1], alone, **TIGHT)
    twice, _ = error_feedback(d, torch.cat([x, x]), torch.cat([y, y]), saturating)
    assert torch.allclose(twice, torch.cat([whole, whole]), **TIGHT)
    # and the per-sample value by hand, for the first sample alone
    s = flat(x[:1]) @ d.W.detach() + d.c.detach()
    e0 = logit_grad_of_g_loss(s, y[:1], saturating) @ d.W.detach().T
    assert torch.allclose(whole[0].reshape(1, -1), e0, **TIGHT)


# ------------------------------------------------------------ MD-GAN server
def test_feedback_gradients_sum_per_batch_times_scale():
    """Batch j's upstream gradient: scale * SUM of the feedbacks assigned to j (not their
    mean); None for a batch without feedback; the feedbacks are left unchanged."""
    g = torch.Generator().manual_seed(50)
    fbs = [torch.randn(2, *SHAPE, generator=g, dtype=DT) for _ in range(4)]
    kept = [f.clone() for f in fbs]
    scale = 0.125
    grads = feedback_gradients(fbs, [0, 2, 0, 0], 4, scale)
    assert len(grads) == 4 and grads[1] is None and grads[3] is None
    assert torch.allclose(grads[0], scale * (kept[0] + kept[2] + kept[3]), **TIGHT)
    assert torch.allclose(grads[2], scale * kept[1], **TIGHT)
    for f, k in zip(fbs, kept):
        assert torch.equal(f, k)


def test_generator_step_backpropagates_upstream_gradients_by_hand():
    """generator_step with SGD(lr=1): A_new = A - sum_j z_j^T up_j, a_new = a - sum_j
    sum_i up_j,i (linear G, x = z @ A + a); batches with None get no gradient."""
    G = LinearG()
    A, a = G.A.detach().clone(), G.a.detach().clone()
    g = torch.Generator().manual_seed(60)
    zs = [torch.randn(3, 3, generator=g, dtype=DT) for _ in range(3)]
    ups = [torch.randn(3, *SHAPE, generator=g, dtype=DT), None,
           torch.randn(3, *SHAPE, generator=g, dtype=DT)]
    generated = [G(z) for z in zs]
    generator_step(torch.optim.SGD(G.parameters(), lr=1.0), generated, ups)
    grad_a_mat = zs[0].T @ flat(ups[0]) + zs[2].T @ flat(ups[2])
    grad_a_vec = flat(ups[0]).sum(0) + flat(ups[2]).sum(0)
    assert torch.allclose(G.A.detach(), A - grad_a_mat, **TIGHT)
    assert torch.allclose(G.a.detach(), a - grad_a_vec, **TIGHT)


@pytest.mark.parametrize("saturating", [False, True])
def test_mdgan_generator_update_is_the_papers_average(saturating):
    """Workers' error feedback -> feedback_gradients(scale 1/(N b)) -> generator_step with
    SGD(lr=1) gives dw = 1/(N b) sum_n sum_i e_n,i dx_i/dw, e computed by hand; that is the
    gradient of the mean over workers of each worker's mean generator loss."""
    G = LinearG()
    A, a = G.A.detach().clone(), G.a.detach().clone()
    b, batches = 4, 2
    g = torch.Generator().manual_seed(70)
    zs = [torch.randn(b, 3, generator=g, dtype=DT) for _ in range(batches)]
    ys = [labels(71 + j, b) for j in range(batches)]
    discs = {n: LinearD(1 + CLASSES) for n in (1, 2, 3)}
    with torch.no_grad():  # three different D_n
        for n, d in discs.items():
            d.W.mul_(n * 0.7).add_(0.1 * (n - 2))
            d.c.add_(0.2 * n)
    assign = {1: 1, 2: 0, 3: 1}  # worker -> its X_g: batch 1 gets two feedbacks, batch 0 one
    N = len(discs)
    generated = [G(z) for z in zs]
    feedbacks = [error_feedback(discs[n], generated[assign[n]].detach(), ys[assign[n]],
                                saturating)[0] for n in sorted(discs)]
    grads = feedback_gradients(feedbacks, [assign[n] for n in sorted(discs)], batches,
                               1.0 / (N * b))
    generator_step(torch.optim.SGD(G.parameters(), lr=1.0), generated, grads)

    grad_a_mat = torch.zeros_like(A)
    grad_a_vec = torch.zeros_like(a)
    objective = torch.zeros((), dtype=DT)
    A_ = A.clone().requires_grad_(True)
    a_ = a.clone().requires_grad_(True)
    for n, d in discs.items():
        j = assign[n]
        W, c = d.W.detach(), d.c.detach()
        x = zs[j] @ A + a
        s = x @ W + c
        e = logit_grad_of_g_loss(s, ys[j], saturating) @ W.T  # (b, F) by hand
        grad_a_mat += zs[j].T @ e / (N * b)
        grad_a_vec += e.sum(0) / (N * b)
        objective = objective + g_loss_by_hand((zs[j] @ A_ + a_) @ W + c, ys[j],
                                               saturating).mean() / N
    assert torch.allclose(G.A.detach(), A - grad_a_mat, **TIGHT)
    assert torch.allclose(G.a.detach(), a - grad_a_vec, **TIGHT)
    objective.backward()
    assert torch.allclose(grad_a_mat, A_.grad, **TIGHT)
    assert torch.allclose(grad_a_vec, a_.grad, **TIGHT)


# ------------------------------------------------------------ FL-GAN / standalone step
@pytest.mark.parametrize("acgan", [False, True])
@pytest.mark.parametrize("saturating", [False, True])
def test_gan_step_by_hand(saturating, acgan):
    """gan_step with SGD: disc_steps D steps on (x_r, G(z)), then one G step on the mean
    generator loss of G(z) under the updated D; returns (mean D loss, G loss) before the
    steps."""
    G, d = LinearG(), LinearD(outputs(acgan))
    A, a = G.A.detach().clone(), G.a.detach().clone()
    W, c = d.W.detach().clone(), d.c.detach().clone()
    b = 4
    z = torch.randn(b, 3, generator=torch.Generator().manual_seed(80), dtype=DT)
    x_r = samples(81, b)
    y_r, y_f = (labels(82, b), labels(83, b)) if acgan else (None, None)
    lr_d, lr_g, steps = 0.3, 0.5, 2

    x_f = z @ A + a
    d_losses = []
    for _ in range(steps):
        s_r, s_f = flat(x_r) @ W + c, x_f @ W + c
        d_losses.append(float(d_loss_by_hand(s_r, s_f, y_r, y_f)))
        g_r, g_f = logit_grad_of_d_loss(s_r, s_f, y_r, y_f)
        W = W - lr_d * (flat(x_r).T @ g_r + x_f.T @ g_f)
        c = c - lr_d * (g_r.sum(0) + g_f.sum(0))
    s = x_f @ W + c
    g_loss = float(g_loss_by_hand(s, y_f, saturating).mean())
    up = logit_grad_of_g_loss(s, y_f, saturating) @ W.T / b  # d mean loss / d x_i
    A_new, a_new = A - lr_g * z.T @ up, a - lr_g * up.sum(0)

    got = gan_step(G, d, torch.optim.SGD(G.parameters(), lr=lr_g),
                   torch.optim.SGD(d.parameters(), lr=lr_d), x_r, y_r, z, y_f, steps,
                   saturating)
    assert got[0] == pytest.approx(sum(d_losses) / steps, rel=1e-12)
    assert got[1] == pytest.approx(g_loss, rel=1e-12)
    assert torch.allclose(d.W.detach(), W, **TIGHT)
    assert torch.allclose(d.c.detach(), c, **TIGHT)
    assert torch.allclose(G.A.detach(), A_new, **TIGHT)
    assert torch.allclose(G.a.detach(), a_new, **TIGHT)


# ------------------------------------------------------------ FedAvg
def test_fedavg_unequal_weights_by_hand():
    """sum_i w_i v_i / sum_i w_i with unequal, non-palindromic weights: weight i goes
    with vector i (reversing the weights gives another answer)."""
    v = [torch.tensor([1.0, -2.0, 4.0, 0.5]), torch.tensor([3.0, 0.0, -1.0, 2.0]),
         torch.tensor([-5.0, 8.0, 2.0, 1.0])]
    w = [1.0, 3.0, 6.0]
    expected = (1.0 * v[0] + 3.0 * v[1] + 6.0 * v[2]) / 10.0
    assert torch.allclose(expected, torch.tensor([-2.0, 4.6, 1.3, 1.25]))
    got = fedavg(v, w)
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)
    reversed_weights = (6.0 * v[0] + 3.0 * v[1] + 1.0 * v[2]) / 10.0
    assert not torch.allclose(got, reversed_weights, rtol=1e-3, atol=1e-3)
    # integer shard sizes, two workers
    assert torch.allclose(fedavg(v[:2], [7, 1]), (7 * v[0] + v[1]) / 8, rtol=1e-6, atol=1e-6)


class FakeTransport:
    """Stands in for the Transport of FlganServer.step: every receive completes at once
    with the worker's upload (real ``Request`` objects holding no MPI request)."""

    def __init__(self, size, uploads, losses):
        self.size, self.uploads, self.losses = size, uploads, losses
        self.sent = {}

    def irecv_into(self, out, source, kind):
        out.copy_(self.uploads[source] if kind == "upload" else self.losses[source])
        return Request([], ())

    def isend_tensor(self, tensor, dest, kind):
        self.sent[(dest, kind)] = tensor.clone()
        return Request([], ())

    def received_total(self):
        return 0


def test_flgan_server_weights_each_upload_by_its_workers_shard_size():
    """FlganServer averages worker n's upload with weight shard_sizes[n - 1] (worker n's
    shard) and sends the same average to every worker."""
    from mpi_gan.algorithms.flgan.server import FlganServer
    torch.manual_seed(0)
    g, d = nn.Linear(2, 3), nn.Linear(3, 1)
    size = flatten([g, d]).numel()
    gen = torch.Generator().manual_seed(90)
    uploads = {n: torch.randn(size, generator=gen) for n in (1, 2, 3)}
    losses = {n: torch.tensor([0.5 * n, -0.1 * n]) for n in (1, 2, 3)}
    shard_sizes = np.array([5, 20, 75], dtype=np.int64)
    t = FakeTransport(4, uploads, losses)
    server = FlganServer(t, g, d, shard_sizes, period=2)
    assert server.step(0) is None  # not the end of a round
    server.step(1)
    expected = (5 * uploads[1].double() + 20 * uploads[2].double()
                + 75 * uploads[3].double()) / 100
    reversed_weights = (75 * uploads[1].double() + 20 * uploads[2].double()
                        + 5 * uploads[3].double()) / 100
    average = flatten([g, d])
    assert torch.allclose(average.double(), expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(average.double(), reversed_weights, rtol=1e-3, atol=1e-3)
    for n in (1, 2, 3):
        assert torch.equal(t.sent[(n, "average")], average)
    assert np.allclose(server.last["d_loss"], [0.5, 1.0, 1.5])


class TinyLocalGAN:
    """Stands in for LocalGAN in reference.run_reference: tiny G and D whose values depend
    on the owner only; records each owner's shard size. ``step`` changes nothing."""

    shard_sizes: dict = {}

    def __init__(self, cfg, shape, shard, owner, device=None):
        self.g, self.d = nn.Linear(2, 2).double(), nn.Linear(2, 1).double()
        with torch.no_grad():
            for k, p in enumerate([*self.g.parameters(), *self.d.parameters()]):
                p.copy_(torch.arange(p.numel(), dtype=DT).reshape(p.shape) * (owner + 1) ** 2
                        - 3.0 * owner + k)
        if shard is not None:
            TinyLocalGAN.shard_sizes[owner] = len(shard)

    def step(self, iteration):
        return 0.0, 0.0


def test_flgan_reference_weights_each_worker_by_its_shard_size(monkeypatch):
    """reference.run_reference averages worker n's G and D with weight = the size of the
    shard worker n trains on (unequal shards of a Dirichlet split). LocalGAN is replaced
    by a tiny stand-in; the averaging is the reference's own."""
    from mpi_gan.algorithms.flgan import reference
    from mpi_gan.algorithms.flgan.config import FlganConfig
    monkeypatch.setattr(reference, "LocalGAN", TinyLocalGAN)
    monkeypatch.setattr(TinyLocalGAN, "shard_sizes", {})
    cfg = FlganConfig(dataset="synthetic", synthetic_size=120, batch_size=4, seed=3,
                      split="dirichlet:0.5", iterations=1, round_every=1)
    (g, d), locals_ = reference.run_reference(cfg, 4)
    sizes = TinyLocalGAN.shard_sizes
    assert sorted(sizes) == [1, 2, 3] and len(set(sizes.values())) == 3  # unequal shards
    flats = {n: flatten([TinyLocalGAN(cfg, None, None, n).g,
                         TinyLocalGAN(cfg, None, None, n).d]).double() for n in (1, 2, 3)}
    total = float(sum(sizes.values()))
    expected = sum(sizes[n] * flats[n] for n in (1, 2, 3)) / total
    reversed_weights = sum(sizes[4 - n] * flats[n] for n in (1, 2, 3)) / total
    got = flatten([g, d]).double()
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got, reversed_weights, rtol=1e-3, atol=1e-3)
    for gan in locals_.values():  # every worker continues from the average
        assert torch.equal(flatten([gan.g, gan.d]), flatten([g, d]))


def test_moving_average_of_the_generator_by_hand():
    """--g-ema: after each G step a <- decay a + (1 - decay) w for every parameter, by hand
    over three steps; buffers copied; the average takes no gradient."""
    from mpi_gan.gan.ema import make_average, update_average

    g = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in g.parameters():
            p.fill_(1.0)
    average = make_average(g)
    assert all(not p.requires_grad for p in average.parameters())
    expected = 1.0
    for w in (3.0, -1.0, 5.0):
        with torch.no_grad():
            for p in g.parameters():
                p.fill_(w)
            g[1].running_mean.fill_(w)
        update_average(average, g, 0.9)
        expected = 0.9 * expected + 0.1 * w
        for p in average.parameters():
            assert torch.allclose(p, torch.full_like(p, expected), atol=1e-6)
        assert torch.equal(average[1].running_mean, g[1].running_mean)
    # closed form after the three steps: 0.9^3 * 1 + 0.1 (0.9^2 * 3 + 0.9 * (-1) + 5)
    assert expected == pytest.approx(1.382, abs=1e-12)
