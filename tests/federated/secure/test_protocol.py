"""SecAgg / SecAgg+ rounds: exact sums, dropouts at every stage, tampering, and what the server sees."""

import numpy as np
import pytest
from scipy import stats

from tfx_ext.errors import SecureAggregationError
from tfx_ext.federated.secure import (
    ProtocolRejection,
    SecAggClient,
    make_config,
    make_pki,
    run_round,
)
from tfx_ext.federated.secure import crypto
from tfx_ext.federated.secure import messages as msgs
from tfx_ext.federated.secure.crypto import seeded_randbytes


def random_inputs(config, seed=0):
    rng = np.random.default_rng(seed)
    hi = 2**config.bits
    dtype = np.uint32 if config.bits <= 32 else np.uint64
    return {c: rng.integers(0, hi, config.vector_length, dtype=np.uint64, endpoint=False).astype(dtype)
            if config.bits < 64 else rng.integers(0, 2**63, config.vector_length, dtype=np.uint64) * 2 + 1
            for c in config.client_ids}


def modular_sum(inputs, ids, bits):
    total = np.zeros_like(next(iter(inputs.values())))
    for c in ids:
        total = total + inputs[c]
    return total & total.dtype.type((1 << bits) - 1) if bits < 8 * total.dtype.itemsize else total


@pytest.mark.parametrize("variant", ["secagg", "secagg+"])
@pytest.mark.parametrize("n", [3, 4, 9, 24, 50])
def test_secure_sum_equals_plain_modular_sum(n, variant):
    degree = 6 if variant == "secagg+" and n > 10 else None  # force a sparse graph at small n
    config = make_config(range(1, n + 1), 33, bits=32, variant=variant, degree=degree)
    inputs = random_inputs(config, n)
    res = run_round(inputs, config, randbytes=seeded_randbytes(n))
    assert np.array_equal(res.total, modular_sum(inputs, config.client_ids, 32))
    assert res.survivors == config.client_ids and not res.rejections and not res.aborted_clients
    if degree:
        assert config.degree == 6 and res.metrics["degree"] == 6


@pytest.mark.parametrize("bits", [7, 16, 64])
def test_other_moduli(bits):
    config = make_config(range(1, 8), 17, bits=bits, variant="secagg")
    inputs = random_inputs(config, bits)
    assert np.array_equal(run_round(inputs, config).total, modular_sum(inputs, config.client_ids, bits))


STAGE_CASES = [("advertise", False), ("share_keys", False), ("masked_input", False), ("unmask", True)]


@pytest.mark.parametrize("variant,degree", [("secagg", None), ("secagg+", 8)])
@pytest.mark.parametrize("stage,in_sum", STAGE_CASES)
def test_dropouts_up_to_the_threshold_are_recovered(stage, in_sum, variant, degree):
    n = 16
    config = make_config(range(1, n + 1), 20, bits=32, variant=variant, degree=degree, threshold=0.6)
    inputs = random_inputs(config, 3)
    gone = [2, 9, 15] if degree is None else [2, 9]  # within the tolerance k - t
    res = run_round(inputs, config, dropouts={stage: gone}, randbytes=seeded_randbytes(stage))
    expected_ids = config.client_ids if in_sum else tuple(c for c in config.client_ids if c not in gone)
    assert res.survivors == expected_ids
    assert np.array_equal(res.total, modular_sum(inputs, expected_ids, 32))
    assert res.dropped == {stage: gone}


def test_seeded_dropouts_at_every_stage_with_consistency_check():
    n = 20
    signing, verify = make_pki(range(1, n + 1), seeded_randbytes("pki"))
    config = make_config(range(1, n + 1), 10, variant="secagg", threshold=11, consistency_check=True,
                         verify_keys=verify)
    inputs = random_inputs(config, 5)
    rates = {s: 0.06 for s in ("advertise", "share_keys", "masked_input", "consistency", "unmask")}
    res = run_round(inputs, config, dropout_rates=rates, rng=np.random.default_rng(7), signing_keys=signing)
    again = run_round(inputs, config, dropout_rates=rates, rng=np.random.default_rng(7), signing_keys=signing)
    assert res.dropped == again.dropped and sum(map(len, res.dropped.values())) >= 2
    assert np.array_equal(res.total, modular_sum(inputs, res.survivors, 32))
    assert np.array_equal(res.total, again.total)


