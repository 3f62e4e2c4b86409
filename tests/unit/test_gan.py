"""Unit tests (no MPI) for the shared GAN functions: FedAvg, the flat model form, a local
GAN step."""
import copy

import pytest
import torch

from mpi_gan.config import GanConfig
from mpi_gan.data import plan_data
from mpi_gan.gan.adam import Adam
from mpi_gan.gan.fedavg import fedavg, flatten, load_flat
from mpi_gan.io.state import adam_state, load_adam_state
from mpi_gan.models import make_discriminator, make_generator


def test_fedavg_by_hand():
    a = torch.tensor([1.0, 2.0, 3.0])
    b = torch.tensor([3.0, 6.0, -1.0])
    c = torch.tensor([0.0, 0.0, 0.0])
    # weights are shard sizes: (10 a + 30 b + 0 c) / 40
    assert torch.equal(fedavg([a, b, c], [10, 30, 0]), torch.tensor([2.5, 5.0, 0.0]))
    assert torch.equal(fedavg([a, b], [1, 1]), torch.tensor([2.0, 4.0, 1.0]))
    assert torch.equal(fedavg([a], [7]), a)
    assert fedavg([a, b], [1, 2]).dtype == torch.float32
    # equal weights of identical models change nothing, bit for bit
    x = torch.randn(1000)
    assert torch.equal(fedavg([x, x.clone(), x.clone()], [5, 5, 5]), x)
    with pytest.raises(ValueError, match="as many weights"):
        fedavg([a, b], [1])
    with pytest.raises(ValueError, match="positive sum"):
        fedavg([a, b], [0, 0])


def test_flat_model_round_trip_includes_batchnorm_statistics():
    g = make_generator("cnn", 32, 0)
    g(torch.randn(4, 32))  # training mode: running statistics move away from 0/1
    d = make_discriminator("cnn", 11, 0, 1)
    vector = flatten([g, d])
    floats = sum(v.numel() for m in (g, d) for v in m.state_dict().values()
                 if v.is_floating_point())
    params = sum(p.numel() for m in (g, d) for p in m.parameters())
    assert vector.numel() == floats > params  # parameters and BatchNorm statistics
    g2, d2 = make_generator("cnn", 32, 1), make_discriminator("cnn", 11, 1, 2)
    load_flat([g2, d2], vector)
    for m1, m2 in ((g, g2), (d, d2)):
        for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
            if v1.is_floating_point():
                assert torch.equal(v1, v2), k
    with pytest.raises(ValueError, match="flat model"):
        load_flat([g2, d2], torch.cat([vector, torch.zeros(1)]))


def test_local_gan_step_moves_both_models_deterministically():
    from mpi_gan.config import local_settings
    from mpi_gan.gan.local import LocalGAN
    cfg = GanConfig(dataset="synthetic", synthetic_size=64, batch_size=8, seed=4)
    shard = plan_data(cfg, 1, 1).shard
    settings = local_settings(cfg)
    a, b = LocalGAN(settings, (1, 28, 28), shard, 1), LocalGAN(settings, (1, 28, 28), shard, 1)
    g0, d0 = flatten([a.g]), flatten([a.d])
    for t in range(3):
        assert a.step(t) == b.step(t)
    assert torch.equal(flatten([a.g, a.d]), flatten([b.g, b.d]))
    assert not torch.equal(flatten([a.g]), g0) and not torch.equal(flatten([a.d]), d0)


def test_adam_matches_torch_adam_bit_for_bit():
    """gan/adam.py is torch.optim.Adam(foreach=False) without torch.optim: same parameters
    and state after 40 steps with the GAN's betas, every bit, also after a state restore."""

    torch.manual_seed(3)
    ours = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.LeakyReLU(0.2),
                               torch.nn.Linear(5, 3))
    theirs = copy.deepcopy(ours)
    o1 = Adam(ours.parameters(), lr=2e-4, betas=(0.5, 0.999))
    o2 = torch.optim.Adam(theirs.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=False)
    for step in range(40):
        x = torch.randn(4, 7)
        for model, opt in ((ours, o1), (theirs, o2)):
            opt.zero_grad(set_to_none=True)
            model(x).pow(2).sum().backward()
            opt.step()
        if step == 20:  # a restore in the middle, as a resumed run does
            values = dict(adam_state(ours, o1))
            o1 = Adam(ours.parameters(), lr=2e-4, betas=(0.5, 0.999))
            load_adam_state(ours, o1, values)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(o1.state[a][key], o2.state[b][key]), key
