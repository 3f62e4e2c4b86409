"""Asynchronous parameter-server SGD roles (AdaComp paper's setting) over the transport.

Messages (all raw bytes, counted by kind):
  pull  server -> worker: int64 version, int64 worker step, then the model's
        float32 parameters (flat, ``parameters()`` order); version -1 and no
        parameters means stop, -2 asks for the worker's compressor state.
  checkpoint / restore: a worker's compressor and residual state, packed
        (``state.Layout``), when the server checkpoints or resumes.
  push  worker -> server: int64 version of the pull it computed on, then one
        compression payload per parameter tensor, in ``parameters()`` order.
The worker step numbers the worker's gradients; its real batch is a pure
function of it (``data.real_batch_indices``), so workers keep no sampler state.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ... import compression
from ...compression.indexcodec import DENSE
from ...compression.payload import decode_sparse, decode_values

from ...data import Shard, real_batch_indices
from ...io.state import Layout
from .staleness import apply_parts
from ...comm.transport import ANY_SOURCE, Transport, TransportError

HEADER = 16  # pull: version, step (int64 each)
STOP = -1    # pull version meaning: stop
STATE = -2   # pull version meaning: send your compressor state (kind 'checkpoint')


def layer_offsets(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape, offset in the flat parameter vector) of every parameter tensor."""
    out, offset = [], 0
    for name, p in model.named_parameters():
        out.append((name, tuple(p.shape), offset))
        offset += p.numel()
    return out


def decode_push(buf: torch.Tensor, layers) -> tuple[int, list[tuple[object, torch.Tensor]]]:
    """(pull version, [(where, values)] per layer) of a push; raises on a malformed one.

    ``where`` indexes the flat parameter vector: a slice for a dense payload, an
    int64 tensor of flat indices for a sparse one; values are float32.
    """
    data = buf.numpy()
    if len(data) < 8:
        raise TransportError("push shorter than its 8-byte version header")
    version = int(data[:8].view(np.int64)[0])
    payloads = compression.unpack(data[8:], len(layers))
    parts = []
    for payload, (name, shape, offset) in zip(payloads, layers):
        if payload.shape != shape:
            raise TransportError(f"push for {name}: shape {payload.shape}, model has {shape}")
        if payload.index_code == DENSE:
            where = slice(offset, offset + payload.numel)
            values = decode_values(payload)
        else:
            idx, values = decode_sparse(payload)
            where = torch.from_numpy(idx) + offset
        parts.append((where, values.to(torch.float32)))
    return version, parts


