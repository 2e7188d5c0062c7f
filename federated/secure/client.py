"""The client's side of SecAgg / SecAgg+ (Bonawitz et al. 2017, Bell et al. 2020) as an explicit state machine.

    READY --advertise_keys--> ADVERTISED --share_keys--> SHARED --masked_input--> MASKED
          --consistency (optional)--> SIGNED --unmask--> DONE          (any violation: ABORTED)

Every method takes the server's message as bytes and returns the client's reply as bytes, so the same object
could sit behind a network connection. A client never reveals both the self-mask share and the mask-key share of
the same peer: for each peer whose shares it holds it answers exactly once, with the self-mask share when the
server lists the peer among the survivors, else with the mask-key share.
"""

from __future__ import annotations

import enum
import os
import struct

import numpy as np

from tfx_ext.errors import SecureAggregationError
import tfx_ext.federated.secure.crypto as crypto
import tfx_ext.federated.secure.messages as msgs
import tfx_ext.federated.secure.prg as prg
import tfx_ext.federated.secure.shamir as shamir
from tfx_ext.federated.secure.config import ProtocolRejection, RoundConfig
from tfx_ext.federated.secure.graph import graph_seed, neighbours_of

SECRET_BYTES = 32
_PLAIN_HEADER = struct.Struct(">QQQ")


class ClientState(enum.Enum):
    READY = "ready"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    SIGNED = "signed"
    DONE = "done"
    ABORTED = "aborted"


def pairwise_sign(u: int, v: int) -> int:
    """+1 when `u < v`, else -1: the two masks of a pair cancel in the sum."""
    return 1 if u < v else -1


