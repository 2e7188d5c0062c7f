"""The client's side of SecAgg / SecAgg+ (Bonawitz et al. 2017, Bell et al. 2020) as an explicit state machine.

    READY --advertise_keys--> ADVERTISED --share_keys--> SHARED --masked_input--> MASKED
          --consistency (optional)--> SIGNED --unmask--> DONE          (any violation: ABORTED)

Every method takes the server's message as bytes and returns the client's reply as bytes, so the same object
could sit behind a network connection. A client never reveals both the self-mask share and the mask-key share of
the same peer: for each peer whose shares it holds it answers exactly once, with the self-mask share when the
server lists the peer among the survivors, else with the mask-key share.

Before it unmasks, a client checks the survivor set U3 it is given (Bell et al. 2020's semi-malicious SecAgg+;
the same checks on SecAgg's complete graph): it is in U3 itself; U3 names only clients with keys, and of its own
neighbours only those whose shares reached it (U3 within U2); at least `t` of its neighbours survive outside any
dispute with it, so at most `k - t` are reported dropped; disputes it is said to have raised are its own. In the
active mode it also needs `t` valid signatures over the same (U3, disputes) from its own neighbours. A server that
lies about dropouts to isolate a client therefore gets no answer from the clients whose shares it would need.
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
        self.session = b""

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
        """Generates the two X25519 key pairs and the self-mask seed `b`; returns the `AdvertiseKeys` message with
        the commitment `H(b)` (signed when the deployment has a PKI)."""
        self._expect(ClientState.READY)
        self._c = crypto.DHKeyPair.generate(self._randbytes)
        self._s = crypto.DHKeyPair.generate(self._randbytes)
        self._b = self._randbytes(SECRET_BYTES)
        commit = msgs.seed_commitment(self._b)
        sig = b""
        if self._signing_key is not None:
            sig = self._signing_key.sign(
                msgs.advert_statement(self.config.round_id, self.id, self._c.public, self._s.public, commit))
        self.state = ClientState.ADVERTISED
        return msgs.AdvertiseKeys(self.config.round_id, self.id, self._c.public, self._s.public, commit,
                                  sig).to_bytes()

    # ----- round 1: ShareKeys
    def share_keys(self, directory: bytes) -> bytes:
        """Checks the key directory (U1), derives its neighbours on the invitation's graph and the session id, and
        returns encrypted Shamir shares of the mask key `s_sk` and the self-mask seed `b` for each neighbour with
        keys."""
        self._expect(ClientState.ADVERTISED)
        cfg = self.config
        try:
            d = msgs.decode(directory, msgs.KeyDirectory, cfg.round_id)
        except SecureAggregationError as e:
            self._abort(f"bad key directory: {e}")
        entries = {}
        for entry in d.entries:
            if entry[0] in entries or entry[0] not in cfg.id_set:
                self._abort(f"key directory lists client {entry[0]} twice or outside the round")
            entries[entry[0]] = entry
        keys = {cid: (c_pk, s_pk) for cid, c_pk, s_pk, _, _ in entries.values()}
        if keys.get(self.id) != (self._c.public, self._s.public):
            self._abort("the key directory does not hold this client's own keys")
        all_keys = [k for pair in keys.values() for k in pair]
        if len(set(all_keys)) != len(all_keys):
            self._abort("two advertised public keys are equal")
        if d.public_seed != cfg.public_seed:
            self._abort("the key directory's public seed differs from the round's")
        self._keys = keys
        seed = graph_seed(cfg.round_id, cfg.public_seed, cfg.client_ids)
        self.session = msgs.session_id(cfg.round_id, seed, d.entries)
        self._graph = set(neighbours_of(self.id, cfg.client_ids, cfg.degree, seed))
        self._neighbours = tuple(sorted(v for v in self._graph if v in keys))
        for v in self._neighbours:  # the keys it will use: O(k) checks, not O(n)
            _, c_pk, s_pk, commit, sig = entries[v]
            if crypto.low_order_key(c_pk) or crypto.low_order_key(s_pk) or len(commit) != 32:
                self._abort(f"key directory entry of client {v} has malformed or low-order keys")
            if cfg.verify_keys is not None and not crypto.verify(
                    cfg.verify_keys[v], sig, msgs.advert_statement(cfg.round_id, v, c_pk, s_pk, commit)):
                self._abort(f"the key advert of client {v} has a bad signature")
        if len(self._neighbours) < cfg.threshold:
            self._abort(f"only {len(self._neighbours)} neighbours advertised keys, fewer than t={cfg.threshold}")
        s_shares = shamir.split(self._s.private_bytes(), cfg.threshold, self._neighbours, self._randbytes)
        b_shares = shamir.split(self._b, cfg.threshold, self._neighbours, self._randbytes)
        info = crypto.kdf_info("share-encryption", cfg.round_id)
        self._enc_keys = {}
        out = []
        for v in self._neighbours:
            key = crypto.agree(self._c.private, keys[v][0], info)
            self._enc_keys[v] = key
            plain = _PLAIN_HEADER.pack(self.id, v, cfg.round_id) + s_shares[v] + b_shares[v]
            ad = crypto.share_ad(self.id, v, cfg.round_id, self.session)
            out.append((v, crypto.encrypt(key, plain, ad, self._randbytes)))
        self.state = ClientState.SHARED
        return msgs.EncryptedShares(cfg.round_id, self.session, self.id, tuple(out)).to_bytes()

    # ----- round 2: MaskedInputCollection
    def _open_shares(self, shares) -> tuple[dict, set, set]:
        """`(held, rejected, arrived)`: the shares that decrypt and check, the neighbours whose share failed (a
        dispute: the sender or the path is to blame), and every neighbour whose share arrived."""
        cfg = self.config
        share_len = shamir.share_length(SECRET_BYTES)
        held: dict[int, tuple[bytes, bytes]] = {}
        rejected, arrived = set(), set()
        for u, blob in shares:
            if u not in self._enc_keys:
                self._reject(u, "share_keys", "share from a client that is not a neighbour (ignored)")
                continue
            if u in arrived:
                rejected.add(u)
                self._reject(u, "share_keys", "duplicate share (sender or path)")
                continue
            arrived.add(u)
            plain = crypto.decrypt(self._enc_keys[u], blob, crypto.share_ad(u, self.id, cfg.round_id, self.session))
            if plain is None or len(plain) != _PLAIN_HEADER.size + 2 * share_len \
                    or _PLAIN_HEADER.unpack(plain[:_PLAIN_HEADER.size]) != (u, self.id, cfg.round_id):
                rejected.add(u)
                self._reject(u, "share_keys", "share failed authentication: modified, replayed from another "
                                              "recipient, round or session, or forged (sender or path)")
                continue
            body = plain[_PLAIN_HEADER.size:]
            held[u] = (body[:share_len], body[share_len:])
        return {u: v for u, v in held.items() if u not in rejected}, rejected, arrived

    def masked_input(self, forwarded: bytes) -> bytes:
        """Decrypts and checks the shares addressed to it (disputing any neighbour whose share fails), and returns
        `y = x + PRG(b) + sum_v sign(u, v) PRG(s_uv)` over the accepted neighbours, mod `2^bits`."""
        self._expect(ClientState.SHARED)
        cfg = self.config
        try:
            f = msgs.decode(forwarded, msgs.ForwardedShares, cfg.round_id, self.session)
        except SecureAggregationError as e:
            self._abort(f"bad forwarded shares: {e}")
        if f.receiver != self.id:
            self._abort(f"received shares addressed to client {f.receiver}")
        held, rejected, self._arrived = self._open_shares(f.shares)
        if len(held) < cfg.threshold:
            self._abort(f"only {len(held)} valid shares received, fewer than t={cfg.threshold}")
        self._held = held
        self._rejected = frozenset(rejected)
        self._masked_with = tuple(sorted(held))
        y = self._vector.copy()
        prg.add_into(y, self._b, +1)
        self._pair_seeds = {}
        info = crypto.kdf_info("pairwise-mask", cfg.round_id)
        for v in self._masked_with:
            self._pair_seeds[v] = crypto.agree(self._s.private, self._keys[v][1], info)
            prg.add_into(y, self._pair_seeds[v], pairwise_sign(self.id, v))
        y = prg.reduce(y, cfg.bits)
        rejected = tuple(sorted(rejected))
        sig = b""
        if self._signing_key is not None:
            sig = self._signing_key.sign(msgs.masked_statement(self.session, self.id, self._masked_with, rejected, y))
        self.state = ClientState.MASKED
        return msgs.MaskedInput(cfg.round_id, self.session, self.id, self._masked_with, rejected, sig, y).to_bytes()

    # ----- round 3: ConsistencyCheck (optional)
    def consistency(self, survivors: bytes) -> bytes:
        """Checks and signs the survivor set U3 and the disputes (active-adversary variant)."""
        self._expect(ClientState.MASKED)
        cfg = self.config
        if not cfg.consistency_check:
            raise SecureAggregationError(f"Client {self.id}: this round has no consistency check.")
        self._view = self._check_survivors(survivors)
        sig = self._signing_key.sign(msgs.survivor_statement(self.session, *self._view))
        self.state = ClientState.SIGNED
        return msgs.ConsistencySignature(cfg.round_id, self.session, self.id, sig).to_bytes()

    def _check_survivors(self, data: bytes) -> tuple[tuple, tuple]:
        """The checks of the module docstring on the server's `SurvivorSet`; returns `(U3, disputes)`."""
        cfg = self.config
        try:
            s = msgs.decode(data, msgs.SurvivorSet, cfg.round_id, self.session)
        except SecureAggregationError as e:
            self._abort(f"bad survivor set: {e}")
        u3 = tuple(sorted(set(s.survivors)))
        disputes = tuple(sorted(set(s.disputes)))
        if len(u3) != len(s.survivors) or not set(u3) <= set(self._keys) or len(disputes) != len(s.disputes):
            self._abort("the survivor set repeats clients or disputes, or names clients without keys")
        if self.id not in u3:
            self._abort("this client is not in the survivor set: refusing to unmask")
        if not set(u3) & self._graph <= self._arrived:
            self._abort("the survivor set names neighbours whose shares never reached this client (not in U2)")
        mine = {v for a, v in disputes if a == self.id}
        if mine != set(self._rejected):
            self._abort(f"the disputes attributed to this client {sorted(mine)} differ from its own "
                        f"{sorted(self._rejected)}")
        disputed = mine | {a for a, v in disputes if v == self.id}
        live = (set(u3) & self._graph) - disputed
        if len(live) < cfg.threshold:
            self._abort(f"only {len(live)} of its {len(self._graph)} neighbours survive outside disputes, fewer "
                        f"than t={cfg.threshold} (at most k - t = {cfg.degree - cfg.threshold} may drop): refusing "
                        "to unmask (a server lying about dropouts could isolate a client)")
        return u3, disputes

    def _check_signatures(self, data: bytes) -> None:
        """Active mode: `t` valid signatures over this client's view from its own neighbours."""
        cfg = self.config
        try:
            d = msgs.decode(data, msgs.ConsistencyDirectory, cfg.round_id, self.session)
        except SecureAggregationError as e:
            self._abort(f"bad consistency directory: {e}")
        sigs = dict(d.signatures)
        statement = msgs.survivor_statement(self.session, *self._view)
        if len(sigs) != len(d.signatures) or not set(sigs) <= set(self._view[0]):
            self._abort("consistency check failed: repeated signers or signers outside the survivor set")
        for v, sig in sigs.items():
            if not crypto.verify(cfg.verify_keys[v], sig, statement):
                self._abort(f"consistency check failed: client {v} signed another survivor set")
        own = len(set(sigs) & self._graph)
        if own < cfg.threshold:
            self._abort(f"consistency check failed: {own} signatures from its own neighbours, need t={cfg.threshold}")

    # ----- round 4: Unmasking
    def unmask(self, data: bytes) -> bytes:
        """Reveals, for each peer whose shares it holds, the self-mask share if the peer survived, else its
        mask-key share (never both for one peer), and its pair seed with each surviving neighbour that disputed
        it and that it masked with."""
        cfg = self.config
        if cfg.consistency_check:
            self._expect(ClientState.SIGNED)
            self._check_signatures(data)
        else:
            self._expect(ClientState.MASKED)
            self._view = self._check_survivors(data)
        u3, disputes = set(self._view[0]), self._view[1]
        out = []
        for v, (s_share, b_share) in sorted(self._held.items()):
            kind = "b" if v in u3 else "s"
            if self.revealed.setdefault(v, kind) != kind:  # unreachable by construction; kept as a guard
                self._abort(f"asked for both shares of client {v}")
            out.append((v, kind, b_share if kind == "b" else s_share))
        for a in sorted({a for a, v in disputes if v == self.id and a in u3 and a in self._pair_seeds}):
            out.append((a, "p", self._pair_seeds[a]))
        self.state = ClientState.DONE
        return msgs.UnmaskShares(cfg.round_id, self.session, self.id, tuple(out)).to_bytes()


__all__ = ["SecAggClient", "ClientState", "pairwise_sign"]
