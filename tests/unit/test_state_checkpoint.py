"""Unit tests (no MPI) for state packing, checkpoints and config validation."""
import os

import numpy as np
import pytest
import torch

from mpi_gan.gan.losses import make_adam
from mpi_gan.algorithms.mdgan.main import MDGAN, mdgan_metrics
from mpi_gan.algorithms.mdgan.protocol import ALL_KINDS as KINDS
from mpi_gan.algorithms.mdgan.config import MdganConfig, validate
from mpi_gan.errors import ConfigError
from mpi_gan.io.checkpoint import (CheckpointError, check_compatible, checkpoint_path,
                                   prune_checkpoints, remove_stale_temporaries, resolve_resume,
                                   write_local_checkpoint)
from mpi_gan.io.runlog import RunRecord
from mpi_gan.io.traffic import Traffic
from mpi_gan.io.state import (Layout, adam_state, load_adam_state, load_module_state, module_state,
                              rng_state)
from mpi_gan.models import make_discriminator, make_generator
from tests.conftest import FIXTURES, shard_of

read_checkpoint = MDGAN().reader


def trained_disc(seed=0):
    d = make_discriminator("mlp", 11, seed, 1)
    opt = make_adam(d, 1e-3, 0.5, 0.999)
    d(torch.randn(4, 1, 28, 28)).sum().backward()
    opt.step()
    return d, opt


def test_layout_round_trip_restores_training_exactly():
    d, opt = trained_disc()
    entries = module_state(d) + adam_state(d, opt) + rng_state()
    layout = Layout(entries)
    values = layout.unpack(layout.pack(entries))
    d2 = make_discriminator("mlp", 11, 9, 1)
    opt2 = make_adam(d2, 1e-3, 0.5, 0.999)
    load_module_state(d2, values)
    load_adam_state(d2, opt2, values)
    x = torch.randn(4, 1, 28, 28)
    for model, o in ((d, opt), (d2, opt2)):
        o.zero_grad()
        model(x).sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(d.parameters(), d2.parameters()))
    with pytest.raises(ValueError):
        layout.unpack(torch.zeros(3, dtype=torch.uint8))


def test_fresh_adam_state_equals_materialised_zeros():
    d1 = make_discriminator("mlp", 1, 0, 1)
    d2 = make_discriminator("mlp", 1, 0, 1)
    o1, o2 = make_adam(d1, 1e-3, 0.5, 0.999), make_adam(d2, 1e-3, 0.5, 0.999)
    load_adam_state(d2, o2, dict(adam_state(d2, o2)))
    x = torch.randn(3, 1, 28, 28)
    for model, o in ((d1, o1), (d2, o2)):
        model(x).sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(d1.parameters(), d2.parameters()))


def traffic_counts(world):
    """Dense counters (len(KINDS), world, world), every entry different."""
    return np.arange(len(KINDS) * world * world, dtype=np.int64).reshape(len(KINDS), world, world)


def write_small_checkpoint(out, iteration, cfg, world=3):
    g = make_generator("mlp", cfg.latent_dim, 0)
    g_opt = make_adam(g, 1e-3, 0.5, 0.999)
    discs = {n: trained_disc(n) for n in range(1, world)}
    metrics = mdgan_metrics(world - 1)
    metrics.append(iteration=1, seconds=0.5, d_loss=np.ones(world - 1),
                   g_loss=np.zeros(world - 1), server_bytes_out=10)
    traffic = traffic_counts(world)
    path = checkpoint_path(out, iteration)
    states = [(0, module_state(g) + adam_state(g, g_opt) + rng_state())] + [
        (n, module_state(d) + adam_state(d, o) + rng_state()) for n, (d, o) in discs.items()]
    write_local_checkpoint(path, RunRecord(cfg, world, KINDS, {"metrics": metrics}), "mdgan",
                           iteration, states, Traffic.from_dense(KINDS, traffic, traffic))
    return path, g, discs


