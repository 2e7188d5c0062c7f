"""The malicious-server suite: each test plays a server (and colluding clients) that deviates from the protocol,
then tries to rebuild an honest client's exact input from everything it collected. These tests are the spec of
the threat models in README's table.

A positive control runs the same attack against `WeakClient`, the survivor checks this project shipped before
(well-formed, known clients, at least t survivors): the attack and the reconstruction code really work, so a
failed reconstruction against `SecAggClient` is the checks' doing.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfx_ext.errors import SecureAggregationError
from tfx_ext.federated.secure import KeyStore, RoundConfig, SecAgg, SecAggClient, SecAggServer, make_config, run_round
from tfx_ext.federated.secure import crypto, prg, shamir
from tfx_ext.federated.secure import messages as msgs
from tfx_ext.federated.secure.client import ClientState, pairwise_sign
from tfx_ext.federated.secure.graph import _ring, choose_parameters, graph_seed, neighbours, neighbours_of


class WeakClient(SecAggClient):
    """The pre-fix survivor check: a well-formed set of known clients, no view checks."""

    def _check_survivors(self, data):
        s = msgs.decode(data, msgs.SurvivorSet, self.config.round_id, self.session)
        return tuple(sorted(s.survivors)), tuple(s.disputes)


def inputs_for(config, seed=0):
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 2**32, config.vector_length, dtype=np.uint64).astype(np.uint32)
            for c in config.client_ids}


def honest_prefix(config, inputs, client_cls=SecAggClient, signing=None):
    """Runs advertise, share and masked-input honestly with a real server; returns clients, server, masked inputs."""
    clients = {c: client_cls(c, config, inputs[c], signing_key=(signing or {}).get(c)) for c in config.client_ids}
    server = SecAggServer(config)
    for c in config.client_ids:
        server.receive_advertise(c, clients[c].advertise_keys())
    directory = server.key_directory()
    for c in config.client_ids:
        server.receive_shares(c, clients[c].share_keys(directory))
    forwarded = server.forward_shares()
    masked = {}
    for c in config.client_ids:
        masked[c] = msgs.Message.from_bytes(clients[c].masked_input(forwarded[c]))
    return clients, server, masked


def answer(client, data, step="unmask"):
    """The client's decoded reply, or None when it aborts."""
    try:
        return msgs.Message.from_bytes(getattr(client, step)(data))
    except SecureAggregationError:
        return None


def recover(victim, config, clients, masked, reveals, corrupt=()):
    """The adversary's best attempt at `victim`'s input from the unmasking replies and the colluders' state;
    None when it lacks `t` shares of something it needs."""
    t, info = config.threshold, crypto.kdf_info("pairwise-mask", config.round_id)

    def secret(target, kind):
        got = {h: v for h, m in reveals.items() for tg, k, v in m.shares if tg == target and k == kind}
        for c in corrupt:  # colluders hand over every share they hold
            if target in getattr(clients[c], "_held", {}):
                got.setdefault(c, clients[c]._held[target][0 if kind == "s" else 1])
        return shamir.reconstruct(got, t, 32) if len(got) >= t else None

    s_pk = {c: clients[c]._s.public for c in clients}
    b = secret(victim, "b")
    if b is None:
        return None
    y = masked[victim].vector.copy()
    prg.add_into(y, b, -1)
    s_victim = secret(victim, "s")
    for v in masked[victim].masked_with:
        if s_victim is not None:
            seed = crypto.agree(crypto.DHKeyPair.from_private_bytes(s_victim).private, s_pk[v], info)
        elif v in corrupt:
            seed = crypto.agree(clients[v]._s.private, s_pk[victim], info)
        else:
            s_v = secret(v, "s")
            if s_v is None:
                return None
            seed = crypto.agree(crypto.DHKeyPair.from_private_bytes(s_v).private, s_pk[victim], info)
        prg.add_into(y, seed, -pairwise_sign(victim, v))
    return prg.reduce(y, config.bits)


