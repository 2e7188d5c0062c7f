"""Vectorised Shamir and the AES-CTR mask PRG against independent pure-Python references written here."""

import itertools

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from tfx_ext.errors import SecureAggregationError
from tfx_ext.federated.secure import prg, shamir

P = 2**31 - 1  # written out here, not read from the module


def ref_chunks(secret: bytes) -> list[int]:
    padded = secret + bytes(-len(secret) % 3)
    return [int.from_bytes(padded[i:i + 3], "big") for i in range(0, len(padded), 3)]


def ref_interpolate(points: list[int], values: list[int]) -> int:
    """f(0) by Lagrange with Python integers and Fermat inverses."""
    total = 0
    for i, xi in enumerate(points):
        num = den = 1
        for j, xj in enumerate(points):
            if j != i:
                num = num * xj % P
                den = den * (xj - xi) % P
        total = (total + values[i] * num * pow(den, P - 2, P)) % P
    return total


def ref_split_many(secrets: list[bytes], t: int, xs: list[int], stream: bytes) -> list[dict[int, bytes]] | None:
    """The documented sampling by hand: 31 low bits of little-endian uint32s, degree-major over all secrets'
    chunks (one coefficient row per degree); one polynomial per chunk, evaluated with `pow`. None if a redraw."""
    chunks = [c for s in secrets for c in ref_chunks(s)]
    words = [int.from_bytes(stream[i:i + 4], "little") & P for i in range(0, 4 * t * len(chunks), 4)]
    if P in words:
        return None
    per = len(chunks) // len(secrets)
    out = []
    for k in range(len(secrets)):
        polys = [[chunks[k * per + m]] + [words[j * len(chunks) + k * per + m] for j in range(1, t)]
                 for m in range(per)]
        out.append({x: b"".join((sum(a * pow(x, j, P) for j, a in enumerate(cs)) % P).to_bytes(4, "little")
                                for cs in polys) for x in xs})
    return out


def replay(stream: bytes):
    pos = [0]

    def randbytes(n):
        out = stream[pos[0]:pos[0] + n]
        pos[0] += n
        return out
    return randbytes


@settings(max_examples=60, deadline=None)
@given(data=st.data(), length=st.integers(0, 40), count=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_split_many_and_reconstruct_many_match_the_pure_python_reference(data, length, count, seed):
    rng = np.random.default_rng(seed)
    secrets = [rng.bytes(length) for _ in range(count)]
    n = data.draw(st.integers(1, 12), label="holders")
    t = data.draw(st.integers(1, n), label="threshold")
    xs = data.draw(st.lists(st.integers(1, P - 1), min_size=n, max_size=n, unique=True), label="points")
    stream = rng.bytes(4 * t * count * shamir.num_chunks(length))
    ref = ref_split_many(secrets, t, xs, stream)
    if ref is None:  # a coefficient hit P (probability ~2^-31 per word): the redraw path is not modelled here
        return
    got = shamir.split_many(secrets, t, xs, replay(stream))
    assert got == ref
    if count == 1:
        assert shamir.split(secrets[0], t, xs, replay(stream)) == ref[0]
    # any survivor subset of size >= t rebuilds every secret; the pure-Python interpolation agrees chunk by chunk
    survivors = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=n, unique=True), label="survivors")
    share_sets = [{x: g[x] for x in survivors} for g in got]
    assert shamir.reconstruct_many(share_sets, t, length) == secrets
    lowest = sorted(survivors)[:t]
    for k, s in enumerate(secrets):
        vals = [[int.from_bytes(got[k][x][4 * m:4 * m + 4], "little") for x in lowest]
                for m in range(shamir.num_chunks(length))]
        assert [ref_interpolate(lowest, v) for v in vals] == ref_chunks(s)
        assert shamir.reconstruct(share_sets[k], t, length) == s