def test_checkpoint_round_trip_and_validation(tmp_path):
    cfg = MdganConfig(out=str(tmp_path), iterations=10)
    path, g, discs = write_small_checkpoint(str(tmp_path), 4, cfg)
    ckpt = read_checkpoint(path)
    assert ckpt.iteration == 4 and ckpt.world_size == 3 and ckpt.config == cfg
    for key, value in g.state_dict().items():
        assert torch.equal(ckpt.rank_state(0)[f"model/{key}"], value)
    d1 = discs[1][0]
    assert torch.equal(ckpt.rank_state(1)["model/net.0.weight"], d1.net[0].weight.detach())
    assert ckpt.tables["metrics"]["d_loss"].shape == (1, 2)
    assert ckpt.kinds == KINDS and ckpt.traffic.dense()[0].shape == (len(KINDS), 3, 3)
    assert np.array_equal(ckpt.traffic.dense()[0], traffic_counts(3))
    with pytest.raises(CheckpointError, match="checkpoint of mdgan, not of asgd"):
        from mpi_gan.asgd import ASGD
        ASGD().reader(path)
    check_compatible(ckpt, cfg, 3)
    with pytest.raises(CheckpointError, match="written by 3 ranks"):
        check_compatible(ckpt, cfg, 4)
    with pytest.raises(CheckpointError, match="--model 'mlp' in checkpoint vs 'cnn' now"):
        check_compatible(ckpt, MdganConfig(out=str(tmp_path), iterations=10, model="cnn"), 3)
    with pytest.raises(CheckpointError, match="already >= --iterations"):
        check_compatible(ckpt, MdganConfig(out=str(tmp_path), iterations=4), 3)
    # changing only run-management fields is allowed
    check_compatible(ckpt, MdganConfig(out="elsewhere", iterations=99, checkpoint_every=7), 3)


def test_resume_skips_corrupt_newest_and_prunes(tmp_path):
    cfg = MdganConfig(out=str(tmp_path), iterations=10)
    for it in (2, 4, 6):
        write_small_checkpoint(str(tmp_path), it, cfg)
    newest = checkpoint_path(str(tmp_path), 6)
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(newest)
    assert resolve_resume(str(tmp_path), read_checkpoint).iteration == 4
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_resume(str(tmp_path / "missing.h5"), read_checkpoint)
    not_h5 = tmp_path / "x.h5"
    not_h5.write_bytes(b"garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        resolve_resume(str(not_h5), read_checkpoint)
    prune_checkpoints(str(tmp_path), 1)
    # the damaged manifest's shards are kept with it (it cannot say which are its own), and
    # every row segment (it may name any)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["ckpt_00000006.00000000",
                                                             "ckpt_00000006.h5", "rows"]
    assert len(os.listdir(tmp_path / "checkpoints" / "rows")) == 3


def test_shards_each_rank_its_file_the_manifest_their_sizes_and_digests(tmp_path):
    """Every rank's state is in its own file; the manifest holds no state, lists each shard's
    size and BLAKE2b digest (computed here from the file), and links each rank's state."""
    import hashlib
    import h5py
    cfg = MdganConfig(out=str(tmp_path), iterations=10)
    path, g, discs = write_small_checkpoint(str(tmp_path), 4, cfg)
    with h5py.File(path, "r") as f:
        stored = []
        f.visititems(lambda name, obj: stored.append(name) if isinstance(obj, h5py.Dataset)
                     else None)
        assert not [name for name in stored if name.startswith("state")]
        assert list(f["shards/rank"][()]) == [0, 1, 2]
        for i, rank in enumerate(f["shards/rank"][()]):
            shard = shard_of(path, rank)
            digest = hashlib.blake2b(open(shard, "rb").read(), digest_size=16).digest()
            assert f["shards/bytes"][i] == os.path.getsize(shard)
            assert f["shards/blake2b"][i].tobytes() == digest
        # h5py follows the external link from the manifest into rank 1's shard
        weight = f["state/rank_1/model/net.0.weight"][()]
    assert np.array_equal(weight, discs[1][0].net[0].weight.detach().numpy())
    with h5py.File(shard_of(path, 2), "r") as f:
        assert int(f.attrs["rank"]) == 2 and int(f.attrs["iteration"]) == 4
        assert "state/model/net.0.weight" in f


def test_a_shard_that_does_not_match_its_manifest_is_refused(tmp_path):
    cfg = MdganConfig(out=str(tmp_path), iterations=10)
    for it in (2, 4):
        write_small_checkpoint(str(tmp_path), it, cfg)
    newest = checkpoint_path(str(tmp_path), 4)
    shard = shard_of(newest, 1)
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one byte, same size: only the digest can tell
    open(shard, "wb").write(bytes(data))
    ckpt = read_checkpoint(newest)  # sizes match: rank 0 reads no shard
    with pytest.raises(CheckpointError, match=r"rank 1's shard .*rank_1.h5 does not match the "
                       "checksum in its manifest: refused"):
        ckpt.rank_state(1)
    assert ckpt.rank_state(2).keys()  # the other shards are fine
    os.unlink(shard_of(newest, 2))
    with pytest.raises(CheckpointError, match=r"rank 2's shard .*rank_2.h5 is missing"):
        read_checkpoint(newest)
    assert resolve_resume(str(tmp_path), read_checkpoint).iteration == 2
    open(shard_of(newest, 2), "wb").write(b"x" * 10)
    with pytest.raises(CheckpointError, match="has 10 bytes, its manifest says"):
        read_checkpoint(newest)