def test_too_many_dropouts_abort_before_any_share_is_revealed():
    config = make_config(range(1, 11), 5, variant="secagg", threshold=7)
    inputs = random_inputs(config)
    wire = []

    def spy(stage, src, dst, data):
        wire.append((stage, src, dst))
        return [data]

    with pytest.raises(SecureAggregationError, match=r"Too many dropouts: only 6 masked inputs, fewer than .*t=7"):
        run_round(inputs, config, dropouts={"masked_input": [1, 2, 3, 4]}, adversary=spy)
    assert not [w for w in wire if w[0] == "unmask"]  # no unmasking message ever left a client
    with pytest.raises(SecureAggregationError, match=r"Too many dropouts: only 5 neighbours with keys"):
        run_round(inputs, config, dropouts={"advertise": [1, 2, 3, 4]})
    with pytest.raises(SecureAggregationError, match=r"Too many dropouts during unmasking: 5 shares of client 1's self-mask seed"):
        run_round(inputs, config, dropouts={"unmask": [5, 6, 7, 8]})


def test_transcript_never_holds_both_share_kinds_of_one_client():
    config = make_config(range(1, 13), 8, variant="secagg+", degree=8, threshold=5)
    inputs = random_inputs(config)
    res = run_round(inputs, config, dropouts={"masked_input": [3, 4], "unmask": [7]})
    kinds = {}
    for holder, target, kind in res.transcript:
        kinds.setdefault(target, set()).add(kind)
        assert holder in res.survivors and holder != 7
    assert all(len(k) == 1 for k in kinds.values())
    assert {t for t, k in kinds.items() if k == {"s"}} == {3, 4}  # dropped after sharing: mask keys only
    assert {t for t, k in kinds.items() if k == {"b"}} == set(res.survivors)  # survivors: self-mask seeds only
    assert np.array_equal(res.total, modular_sum(inputs, res.survivors, 32))
    res.server.transcript.append((1, 5, "s"))  # what a cheating server's transcript would look like
    with pytest.raises(SecureAggregationError, match=r"Transcript holds both share kinds of clients \[5\]"):
        res.server.check_transcript()


def test_masked_inputs_are_uniform():
    # The server sees client 1's masked vector. For a constant input (all zeros, then all 255), pooled over many
    # runs with a fixed seed, the words mod 2^8 pass a chi-square test of uniformity.
    for value in (0, 255):
        seen = []

        def capture(stage, src, dst, data):
            if stage == "masked_input" and src == 1:
                seen.append(msgs.Message.from_bytes(data).vector.copy())
            return [data]

        rb = seeded_randbytes(("uniform", value))
        config = make_config(range(1, 4), 2048, bits=8, variant="secagg")
        for _ in range(10):
            inputs = {c: np.full(2048, value, np.uint32) for c in config.client_ids}
            run_round(inputs, config, randbytes=rb, adversary=capture)
        counts = np.bincount(np.concatenate(seen), minlength=256)
        assert counts.sum() == 20480 and len(counts) == 256
        assert stats.chisquare(counts).pvalue > 1e-3


def _reencode(data, **changes):
    import dataclasses

    m = msgs.Message.from_bytes(data)
    return dataclasses.replace(m, **changes).to_bytes()