def leaked(victim, inputs, *args, **kw):
    x = recover(victim, *args, **kw)
    return x is not None and np.array_equal(x, inputs[victim])


def survivor_set(config, server, u3, disputes=()):
    return msgs.SurvivorSet(config.round_id, server.session, tuple(sorted(u3)), tuple(disputes)).to_bytes()


# ----- attack 1: SecAgg+ isolation (one consistent lie about dropouts, no colluders)
@pytest.mark.parametrize("client_cls,leaks", [(WeakClient, True), (SecAggClient, False)])
def test_isolating_a_client_by_lying_about_its_neighbours_dropping(client_cls, leaks):
    config = make_config(range(1, 41), 6, variant="secagg+", degree=12, threshold=7)
    inputs = inputs_for(config)
    clients, server, masked = honest_prefix(config, inputs, client_cls)
    victim = 1
    nbrs = set(clients[victim]._graph)
    request = survivor_set(config, server, set(config.client_ids) - nbrs)  # "all of 1's neighbours dropped"
    reveals = {c: m for c in config.client_ids if (m := answer(clients[c], request)) is not None}
    assert leaked(victim, inputs, config, clients, masked, reveals) is leaks
    if not leaks:
        assert all(clients[v].state is ClientState.ABORTED for v in nbrs)  # not in U3: they refuse


def test_survivor_checks_each_refuse_with_the_reason():
    config = make_config(range(1, 21), 4, variant="secagg+", degree=8, threshold=5)
    inputs = inputs_for(config)
    nbrs = sorted(neighbours_of(3, config.client_ids, 8, graph_seed(0, b"", config.client_ids)))
    everyone = set(config.client_ids)
    cases = [
        (everyone - {3}, (), "not in the survivor set"),
        (everyone - set(nbrs[:4]), (), r"only 4 of its 8 neighbours survive outside disputes, fewer than t=5"),
        (everyone, ((3, nbrs[0]),), r"disputes attributed to this client \[%d\] differ from its own \[\]" % nbrs[0]),
        (everyone, tuple((v, 3) for v in nbrs[:4]), r"only 4 of its 8 neighbours survive outside disputes"),
    ]
    for u3, disputes, reason in cases:
        clients, server, _ = honest_prefix(config, inputs)  # a client answers once: a fresh round per case
        with pytest.raises(SecureAggregationError, match=reason):
            clients[3].unmask(survivor_set(config, server, u3, disputes))
        assert clients[3].state is ClientState.ABORTED and not clients[3].revealed