def test_shard_directories_no_manifest_names_are_removed(tmp_path):
    """A launch killed before its manifest leaves shards no manifest names: the next start
    removes them, and pruning removes a manifest's shards with it."""
    from mpi_gan.io import shards
    cfg = MdganConfig(out=str(tmp_path), iterations=10)
    for it in (2, 4):
        write_small_checkpoint(str(tmp_path), it, cfg)
    ckpts = tmp_path / "checkpoints"
    orphan = ckpts / shards.directory_name(6, 0xabc)  # shards of 6, no manifest
    orphan.mkdir()
    (orphan / "rank_0.h5").write_bytes(b"partial")
    replaced = ckpts / shards.directory_name(4, 0xdef)  # 4's manifest names another
    replaced.mkdir()
    (ckpts / "rows" / "ckpt_00000006.00000abc.h5").write_bytes(b"partial")  # rows of 6
    remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(ckpts)) == ["ckpt_00000002.00000000", "ckpt_00000002.h5",
                                         "ckpt_00000004.00000000", "ckpt_00000004.h5", "rows"]
    rows = ["ckpt_00000002.00000000.h5", "ckpt_00000004.00000000.h5"]
    assert sorted(os.listdir(ckpts / "rows")) == rows
    import shutil
    shutil.copyfile(ckpts / "ckpt_00000002.h5", ckpts / "best.h5")  # a user keeps one
    prune_checkpoints(str(tmp_path), 1)
    assert sorted(os.listdir(ckpts)) == ["best.h5", "ckpt_00000002.00000000",
                                         "ckpt_00000004.00000000", "ckpt_00000004.h5", "rows"]
    assert sorted(os.listdir(ckpts / "rows")) == rows
    best = read_checkpoint(str(ckpts / "best.h5"))  # its shards and rows are there
    assert best.rank_state(1) and len(best.tables["metrics"]["iteration"]) == 1
    (ckpts / "best.h5").unlink()
    (ckpts / "notes.h5").write_bytes(b"not HDF5")  # cannot tell what it names: keep all
    remove_stale_temporaries(str(tmp_path))
    assert "ckpt_00000002.00000000" in os.listdir(ckpts)
    assert sorted(os.listdir(ckpts / "rows")) == rows
    (ckpts / "notes.h5").unlink()
    remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(ckpts)) == ["ckpt_00000004.00000000", "ckpt_00000004.h5", "rows"]
    assert sorted(os.listdir(ckpts / "rows")) == rows[1:]


@pytest.mark.parametrize("changes,world,message", [
    ({}, 1, "at least 2 MPI ranks"),
    ({"k": 3}, 3, "1 <= k <= number of workers"),
    ({"k": 0}, 3, "1 <= k <= number of workers"),
    ({"batch_size": 0}, 3, "--batch-size must be positive"),
    ({"beta1": 1.0}, 3, "--beta1 must be in"),
    ({"latent_dim": 10}, 3, "--latent-dim must exceed"),
    ({"dataset": "celeba"}, 3, "--acgan needs class labels"),
    ({"dataset": "cifar10", "image_size": 64}, 3, "not resized"),
    ({"dataset": "celeba", "acgan": False, "image_size": 48}, 3, "must be one of"),
    ({"split": "labels:x"}, 3, "--split 'labels:x'"),
    ({"split": "dirichlet:-1"}, 3, "dirichlet:ALPHA"),
    ({"model": "resnet"}, 3, "--model must be one of"),
    ({"g_ema": 1.0}, 3, "--g-ema must be in"),
    ({"g_ema": -0.1}, 3, "--g-ema must be in"),
])
def test_validate_rejects(changes, world, message):
    with pytest.raises(ConfigError, match=message):
        validate(MdganConfig(**changes), world)
    validate(MdganConfig(), 3)


def test_out_with_an_earlier_run_is_protected(tmp_path):
    from mpi_gan.io.checkpoint import check_out_is_free
    check_out_is_free(str(tmp_path / "new"), None)
    cfg = MdganConfig(out=str(tmp_path), iterations=10)
    path, _, _ = write_small_checkpoint(str(tmp_path), 2, cfg)
    with pytest.raises(CheckpointError, match="already holds a run"):
        check_out_is_free(str(tmp_path), None)
    check_out_is_free(str(tmp_path), path)  # continuing that very run is fine
    with pytest.raises(CheckpointError, match="already holds a run"):
        check_out_is_free(str(tmp_path), str(tmp_path / "elsewhere" / "ckpt_00000002.h5"))


