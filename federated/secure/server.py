"""The server's side of SecAgg / SecAgg+ as an explicit state machine.

    COLLECT_KEYS --key_directory--> COLLECT_SHARES --forward_shares--> COLLECT_INPUTS --survivor_set-->
    [COLLECT_SIGNATURES --consistency_directory-->] COLLECT_UNMASK --finish--> DONE    (ABORTED on failure)

`receive_*(channel, data)` takes a client's message as bytes from an authenticated channel (`channel` is the id the
transport vouches for). A message that does not decode, claims another sender, repeats, or breaks the protocol is
rejected: a `ProtocolRejection` naming the client goes to `rejections` and the client leaves the round (its
secrets are handled as those of a dropped client). Too few clients left for the threshold raises
`SecureAggregationError` before any share is revealed.

The server records every share it accepts in `transcript` as `(holder, target, kind)` and checks (an assertion
that raises) that no target ever has both a self-mask share ("b") and a mask-key share ("s").
"""

from __future__ import annotations

import enum

import numpy as np

from tfx_ext.errors import SecureAggregationError
import tfx_ext.federated.secure.crypto as crypto
import tfx_ext.federated.secure.messages as msgs
import tfx_ext.federated.secure.prg as prg
import tfx_ext.federated.secure.shamir as shamir
from tfx_ext.federated.secure.client import SECRET_BYTES, pairwise_sign
from tfx_ext.federated.secure.config import ProtocolRejection, RoundConfig
from tfx_ext.federated.secure.graph import graph_seed, neighbours


class ServerState(enum.Enum):
    COLLECT_KEYS = "collect_keys"
    COLLECT_SHARES = "collect_shares"
    COLLECT_INPUTS = "collect_inputs"
    COLLECT_SIGNATURES = "collect_signatures"
    COLLECT_UNMASK = "collect_unmask"
    DONE = "done"
    ABORTED = "aborted"


