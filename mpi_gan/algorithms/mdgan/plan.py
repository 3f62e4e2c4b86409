"""MD-GAN's own mathematics as pure functions (Hardy et al., IPDPS 2019, Algorithm 1).

The batch plan (how many generated batches, which worker gets which), the
discriminator swap (derangement, period) and the server's feedback step.
Shared by the MPI roles (server.py, worker.py) and the single-process reference
(reference.py). Shapes: b = batch size, samples (b, C, H, W), N = number of
workers, K = generated batches. The GAN losses every algorithm shares are in
``mpi_gan.gan.losses``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data.splits import epoch_iterations
from ...gan.adam import Adam
from ...seeding import generator


# ------------------------------------------------------------ batch plan
def generated_batches(k: int) -> int:
    """K, the number of batches the server generates per iteration: max(k, 2).

    With k = 1 the paper's two batches per worker could not be distinct, so at
    least 2 are generated (k = 1 and k = 2 therefore behave alike).
    """
    return max(k, 2)


def batch_assignment(worker: int, batches: int) -> tuple[int, int]:
    """(g, d): 0-based indices of X_n^(g) and X_n^(d) for worker n (1..N) among K batches.

    The paper's rule X_n^(g) = X^((n mod K)+1), X_n^(d) = X^(((n+1) mod K)+1)
    written 0-based; g != d whenever K >= 2.
    """
    return worker % batches, (worker + 1) % batches


def batch_plan(k: int, workers: list[int]) -> tuple[int, dict[int, tuple[int, int]]]:
    """(K, {n: (g, d)}) for the workers alive, ``workers`` (world ranks, increasing).

    The i-th of them (1-based) gets ``batch_assignment(i, K)``, and K is
    ``generated_batches(min(k, len(workers)))``: with every worker alive this is the
    paper's plan (i = n); once some died, k is lowered to the survivors' count if it
    exceeds it, so that every generated batch is someone's X_g.
    """
    batches = generated_batches(min(k, len(workers)))
    return batches, {n: batch_assignment(i, batches) for i, n in enumerate(workers, 1)}


def swap_partners(seed: int, swap_index: int, workers: list[int], worker: int
                  ) -> tuple[int, int] | None:
    """(destination, source) of ``worker``'s D in the ``swap_index``-th swap among the
    workers alive, ``workers`` (world ranks, increasing): the derangement of
    ``len(workers)`` drawn on positions, mapped to ranks. None when nobody is left to
    swap with."""
    dest = derangement(seed, swap_index, len(workers))
    if dest is None:
        return None
    position = workers.index(worker) + 1
    return workers[dest[position - 1] - 1], workers[swap_source(dest, position) - 1]


def derangement(seed: int, swap_index: int, workers: int) -> list[int] | None:
    """Swap partners for the ``swap_index``-th swap: ``dest[n-1]`` is where worker n sends D.

    A uniformly random derangement of 1..N (nobody keeps its own D), the same on
    every rank because it is drawn from a stream derived from the run seed.
    None when N < 2 (no partner exists).
    """
    if workers < 2:
        return None
    g = generator(seed, "swap", swap_index)
    while True:  # rejection sampling: about e tries on average
        perm = torch.randperm(workers, generator=g)
        if not bool((perm == torch.arange(workers)).any()):
            return [int(p) + 1 for p in perm]


def swap_source(dest: list[int], worker: int) -> int:
    """The worker whose D arrives at ``worker`` under the permutation ``dest``."""
    return dest.index(worker) + 1


def swap_period(swap_epochs: int, shard_size: int, batch_size: int) -> int:
    """Iterations between swaps: E local epochs of m // b iterations (0: never)."""
    return epoch_iterations(swap_epochs, shard_size, batch_size)


def swap_after(iteration: int, period: int) -> int | None:
    """The swap index performed after 0-based ``iteration``, or None."""
    if period > 0 and (iteration + 1) % period == 0:
        return (iteration + 1) // period
    return None


# ------------------------------------------------------------ exchange routes
EXCHANGES = ("p2p", "tree")


@dataclass(frozen=True)
class Link:
    """One message of every iteration: a copy of generated batch ``batch`` (kind
    batch_g or batch_d: what the receiver uses it as) or a feedback (sum) on it."""

    batch: int     # j, 0-based among the K generated batches
    sender: int    # world rank (0: the server)
    receiver: int  # world rank (0: the server)
    kind: str      # batch_g, batch_d or feedback


def tree_parent(position: int) -> int:
    """Parent of ``position`` (>= 1) in the binomial tree rooted at position 0: the
    position with its highest set bit cleared (1, 2, 4, 8 hang from 0; 3, 5, 9 from 1)."""
    return position - (1 << (position.bit_length() - 1))