# ----- attacks 2 and 5: forked survivor views, with and without enough colluders for the threshold
def fork(config, signing, corrupt, victim):
    """Tells the victim and half the honest clients that the victim survived, the other half that it dropped;
    colluders sign both views. Returns the reconstruction attempt and the victim's input."""
    inputs = inputs_for(config, seed=victim)
    clients, server, masked = honest_prefix(config, inputs, signing=signing)
    honest = [c for c in config.client_ids if c not in corrupt and c != victim]
    views = {c: config.client_ids for c in [victim] + honest[: len(honest) // 2]}
    views.update({c: tuple(i for i in config.client_ids if i != victim) for c in honest[len(honest) // 2:]})
    sigs = {u3: {} for u3 in set(views.values())}
    for c, u3 in views.items():
        m = answer(clients[c], survivor_set(config, server, u3), "consistency")
        if m is not None:
            sigs[u3][c] = m.signature
    for c in corrupt:
        for u3 in sigs:
            sigs[u3][c] = signing[c].sign(msgs.survivor_statement(server.session, u3, ()))
    reveals = {}
    for c, u3 in views.items():
        if clients[c].state is ClientState.SIGNED:
            directory = msgs.ConsistencyDirectory(config.round_id, server.session, tuple(sorted(sigs[u3].items())))
            if (m := answer(clients[c], directory.to_bytes())) is not None:
                reveals[c] = m
    return recover(victim, config, clients, masked, reveals, corrupt), inputs[victim]


def test_forked_views_leak_at_the_old_threshold_and_the_active_mode_refuses_it():
    ids = range(1, 51)
    store = KeyStore(ids)
    weak = make_config(ids, 4, variant="secagg", threshold=27, consistency_check=True,
                       verify_keys=store.verify_keys)
    x, truth = fork(weak, store, corrupt={45, 46, 47, 48, 49, 50}, victim=1)
    assert x is not None and np.array_equal(x, truth)  # why t=27 of 49 is not active-secure
    with pytest.raises(ValueError, match=r"needs t >= floor\(2n/3\) \+ 1 = 34 for n=50 .*got t=27"):
        make_config(ids, 4, variant="secagg", threshold=27, threat_model="active", verify_keys=store.verify_keys)
    active = make_config(ids, 4, variant="secagg", threat_model="active", verify_keys=store.verify_keys)
    assert active.threshold == 34 and active.consistency_check
    x, truth = fork(active, store, corrupt={45, 46, 47, 48, 49, 50}, victim=1)
    assert x is None  # each fork gets fewer than t signatures: the honest clients abort


def test_active_secagg_plus_sizing_refuses_weak_overrides_with_the_formula():
    with pytest.raises(ValueError, match=r"n \* P\[Binomial\(k, gamma\) >= 2t - k\] <= 2\^-sigma .*k=46, t=26"):
        RoundConfig(round_id=0, client_ids=tuple(range(1, 101)), vector_length=1, bits=32, threshold=26, degree=46,
                    variant="secagg+", consistency_check=True, verify_keys=KeyStore(range(1, 101)).verify_keys,
                    threat_model="active")
    with pytest.raises(ValueError, match=r"`threat_model='active'` needs `consistency_check=True`"):
        RoundConfig(round_id=0, client_ids=(1, 2, 3, 4), vector_length=1, bits=32, threshold=3, degree=3,
                    threat_model="active")
    p = choose_parameters(1000, threat_model="active")
    semi = choose_parameters(1000)
    assert p.degree > semi.degree and p.threshold > p.degree / 2 and p.degree < 200  # grows k, stays sparse


# ----- attack 3: graph grinding
def test_the_graph_is_fixed_by_the_invitation_so_advertise_drops_cannot_grind_it():
    # The old seed hashed the advertised keys, so declaring clients dropped at advertise picked among graphs (990
    # tried in < 0.1 s raised a victim's colluding neighbours from 1 to 4). Now every drop set gives one graph.
    config = make_config(range(1, 41), 4, variant="secagg+", degree=8, threshold=5, public_seed=b"beacon")
    inputs = inputs_for(config)
    clients = {c: SecAggClient(c, config, inputs[c]) for c in config.client_ids}
    adverts = {c: clients[c].advertise_keys() for c in config.client_ids}
    colluders = {2, 3, 4, 5, 6, 7, 8, 9}
    counts = set()
    for drop_a in range(10, 41, 2):  # the server tries pairs of advertise-stage drops among the honest clients
        for drop_b in range(drop_a + 1, 41, 3):
            server = SecAggServer(config)
            for c in config.client_ids:
                if c not in (drop_a, drop_b):
                    server.receive_advertise(c, adverts[c])
            server.key_directory()
            counts.add(len(set(server._graph[1]) & colluders))
    assert len(counts) == 1
    server = SecAggServer(config)  # and a client derives the same graph from a directory that lacks two clients
    for c in config.client_ids[2:]:
        server.receive_advertise(c, adverts[c])
    clients[7].share_keys(server.key_directory())
    full = neighbours(config.client_ids, 8, graph_seed(config.round_id, b"beacon", config.client_ids))
    assert clients[7]._graph == set(full[7])
    assert server._graph[7] == tuple(v for v in full[7] if v not in (1, 2))


def test_the_graph_follows_its_published_spec():
    # An independent implementation of the spec in graph's docstring: ring order by SHA-256(seed || id).
    import hashlib
    import struct

    ids, seed = tuple(range(1, 13)), hashlib.sha256(b"spec").digest()
    ring = sorted(ids, key=lambda i: hashlib.sha256(seed + struct.pack(">Q", i)).digest())
    assert _ring(ids, seed) == tuple(ring)
    pos = ring.index(5)
    expected = sorted(ring[(pos + d) % 12] for d in (1, 2, -1, -2))
    assert neighbours(ids, 4, seed)[5] == tuple(expected) == neighbours_of(5, ids, 4, seed)
    h = hashlib.sha256(b"tfx-ext/secagg/graph-v2" + struct.pack(">QI", 7, 3) + b"abc")
    h.update(struct.pack(">Q12Q", 12, *ids))
    assert graph_seed(7, b"abc", ids) == h.digest()


# ----- attack 4: key substitution
def test_substituted_keys_make_the_victim_abort_before_sending_anything_in_the_active_mode():
    ids = range(1, 13)
    store = KeyStore(ids)
    config = make_config(ids, 4, variant="secagg", threshold=9, threat_model="active", verify_keys=store.verify_keys)
    inputs = inputs_for(config)
    fake = {c: crypto.DHKeyPair.generate() for c in ids}
    sent = []

    def substitute(stage, src, dst, data):  # the man in the middle gives client 1 its own key for every peer
        if stage == "share_keys" and dst == 1:
            m = msgs.Message.from_bytes(data)
            entries = tuple((c, fake[c].public if c != 1 else ck, sk, bc, sig) for c, ck, sk, bc, sig in m.entries)
            return [dataclasses.replace(m, entries=entries).to_bytes()]
        if src == 1 and stage != "advertise":
            sent.append(stage)
        return [data]

    res = run_round(inputs, config, signing_keys=store, adversary=substitute)
    assert "the key advert of client 2 has a bad signature" in res.aborted_clients[1]
    assert sent == []  # nothing encrypted under the fake key ever left client 1
    assert res.survivors == tuple(range(2, 13)) and np.array_equal(res.total, modular_sum(inputs, res.survivors))
    with pytest.raises(ValueError, match=r"`consistency_check=True` needs `verify_keys`"):
        make_config(ids, 4, variant="secagg", threat_model="active")


def test_the_wrapper_keeps_signing_keys_on_the_client_side():
    from tfx_ext.federated.payload import Payload

    secure = SecAgg(variant="secagg", threat_model="active", seed=0)
    payloads = [Payload([np.full(3, 0.1 * i)], weight=1.0) for i in range(6)]
    total, metrics = secure.secure_sum(payloads, [f"c{i}" for i in range(6)], np.random.default_rng(0))
    np.testing.assert_allclose(total.arrays[0], 1.5, atol=1e-9)
    config = secure.last_result.server.config
    assert config.threat_model == "active" and config.consistency_check
    assert set(secure.key_store) == {f"c{i}" for i in range(6)}
    assert all(isinstance(v, bytes) and len(v) == 32 for v in config.verify_keys.values())  # public keys only
    first = secure.key_store["c0"].verify_key
    secure.secure_sum(payloads, [f"c{i}" for i in range(6)], np.random.default_rng(1))
    assert secure.key_store["c0"].verify_key == first  # a client keeps its key across rounds


# ----- denial of service and integrity
def modular_sum(inputs, ids, bits=32):
    return prg.reduce(sum(inputs[c].astype(np.uint64) for c in ids), bits).astype(np.uint32)


def chain(*adversaries):
    def adversary(stage, src, dst, data):
        out = [data]
        for a in adversaries:
            out = [d2 for d in out for d2 in a(stage, src, dst, d)]
        return out
    return adversary


def tamper(stage_name, client, **changes):
    def adversary(stage, src, dst, data):
        if stage == stage_name and src == client:
            m = msgs.Message.from_bytes(data)
            fields = {k: (v(m) if callable(v) else v) for k, v in changes.items()}
            return [dataclasses.replace(m, **fields).to_bytes()]
        return [data]
    return adversary


@pytest.mark.parametrize("key", [bytes(32), (1).to_bytes(32, "little"), ((1 << 255) - 20).to_bytes(32, "little")])
def test_a_low_order_key_rejects_its_client_by_name_and_the_round_goes_on(key):
    config = make_config(range(1, 11), 3, variant="secagg")
    inputs = inputs_for(config)
    res = run_round(inputs, config, adversary=tamper("advertise", 4, c_pk=key))
    assert [(r.client_id, r.stage) for r in res.rejections] == [(4, "advertise")]
    assert "low-order" in str(res.rejections[0])
    assert res.survivors == tuple(c for c in config.client_ids if c != 4)
    assert np.array_equal(res.total, modular_sum(inputs, res.survivors))


def test_a_false_accuser_evicts_nobody_but_itself():
    config = make_config(range(1, 21), 3, variant="secagg+", degree=10, threshold=6)
    inputs = inputs_for(config)
    accuse_all = tamper("masked_input", 5, masked_with=(), rejected=lambda m: m.masked_with + m.rejected)
    res = run_round(inputs, config, adversary=accuse_all)
    assert res.survivors == tuple(c for c in config.client_ids if c != 5)  # honest clients all stay
    assert not [r for r in res.rejections if r.client_id != 5]
    assert np.array_equal(res.total, modular_sum(inputs, res.survivors))
    assert all(a == 5 for a, _ in res.server.disputes)


def test_an_abort_caused_by_disputes_names_the_accusers():
    config = make_config(range(1, 9), 3, variant="secagg", threshold=6)
    inputs = inputs_for(config)
    accusers = [tamper("masked_input", c, masked_with=(), rejected=lambda m: m.masked_with + m.rejected)
                for c in (2, 3)]
    with pytest.raises(SecureAggregationError, match=r"Disputes raised by clients \[2, 3\] contributed"):
        run_round(inputs, config, adversary=chain(*accusers))


@pytest.mark.parametrize("forge", ["bit flip", "lagrange-aware"])
def test_a_forged_self_mask_share_is_found_with_surplus_shares_and_named(forge):
    config = make_config(range(1, 11), 4, variant="secagg", threshold=6)
    inputs = inputs_for(config)
    # Lagrange-aware: holder 3 knows the server interpolates at points 2..7, so it adds l_3^-1 to every chunk of
    # its share and the rebuilt seed moves by exactly 1 per chunk: a well-formed wrong seed.
    l3 = int(shamir.lagrange_at_zero([2, 3, 4, 5, 6, 7])[1])
    shift = pow(l3, shamir.P - 2, shamir.P)

    def bad_share(m):
        out = []
        for target, kind, share in m.shares:
            if target == 1 and kind == "b":
                values = np.frombuffer(share, "<u4").astype(np.int64)
                values = values ^ 1 if forge == "bit flip" else (values + shift) % shamir.P
                share = values.astype("<u4").tobytes()
            out.append((target, kind, share))
        return tuple(out)

    res = run_round(inputs, config, adversary=tamper("unmask", 3, shares=bad_share))
    assert np.array_equal(res.total, modular_sum(inputs, config.client_ids))  # the right sum, not a silent wrong one
    assert [(r.client_id, r.stage) for r in res.rejections] == [(3, "unmask")]
    assert "client 1's self-mask seed disagrees" in str(res.rejections[0])
    # with no surplus (exactly t holders answer) the server aborts, naming the holders, rather than sum wrongly
    with pytest.raises(SecureAggregationError, match=r"do not rebuild its commitment, and no 6 of them agree"):
        run_round(inputs, config, dropouts={"unmask": [8, 9, 10]}, adversary=tamper("unmask", 3, shares=bad_share))


def test_a_masked_input_replayed_from_another_session_of_the_same_round_is_rejected():
    config = make_config(range(1, 9), 4, variant="secagg", threshold=5)
    inputs = inputs_for(config)
    recorded = {}

    def record(stage, src, dst, data):
        if stage == "masked_input" and src == 3:
            recorded["old"] = data
        return [data]

    run_round(inputs, config, adversary=record)

    def replay(stage, src, dst, data):
        return [recorded["old"]] if stage == "masked_input" and src == 3 else [data]

    res = run_round(inputs, config, adversary=replay)
    assert [(r.client_id, r.stage) for r in res.rejections] == [(3, "masked_input")]
    assert "another session of round 0 (replayed?)" in str(res.rejections[0])
    assert 3 not in res.survivors and np.array_equal(res.total, modular_sum(inputs, res.survivors))


def test_client_ids_outside_the_shamir_field_are_refused_in_the_config():
    with pytest.raises(ValueError, match=r"`client_ids` must be distinct integers in \[1, 2\^31 - 1\)"):
        make_config([1, 2, 2**31 - 1], 3, variant="secagg")
    assert make_config([1, 2, 2**31 - 2], 3, variant="secagg").client_ids[-1] == 2**31 - 2


# ----- seeded fuzzing: consistent lies about survivors and disputes never leak an honest input
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), corrupt=st.integers(0, 2))
def test_consistent_lies_about_survivors_never_let_the_server_rebuild_an_input(seed, corrupt):
    rng = np.random.default_rng(seed)
    config = make_config(range(1, 17), 3, variant="secagg+", degree=8, threshold=5)
    inputs = inputs_for(config, seed)
    clients, server, masked = honest_prefix(config, inputs)
    colluders = set(rng.choice(config.client_ids, corrupt, replace=False).tolist())
    u3 = {c for c in config.client_ids if rng.random() < 0.7} | colluders
    disputes = {(a, int(rng.choice(clients[a]._neighbours))) for a in colluders if rng.random() < 0.5}
    request = survivor_set(config, server, u3, sorted(disputes))
    reveals = {c: m for c in config.client_ids if c not in colluders and (m := answer(clients[c], request))}
    for victim in config.client_ids:
        if victim not in colluders:
            assert not leaked(victim, inputs, config, clients, masked, reveals, colluders), (seed, victim)


def test_a_beacon_seeds_the_graph_and_bad_beacons_are_named():
    from tfx_ext.federated.payload import Payload

    payloads = [Payload([np.full(3, 0.05 * i)], weight=1.0) for i in range(12)]
    ids = [f"c{i}" for i in range(12)]

    def graph_of(beacon):
        secure = SecAgg(variant="secagg+", degree=4, threshold=3, seed=0, beacon=beacon)
        total, _ = secure.secure_sum(payloads, ids, np.random.default_rng(0))
        np.testing.assert_allclose(total.arrays[0], 3.3, atol=1e-9)
        server = secure.last_result.server
        assert server.config.public_seed == beacon(1)
        return server._graph

    first = graph_of(lambda r: b"drand-round-%d-" % r + b"x" * 8)
    assert graph_of(lambda r: b"drand-round-%d-" % r + b"x" * 8) == first  # the beacon alone fixes the graph
    assert graph_of(lambda r: b"another-beacon-%d" % r + b"y" * 8) != first
    with pytest.raises(SecureAggregationError, match=r"`beacon\(1\)` must return at least 16 bytes"):
        SecAgg(beacon=lambda r: b"short").secure_sum(payloads, ids, np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"`beacon` must be a function of the round id"):
        SecAgg(beacon=b"not callable")