class SecAggClient:
    """One client's state for one round.

    Args:
        client_id: this client's id (a member of `config.client_ids`).
        config: the round's public `RoundConfig`.
        vector: the encoded input, `config.vector_length` words modulo `2^config.bits`.
        randbytes: randomness for keys, self-mask seed, Shamir coefficients and nonces (default `os.urandom`).
        signing_key: this client's Ed25519 key when the deployment has a PKI (`config.verify_keys`).
    """

    def __init__(self, client_id: int, config: RoundConfig, vector, *, randbytes=os.urandom,
                 signing_key: crypto.SigningKey | None = None):
        if client_id not in config.client_ids:
            raise ValueError(f"`client_id` must be one of the round's clients. Received: client_id={client_id!r}")
        self.id = int(client_id)
        self.config = config
        dtype = prg.word_dtype(config.bits)
        vector = np.asarray(vector)
        if vector.shape != (config.vector_length,) or vector.dtype.kind not in "ui":
            raise ValueError(f"`vector` must hold {config.vector_length} unsigned words. "
                             f"Received: shape={vector.shape}, dtype={vector.dtype}")
        self._vector = prg.reduce(vector.astype(dtype), config.bits)
        self._randbytes = randbytes
        self._signing_key = signing_key
        if config.verify_keys is not None and signing_key is None:
            raise ValueError("A round with `verify_keys` needs this client's `signing_key`. Received: None")
        self.state = ClientState.READY
        self.rejections: list[ProtocolRejection] = []
        self.revealed: dict[int, str] = {}  # peer -> "b" or "s": what this client disclosed in unmasking

    # ----- helpers
    def _expect(self, state: ClientState):
        if self.state is not state:
            raise SecureAggregationError(
                f"Client {self.id}: protocol step out of order (state {self.state.value}, expected {state.value}).")

    def _abort(self, reason: str):
        self.state = ClientState.ABORTED
        raise SecureAggregationError(f"Client {self.id} aborted the round: {reason}")

    def _reject(self, peer: int, stage: str, reason: str):
        self.rejections.append(ProtocolRejection(peer, stage, f"{reason} (detected by client {self.id})"))

    # ----- round 0: AdvertiseKeys
    def advertise_keys(self) -> bytes:
        """Generates the two X25519 key pairs and returns the `AdvertiseKeys` message."""
        self._expect(ClientState.READY)
        self._c = crypto.DHKeyPair.generate(self._randbytes)
        self._s = crypto.DHKeyPair.generate(self._randbytes)
        sig = b""
        if self._signing_key is not None:
            sig = self._signing_key.sign(
                msgs.advert_statement(self.config.round_id, self.id, self._c.public, self._s.public))
        self.state = ClientState.ADVERTISED
        return msgs.AdvertiseKeys(self.config.round_id, self.id, self._c.public, self._s.public, sig).to_bytes()

    # ----- round 1: ShareKeys
    def share_keys(self, directory: bytes) -> bytes:
        """Checks the key directory (U1), derives the neighbour graph, and returns encrypted Shamir shares of the
        mask key `s_sk` and the self-mask seed `b` for each neighbour."""
        self._expect(ClientState.ADVERTISED)
        cfg = self.config
        try:
            d = msgs.decode(directory, msgs.KeyDirectory, cfg.round_id)
        except SecureAggregationError as e:
            self._abort(f"bad key directory: {e}")
        keys = {}
        for cid, c_pk, s_pk, sig in d.entries:
            if cid in keys or cid not in cfg.id_set:
                self._abort(f"key directory lists client {cid} twice or outside the round")
            if len(c_pk) != 32 or len(s_pk) != 32:
                self._abort(f"key directory entry of client {cid} has malformed keys")
            if cfg.verify_keys is not None and not crypto.verify(
                    cfg.verify_keys[cid], sig, msgs.advert_statement(cfg.round_id, cid, c_pk, s_pk)):
                self._abort(f"the key advert of client {cid} has a bad signature")
            keys[cid] = (c_pk, s_pk)
        if keys.get(self.id) != (self._c.public, self._s.public):
            self._abort("the key directory does not hold this client's own keys")
        all_keys = [k for pair in keys.values() for k in pair]
        if len(set(all_keys)) != len(all_keys):
            self._abort("two advertised public keys are equal")
        if d.public_seed != cfg.public_seed:
            self._abort("the key directory's public seed differs from the round's")
        self._keys = keys
        self._neighbours = neighbours_of(self.id, list(keys), cfg.degree,
                                         graph_seed(cfg.round_id, cfg.public_seed, keys))
        if len(self._neighbours) < cfg.threshold:
            self._abort(f"only {len(self._neighbours)} neighbours advertised keys, fewer than t={cfg.threshold}")
        self._b = self._randbytes(SECRET_BYTES)
        s_shares = shamir.split(self._s.private_bytes(), cfg.threshold, self._neighbours, self._randbytes)
        b_shares = shamir.split(self._b, cfg.threshold, self._neighbours, self._randbytes)
        info = crypto.kdf_info("share-encryption", cfg.round_id)
        self._enc_keys = {}
        out = []
        for v in self._neighbours:
            key = crypto.agree(self._c.private, keys[v][0], info)
            self._enc_keys[v] = key
            plain = _PLAIN_HEADER.pack(self.id, v, cfg.round_id) + s_shares[v] + b_shares[v]
            out.append((v, crypto.encrypt(key, plain, crypto.share_ad(self.id, v, cfg.round_id), self._randbytes)))
        self.state = ClientState.SHARED
        return msgs.EncryptedShares(cfg.round_id, self.id, tuple(out)).to_bytes()

    # ----- round 2: MaskedInputCollection
    def masked_input(self, forwarded: bytes) -> bytes:
        """Decrypts and checks the shares addressed to it (rejecting, and naming, any peer whose share fails),
        and returns `y = x + PRG(b) + sum_v sign(u, v) PRG(s_uv)` over the accepted peers, mod `2^bits`."""
        self._expect(ClientState.SHARED)
        cfg = self.config
        try:
            f = msgs.decode(forwarded, msgs.ForwardedShares, cfg.round_id)
        except SecureAggregationError as e:
            self._abort(f"bad forwarded shares: {e}")
        if f.receiver != self.id:
            self._abort(f"received shares addressed to client {f.receiver}")
        share_len = shamir.share_length(SECRET_BYTES)
        held: dict[int, tuple[bytes, bytes]] = {}
        rejected = set()
        seen = set()
        for u, blob in f.shares:
            if u in seen:
                rejected.add(u)
                self._reject(u, "share_keys", "duplicate share")
                continue
            seen.add(u)
            if u not in self._enc_keys:
                rejected.add(u)
                self._reject(u, "share_keys", "share from a client that is not a neighbour")
                continue
            plain = crypto.decrypt(self._enc_keys[u], blob, crypto.share_ad(u, self.id, cfg.round_id))
            if plain is None or len(plain) != _PLAIN_HEADER.size + 2 * share_len:
                rejected.add(u)
                self._reject(u, "share_keys", "share failed authentication (modified, replayed from another "
                                              "recipient or round, or forged)")
                continue
            if _PLAIN_HEADER.unpack(plain[:_PLAIN_HEADER.size]) != (u, self.id, cfg.round_id):
                rejected.add(u)
                self._reject(u, "share_keys", "share names the wrong sender, receiver or round")
                continue
            body = plain[_PLAIN_HEADER.size:]
            held[u] = (body[:share_len], body[share_len:])
        for u in list(held):
            if u in rejected:  # a later duplicate poisons an earlier copy too
                del held[u]
        if len(held) < cfg.threshold:
            self._abort(f"only {len(held)} valid shares received, fewer than t={cfg.threshold}")
        self._held = held
        self._masked_with = tuple(sorted(held))
        y = self._vector.copy()
        prg.add_into(y, self._b, +1)
        info = crypto.kdf_info("pairwise-mask", cfg.round_id)
        for v in self._masked_with:
            prg.add_into(y, crypto.agree(self._s.private, self._keys[v][1], info), pairwise_sign(self.id, v))
        y = prg.reduce(y, cfg.bits)
        self.state = ClientState.MASKED
        return msgs.MaskedInput(cfg.round_id, self.id, self._masked_with, tuple(sorted(rejected)), y).to_bytes()

    # ----- round 3: ConsistencyCheck (optional)
    def consistency(self, survivors: bytes) -> bytes:
        """Signs the survivor set U3 (active-adversary variant)."""
        self._expect(ClientState.MASKED)
        cfg = self.config
        if not cfg.consistency_check:
            raise SecureAggregationError(f"Client {self.id}: this round has no consistency check.")
        u3 = self._check_survivors(survivors)
        self._u3 = u3
        sig = self._signing_key.sign(msgs.survivor_statement(cfg.round_id, u3))
        self.state = ClientState.SIGNED
        return msgs.ConsistencySignature(cfg.round_id, self.id, sig).to_bytes()

    def _check_survivors(self, data: bytes) -> tuple:
        try:
            s = msgs.decode(data, msgs.SurvivorSet, self.config.round_id)
        except SecureAggregationError as e:
            self._abort(f"bad survivor set: {e}")
        u3 = tuple(sorted(set(s.survivors)))
        if len(u3) != len(s.survivors) or not set(u3) <= set(self._keys):
            self._abort("the survivor set repeats clients or names clients without keys")
        if len(u3) < self.config.threshold:
            self._abort(f"only {len(u3)} survivors, fewer than t={self.config.threshold}: refusing to unmask")
        return u3

    # ----- round 4: Unmasking
    def unmask(self, data: bytes) -> bytes:
        """Reveals, for each peer whose shares it holds, the self-mask share if the peer survived, else its
        mask-key share: never both for one peer."""
        cfg = self.config
        if cfg.consistency_check:
            self._expect(ClientState.SIGNED)
            try:
                d = msgs.decode(data, msgs.ConsistencyDirectory, cfg.round_id)
            except SecureAggregationError as e:
                self._abort(f"bad consistency directory: {e}")
            sigs = dict(d.signatures)
            if len(sigs) != len(d.signatures) or not set(sigs) <= set(self._u3) or len(sigs) < cfg.threshold:
                self._abort(f"consistency check failed: {len(sigs)} distinct signatures from the survivors, "
                            f"need t={cfg.threshold}")
            statement = msgs.survivor_statement(cfg.round_id, self._u3)
            for v, sig in sigs.items():
                if not crypto.verify(cfg.verify_keys[v], sig, statement):
                    self._abort(f"consistency check failed: client {v} signed another survivor set")
            u3 = set(self._u3)
        else:
            self._expect(ClientState.MASKED)
            u3 = set(self._check_survivors(data))
        out = []
        for v, (s_share, b_share) in sorted(self._held.items()):
            kind = "b" if v in u3 else "s"
            if self.revealed.setdefault(v, kind) != kind:  # unreachable by construction; kept as a guard
                self._abort(f"asked for both shares of client {v}")
            out.append((v, kind, b_share if kind == "b" else s_share))
        self.state = ClientState.DONE
        return msgs.UnmaskShares(cfg.round_id, self.id, tuple(out)).to_bytes()


__all__ = ["SecAggClient", "ClientState", "pairwise_sign"]