def test_modified_ciphertext_is_a_dispute_that_evicts_nobody_and_the_round_continues():
    config = make_config(range(1, 9), 6, variant="secagg", threshold=5)
    inputs = random_inputs(config)

    def flip(stage, src, dst, data):
        if stage == "masked_input" and dst == 2:  # the shares forwarded to client 2
            m = msgs.Message.from_bytes(data)
            shares = tuple((u, blob[:-1] + bytes([blob[-1] ^ 1]) if u == 5 else blob) for u, blob in m.shares)
            return [_reencode(data, shares=shares)]
        return [data]

    res = run_round(inputs, config, adversary=flip)
    assert [r.client_id for r in res.rejections] == [5]  # client 2 detected it, blaming "sender or path"
    assert "failed authentication" in str(res.rejections[0]) and "client 2" in str(res.rejections[0])
    assert "sender or path" in str(res.rejections[0])
    assert res.server.disputes == ((2, 5),)  # the pair leaves the sum; 5 (maybe honest) stays in the round
    assert res.survivors == config.client_ids
    assert np.array_equal(res.total, modular_sum(inputs, res.survivors, 32))
    with pytest.raises(ProtocolRejection, match=r"Client 5 rejected at share_keys"):
        run_round(inputs, config, adversary=flip, strict=True)


def test_share_replayed_to_another_recipient_or_round_is_rejected():
    config = make_config(range(1, 7), 4, variant="secagg", threshold=4, round_id=1)
    inputs = random_inputs(config)
    recorded = {}

    def replay_recipient(stage, src, dst, data):
        if stage == "share_keys" and src == 5:
            recorded.update(dict(msgs.Message.from_bytes(data).shares))
        if stage == "masked_input" and dst == 2:  # give 2 the ciphertext 5 made for 3
            m = msgs.Message.from_bytes(data)
            return [_reencode(data, shares=tuple((u, recorded[3] if u == 5 else b) for u, b in m.shares))]
        return [data]

    res = run_round(inputs, config, adversary=replay_recipient)
    assert {r.client_id for r in res.rejections} == {5} and res.server.disputes == ((2, 5),)
    assert np.array_equal(res.total, modular_sum(inputs, res.survivors, 32)) and 5 in res.survivors

    old = dict(recorded)  # 5's ciphertexts of round 1, replayed in round 2
    config2 = make_config(range(1, 7), 4, variant="secagg", threshold=4, round_id=2)

    def replay_round(stage, src, dst, data):
        if stage == "masked_input" and dst == 2:
            m = msgs.Message.from_bytes(data)
            return [_reencode(data, shares=tuple((u, old[2] if u == 5 else b) for u, b in m.shares))]
        return [data]

    res2 = run_round(inputs, config2, adversary=replay_round)
    assert {r.client_id for r in res2.rejections} == {5} and res2.server.disputes == ((2, 5),)
    assert np.array_equal(res2.total, modular_sum(inputs, res2.survivors, 32)) and res2.survivors == config2.client_ids


def test_duplicate_message_and_id_spoofing_are_rejected_naming_the_client():
    config = make_config(range(1, 9), 6, variant="secagg+", degree=6, threshold=4)
    inputs = random_inputs(config)

    def duplicate(stage, src, dst, data):
        return [data, data] if stage == "masked_input" and src == 4 else [data]

    res = run_round(inputs, config, adversary=duplicate)
    assert [(r.client_id, r.stage) for r in res.rejections] == [(4, "masked_input")]
    assert "duplicate message" in str(res.rejections[0])
    assert res.survivors == (1, 2, 3, 5, 6, 7, 8)
    assert np.array_equal(res.total, modular_sum(inputs, res.survivors, 32))

    def spoof(stage, src, dst, data):  # client 3 claims to be client 6
        return [_reencode(data, sender=6)] if stage == "advertise" and src == 3 else [data]

    res = run_round(inputs, config, adversary=spoof)
    assert [r.client_id for r in res.rejections] == [3] and "claimed to be client 6" in str(res.rejections[0])
    assert 3 not in res.sets["U1"] and res.survivors == (1, 2, 4, 5, 6, 7, 8)
    assert np.array_equal(res.total, modular_sum(inputs, res.survivors, 32))