def tree_children(position: int, size: int) -> list[int]:
    """Children of ``position`` in the binomial tree over positions 0..size-1, increasing:
    position + 2**i for every 2**i > position that stays below ``size``."""
    step = 1 << position.bit_length()
    children = []
    while position + step < size:
        children.append(position + step)
        step <<= 1
    return children


def batch_recipients(batches: int, assignment: dict[int, tuple[int, int]]
                     ) -> list[list[tuple[int, str]]]:
    """For each batch j: [(world rank, kind)] of the workers that receive it, the X_g
    holders first (batch_g, in worker order), then the X_d holders (batch_d)."""
    recipients: list[list[tuple[int, str]]] = [[] for _ in range(batches)]
    for slot, kind in ((0, "batch_g"), (1, "batch_d")):
        for n in sorted(assignment):
            recipients[assignment[n][slot]].append((n, kind))
    return recipients


def exchange_links(exchange: str, batches: int, assignment: dict[int, tuple[int, int]]
                   ) -> tuple[list[Link], list[Link]]:
    """(batch links, feedback links) of one iteration under ``--exchange``.

    p2p (the paper's): the server sends X_g and X_d to every worker (worker order) and
    every worker sends its feedback to the server, which sums it per batch in worker
    order. tree: batch j goes from the server to its first recipient only and on along
    the binomial tree over ``batch_recipients`` (position p gets it from
    ``tree_parent(p)``); the X_g holders (positions 0..G_j-1, a subtree) send their
    feedback up the same tree: each adds to its own the sums of its children in
    increasing position (``tree_sum``) and position 0 sends the batch's sum to the
    server. Each batch's links are listed in increasing position: senders receive
    before they forward, and each receiver's feedback links are in the order it adds them.
    """
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange must be one of {EXCHANGES}, got {exchange!r}")
    batch_links: list[Link] = []
    feedback_links: list[Link] = []
    if exchange == "p2p":
        for n in sorted(assignment):
            g, d = assignment[n]
            batch_links += [Link(g, 0, n, "batch_g"), Link(d, 0, n, "batch_d")]
            feedback_links.append(Link(g, n, 0, "feedback"))
        return batch_links, feedback_links
    for j, members in enumerate(batch_recipients(batches, assignment)):
        ranks = [n for n, _ in members]
        for p, (n, kind) in enumerate(members):
            batch_links.append(Link(j, ranks[tree_parent(p)] if p else 0, n, kind))
            if kind == "batch_g":
                feedback_links.append(Link(j, n, ranks[tree_parent(p)] if p else 0,
                                           "feedback"))
    return batch_links, feedback_links


def tree_sum(values: list[torch.Tensor]) -> torch.Tensor:
    """Sum of ``values`` (value p held at tree position p) as ``--exchange tree`` adds them:
    each position adds to its own value its children's sums in increasing position,
    bottom up; returns a new tensor (position 0's sum). Equal to the sum in list order
    up to rounding."""
    sums: list[torch.Tensor] = [torch.empty(0)] * len(values)
    for p in reversed(range(len(values))):
        total = values[p].clone()
        for child in tree_children(p, len(values)):
            total.add_(sums[child])
        sums[p] = total
    return sums[0]


# ------------------------------------------------------------ server math
def feedback_gradients(feedbacks: list[torch.Tensor], assignments: list[int],
                       batches: int, scale: float) -> list[torch.Tensor | None]:
    """Upstream gradient of each generated batch: scale * sum of the feedback sent for it.

    ``feedbacks[i]`` came from the worker whose X_g is batch ``assignments[i]``;
    summed in list order (worker order), so the result is reproducible.
    Batches nobody gave feedback on get None.
    """
    grads: list[torch.Tensor | None] = [None] * batches
    for fb, j in zip(feedbacks, assignments):
        grads[j] = fb.clone() if grads[j] is None else grads[j].add_(fb)
    return [g.mul_(scale) if g is not None else None for g in grads]


def generator_step(optimizer: Adam, generated: list[torch.Tensor],
                   grads: list[torch.Tensor | None]) -> None:
    """One backward pass of G with the feedback as upstream gradient, then one Adam step.

    Implements dw_j = 1/(N b) sum_n sum_i e_n,i . dx_i/dw_j (the scale is in ``grads``).
    """
    optimizer.zero_grad(set_to_none=True)
    pairs = [(x, g) for x, g in zip(generated, grads) if g is not None]
    torch.autograd.backward([x for x, _ in pairs], grad_tensors=[g for _, g in pairs])
    optimizer.step()