def test_flgan_refuses_a_generator_average():
    from mpi_gan.algorithms.flgan.config import FlganConfig, validate as validate_flgan
    with pytest.raises(ConfigError, match="--g-ema: FL-GAN"):
        validate_flgan(FlganConfig(g_ema=0.99), 3)
    validate_flgan(FlganConfig(), 3)


def test_a_version_2_checkpoint_resumes_exactly(tmp_path):
    """A checkpoint written before the checksums (format version 2, by commit 3a05a20:
    tests/fixtures/README.md) is read and resumed by today's code, and the run continues
    exactly as from a checkpoint of today's format holding the same state: every state
    tensor equal at 20. The twin is today's own checkpoint at 10 with the fixture's
    numbers written into it: the fixture's numbers are another machine's (its CPU's
    kernels round differently), so they are compared with a run here only through it."""
    import gzip
    import shutil
    import subprocess
    import sys

    import h5py

    from mpi_gan.io import integrity
    from mpi_gan.io.shards import file_digest
    fixture = os.path.join(FIXTURES,
                           "ckpt_v2_standalone_ring_it10.h5.gz")
    old = tmp_path / "ckpt_00000010.h5"
    with gzip.open(fixture, "rb") as src, open(old, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with h5py.File(old, "r") as f:
        assert int(f.attrs["format_version"]) == 2
    common = [sys.executable, "-m", "mpi_gan.standalone", "--dataset", "ring", "--iterations",
              "20", "--checkpoint-every", "10", "--eval-every", "0", "--log-every", "10"]

    def run(out, *extra):
        proc = subprocess.run(common + ["--out", str(tmp_path / out), *extra],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr

    def state_names(path):  # each rank's group: in the file (v2), or its shard (v4)
        names = []
        with h5py.File(path, "r") as f:
            for rank in f["state"]:
                f["state"][rank].visititems(lambda n, o, r=rank: names.append(f"{r}/{n}")
                                            if isinstance(o, h5py.Dataset) else None)
        return names

    def same_state(path_a, path_b):
        names = state_names(path_a)
        assert len(names) > 20 and names == state_names(path_b)
        with h5py.File(path_a, "r") as a, h5py.File(path_b, "r") as b:
            for name in names:
                assert np.array_equal(np.asarray(a["state"][name][()]).reshape(-1),
                                      np.asarray(b["state"][name][()]).reshape(-1)), name

    run("resumed", "--resume", str(old))
    run("straight", "--iterations", "10")
    twin = tmp_path / "twin" / "ckpt_00000010.h5"
    twin.parent.mkdir()
    straight = tmp_path / "straight" / "checkpoints" / "ckpt_00000010.h5"
    shutil.copyfile(straight, twin)
    directory = shard_of(str(straight), 0).split(os.sep)[-2]
    shutil.copytree(straight.parent / directory, twin.parent / directory)
    shutil.copytree(straight.parent / "rows", twin.parent / "rows")
    with h5py.File(old, "r") as src, h5py.File(shard_of(str(twin), 0), "r+") as dst:
        for name in state_names(old):
            integrity.overwrite(dst["state"][name.split("/", 1)[1]], src["state"][name][()])
    with h5py.File(twin, "r+") as f:  # the twin's manifest: its shard's new size and digest
        assert int(f.attrs["format_version"]) == 5
        shard = shard_of(str(twin), 0)
        integrity.overwrite(f["shards/bytes"], np.array([os.path.getsize(shard)]))
        integrity.overwrite(f["shards/blake2b"], np.frombuffer(file_digest(shard), np.uint8)
                            .reshape(1, 16))
    same_state(old, twin)
    run("twin-resumed", "--resume", str(twin))
    same_state(tmp_path / "resumed" / "checkpoints" / "ckpt_00000020.h5",
               tmp_path / "twin-resumed" / "checkpoints" / "ckpt_00000020.h5")
    # the twin lies in another directory: its rows are written anew beside the new manifests
    from mpi_gan.algorithms.standalone.main import Standalone
    tables = [Standalone().reader(str(tmp_path / name / "checkpoints" / "ckpt_00000020.h5"))
              .tables["metrics"] for name in ("resumed", "twin-resumed")]
    assert list(tables[1]["iteration"]) == list(range(1, 21))
    # rows 11.. from the same state (rows 1-10 are the fixture's machine's and this one's)
    assert all(np.array_equal(tables[0][k][10:], tables[1][k][10:]) for k in tables[0]
               if k != "seconds")
    with h5py.File(tmp_path / "resumed" / "run.h5", "r") as f:  # the fixture's rows kept
        iterations = f["metrics/iteration"][()]
        assert iterations[0] == 1 and iterations[-1] == 20 and len(iterations) == 20
    assert f"resumed from {old} at iteration 10" in \
        open(tmp_path / "resumed" / "logs" / "rank0.log").read()