class SecAggServer:
    """The server for one round (see module docstring). `finish()` returns the sum of the survivors' inputs."""

    def __init__(self, config: RoundConfig):
        self.config = config
        self.state = ServerState.COLLECT_KEYS
        self.rejections: list[ProtocolRejection] = []
        self.excluded: set[int] = set()
        self.transcript: list[tuple[int, int, str]] = []
        self._keys: dict[int, tuple[bytes, bytes, bytes]] = {}
        self._shares: dict[int, tuple] = {}
        self._inputs: dict[int, msgs.MaskedInput] = {}
        self._signatures: dict[int, bytes] = {}
        self._unmask: dict[int, tuple] = {}
        self._seen: dict[str, set] = {}
        self.u1 = self.u2 = self.u3 = ()

    # ----- helpers
    def _expect(self, state: ServerState):
        if self.state is not state:
            raise SecureAggregationError(
                f"Server: protocol step out of order (state {self.state.value}, expected {state.value}).")

    def _reject(self, cid: int, stage: str, reason: str):
        self.rejections.append(ProtocolRejection(cid, stage, reason))
        self.excluded.add(cid)

    def _need(self, count: int, what: str):
        if count < self.config.threshold:
            self.state = ServerState.ABORTED
            raise SecureAggregationError(
                f"Too many dropouts: only {count} {what}, fewer than the threshold t={self.config.threshold}; "
                "the round is aborted and no share has been revealed.")

    def _receive(self, stage: str, channel: int, data: bytes, mtype, allowed) -> msgs.Message | None:
        """Decodes and runs the checks every message shares: type, round, sender == channel, no duplicate."""
        if channel in self.excluded:
            return None
        try:
            m = msgs.decode(data, mtype, self.config.round_id)
        except SecureAggregationError as e:
            self._reject(channel, stage, f"malformed message ({e})")
            return None
        if m.sender != channel:
            self._reject(channel, stage, f"claimed to be client {m.sender} (id spoofing)")
            return None
        seen = self._seen.setdefault(stage, set())
        if channel in seen:
            self._reject(channel, stage, "duplicate message")
            return None
        seen.add(channel)
        if channel not in (allowed if isinstance(allowed, (set, frozenset)) else set(allowed)):
            self._reject(channel, stage, "not a participant of this stage")
            return None
        return m

    # ----- round 0
    def receive_advertise(self, channel: int, data: bytes):
        self._expect(ServerState.COLLECT_KEYS)
        m = self._receive("advertise", channel, data, msgs.AdvertiseKeys, self.config.id_set)
        if m is None:
            return
        cfg = self.config
        if len(m.c_pk) != 32 or len(m.s_pk) != 32:
            self._reject(channel, "advertise", "malformed public keys")
        elif cfg.verify_keys is not None and not crypto.verify(
                cfg.verify_keys[channel], m.signature, msgs.advert_statement(cfg.round_id, channel, m.c_pk, m.s_pk)):
            self._reject(channel, "advertise", "bad signature on the key advert")
        else:
            self._keys[channel] = (m.c_pk, m.s_pk, m.signature)

    def key_directory(self) -> bytes:
        """Closes AdvertiseKeys: U1 = the clients with valid adverts; returns the directory for all of them."""
        self._expect(ServerState.COLLECT_KEYS)
        keys = {c: k for c, k in self._keys.items() if c not in self.excluded}
        self.u1 = tuple(sorted(keys))
        self._u1_set = set(self.u1)
        cfg = self.config
        self._graph = neighbours(self.u1, cfg.degree,
                                 graph_seed(cfg.round_id, cfg.public_seed, {c: k[:2] for c, k in keys.items()}))
        self._need(min((len(v) for v in self._graph.values()), default=0), "neighbours with keys")
        self.state = ServerState.COLLECT_SHARES
        entries = tuple((c, *keys[c]) for c in self.u1)
        return msgs.KeyDirectory(cfg.round_id, entries, cfg.public_seed).to_bytes()

    # ----- round 1
    def receive_shares(self, channel: int, data: bytes):
        self._expect(ServerState.COLLECT_SHARES)
        m = self._receive("share_keys", channel, data, msgs.EncryptedShares, self._u1_set)
        if m is None:
            return
        receivers = [v for v, _ in m.shares]
        if sorted(receivers) != list(self._graph[channel]):
            self._reject(channel, "share_keys", "shares not addressed to exactly its neighbours")
            return
        self._shares[channel] = m.shares

    def forward_shares(self) -> dict[int, bytes]:
        """Closes ShareKeys: U2 = clients whose shares arrived; returns each U2 member's incoming ciphertexts."""
        self._expect(ServerState.COLLECT_SHARES)
        self.u2 = tuple(sorted(c for c in self._shares if c not in self.excluded))
        self._u2_set = set(self.u2)
        self._need(len(self.u2), "clients sent their shares")
        inbox: dict[int, list] = {v: [] for v in self.u2}
        for u in self.u2:
            for v, blob in self._shares[u]:
                if v in inbox:
                    inbox[v].append((u, blob))
        self.state = ServerState.COLLECT_INPUTS
        return {v: msgs.ForwardedShares(self.config.round_id, v, tuple(inbox[v])).to_bytes() for v in self.u2}

    # ----- round 2
    def receive_masked_input(self, channel: int, data: bytes):
        self._expect(ServerState.COLLECT_INPUTS)
        m = self._receive("masked_input", channel, data, msgs.MaskedInput, self._u2_set)
        if m is None:
            return
        cfg = self.config
        expected = set(self._graph[channel]) & self._u2_set
        if m.vector.shape != (cfg.vector_length,) or m.vector.dtype != prg.word_dtype(cfg.bits):
            self._reject(channel, "masked_input", f"vector of shape {m.vector.shape} and dtype {m.vector.dtype}")
        elif set(m.masked_with) | set(m.rejected) != expected or set(m.masked_with) & set(m.rejected):
            self._reject(channel, "masked_input", "its masked/rejected peer lists do not cover its neighbours")
        elif np.any(prg.reduce(m.vector, cfg.bits) != m.vector):
            self._reject(channel, "masked_input", f"vector words outside Z_2^{cfg.bits}")
        else:
            self._inputs[channel] = m

    def survivor_set(self) -> bytes:
        """Closes MaskedInputCollection. Clients whose shares a peer rejected are excluded (named in
        `rejections`); checks every secret still to rebuild has >= t holders among the survivors, then returns U3."""
        self._expect(ServerState.COLLECT_INPUTS)
        for u, m in self._inputs.items():
            if u in self.excluded:
                continue
            for bad in m.rejected:
                if bad not in self.excluded:
                    self._reject(bad, "share_keys", f"its encrypted share to client {u} was rejected "
                                                    "(modified, replayed, duplicated or forged)")
        u3 = tuple(sorted(c for c in self._inputs if c not in self.excluded))
        self._need(len(u3), "masked inputs")
        self.u3 = u3
        holders = self._holders()
        for target, hs in holders.items():
            self._need(len(hs), f"surviving holders of client {target}'s shares")
        self.state = ServerState.COLLECT_SIGNATURES if self.config.consistency_check else ServerState.COLLECT_UNMASK
        return msgs.SurvivorSet(self.config.round_id, u3).to_bytes()

    def _holders(self) -> dict[int, list[int]]:
        """Secrets to rebuild (every survivor's b; the s key of every dropped client a survivor masked with) and
        which survivors hold shares of them."""
        out: dict[int, list[int]] = {u: [] for u in self.u3}
        for u in self.u3:
            for v in self._inputs[u].masked_with:
                out.setdefault(v, []).append(u)
        return out

    # ----- round 3 (optional)
    def receive_consistency(self, channel: int, data: bytes):
        self._expect(ServerState.COLLECT_SIGNATURES)
        m = self._receive("consistency", channel, data, msgs.ConsistencySignature, self.u3)
        if m is None:
            return
        if not crypto.verify(self.config.verify_keys[channel], m.signature,
                             msgs.survivor_statement(self.config.round_id, self.u3)):
            self._reject(channel, "consistency", "bad signature over the survivor set")
            return
        self._signatures[channel] = m.signature

    def consistency_directory(self) -> bytes:
        self._expect(ServerState.COLLECT_SIGNATURES)
        sigs = tuple(sorted((c, s) for c, s in self._signatures.items() if c not in self.excluded))
        self._need(len(sigs), "consistency signatures")
        self.state = ServerState.COLLECT_UNMASK
        return msgs.ConsistencyDirectory(self.config.round_id, sigs).to_bytes()

    # ----- round 4
    def receive_unmask(self, channel: int, data: bytes):
        self._expect(ServerState.COLLECT_UNMASK)
        m = self._receive("unmask", channel, data, msgs.UnmaskShares, self.u3)
        if m is None:
            return
        u3 = set(self.u3)
        held = set(self._inputs[channel].masked_with)
        targets = [t for t, _, _ in m.shares]
        if len(set(targets)) != len(targets) or set(targets) != held:
            self._reject(channel, "unmask", "shares do not cover exactly the peers it masked with")
            return
        for t, kind, _ in m.shares:
            if kind != ("b" if t in u3 else "s"):
                self._reject(channel, "unmask", f"sent a {kind!r} share of client {t} that was not requested")
                return
        self._unmask[channel] = m.shares

    def finish(self) -> np.ndarray:
        """Rebuilds the self-mask seeds of the survivors and the mask keys of dropped clients, removes their masks
        and returns the sum of the survivors' inputs modulo `2^bits`.

        Raises:
            SecureAggregationError: when some secret has fewer than t shares (too many dropped in unmasking), or a
                rebuilt mask key does not match its advertised public key.
        """
        self._expect(ServerState.COLLECT_UNMASK)
        cfg = self.config
        u3 = set(self.u3)
        shares: dict[tuple[int, str], dict[int, bytes]] = {}
        for holder, entries in sorted(self._unmask.items()):
            if holder in self.excluded:
                continue
            for t, kind, share in entries:
                shares.setdefault((t, kind), {})[holder] = share
                self.transcript.append((holder, t, kind))
        self.check_transcript()
        acc = np.zeros(cfg.vector_length, prg.word_dtype(cfg.bits))
        for u in self.u3:
            np.add(acc, self._inputs[u].vector, out=acc)
        info = crypto.kdf_info("pairwise-mask", cfg.round_id)
        for target in sorted(self._holders()):
            kind = "b" if target in u3 else "s"
            got = shares.get((target, kind), {})
            if len(got) < cfg.threshold:
                self.state = ServerState.ABORTED
                raise SecureAggregationError(
                    f"Too many dropouts during unmasking: {len(got)} shares of client {target}'s "
                    f"{'self-mask seed' if kind == 'b' else 'mask key'}, fewer than t={cfg.threshold}.")
            secret = shamir.reconstruct(got, cfg.threshold, SECRET_BYTES)
            if kind == "b":
                prg.add_into(acc, secret, -1)
                continue
            if crypto.public_from_private(secret) != self._keys[target][1]:
                self.state = ServerState.ABORTED
                raise SecureAggregationError(
                    f"The mask key rebuilt for client {target} does not match its advertised key: bad shares.")
            priv = crypto.DHKeyPair.from_private_bytes(secret).private
            for u in self.u3:
                if target in self._inputs[u].masked_with:
                    seed = crypto.agree(priv, self._keys[u][1], info)
                    prg.add_into(acc, seed, -pairwise_sign(u, target))
        self.state = ServerState.DONE
        return prg.reduce(acc, cfg.bits)

    def check_transcript(self):
        """Raises `SecureAggregationError` if the server ever received both share kinds of one client."""
        kinds: dict[int, set] = {}
        for _, target, kind in self.transcript:
            kinds.setdefault(target, set()).add(kind)
        both = sorted(t for t, k in kinds.items() if len(k) > 1)
        if both:
            raise SecureAggregationError(f"Transcript holds both share kinds of clients {both}.")


__all__ = ["SecAggServer", "ServerState"]
