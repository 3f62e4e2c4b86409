"""The asynchronous SGD protocol (AdaComp paper's setting): message kinds and codecs.

Messages (all raw bytes, counted by kind):
  pull  server -> worker: int64 version, int64 worker step, then the model's
        float32 parameters (flat, ``parameters()`` order); version -1 and no
        parameters means stop, -2 asks the worker to write its compressor and
        residual state into its shard of the checkpoint whose iteration is in
        the step field.
  checkpoint (the skeleton's): the worker's report of its written shard.
  push  worker -> server: int64 version of the pull it computed on, then one
        compression payload per parameter tensor, in ``parameters()`` order.
The worker step numbers the worker's gradients; its real batch is a pure
function of it (``data.real_batch_indices``), so workers keep no sampler state.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ... import compression
from ...comm.transport import TransportError
from ...comm.kinds import SKELETON_KINDS

KINDS = ("pull", "push")
ALL_KINDS = KINDS + SKELETON_KINDS  # as counted by the transport, in this order

HEADER = 16  # pull: version, step (int64 each)
STOP = -1    # pull version meaning: stop
STATE = -2   # pull version meaning: write your shard of the checkpoint of <step>


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
        where, values = compression.sent_entries(payload, offset)
        parts.append((where, values.to(torch.float32)))
    return version, parts


def make_channel(compress: str, residual: bool) -> compression.Channel:
    """A worker's compressor (``--compress`` spec), with residual memory if ``residual``
    and the compressor loses anything (``none`` sends everything: no residual)."""
    compressor = compression.parse_spec(compress)
    lossy = compressor.name != "none"
    return compression.Channel(compressor,
                               compression.ResidualMemory() if residual and lossy else None)


def worker_state(channel: compression.Channel, names, shapes) -> list[tuple[str, torch.Tensor]]:
    """``channel/<parameter>/<key>`` entries of a worker's compressor and residual state."""
    return [entry for name, shape in zip(names, shapes)
            for entry in channel.state(name, shape, prefix=f"channel/{name}/")]


