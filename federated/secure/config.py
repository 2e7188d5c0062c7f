"""Public parameters of one secure-aggregation round, known to the server and every client before it starts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from tfx_ext.errors import SecureAggregationError
from tfx_ext.federated.secure.graph import THREAT_MODELS, VARIANTS, active_problem

MAX_CLIENT_ID = (1 << 31) - 2  # ids are Shamir evaluation points in GF(2^31 - 1): 1 <= id < 2^31 - 1


class ProtocolRejection(SecureAggregationError):
    """A message or a client rejected during a round (tampering, replay, duplicate, id spoofing, bad shares).

    Attributes:
        client_id: the protocol id of the client blamed.
        stage: the protocol stage where it happened.
    """

    def __init__(self, client_id: int, stage: str, reason: str):
        super().__init__(f"Client {client_id} rejected at {stage}: {reason}")
        self.client_id = client_id
        self.stage = stage
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class RoundConfig:
    """Public parameters of a round.

    Args:
        round_id: round number (bound into key derivation and associated data, so nothing replays across rounds).
        client_ids: the invited clients, integers in `[1, 2^31 - 1)` (they are also the Shamir evaluation points).
        vector_length: words per input vector.
        bits: modulus exponent: inputs, masks and the sum live in `Z_{2^bits}`.
        threshold: Shamir threshold `t` (shares needed to rebuild a secret).
        degree: neighbours per client (`len(client_ids) - 1` for SecAgg's complete graph).
        variant: "secagg" or "secagg+".
        public_seed: public per-round randomness for the SecAgg+ graph (hashed with the invited ids): a beacon
            value the server cannot choose once it knows whom it corrupts (`graph` module docstring).
        consistency_check: run the Ed25519 consistency-check round (active-adversary variant; needs `verify_keys`).
        verify_keys: `{client id: Ed25519 verify key}` from a PKI whose signing keys the clients hold; when given,
            key adverts and masked inputs are signed too.
        threat_model: "semi-malicious" (the server may lie about dropouts, forge and replay messages, but the key
            directory reaches clients unmodified and it does not fork survivor views) or "active" (any server
            behaviour; needs `consistency_check`, `verify_keys` and `(degree, threshold)` passing
            `graph.active_problem`).
        corrupt_fraction: fraction of clients assumed to collude with the server (the active sizing).
        security: statistical security parameter sigma of the active sizing.
    """

    round_id: int
    client_ids: tuple
    vector_length: int
    bits: int
    threshold: int
    degree: int
    variant: str = "secagg"
    public_seed: bytes = b""
    consistency_check: bool = False
    verify_keys: Mapping[int, bytes] | None = None
    threat_model: str = "semi-malicious"
    corrupt_fraction: float = 0.1
    security: int = 40

    def __post_init__(self):
        ids = tuple(sorted(int(i) for i in self.client_ids))
        object.__setattr__(self, "client_ids", ids)
        object.__setattr__(self, "id_set", frozenset(ids))
        if len(set(ids)) != len(ids) or not ids or ids[0] < 1 or ids[-1] > MAX_CLIENT_ID:
            raise ValueError("`client_ids` must be distinct integers in [1, 2^31 - 1) (Shamir evaluation points). "
                             f"Received: client_ids={ids[:5]}...{ids[-3:]}")
        if self.threat_model not in THREAT_MODELS:
            raise ValueError(f"`threat_model` must be one of {THREAT_MODELS}. Received: {self.threat_model!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={self.variant!r}")
        if not 2 <= self.bits <= 64:
            raise ValueError(f"`bits` must be in [2, 64]. Received: bits={self.bits!r}")
        if self.vector_length < 1:
            raise ValueError(f"`vector_length` must be >= 1. Received: vector_length={self.vector_length!r}")
        if not 1 <= self.degree <= len(ids) - 1:
            raise ValueError(f"`degree` must be in [1, {len(ids) - 1}]. Received: degree={self.degree!r}")
        if not 1 <= self.threshold <= self.degree:
            raise ValueError(f"`threshold` must be in [1, degree={self.degree}]. Received: threshold={self.threshold!r}")
        if self.consistency_check and not self.verify_keys:
            raise ValueError("`consistency_check=True` needs `verify_keys` (a PKI of Ed25519 keys). "
                             "Received: verify_keys=None")
        if self.verify_keys is not None and not set(ids) <= set(self.verify_keys):
            missing = sorted(set(ids) - set(self.verify_keys))[:5]
            raise ValueError(f"`verify_keys` must hold every invited client's key. Missing: {missing}")
        if self.threat_model == "active":
            if not self.consistency_check:
                raise ValueError("`threat_model='active'` needs `consistency_check=True` and `verify_keys` from a "
                                 "PKI whose signing keys the clients hold. Received: consistency_check=False")
            problem = active_problem(len(ids), self.degree, self.threshold, corrupt_fraction=self.corrupt_fraction,
                                     security=self.security)
            if problem:
                raise ValueError(f"Refusing a weak active configuration: {problem}.")


__all__ = ["MAX_CLIENT_ID", "ProtocolRejection", "RoundConfig"]