def test_consistency_check_and_signed_adverts_catch_an_active_server():
    n = 8
    signing, verify = make_pki(range(1, n + 1))
    config = make_config(range(1, n + 1), 5, variant="secagg", threshold=5, consistency_check=True,
                         verify_keys=verify)
    inputs = random_inputs(config)
    res = run_round(inputs, config, signing_keys=signing)
    assert np.array_equal(res.total, modular_sum(inputs, config.client_ids, 32))

    def lie_about_survivors(stage, src, dst, data):  # tell client 2 that client 1 dropped
        if stage == "consistency" and dst == 2:
            return [_reencode(data, survivors=tuple(c for c in msgs.Message.from_bytes(data).survivors if c != 1))]
        return [data]

    res = run_round(inputs, config, signing_keys=signing, adversary=lie_about_survivors)
    assert [(r.client_id, r.stage) for r in res.rejections] == [(2, "consistency")]
    assert np.array_equal(res.total, modular_sum(inputs, config.client_ids, 32))  # 2's input still counts

    def forge_signature(stage, src, dst, data):
        if stage == "unmask" and dst == 3:
            m = msgs.Message.from_bytes(data)
            return [_reencode(data, signatures=tuple((c, bytes(64) if c == 1 else s) for c, s in m.signatures))]
        return [data]

    res = run_round(inputs, config, signing_keys=signing, adversary=forge_signature)
    assert "client 1 signed another survivor set" in res.aborted_clients[3]

    def swap_key(stage, src, dst, data):  # man in the middle on client 4's view of client 5's keys
        if stage == "share_keys" and dst == 4:
            m = msgs.Message.from_bytes(data)
            entries = tuple((c, crypto.DHKeyPair.generate().public if c == 5 else ck, sk, bc, sig)
                            for c, ck, sk, bc, sig in m.entries)
            return [_reencode(data, entries=entries)]
        return [data]

    res = run_round(inputs, config, signing_keys=signing, adversary=swap_key)
    assert "the key advert of client 5 has a bad signature" in res.aborted_clients[4]
    assert 4 not in res.survivors and np.array_equal(res.total, modular_sum(inputs, res.survivors, 32))


def test_client_state_machine_and_config_errors():
    config = make_config(range(1, 4), 3, variant="secagg")
    client = SecAggClient(1, config, np.zeros(3, np.uint32))
    with pytest.raises(SecureAggregationError, match=r"Client 1: protocol step out of order \(state ready"):
        client.masked_input(b"")
    with pytest.raises(ValueError, match=r"`client_id` must be one of the round's clients. Received: client_id=9"):
        SecAggClient(9, config, np.zeros(3, np.uint32))
    with pytest.raises(ValueError, match=r"`vector` must hold 3 unsigned words"):
        SecAggClient(1, config, np.zeros(4, np.uint32))
    with pytest.raises(ValueError, match=r"`consistency_check=True` needs `verify_keys`"):
        make_config(range(1, 4), 3, consistency_check=True)
    with pytest.raises(ValueError, match=r"`inputs` must hold exactly the round's clients"):
        run_round({1: np.zeros(3, np.uint32)}, config)
    with pytest.raises(ValueError, match=r"Dropout stages must be among"):
        run_round({c: np.zeros(3, np.uint32) for c in (1, 2, 3)}, config, dropouts={"late": [1]})


@pytest.mark.slow
@pytest.mark.parametrize("variant,n", [("secagg+", 1000), ("secagg", 200)])
def test_large_rounds(variant, n):
    config = make_config(range(1, n + 1), 16, variant=variant)
    inputs = random_inputs(config, n)
    res = run_round(inputs, config, dropout_rates={"masked_input": 0.03, "unmask": 0.03},
                    rng=np.random.default_rng(0))
    assert np.array_equal(res.total, modular_sum(inputs, res.survivors, 32))
    assert len(res.survivors) < n
