"""Shamir sharing, the AES-CTR mask PRG, key agreement/AEAD/signatures, and the typed messages."""

import itertools

import numpy as np
import pytest

from tfx_ext.errors import SecureAggregationError
from tfx_ext.federated.secure import crypto, messages, prg, shamir


def test_shamir_any_t_shares_rebuild_and_fewer_fail():
    rb = crypto.seeded_randbytes(0)
    secret = rb(32)
    shares = shamir.split(secret, 3, [1, 2, 5, 9, 11], rb)
    assert len(shares[1]) == shamir.share_length(32) == 44  # 11 chunks of 24 bits, 4 bytes each
    for subset in itertools.combinations(shares, 3):
        assert shamir.reconstruct({x: shares[x] for x in subset}, 3, 32) == secret
    with pytest.raises(SecureAggregationError, match=r"needs 3 shares, got 2"):
        shamir.reconstruct({1: shares[1], 2: shares[2]}, 3, 32)
    # Two shares of a 3-of-n sharing interpolated as if t were 2 give field elements, not 24-bit chunks.
    with pytest.raises(SecureAggregationError, match=r"out-of-range chunk"):
        shamir.reconstruct({1: shares[1], 2: shares[2]}, 2, 32)


def test_shamir_chunks_long_secrets_and_large_holder_sets():
    rb = crypto.seeded_randbytes(1)
    secret = rb(100)  # 34 chunks
    xs = list(range(1, 1001))
    shares = shamir.split(secret, 500, xs, rb)
    picked = {x: shares[x] for x in xs[::2]}  # 500 of them
    assert shamir.reconstruct(picked, 500, 100) == secret


def test_shamir_share_values_are_uniform_whatever_the_secret():
    # One share of a 2-of-n sharing is a uniform field element: compare the two secrets' top-bit frequencies.
    rb = crypto.seeded_randbytes(2)
    tops = {}
    for secret in (bytes(3), b"\xff\xff\xff"):
        vals = [np.frombuffer(shamir.split(secret, 2, [1, 2], rb)[1], "<u4")[0] for _ in range(2000)]
        tops[secret] = np.mean(np.asarray(vals) >= 2**30)
    assert all(abs(f - 0.5) < 0.05 for f in tops.values())


def test_shamir_errors():
    with pytest.raises(ValueError, match=r"`threshold` must be an integer in \[1, 3\]. Received: threshold=4"):
        shamir.split(b"x", 4, [1, 2, 3])
    with pytest.raises(ValueError, match=r"Share points must be distinct integers"):
        shamir.split(b"x", 2, [1, 1, 3])
    with pytest.raises(ValueError, match=r"Share points must be distinct integers"):
        shamir.split(b"x", 2, [0, 1, 3])
    shares = shamir.split(b"abc", 2, [1, 2])
    with pytest.raises(SecureAggregationError, match=r"Share from point 1 has 3 bytes, expected 4"):
        shamir.reconstruct({1: b"abc", 2: shares[2]}, 2, 3)


def test_prg_is_deterministic_uniform_mod_2_bits_and_add_into_matches():
    seed = bytes(range(32))
    a = prg.expand(seed, 1000, 12)
    assert a.dtype == np.uint32 and np.array_equal(a, prg.expand(seed, 1000, 12)) and a.max() < 2**12
    assert not np.array_equal(a, prg.expand(bytes(32), 1000, 12))
    b = prg.expand(seed, 100_000, 64)
    assert b.dtype == np.uint64 and abs(np.mean(b >> np.uint64(63)) - 0.5) < 0.01
    acc = np.zeros(1000, np.uint32)
    prg.add_into(acc, seed, +1)
    assert np.array_equal(prg.reduce(acc, 12), a)
    prg.add_into(acc, seed, -1)
    assert not acc.any()
    with pytest.raises(ValueError, match=r"`bits` must be an integer in \[2, 64\]. Received: bits=65"):
        prg.word_dtype(65)
    with pytest.raises(ValueError, match=r"PRG seeds are 32 bytes"):
        prg.expand(b"short", 4, 32)


def test_agreement_aead_and_signatures():
    rb = crypto.seeded_randbytes(3)
    a, b = crypto.DHKeyPair.generate(rb), crypto.DHKeyPair.generate(rb)
    info = crypto.kdf_info("x", 7)
    k = crypto.agree(a.private, b.public, info)
    assert k == crypto.agree(b.private, a.public, info) and len(k) == 32
    assert k != crypto.agree(a.private, b.public, crypto.kdf_info("x", 8))  # per-round keys
    assert crypto.public_from_private(a.private_bytes()) == a.public
    ad = crypto.share_ad(1, 2, 7)
    blob = crypto.encrypt(k, b"secret", ad, rb)
    assert crypto.decrypt(k, blob, ad) == b"secret"
    assert crypto.decrypt(k, blob, crypto.share_ad(1, 3, 7)) is None  # other receiver
    assert crypto.decrypt(k, blob, crypto.share_ad(1, 2, 8)) is None  # other round
    assert crypto.decrypt(k, blob[:-1] + bytes([blob[-1] ^ 1]), ad) is None  # modified
    sk = crypto.SigningKey.generate(rb)
    sig = sk.sign(b"m")
    assert crypto.verify(sk.verify_key, sig, b"m") and not crypto.verify(sk.verify_key, sig, b"n")


def test_messages_round_trip_and_reject_malformed():
    m = messages.MaskedInput(3, b"S" * 32, 2, (1, 4), (5,), b"", np.arange(6, dtype=np.uint64))
    back = messages.Message.from_bytes(m.to_bytes())
    assert back == m and np.array_equal(back.vector, m.vector) and back.vector.dtype == np.uint64
    d = messages.KeyDirectory(1, ((1, b"a" * 32, b"b" * 32, b"c" * 32, b""),), b"seed")
    assert messages.Message.from_bytes(d.to_bytes()) == d
    s = messages.SurvivorSet(1, b"S" * 32, (1, 2, 4), ((1, 3), (4, 2)))
    assert messages.Message.from_bytes(s.to_bytes()) == s
    u = messages.UnmaskShares(1, b"S" * 32, 2, ((3, "b", b"xx"), (4, "s", b"yy"), (1, "p", b"zz")))
    assert messages.Message.from_bytes(u.to_bytes()) == u
    with pytest.raises(messages.MessageError, match=r"bad magic"):
        messages.Message.from_bytes(b"XXXX" + d.to_bytes()[4:])
    with pytest.raises(messages.MessageError, match=r"does not match its header"):
        messages.Message.from_bytes(m.to_bytes()[:-1])
    with pytest.raises(messages.MessageError, match=r"Share kind must be 'b', 's' or 'p'"):
        messages.Message.from_bytes(u.to_bytes().replace(b'"b"', b'"x"'))
    with pytest.raises(messages.MessageError, match=r"Expected KeyDirectory, got MaskedInput"):
        messages.decode(m.to_bytes(), messages.KeyDirectory, 3)
    with pytest.raises(messages.MessageError, match=r"belongs to round 3, not round 4"):
        messages.decode(m.to_bytes(), messages.MaskedInput, 4)
    with pytest.raises(messages.MessageError, match=r"belongs to another session of round 3 \(replayed\?\)"):
        messages.decode(m.to_bytes(), messages.MaskedInput, 3, b"T" * 32)
    assert isinstance(messages.MessageError("x"), SecureAggregationError)