def evaluate(model: nn.Module, test: Shard, chunk: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``test``."""
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(test), chunk):
            x, y = test.images[start:start + chunk], test.labels[start:start + chunk]
            logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
    return correct / len(test), loss / len(test)


def make_channel(compress: str, residual: bool) -> compression.Channel:
    """A worker's compressor (``--compress`` spec), with residual memory if ``residual``."""
    return compression.Channel(compression.parse_spec(compress),
                               compression.ResidualMemory() if residual else None)


def worker_state(channel: compression.Channel, names, shapes) -> list[tuple[str, torch.Tensor]]:
    """``channel/<parameter>/<key>`` entries of a worker's compressor and residual state."""
    return [entry for name, shape in zip(names, shapes)
            for entry in channel.state(name, shape, prefix=f"channel/{name}/")]


class AsgdServer:
    """Holds theta and applies every push as it arrives, from any worker."""

    def __init__(self, transport: Transport, model: nn.Module, lr: float, use_staleness: bool):
        self.t, self.model, self.lr, self.use_staleness = transport, model, lr, use_staleness
        self.layers = layer_offsets(model)
        size = sum(p.numel() for p in model.parameters())
        self.pull = torch.zeros(HEADER + 4 * size, dtype=torch.uint8)
        self.header = self.pull[:HEADER].view(torch.int64)
        self.theta = self.pull[HEADER:].view(torch.float32)
        self.theta.copy_(parameters_to_vector(model.parameters()).detach())
        self.touches = torch.zeros(size, dtype=torch.int64)
        self.at_pull: dict[int, torch.Tensor] = {}
        self.workers = list(range(1, transport.size))
        self.push_counts = np.zeros(transport.size, dtype=np.int64)
        self.version = 0
        self.computing: set[int] = set()  # workers with a push in flight

    def send_pull(self, worker: int) -> None:
        """Send theta with its version and the worker's next step; remember the pull."""
        self.header[0], self.header[1] = self.version, int(self.push_counts[worker])
        self.at_pull[worker] = self.touches.clone()
        self.t.send_tensor(self.pull, worker, "pull")
        self.computing.add(worker)

    def _send_signal(self, worker: int, signal: int) -> None:
        self.header[0] = signal
        self.t.send_tensor(self.pull[:HEADER], worker, "pull")

    def send_stop(self, worker: int) -> None:
        self._send_signal(worker, STOP)

    def receive_push(self) -> tuple[int, torch.Tensor]:
        buf, worker = self.t.recv_any_size(ANY_SOURCE, "push")
        self.push_counts[worker] += 1
        self.computing.discard(worker)
        return worker, buf

    def gather_states(self, layout: Layout) -> dict[int, dict[str, torch.Tensor]]:
        """Every (idle) worker's compressor state, asked for one by one."""
        states = {}
        for w in self.workers:
            self._send_signal(w, STATE)
            states[w] = layout.unpack(self.t.recv_into(layout.empty(), w, "checkpoint"))
        return states

    def restore_states(self, layout: Layout, states: dict[int, dict[str, torch.Tensor]]) -> None:
        for w in self.workers:
            self.t.send_tensor(layout.pack([(f.name, states[w][f.name]) for f in layout.fields]), w,
                        "restore")

    def apply(self, worker: int, buf: torch.Tensor) -> dict:
        """Apply one push; returns its log row (without timing)."""
        t_pull, parts = decode_push(buf, self.layers)
        sent, tau_max, tau_sum = apply_parts(self.theta, self.touches, self.at_pull[worker],
                                             parts, self.lr, self.use_staleness)
        self.version += 1
        return {"push": self.version, "worker": worker, "t_pull": t_pull,
                "delay": self.version - 1 - t_pull, "sent": sent, "tau_max": tau_max,
                "tau_sum": tau_sum, "bytes": int(buf.numel())}

    def model_with_theta(self) -> nn.Module:
        vector_to_parameters(self.theta.clone(), self.model.parameters())
        return self.model


class AsgdWorker:
    """Pulls theta, computes a gradient on its next batch, compresses it, pushes."""

    def __init__(self, transport: Transport, model: nn.Module, shard: Shard,
                 channel: compression.Channel, batch_size: int, seed: int):
        self.t, self.model, self.shard, self.channel = transport, model, shard, channel
        self.batch_size, self.seed = batch_size, seed
        self.names = [name for name, _ in model.named_parameters()]
        self.shapes = [tuple(p.shape) for p in model.parameters()]
        self.pushed_bytes = 0
        self.compute_seconds = 0.0

    def state(self) -> list[tuple[str, torch.Tensor]]:
        """The compressor's and residual's state for every parameter tensor."""
        return worker_state(self.channel, self.names, self.shapes)

    def load_state(self, values: dict[str, torch.Tensor]) -> None:
        for name, shape in zip(self.names, self.shapes):
            self.channel.load_state(name, shape, values, prefix=f"channel/{name}/")

    def gradient(self, step: int) -> list[torch.Tensor]:
        idx = real_batch_indices(self.seed, self.t.rank, len(self.shard), self.batch_size, step)
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self.shard.images[idx]), self.shard.labels[idx])
        loss.backward()
        return [p.grad for p in self.model.parameters()]

    def push_message(self, version: int, grads: list[torch.Tensor]) -> torch.Tensor:
        payloads = [self.channel.encode(g, name) for g, name in zip(grads, self.names)]
        head = np.array([version], dtype=np.int64).view(np.uint8)
        return torch.from_numpy(np.concatenate([head, compression.pack(payloads)]))

    def run(self) -> None:
        """Serve pulls until the server says stop."""
        while True:
            buf, _ = self.t.recv_any_size(0, "pull")
            version, step = buf[:HEADER].view(torch.int64).tolist()
            if version == STOP:
                return
            if version == STATE:
                entries = self.state()
                self.t.send_tensor(Layout(entries).pack(entries), 0, "checkpoint")
                continue
            tic = time.perf_counter()
            vector_to_parameters(buf[HEADER:].view(torch.float32), self.model.parameters())
            message = self.push_message(version, self.gradient(step))
            self.compute_seconds += time.perf_counter() - tic
            self.pushed_bytes += message.numel()
            self.t.send_tensor(message, 0, "push")
