"""Runs one SecAgg / SecAgg+ round in-process: client and server objects exchange bytes through a simulated
transport, with seeded dropouts per stage and an optional adversary on the wire.

Stages (a client that drops "at" a stage sends nothing from that stage on):

    advertise     client -> server  AdvertiseKeys               (server -> clients: "directory")
    share_keys    client -> server  EncryptedShares             (server -> clients: "forward")
    masked_input  client -> server  MaskedInput                 (server -> clients: "survivors")
    consistency   client -> server  ConsistencySignature (opt.) (server -> clients: "consistency_directory")
    unmask        client -> server  UnmaskShares

The adversary hook `adversary(stage, src, dst, data) -> list[bytes]` sees every message on the wire (0 is the
server) and returns what is delivered instead: `[data]` to pass it, `[]` to drop it, a modified message, two
copies, or a message recorded elsewhere (replay).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from tfx_ext.errors import SecureAggregationError
import tfx_ext.federated.secure.crypto as crypto
from tfx_ext.federated.secure.client import SecAggClient
from tfx_ext.federated.secure.config import ProtocolRejection, RoundConfig
from tfx_ext.federated.secure.graph import choose_parameters
from tfx_ext.federated.secure.server import SecAggServer

STAGES = ("advertise", "share_keys", "masked_input", "consistency", "unmask")


@dataclasses.dataclass
class RoundResult:
    """What a round produced: the sum over the survivors (mod 2^bits) and what happened on the way.

    Attributes:
        total: the sum of the survivors' input vectors modulo `2^bits`.
        survivors: U3, the clients whose inputs are in `total`.
        sets: U1 (keys), U2 (shares), U3 (inputs), U5 (unmasking responders).
        dropped: `{stage: [client ids that dropped there]}`.
        rejections: `ProtocolRejection`s (client-side and server-side), each naming the client blamed.
        aborted_clients: `{client id: reason}` for clients that aborted on their own checks.
        transcript: the server's `(holder, target, kind)` record of unmasking shares.
        metrics: seconds per stage (server, clients total and max), bytes per client and at the server.
        server: the server object, for inspection.
    """

    total: np.ndarray
    survivors: tuple
    sets: dict
    dropped: dict
    rejections: list
    aborted_clients: dict
    transcript: list
    metrics: dict
    server: SecAggServer


def make_config(client_ids: Iterable[int], vector_length: int, *, bits: int = 32, variant: str = "secagg+",
                threshold=None, degree=None, dropout_rate: float = 0.1, corrupt_fraction: float = 0.1,
                round_id: int = 0, public_seed: bytes = b"", consistency_check: bool = False,
                verify_keys: Mapping[int, bytes] | None = None, threat_model: str = "semi-malicious",
                security: int = 40) -> RoundConfig:
    """A `RoundConfig` with degree and threshold from `graph.choose_parameters` (overridable); the active threat
    model turns the consistency check on and needs `verify_keys` (`KeyStore(ids).verify_keys`)."""
    ids = tuple(sorted(int(i) for i in client_ids))
    params = choose_parameters(len(ids), variant=variant, dropout_rate=dropout_rate, security=security,
                               corrupt_fraction=corrupt_fraction, threshold=threshold, degree=degree,
                               threat_model=threat_model)
    return RoundConfig(round_id=round_id, client_ids=ids, vector_length=int(vector_length), bits=bits,
                       threshold=params.threshold, degree=params.degree, variant=variant, public_seed=public_seed,
                       consistency_check=consistency_check or threat_model == "active", verify_keys=verify_keys,
                       threat_model=threat_model, corrupt_fraction=corrupt_fraction, security=security)


class KeyStore(Mapping):
    """The clients' side of a PKI: each client's Ed25519 signing key, made where the client runs and kept there.

    A `Mapping` `{client id: SigningKey}` for `run_round(signing_keys=...)`; the server only ever gets
    `verify_keys` (the PKI's public directory), so it cannot sign on a client's behalf. `add` enrols new clients
    (a long-lived client keeps its key across rounds).
    """

    def __init__(self, client_ids: Iterable = (), randbytes=os.urandom):
        self._randbytes = randbytes
        self._keys: dict = {}
        self.add(client_ids)

    def add(self, client_ids: Iterable) -> None:
        for c in client_ids:
            if c not in self._keys:
                self._keys[c] = crypto.SigningKey.generate(self._randbytes)

    def __getitem__(self, client_id) -> crypto.SigningKey:
        return self._keys[client_id]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def verify_keys(self) -> dict:
        """`{client id: 32-byte Ed25519 verify key}`: what the server and `RoundConfig(verify_keys=...)` get."""
        return {c: k.verify_key for c, k in self._keys.items()}


def make_pki(client_ids: Iterable[int], randbytes=os.urandom):
    """`(signing_keys, verify_keys)` of a fresh `KeyStore` over `client_ids`."""
    store = KeyStore([int(c) for c in client_ids], randbytes)
    return store, store.verify_keys


def _sample_dropouts(ids, dropouts, dropout_rates, rng) -> dict[str, set]:
    out = {s: set() for s in STAGES}
    for stage, members in (dropouts or {}).items():
        if stage not in out:
            raise ValueError(f"Dropout stages must be among {STAGES}. Received: {stage!r}")
        out[stage] |= {int(m) for m in members}
    if dropout_rates:
        if rng is None:
            raise ValueError("`dropout_rates` need a seeded `rng`. Received: rng=None")
        gone: set = set().union(*out.values())
        for stage in STAGES:
            rate = float(dropout_rates.get(stage, 0.0))
            if not 0 <= rate <= 1:
                raise ValueError(f"Dropout rates must be in [0, 1]. Received: {stage}={rate!r}")
            for c in ids:
                if c not in gone and rng.random() < rate:
                    out[stage].add(c)
                    gone.add(c)
    return out


def run_round(inputs: Mapping[int, np.ndarray], config: RoundConfig, *,
              dropouts: Mapping[str, Iterable[int]] | None = None,
              dropout_rates: Mapping[str, float] | None = None,
              rng: np.random.Generator | None = None,
              randbytes: Callable[[int], bytes] = os.urandom,
              signing_keys: Mapping[int, crypto.SigningKey] | None = None,
              adversary: Callable[[str, int, int, bytes], list] | None = None,
              strict: bool = False) -> RoundResult:
    """Runs one round over `inputs` (`{client id: words}`) and returns a `RoundResult`.

    Args:
        inputs: each invited client's encoded vector (`config.vector_length` words mod `2^config.bits`).
        config: the round's public parameters (`make_config`).
        dropouts: explicit `{stage: client ids}` that drop at that stage.
        dropout_rates: `{stage: probability}`; each remaining client drops there with that probability (`rng`).
        rng: seeded Generator for sampled dropouts.
        randbytes: randomness for every party's keys, seeds and nonces (default `os.urandom`).
        signing_keys: Ed25519 keys (`make_pki`) when `config.verify_keys` is set.
        adversary: wire hook (module docstring).
        strict: raise the first `ProtocolRejection` instead of continuing without the client.

    Raises:
        SecureAggregationError: too many dropouts for the threshold (before any share is revealed, or during
            unmasking), or with `strict`, any rejection.
    """
    ids = config.client_ids
    if set(inputs) != set(ids):
        raise ValueError(f"`inputs` must hold exactly the round's clients {ids[:10]}... "
                         f"Received: {sorted(inputs)[:10]}...")
    drop = _sample_dropouts(ids, dropouts, dropout_rates, rng)
    clients = {c: SecAggClient(c, config, inputs[c], randbytes=randbytes,
                               signing_key=(signing_keys or {}).get(c)) for c in ids}
    server = SecAggServer(config)
    alive = set(ids)
    aborted: dict[int, str] = {}
    up = {c: 0 for c in ids}
    down = {c: 0 for c in ids}
    times: dict[str, dict[str, float]] = {}

    def clock(stage, who, seconds):
        t = times.setdefault(stage, {"server_s": 0.0, "clients_total_s": 0.0, "clients_max_s": 0.0})
        if who == "server":
            t["server_s"] += seconds
        else:
            t["clients_total_s"] += seconds
            t["clients_max_s"] = max(t["clients_max_s"], seconds)

    def wire(stage, src, dst, data) -> list:
        out = [data] if adversary is None else list(adversary(stage, src, dst, data))
        for d in out:
            if src:
                up[src] += len(d)
            else:
                down[dst] += len(d)
        return out

    def client_step(stage, c, fn, data):
        start = time.perf_counter()
        try:
            return fn(data) if data is not None else fn()
        except SecureAggregationError as e:
            aborted[c] = str(e)
            alive.discard(c)
            return None
        finally:
            clock(stage, c, time.perf_counter() - start)

    def server_step(stage, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            clock(stage, "server", time.perf_counter() - start)

    def send_up(stage, c, reply, receive):
        if reply is None:
            return
        for d in wire(stage, c, 0, reply):
            server_step(stage, receive, c, d)

    def send_down(stage, c, data, handler):
        delivered = wire(stage, 0, c, data)
        return client_step(stage, c, handler, delivered[0]) if delivered else None

    alive -= drop["advertise"]
    for c in sorted(alive):
        send_up("advertise", c, client_step("advertise", c, clients[c].advertise_keys, None),
                server.receive_advertise)
    directory = server_step("advertise", server.key_directory)

    alive -= drop["share_keys"]
    for c in sorted(alive & set(server.u1)):
        send_up("share_keys", c, send_down("share_keys", c, directory, clients[c].share_keys), server.receive_shares)
    forwarded = server_step("share_keys", server.forward_shares)

    alive -= drop["masked_input"]
    for c in sorted(alive & set(server.u2)):
        send_up("masked_input", c, send_down("masked_input", c, forwarded[c], clients[c].masked_input),
                server.receive_masked_input)
    unmask_request = server_step("masked_input", server.survivor_set)

    if config.consistency_check:
        alive -= drop["consistency"]
        for c in sorted(alive & set(server.u3)):
            send_up("consistency", c, send_down("consistency", c, unmask_request, clients[c].consistency),
                    server.receive_consistency)
        unmask_request = server_step("consistency", server.consistency_directory)

    alive -= drop["unmask"]
    responders = sorted(alive & set(server.u3))
    for c in responders:
        send_up("unmask", c, send_down("unmask", c, unmask_request, clients[c].unmask), server.receive_unmask)
    total = server_step("unmask", server.finish)

    rejections: list[ProtocolRejection] = [r for c in ids for r in clients[c].rejections] + server.rejections
    if strict and rejections:
        raise rejections[0]
    participants = [c for c in ids if up[c]]
    metrics = {
        "survivors": len(server.u3),
        "invited": len(ids),
        "threshold": config.threshold,
        "degree": config.degree,
        "bytes_up_per_client": float(np.mean([up[c] for c in participants])) if participants else 0.0,
        "bytes_down_per_client": float(np.mean([down[c] for c in participants])) if participants else 0.0,
        "bytes_up_max": max(up.values()),
        "server_bytes_in": sum(up.values()),
        "server_bytes_out": sum(down.values()),
        "time_s": {s: dict(v) for s, v in times.items()},
        "server_time_s": sum(v["server_s"] for v in times.values()),
        "clients_time_total_s": sum(v["clients_total_s"] for v in times.values()),
        "critical_path_s": sum(v["server_s"] + v["clients_max_s"] for v in times.values()),
    }
    return RoundResult(
        total=total, survivors=server.u3,
        sets={"U1": server.u1, "U2": server.u2, "U3": server.u3, "U5": tuple(sorted(server._unmask))},
        dropped={s: sorted(v) for s, v in drop.items() if v}, rejections=rejections, aborted_clients=aborted,
        transcript=list(server.transcript), metrics=metrics, server=server,
    )


__all__ = ["KeyStore", "RoundResult", "STAGES", "make_config", "make_pki", "run_round"]
