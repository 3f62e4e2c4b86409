"""What plugs into the training loops, checked in one process: fault injection as a wrapper
(``train/faults.py``), the roles' declared protocols (``train/roles.py``) and the
configurations' command line (``config.build_parser``: argument groups, registry names)."""
import re
from types import SimpleNamespace

import pytest
import torch

from mpi_gan import compression
from mpi_gan.algorithms.asgd.config import AsgdConfig
from mpi_gan.algorithms.mdgan.config import MdganConfig
from mpi_gan.config import GROUPS, build_parser
from mpi_gan.train import faults, roles


class Role:
    """A synchronous rank-0 role that records the iterations it stepped."""

    def __init__(self):
        self.stepped, self.w, self.count = [], torch.ones(3), torch.zeros(2, dtype=torch.int64)
        self.extra = "its own attribute"

    def step(self, iteration):
        self.stepped.append(iteration)
        return [("metrics", {"iteration": iteration + 1})]

    def state(self):
        return [("count", self.count), ("w", self.w)]

    def load_state(self, values):
        self.w, self.count = values["w"], values["count"]

    def published(self):
        return []

    def progress(self):
        return ""


def test_the_spec_names_each_ranks_fault_and_refuses_an_unknown_one():
    spec = "1:3:kill,2:9,0:20:kill-in-checkpoint"
    assert faults.injected_fault(1, spec) == (3, "kill")
    assert faults.injected_fault(2, spec) == (9, "raise")  # the default
    assert faults.injected_fault(0, spec) == (20, "kill-in-checkpoint")
    assert faults.injected_fault(3, spec) is None and faults.injected_fault(0, "") is None
    with pytest.raises(ValueError, match="unknown fault 'explode', one of"):
        faults.injected_fault(0, "0:1:explode")


def test_a_faulty_role_meets_its_fault_at_its_iteration_only():
    role = Role()
    faulty = faults.FaultyRole(role, 3, "raise", 2)
    for t in range(3):
        assert faulty.step(t) == [("metrics", {"iteration": t + 1})]
    with pytest.raises(RuntimeError, match="fault injected by MPI_GAN_FAULT at iteration 3 "
                                           "on rank 2"):
        faulty.step(3)
    assert role.stepped == [0, 1, 2]  # the faulty step never reached the role
    assert faulty.extra == "its own attribute" and faulty.state() == role.state()


def test_nan_spoils_the_first_floating_state_tensor_then_steps():
    role = Role()
    faulty = faults.FaultyRole(role, 1, "nan", 0)
    faulty.step(0)
    assert torch.isfinite(role.w).all()
    faulty.step(1)
    assert torch.isnan(role.w).all() and role.count.tolist() == [0, 0]  # ints untouched
    assert role.stepped == [0, 1]


def test_the_algorithm_wrapper_raises_in_set_up_or_wraps_the_roles():
    algorithm = SimpleNamespace(load_data=lambda ctx: "data", make_role=lambda ctx: Role(),
                                name="x")
    with pytest.raises(RuntimeError, match=r"MPI_GAN_FAULT \(raise-in-setup\)"):
        faults.FaultyAlgorithm(algorithm, 0, "raise-in-setup", 1).load_data(None)
    after = faults.FaultyAlgorithm(algorithm, 0, "raise-after-setup", 1)
    assert after.load_data(None) == "data"
    with pytest.raises(RuntimeError, match=r"MPI_GAN_FAULT \(raise-after-setup\)"):
        after.make_role(None)
    assert isinstance(faults.FaultyAlgorithm(algorithm, 4, "kill", 1).make_role(None),
                      faults.FaultyRole)
    plain = faults.FaultyAlgorithm(algorithm, 4, "kill-in-checkpoint", 0)
    assert isinstance(plain.make_role(None), Role) and plain.name == "x"


def test_the_shard_writer_dies_once_its_first_tensor_is_written(monkeypatch):
    class Killed(Exception):
        pass

    def kill(pid, sig):
        raise Killed
    monkeypatch.setattr(faults.os, "kill", kill)
    written = []

    def write(directory, rank, iteration, algorithm, entries):
        for name, tensor in entries:  # as io.shards.write_shard consumes them
            written.append((iteration, name))

    writer = faults.killing_writer(write, 20)
    entries = [("a", None), ("b", None), ("c", None)]
    writer("d", 1, 10, "mdgan", iter(entries))
    assert written == [(10, "a"), (10, "b"), (10, "c")]  # another iteration: untouched
    with pytest.raises(Killed):
        writer("d", 1, 20, "mdgan", iter(entries))
    assert written[3:] == [(20, "a")]  # the first tensor written, none after it


def test_inject_installs_the_fault_of_this_rank_only(monkeypatch):
    def trainer(rank):
        return SimpleNamespace(comm=SimpleNamespace(Get_rank=lambda: rank),
                               algorithm=SimpleNamespace(name="x"), write_shard=print)
    monkeypatch.setenv("MPI_GAN_FAULT", "1:5:kill,0:8:kill-in-checkpoint")
    one, zero, two = trainer(1), trainer(0), trainer(2)
    for t in (one, zero, two):
        faults.inject(t)
    assert isinstance(one.algorithm, faults.FaultyAlgorithm) and one.write_shard is print
    assert zero.write_shard is not print and not isinstance(zero.algorithm,
                                                             faults.FaultyAlgorithm)
    assert two.write_shard is print and not isinstance(two.algorithm, faults.FaultyAlgorithm)


def test_a_role_lacking_a_declared_member_is_refused_with_its_name():
    roles.require(Role(), (roles.SynchronousRole, roles.ServerRole), "x", 0)
    # a forwarding proxy passes (isinstance would not see its members on Python >= 3.12)
    roles.require(faults.FaultyRole(Role(), 1, "kill", 0), (roles.SynchronousRole,), "x", 0)

    class Worker:
        def step(self, iteration):
            pass

        def state(self):
            return []
    with pytest.raises(TypeError, match=r"x: the role of rank 2 \(Worker\) is not a "
                                        r"SynchronousRole: it lacks load_state"):
        roles.require(Worker(), (roles.SynchronousRole,), "x", 2)
    with pytest.raises(TypeError, match="is not a AsynchronousServer: it lacks after_checkpoint, "
                                        "before_checkpoint, finish, load_state"):
        roles.require(Worker(), (roles.AsynchronousServer,), "x", 0)
    with pytest.raises(TypeError, match="is not a FaultTolerantRole: it lacks load_state, lose"):
        roles.require(Worker(), (roles.FaultTolerantRole,), "x", 1)


@pytest.mark.parametrize("cls", [MdganConfig, AsgdConfig])
def test_help_comes_in_groups_with_the_compressors_of_the_registry(cls):
    text = build_parser(cls, "prog", "description").format_help()
    headings = [line[:-1] for line in text.splitlines() if line[:-1] in GROUPS and
                line.endswith(":")]
    assert headings == [g for g in GROUPS if g in headings] and len(headings) >= 5
    section = text.split("\ncommunication:\n")[1].split("\n\n")[0]
    assert "--compress" in section
    names = re.search(r"\(names: ([^)]*)\)", " ".join(section.split()))[1]
    assert names.split(", ") == list(compression.REGISTRY) and "{compressors}" not in text
    data = text.split("\ndata:\n")[1].split("\n\n")[0]
    assert "--dataset {mnist,fashion-mnist,cifar10,celeba,synthetic,ring,grid}" in data
