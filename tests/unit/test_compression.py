"""Unit and property tests (no MPI) for the compression package."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpi_gan import compression
from mpi_gan.compression import PayloadError, indexcodec
from mpi_gan.compression.payload import DTYPES, Payload
from mpi_gan.compression.sparsify import bin_selection

ALL_SPECS = ["none", "fp16", "topk:ratio=0.1", "topk:count=3,values=fp16", "randomk:ratio=0.2",
             "adacomp", "adacomp:ratio=0.05,values=fp16", "adacomp_bins",
             "adacomp_bins:bin_size=8,values=sign"]
SHAPES = [(0,), (1,), (), (7,), (3, 5), (2, 1, 4, 4), (70000,)]


def distinct_magnitudes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    mags = torch.randperm(n, generator=g).to(torch.float32) + 1
    signs = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    return mags * signs


@given(n=st.integers(1, 3000), ratio=st.floats(0.001, 1.0), seed=st.integers(0, 1000))
@settings(max_examples=60, deadline=None)
def test_topk_keeps_exactly_the_k_largest(n, ratio, seed):
    x = distinct_magnitudes(n, seed)
    c = compression.get("topk", ratio=ratio)
    y = c.decompress(c.compress(x, "w"))
    k = min(n, max(1, int(ratio * n)))
    largest = set(torch.topk(x.abs(), k).indices.tolist())
    kept = set(torch.nonzero(y).view(-1).tolist())
    assert kept == largest
    assert torch.equal(y[list(kept)], x[list(kept)])


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_residual_memory_conserves_mass(spec):
    c = compression.parse_spec(spec)
    channel = compression.Channel(c, compression.ResidualMemory())
    g = torch.Generator().manual_seed(1)
    total_grad, total_sent = torch.zeros(500, dtype=torch.float64), torch.zeros(500, dtype=torch.float64)
    for _ in range(20):
        grad = torch.randn(500, generator=g)
        total_grad += grad.double()
        payload = channel.encode(grad, "w")
        sent = c.decompress(payload)
        # something real travels: the payload's values, at its indices, nonzero
        assert payload.count >= 1 and int((sent != 0).sum()) == payload.count
        total_sent += sent.double()
    residual = (c.memory if c.owns_residual else channel.memory).residuals["w"]
    assert torch.allclose(total_sent + residual.double(), total_grad, atol=1e-3)
    # and it carries the gradient, not noise: what was sent points the gradient's way
    assert float(total_sent @ total_grad) > 0


def test_fp16_and_randomk_send_their_inputs():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    half = compression.get("fp16")
    y = half.decompress(half.compress(x, "w"))
    assert torch.equal(y, x.half().float())  # exactly the float16 rounding of the input
    assert torch.allclose(y, x, rtol=1e-3, atol=1e-4)
    rk = compression.get("randomk", ratio=0.1, seed=5)
    payload = rk.compress(x, "w")
    y = rk.decompress(payload)
    kept = torch.nonzero(y).view(-1)
    assert payload.count == len(kept) == 100
    assert torch.equal(y[kept], x[kept])  # the chosen entries, unscaled and exact
    assert (y[torch.ones(1000, dtype=torch.bool).index_fill_(0, kept, False)] == 0).all()


def test_adacomp_bins_rule_on_hand_built_bins():
    # two bins of 4: G = R + g, H = G + g; send |H_i| >= max|G| of the bin
    g = torch.tensor([1.0, -2.0, 0.5, 0.0, 0.1, 0.1, -0.1, 0.3])
    r = torch.tensor([0.0, 1.0, 1.0, 3.0, 0.0, 0.0, 0.0, 0.0])
    acc = r + g  # [1, -1, 1.5, 3 | .1, .1, -.1, .3]
    idx, gmax = bin_selection(acc, acc + g, 4)
    # bin 1: max|G| = 3; |H| = [2, 3, 2, 3] -> 1 and 3; bin 2: max 0.3; |H| = [.2,.2,.2,.6] -> 7
    assert idx.tolist() == [1, 3, 7]
    assert torch.allclose(gmax, torch.tensor([3.0, 0.3]))
    c = compression.get("adacomp_bins", bin_size=4)
    c.memory.keep("w", r.clone())
    y = c.decompress(c.compress(g, "w"))
    assert torch.allclose(y, torch.tensor([0, -1.0, 0, 3.0, 0, 0, 0, 0.3]))
    assert torch.allclose(c.memory.residuals["w"], torch.tensor([1.0, 0, 1.5, 0, 0.1, 0.1, -0.1, 0]))
    s = compression.get("adacomp_bins", bin_size=4, values="sign")
    s.memory.keep("w", r.clone())
    p = s.compress(g, "w")
    assert p.scale == pytest.approx(1.65) and p.count == 3
    assert torch.allclose(s.decompress(p), torch.tensor([0, -1.65, 0, 1.65, 0, 0, 0, 1.65]))
    # an all-zero bin sends nothing
    idx, _ = bin_selection(torch.zeros(8), torch.ones(8), 4)
    assert idx.numel() == 0


@pytest.mark.parametrize("spec", ALL_SPECS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_wire_round_trip_every_dtype_shape(spec, dtype, shape):
    x = torch.randn(shape).to(dtype)
    c = compression.parse_spec(spec)
    p = c.compress(x, "w")
    wire = p.to_bytes()
    assert len(wire) == p.nbytes
    q, end = Payload.from_bytes(wire)
    assert end == len(wire)
    y, y2 = c.decompress(p), c.decompress(q)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.equal(y, y2)
    if spec == "none":
        assert torch.equal(y, x)


@given(st.data())
@settings(max_examples=80, deadline=None)
def test_every_index_encoding_round_trips(data):
    numel = data.draw(st.integers(1, 200000))
    count = data.draw(st.integers(0, min(numel, 3000)))
    idx = np.sort(np.random.default_rng(data.draw(st.integers(0, 99))).choice(
        numel, count, replace=False)).astype(np.int64)
    for code in (indexcodec.INT32, indexcodec.BLOCK16, indexcodec.VARINT, indexcodec.BITMAP,
                 indexcodec.RICE, indexcodec.EXPG):
        encoded = indexcodec.encode(code, idx, numel)
        assert len(encoded) == indexcodec.encoded_sizes(idx, numel)[code]
        assert np.array_equal(indexcodec.decode(code, encoded, count, numel), idx)
    best = indexcodec.choose(idx, numel)
    assert indexcodec.encoded_sizes(idx, numel)[best] == min(indexcodec.encoded_sizes(idx, numel).values())
    from mpi_gan.compression import indexcodec_kernels as kernels  # every order's size, one pass
    assert kernels.expg_all_bits(idx).tolist() == [kernels.expg_bits(idx, k) for k in range(32)]


@pytest.mark.parametrize("seed", range(6))
def test_gap_codes_long_runs_and_huge_gaps_round_trip(seed):
    """Clusters of consecutive indices between gaps of up to 2**33 (Rice's unary part
    over many 64-bit words), streams of many words; the one-pass sizes of every
    exp-Golomb order equal the order-by-order definition."""
    rng = np.random.default_rng(seed)
    starts = np.cumsum(rng.integers(1, 2 ** int(rng.integers(8, 34)), size=300))
    idx = np.unique(np.concatenate([s + np.arange(int(rng.integers(1, 40))) for s in starts]))
    numel = int(idx[-1]) + 1 + int(rng.integers(0, 1000))
    gaps = indexcodec.gap_parameters(idx)
    for code in (indexcodec.VARINT, indexcodec.RICE, indexcodec.EXPG):
        encoded = indexcodec.encode(code, idx, numel)
        assert len(encoded) == indexcodec.encoded_sizes(idx, numel, gaps)[code]
        assert np.array_equal(indexcodec.decode(code, encoded, len(idx), numel), idx)
    from mpi_gan.compression import indexcodec_kernels
    every = [indexcodec_kernels.expg_bits(idx, k) for k in range(32)]
    assert indexcodec_kernels.expg_all_bits(idx).tolist() == every and gaps[4] == min(every)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bitmap_payload_decodes_and_rejects_wrong_bits(dtype):
    """A dense selection travels as a bitmap and decodes into a reused output; an extra
    bit, a missing bit or a bit past the end raises PayloadError and leaves the output."""
    import dataclasses
    from mpi_gan.compression.payload import decode_payload, make_payload
    x = torch.randn(1001, dtype=dtype)
    idx = torch.arange(0, 1001, 2)
    payload = make_payload(x, idx, x[idx], 1)
    assert payload.index_code == indexcodec.BITMAP
    expected = torch.zeros_like(x)
    expected[idx] = x[idx].float().to(dtype)  # value code 1: float32 on the wire
    assert torch.equal(decode_payload(payload), expected)
    assert torch.equal(decode_payload(payload, out=torch.full_like(x, 7.0)), expected)
    # an extra bit, a missing one, and the last index (1000) moved past the end (1007)
    for position, change in ((1, lambda b: b | 2), (0, lambda b: b & 0xFE),
                             (-1, lambda b: (b & 0xFE) | 0x80)):
        bits = payload.indices.copy()
        bits[position] = change(bits[position])
        with pytest.raises(PayloadError, match="bitmap"):
            decode_payload(dataclasses.replace(payload, indices=bits))
        out = torch.full_like(x, 7.0)  # checked before the receive buffer is written
        with pytest.raises(PayloadError, match="bitmap"):
            decode_payload(dataclasses.replace(payload, indices=bits), out=out)
        assert torch.equal(out, torch.full_like(x, 7.0))


def test_choice_of_encoding_follows_density():
    numel = 1 << 20
    assert indexcodec.choose(np.array([5, 900000]), numel) == indexcodec.VARINT
    dense = np.arange(0, numel, 2)
    assert indexcodec.choose(dense, numel) == indexcodec.BITMAP


@pytest.mark.parametrize("spec", ["none", "topk:ratio=0.05", "adacomp_bins:values=sign", "fp16"])
def test_truncated_payload_raises(spec):
    c = compression.parse_spec(spec)
    wire = c.compress(torch.randn(300), "w").to_bytes()
    for cut in range(len(wire)):
        with pytest.raises(PayloadError):
            compression.unpack(wire[:cut], 1)
    with pytest.raises(PayloadError, match="trailing"):
        compression.unpack(np.concatenate([wire, wire[:3]]), 1)


@given(st.binary(min_size=0, max_size=200), st.integers(0, 400))
@settings(max_examples=300, deadline=None)
def test_garbage_never_reads_out_of_bounds(garbage, position):
    """Random bytes, or a valid payload with one byte flipped: a PayloadError or a valid tensor."""
    flipped = compression.get("topk", ratio=0.1).compress(torch.randn(50), "w").to_bytes()
    flipped[position % len(flipped)] ^= 0xFF
    for data in (np.frombuffer(garbage, dtype=np.uint8), flipped):
        try:
            p, _ = Payload.from_bytes(data)
            y = compression.get("none").decompress(p)
        except PayloadError:
            continue
        assert y.numel() == p.numel


def test_unknown_names_and_bad_parameters():
    with pytest.raises(ValueError, match="valid: adacomp, adacomp_bins, fp16, none, randomk, topk"):
        compression.get("zip")
    with pytest.raises(ValueError, match="valid: ratio"):
        compression.get("topk", rate=0.1)
    with pytest.raises(ValueError, match="bad ratio"):
        compression.get("topk", ratio=1.5)
    with pytest.raises(ValueError, match="bad bin_size"):
        compression.get("adacomp_bins", bin_size=-3)
    with pytest.raises(ValueError, match="key=value"):
        compression.parse_spec("topk:0.01")
    assert compression.parse_spec("adacomp:ratio=0.005,values=fp16").spec() == \
        "adacomp:ratio=0.005,values=fp16"


def test_randomk_is_seeded_and_adacomp_is_per_layer_fraction():
    a = compression.get("randomk", ratio=0.1, seed=3)
    b = compression.get("randomk", ratio=0.1, seed=3)
    x = torch.randn(1000)
    assert torch.equal(a.decompress(a.compress(x, "w")), b.decompress(b.compress(x, "w")))
    assert not torch.equal(a.decompress(a.compress(x, "w")), b.decompress(b.compress(x, "v")))
    ada = compression.get("adacomp")
    assert ada.compress(torch.randn(32), "bias").count == 1  # max(1, int(0.01 * 32))
    assert ada.compress(torch.randn(18432), "conv").count == 184


@given(n=st.integers(1 << 16, 1 << 18), ratio=st.floats(0.0005, 0.06), seed=st.integers(0, 99),
       layout=st.sampled_from(["random", "sorted", "spikes"]))
@settings(max_examples=25, deadline=None)
def test_sampled_topk_is_exact_on_large_tensors(n, ratio, seed, layout):
    """The sampled-threshold path returns exactly the k largest magnitudes, whatever the layout
    (sorted values and isolated spikes defeat the sample; the fallback must catch it)."""
    from mpi_gan.compression.sparsify import topk_indices
    x = distinct_magnitudes(n, seed)
    if layout == "sorted":
        x = x.abs().sort().values
    elif layout == "spikes":
        x = x / n
        x[torch.arange(0, n, 997)] *= 1e6
    k = max(1, int(ratio * n))
    expected = torch.topk(x.abs(), k).indices.sort().values
    assert torch.equal(topk_indices(x, k), expected)


# ---- compiled kernels (CPU) against the torch forms and their own properties ----------

@given(n=st.integers(1, 1 << 18), ratio=st.floats(0.0005, 0.5), seed=st.integers(0, 99))
@settings(max_examples=40, deadline=None)
def test_topk_kernel_equals_the_torch_form(n, ratio, seed):
    from mpi_gan.compression.sparsify import SAMPLED_TOPK_MIN, _topk_cpu, _topk_torch
    x = distinct_magnitudes(n, seed)
    k = max(1, int(ratio * n))
    if k >= n:
        return
    sampled = n >= SAMPLED_TOPK_MIN and k <= n // 16
    expected = _topk_torch(x, k, sampled)
    for values in (x, x.double()):
        idx, picked = _topk_cpu(values.numpy(), k, sampled)
        assert np.array_equal(idx, expected.numpy())
        assert np.array_equal(picked, values[expected].numpy())  # the values, kept on the way


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threshold_scan_fills_any_buffer_length_exactly(dtype):
    """``values_at_least`` counts every hit and writes the first ones in order, whatever
    the buffers' length: at, just below or just above the count, or any length that
    makes the branch-free writes of a group meet the end of the buffer."""
    from mpi_gan.compression import sparsify_kernels
    rng = np.random.default_rng(5)
    x = rng.standard_normal(5000 + 37).astype(dtype)
    x[100:164] = 9.0  # one group of 64 hits, and groups of 0 to a few elsewhere
    threshold = dtype(1.5)
    expected = np.flatnonzero(np.abs(x) >= threshold)
    for cap in list(range(0, 12)) + list(range(len(expected) - 6, len(expected) + 6)):
        idx, vals = np.full(cap, -1, np.int64), np.zeros(cap, dtype)
        assert sparsify_kernels.values_at_least(x, threshold, idx, vals) == len(expected)
        written = min(cap, len(expected))
        assert np.array_equal(idx[:written], expected[:written]), cap
        assert np.array_equal(vals[:written], x[expected[:written]])


def test_topk_kernel_breaks_ties_towards_the_lowest_indices():
    from mpi_gan.compression.sparsify import topk_indices
    x = torch.zeros(200000)
    x[[5, 70, 90000, 150000]] = torch.tensor([3.0, -2.0, 2.0, 2.0])
    assert topk_indices(x, 2).tolist() == [5, 70]
    assert topk_indices(x, 3).tolist() == [5, 70, 90000]
    assert topk_indices(x, 6).tolist() == [0, 1, 5, 70, 90000, 150000]


@given(n=st.integers(1, 300000), fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**63 - 1))
@settings(max_examples=60, deadline=None)
def test_random_indices_are_distinct_sorted_and_seeded(n, fraction, seed):
    from mpi_gan.compression.sparsify import random_indices
    k = int(fraction * n)
    idx = random_indices(n, k, seed)
    assert idx.dtype == torch.int64 and len(idx) == k
    assert bool((idx[1:] > idx[:-1]).all()) and (k == 0 or (0 <= idx[0] and idx[-1] < n))
    assert torch.equal(idx, random_indices(n, k, seed))


def test_random_indices_are_uniform():
    from mpi_gan.compression.sparsify import random_indices
    n, k = 1_000_000, 100_000
    idx = random_indices(n, k, 7).numpy()
    counts = np.bincount(idx * 10 // n, minlength=10)  # 10,000 expected per tenth
    assert np.all(np.abs(counts - 10000) < 500)  # 5 standard deviations
    assert not np.array_equal(idx, random_indices(n, k, 8).numpy())
    dense = random_indices(n, 900_000, 7).numpy()  # drawn as the 100,000 left out
    assert len(np.unique(dense)) == 900_000 and np.all(np.abs(
        np.bincount(dense * 10 // n, minlength=10) - 90000) < 500)


@given(n=st.integers(1, 5000), bin_size=st.integers(1, 100), seed=st.integers(0, 99),
       dtype=st.sampled_from([torch.float32, torch.float64]))
@settings(max_examples=60, deadline=None)
def test_bins_kernel_equals_the_torch_form(n, bin_size, seed, dtype):
    from mpi_gan.compression.sparsify import accumulate_and_select, bin_maxima
    gen = torch.Generator().manual_seed(seed)
    residual = torch.randn(n, generator=gen).to(dtype)
    residual[:n // 3] = 0  # whole bins of zeros send nothing
    g = torch.randn(n, generator=gen).to(dtype)
    g[:n // 4] = 0
    accumulated = residual + g
    expected_idx, gmax = bin_selection(accumulated, accumulated + g, bin_size)
    idx, scale = accumulate_and_select(residual, g, bin_size, torch.empty(n, dtype=torch.int64))
    assert torch.equal(residual, accumulated)  # the residual became G, in place
    assert torch.equal(idx, expected_idx)
    assert scale == pytest.approx(float(bin_maxima(accumulated, bin_size).double().mean()))


def test_rice_and_q8_on_the_wire():
    from mpi_gan.compression.payload import Q8
    x = torch.randn(100000, generator=torch.Generator().manual_seed(3))
    c = compression.parse_spec("adacomp:ratio=0.01,values=int8")
    payload = c.compress(x, "w")
    assert payload.index_code == indexcodec.RICE and payload.value_code == Q8
    # 1000 indices of gaps ~100: about 8 bits each with Rice, against 10+ with varint
    assert len(payload.indices) < 0.85 * indexcodec.encoded_sizes(
        indexcodec.decode(payload.index_code, payload.indices, payload.count, 100000),
        100000)[indexcodec.VARINT]
    y = c.decompress(Payload.from_bytes(payload.to_bytes())[0])
    sent = y != 0
    assert int(sent.sum()) == 1000
    step = float(x.abs().max()) / 127
    assert float((y[sent] - x[sent]).abs().max()) <= step / 2 * 1.0001
    assert set(torch.nonzero(sent).view(-1).tolist()) == set(torch.topk(x.abs(), 1000).indices.tolist())


@pytest.mark.parametrize("code,name", [(indexcodec.RICE, "rice"),
                                       (indexcodec.EXPG, "expgolomb")])
def test_gap_codes_reject_truncated_and_padded_streams(code, name):
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(50000, 400, replace=False)).astype(np.int64)
    encoded = indexcodec.encode(code, idx, 50000)
    assert np.array_equal(indexcodec.decode(code, encoded, 400, 50000), idx)
    for bad in (encoded[:-1], np.concatenate([encoded, [0]]), encoded[:1]):
        with pytest.raises(PayloadError, match=name):
            indexcodec.decode(code, bad, 400, 50000)
    with pytest.raises(PayloadError, match=name):  # an index past the end of the tensor
        indexcodec.decode(code, encoded, 400, int(idx[-1]))
    bad_parameter = encoded.copy()
    bad_parameter[0] = 40
    with pytest.raises(PayloadError, match="bad"):
        indexcodec.decode(code, bad_parameter, 400, 50000)
    ones = np.concatenate([encoded[:1], np.full(300, 0xFF, np.uint8)])  # no zero bit: a
    with pytest.raises(PayloadError, match=name):  # unary part or a length past the end
        indexcodec.decode(code, ones, 400, 50000)


def test_expgolomb_refuses_a_length_that_would_wrap_the_index():
    """Order 31, a length of 33 and high bits 1: ((2**33 + 1 - 1) << 31) wraps to 0 in 64
    bits, so without the length check the stream would decode to the in-range index 100."""
    bits = [1] * 33 + [0] + [1] + [0] * 32 + [(100 >> b) & 1 for b in range(31)]
    bits += [0] * (-len(bits) % 8)
    stream = np.packbits(np.array(bits, np.uint8), bitorder="little")
    with pytest.raises(PayloadError, match="expgolomb"):
        indexcodec.decode(indexcodec.EXPG, np.concatenate([[31], stream]).astype(np.uint8),
                          1, 5000)


@pytest.mark.parametrize("code", [indexcodec.RICE, indexcodec.EXPG])
def test_gap_codes_on_random_bytes_raise_or_give_valid_indices(code):
    """Garbage from a peer: a clear error or in-range increasing indices, never a crash."""
    rng = np.random.default_rng(7)
    for trial in range(300):
        data = rng.integers(0, 256, int(rng.integers(1, 80)), dtype=np.uint8)
        data[0] = rng.integers(0, 12)
        count = int(rng.integers(0, 60))
        try:
            idx = indexcodec.decode(code, data, count, 5000)
        except PayloadError:
            continue
        assert len(idx) == count and (count == 0 or (idx[0] >= 0 and idx[-1] < 5000))
        assert np.all(np.diff(idx) > 0)


def test_exp_golomb_wins_on_clustered_indices():
    """Clusters of nearby indices far apart (as in real gradients, whose large entries
    share rows and columns): exp-Golomb beats Rice, whose unary part grows with the gap."""
    starts = np.arange(0, 1_000_000, 20_000)
    idx = (starts[:, None] + np.arange(0, 60, 3)[None, :]).reshape(-1).astype(np.int64)
    sizes = indexcodec.encoded_sizes(idx, 1_000_000)
    assert sizes[indexcodec.EXPG] < 0.5 * sizes[indexcodec.RICE]
    assert indexcodec.choose(idx, 1_000_000) == indexcodec.EXPG


@pytest.mark.parametrize("spec", ALL_SPECS + ["adacomp:values=int8"])
def test_decode_into_a_reused_buffer_equals_a_new_tensor(spec):
    c = compression.parse_spec(spec)
    out = torch.full((3, 700), 9.0)
    for seed in range(3):
        x = torch.randn(3, 700, generator=torch.Generator().manual_seed(seed))
        payload = Payload.from_bytes(c.compress(x, "w").to_bytes())[0]
        assert c.decompress(payload, out=out) is out
        assert torch.equal(out, c.decompress(payload))
    with pytest.raises(ValueError, match="payload holds"):
        c.decompress(payload, out=torch.empty(2100))


# ---- adacomp_bins packed in the wire (float32, bins of a multiple of 64) ---------------

@given(n=st.integers(0, 3000), groups=st.integers(1, 3), seed=st.integers(0, 99),
       rounds=st.integers(1, 3))
@settings(max_examples=60, deadline=None)
def test_packing_bins_kernel_equals_select_then_send(n, groups, seed, rounds):
    """``bins_bitmap_select`` = ``bins_select`` + ``bins_send`` (exact values): the same
    residual, count and scale bit for bit, the selection's bitmap, the values packed
    from an odd byte offset; over several rounds (the residual carried)."""
    from mpi_gan.compression import indexcodec_kernels, sparsify_kernels
    rng = np.random.default_rng(seed)
    bin_size = 64 * groups
    old = rng.standard_normal(n).astype(np.float32)
    old[:n // 3] = 0  # whole bins of zeros send nothing
    new = old.copy()
    for _ in range(rounds):
        g = rng.standard_normal(n).astype(np.float32)
        g[:n // 4] = 0
        idx = np.empty(n, np.int64)
        count, total, bins = sparsify_kernels.bins_select(g, old, bin_size, idx)
        sent = sparsify_kernels.bins_send(old, idx[:count], False, 0.0)
        words = np.zeros(-(-n // 64), np.uint64)
        wire = np.full(7 + 4 * n + 64, 0xAB, np.uint8)
        assert sparsify_kernels.bins_bitmap_select(g, new, bin_size, words, wire, 7) == (
            count, total, bins)
        assert np.array_equal(new, old)
        bitmap = indexcodec_kernels.bitmap_encode(idx[:count], n)
        assert np.array_equal(words.view(np.uint8)[:len(bitmap)], bitmap)
        assert np.array_equal(wire[7:7 + 4 * count].view("<f4"), sent)


def test_lanes_portable_form_equals_the_native_one():
    """The 16-lane compress and expand of ``lanes``: the form compiled here (AVX-512 where
    the CPU has it) and LLVM's portable masked form (every other CPU) give the same
    floats, at byte offsets of any alignment, for every kind of mask."""
    from numba import njit

    from mpi_gan.compression import lanes

    def kernel(compress, expand):
        @njit
        def run(src, masks, starts, packed, spread):
            for j in range(masks.shape[0]):
                compress(packed, 3 + 4 * starts[j], src, 1 + 64 * j, masks[j])
                expand(spread, 2 + 64 * j, packed, 3 + 4 * starts[j], masks[j])
        return run

    rng = np.random.default_rng(4)
    masks = np.concatenate([np.array([0, 0xFFFF, 1, 0x8000, 0xFFFF0000_0000FFFF], np.uint64),
                            rng.integers(0, 1 << 63, 200, dtype=np.uint64)])
    src = np.frombuffer(rng.standard_normal(16 * len(masks) + 1).astype(np.float32).tobytes(),
                        np.uint8)
    kept = [bin(int(m) & 0xFFFF).count("1") for m in masks]
    starts = np.cumsum([0] + kept)  # where each mask's floats are packed
    count = int(starts[-1])
    results = []
    for compress, expand in ((lanes.compress16, lanes.expand16),
                             (lanes.compress16_portable, lanes.expand16_portable)):
        packed = np.zeros(64 * len(masks) + 128, np.uint8)
        spread = np.zeros(64 * len(masks) + 128, np.uint8)
        kernel(compress, expand)(src, masks, starts, packed, spread)
        results.append((packed[:3 + 4 * count].copy(), spread[:2 + 64 * len(masks)]))
    (packed, spread), (packed2, spread2) = results
    assert np.array_equal(packed, packed2) and np.array_equal(spread, spread2)
    floats = src[1:1 + 64 * len(masks)].view("<u4").reshape(-1, 16)  # (bit patterns: the
    keep = [[(int(m) >> b) & 1 for b in range(16)] for m in masks]    # odd offset makes NaNs)
    expected = np.where(np.array(keep, bool), floats, 0)
    assert np.array_equal(spread[2:].view("<u4").reshape(-1, 16), expected)
    assert np.array_equal(packed[3:].view("<u4"), floats[np.array(keep, bool)])


@pytest.mark.parametrize("shape", [(3, 4096), (64, 3, 3, 3), (100,), (0,)])
def test_adacomp_bins_packed_payload_equals_the_rule(shape):
    """Exact float32 values in bins of 64 or 128: what is sent and what stays in the
    residual follow the rule (``bin_selection``); a dense selection travels as a bitmap
    written in place (``to_bytes`` copies nothing), a sparse one by the smallest code."""
    from mpi_gan.compression.payload import decode_payload
    codes = set()
    for bin_size in (64, 128):
        c = compression.get("adacomp_bins", bin_size=bin_size)
        gen = torch.Generator().manual_seed(bin_size)
        residual = torch.zeros(shape).reshape(-1)
        for step in range(3):
            g = torch.randn(shape, generator=gen)
            if step == 2:  # one large entry per 64: a sparse selection
                g = g * 1e-3
                g.view(-1)[::64] = 10.0
            accumulated = residual + g.reshape(-1)
            idx, _ = bin_selection(accumulated, accumulated + g.reshape(-1), bin_size)
            payload = c.compress(g, "w")
            expected = torch.zeros_like(accumulated)
            expected[idx] = accumulated[idx]
            residual = accumulated.clone()
            residual[idx] = 0
            assert torch.equal(c.memory.residuals["w"], residual)
            wire = payload.to_bytes()
            assert len(wire) == payload.nbytes and payload.count == idx.numel()
            assert torch.equal(decode_payload(Payload.from_bytes(wire)[0]).reshape(-1), expected)
            numel = accumulated.numel()
            codes.add(payload.index_code)
            if 0 < (numel + 7) // 8 <= idx.numel():
                assert payload.index_code == indexcodec.BITMAP and wire is payload.wire
            else:
                assert payload.index_code == indexcodec.choose(idx.numpy(), numel)
                assert payload.wire is None
    if shape != (0,):  # both kinds met
        assert indexcodec.BITMAP in codes and len(codes) >= 2


def test_payload_written_in_place_is_copied_once_replaced():
    """A payload whose sections lie in its wire buffer sends that buffer; one with a section
    replaced (``dataclasses.replace``) sends its own sections."""
    import dataclasses
    c = compression.get("adacomp_bins")
    payload = c.compress(torch.randn(4096, generator=torch.Generator().manual_seed(1)), "w")
    assert payload.index_code == indexcodec.BITMAP and payload.to_bytes() is payload.wire
    values = payload.values.copy()
    values[:4] = 0  # the first value becomes 0.0
    other = dataclasses.replace(payload, values=values)
    wire = other.to_bytes()
    assert wire is not payload.wire and np.array_equal(wire[-len(values):], values)
    assert np.array_equal(wire[:-len(values)], payload.to_bytes()[:-len(values)])