@settings(max_examples=40, deadline=None)
@given(points=st.lists(st.integers(1, P - 1), min_size=1, max_size=200, unique=True))
def test_lagrange_coefficients_match_python_integers_small_and_large_sets(points):
    lag = shamir.lagrange_at_zero(points)
    assert lag.dtype == np.int64
    for i in range(0, len(points), max(1, len(points) // 7)):
        num = den = 1
        for j, xj in enumerate(points):
            if j != i:
                num, den = num * xj % P, den * (xj - points[i]) % P
        assert int(lag[i]) == num * pow(den, P - 2, P) % P
    assert not lag.flags.writeable  # cached: a caller cannot corrupt the next survivor set's coefficients


def test_reconstruct_many_groups_by_survivor_set_and_names_bad_input():
    secrets = [bytes([k]) * 32 for k in range(6)]
    xs = list(range(1, 11))
    shares = shamir.split_many(secrets, 4, xs)
    sets = [{x: s[x] for x in (xs[:5] if k % 2 else xs[3:])} for k, s in enumerate(shares)]  # two survivor sets
    assert shamir.reconstruct_many(sets, 4, 32) == secrets
    for a, b in itertools.combinations(range(1, 11), 2):  # fewer than t shares reveal nothing checkable: refused
        with pytest.raises(SecureAggregationError, match="needs 4 shares, got 2"):
            shamir.reconstruct_many([{a: shares[0][a], b: shares[0][b]}], 4, 32)
        break
    bad = dict(sets[0])
    bad[4] = (P).to_bytes(4, "little") + bad[4][4:]
    with pytest.raises(SecureAggregationError, match="point 4 holds a value outside the field"):
        shamir.reconstruct_many([sets[1], bad], 4, 32)
    with pytest.raises(SecureAggregationError, match="has 3 bytes, expected 44"):
        shamir.reconstruct_many([{**sets[0], 4: b"abc"}], 4, 32)
    with pytest.raises(ValueError, match="one length"):
        shamir.split_many([b"a", b"ab"], 1, [1])
    with pytest.raises(ValueError, match=r"\[0, 2147483647\)"):
        shamir.share_field([P], 1, [1])
    with pytest.raises(ValueError, match="one row per point"):
        shamir.interpolate_at_zero([1, 2], np.zeros((3, 1), np.int64))


def test_large_batch_is_one_vectorised_pass():
    """1,000 holders, t = 500, 64 secrets at once: exact, and every t-subset gives the same secret."""
    rng = np.random.default_rng(0)
    secrets = [rng.bytes(32) for _ in range(64)]
    xs = list(range(1, 1001))
    shares = shamir.split_many(secrets, 500, xs)
    pick = sorted(rng.choice(xs, 500, replace=False).tolist())
    assert shamir.reconstruct_many([{x: s[x] for x in pick} for s in shares], 500, 32) == secrets


def ref_ctr_keystream(seed: bytes, nbytes: int) -> bytes:
    """AES-256-CTR built from the raw block cipher (ECB over big-endian counters 0, 1, 2, ...), not from CTR mode."""
    ecb = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
    blocks = b"".join(i.to_bytes(16, "big") for i in range(-(-nbytes // 16)))
    return (ecb.update(blocks) + ecb.finalize())[:nbytes]


@settings(max_examples=40, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), length=st.integers(0, 300), bits=st.integers(2, 64))
def test_mask_expansion_is_aes_ctr_from_the_raw_block_cipher(seed, length, bits):
    width = 4 if bits <= 32 else 8
    stream = ref_ctr_keystream(seed, width * length)
    ref = [int.from_bytes(stream[i:i + width], "little") % 2**bits for i in range(0, width * length, width)]
    got = prg.expand(seed, length, bits)
    assert got.dtype == (np.uint32 if bits <= 32 else np.uint64) and got.tolist() == ref
    acc = np.arange(length, dtype=got.dtype)
    prg.add_into(acc, seed, -1)
    prg.add_into(acc, seed, +1)
    assert prg.reduce(acc, bits).tolist() == [i % 2**bits for i in range(length)]


def test_prg_rejects_bad_seeds_and_bits():
    with pytest.raises(ValueError, match="32 bytes. Received: 16 bytes"):
        prg.expand(bytes(16), 4, 32)
    with pytest.raises(ValueError, match="32 bytes. Received: 31 bytes"):
        prg.add_into(np.zeros(4, np.uint32), bytes(31))
    with pytest.raises(ValueError, match=r"\[2, 64\]"):
        prg.expand(bytes(32), 4, 65)
