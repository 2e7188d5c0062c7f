"""The server's side of SecAgg / SecAgg+ as an explicit state machine.

    COLLECT_KEYS --key_directory--> COLLECT_SHARES --forward_shares--> COLLECT_INPUTS --survivor_set-->
    [COLLECT_SIGNATURES --consistency_directory-->] COLLECT_UNMASK --finish--> DONE    (ABORTED on failure)

`receive_*(channel, data)` takes a client's message as bytes from an authenticated channel (`channel` is the id the
transport vouches for). A message that does not decode, claims another sender, belongs to another session,
repeats, or breaks the protocol is rejected: a `ProtocolRejection` naming the client goes to `rejections` and the
client leaves the round (its secrets are handled as those of a dropped client). A low-order public key is rejected
at advertise. A share that a client could not open is a *dispute*, not proof: nobody is evicted, the pair leaves
the sum (the accused reveals the pair's mask seed) and the round goes on while the threshold holds; a client left
with fewer than `t` undisputed surviving neighbours leaves U3 like a dropped client. Too few clients left for the
threshold raises `SecureAggregationError` before any share is revealed, naming the accusers when disputes caused
it. Rebuilt self-mask seeds are checked against their commitments and mask keys against their public keys; on a
mismatch, surplus shares find `t` consistent ones and the holders of the others are named.

The server records every share it accepts in `transcript` as `(holder, target, kind)` and checks (an assertion
that raises) that no target ever has both a self-mask share ("b") and a mask-key share ("s").
"""

from __future__ import annotations

import enum
import random

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
        self.disputes: tuple = ()  # (accuser, accused) pairs whose shares failed
        self.session = b""
        self._keys: dict[int, tuple[bytes, bytes, bytes, bytes]] = {}
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
            accusers = sorted({a for a, _ in self.disputes})
            blame = f" Disputes raised by clients {accusers} contributed." if accusers else ""
            raise SecureAggregationError(
                f"Too many dropouts: only {count} {what}, fewer than the threshold t={self.config.threshold}; "
                f"the round is aborted and no share has been revealed.{blame}")

    def _receive(self, stage: str, channel: int, data: bytes, mtype, allowed) -> msgs.Message | None:
        """Decodes and runs the checks every message shares: type, round, session, sender == channel, no
        duplicate, a participant of the stage."""
        if channel in self.excluded:
            return None
        try:
            m = msgs.decode(data, mtype, self.config.round_id, self.session if stage != "advertise" else None)
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
        if crypto.low_order_key(m.c_pk) or crypto.low_order_key(m.s_pk) or len(m.b_commit) != 32:
            self._reject(channel, "advertise", "malformed or low-order public key (it would give every peer an "
                                               "all-zero shared secret)")
        elif cfg.verify_keys is not None and not crypto.verify(
                cfg.verify_keys[channel], m.signature,
                msgs.advert_statement(cfg.round_id, channel, m.c_pk, m.s_pk, m.b_commit)):
            self._reject(channel, "advertise", "bad signature on the key advert")
        else:
            self._keys[channel] = (m.c_pk, m.s_pk, m.b_commit, m.signature)

    def key_directory(self) -> bytes:
        """Closes AdvertiseKeys: U1 = the clients with valid adverts; returns the directory for all of them."""
        self._expect(ServerState.COLLECT_KEYS)
        keys = {c: k for c, k in self._keys.items() if c not in self.excluded}
        self.u1 = tuple(sorted(keys))
        self._u1_set = set(self.u1)
        cfg = self.config
        seed = graph_seed(cfg.round_id, cfg.public_seed, cfg.client_ids)
        self._graph = {c: tuple(v for v in nbrs if v in self._u1_set)
                       for c, nbrs in neighbours(cfg.client_ids, cfg.degree, seed).items() if c in self._u1_set}
        self._need(min((len(v) for v in self._graph.values()), default=0), "neighbours with keys")
        entries = tuple((c, *keys[c]) for c in self.u1)
        self.session = msgs.session_id(cfg.round_id, seed, entries)
        self.state = ServerState.COLLECT_SHARES
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
        return {v: msgs.ForwardedShares(self.config.round_id, self.session, v, tuple(inbox[v])).to_bytes()
                for v in self.u2}

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
        elif cfg.verify_keys is not None and not crypto.verify(
                cfg.verify_keys[channel], m.signature,
                msgs.masked_statement(self.session, channel, m.masked_with, m.rejected, m.vector)):
            self._reject(channel, "masked_input", "bad signature on the masked input")
        else:
            self._inputs[channel] = m

    def survivor_set(self) -> bytes:
        """Closes MaskedInputCollection: records the disputes, removes survivors left with fewer than `t`
        undisputed surviving neighbours (they would refuse to unmask) until none is, checks every secret still to
        rebuild has >= t holders among the survivors, then returns U3 and the disputes."""
        self._expect(ServerState.COLLECT_INPUTS)
        inputs = {u: m for u, m in self._inputs.items() if u not in self.excluded}
        self.disputes = tuple(sorted((u, v) for u, m in inputs.items() for v in m.rejected))
        disputed: dict[int, set] = {}
        for a, v in self.disputes:
            disputed.setdefault(a, set()).add(v)
            disputed.setdefault(v, set()).add(a)
        self._need(len(inputs), "masked inputs")
        u3 = set(inputs)
        while True:
            weak = {c for c in u3 if len((set(self._graph[c]) & u3) - disputed.get(c, set())) < self.config.threshold}
            if not weak:
                break
            u3 -= weak
        self._need(len(u3), "masked inputs from clients with enough undisputed surviving neighbours")
        self.u3 = tuple(sorted(u3))
        for target, hs in self._holders().items():
            self._need(len(hs), f"surviving holders of client {target}'s shares")
        self.state = ServerState.COLLECT_SIGNATURES if self.config.consistency_check else ServerState.COLLECT_UNMASK
        return msgs.SurvivorSet(self.config.round_id, self.session, self.u3, self.disputes).to_bytes()

    def _holders(self) -> dict[int, list[int]]:
        """Secrets to rebuild (every survivor's b; the s key of every other client a survivor masked with) and
        which survivors hold shares of them."""
        out: dict[int, list[int]] = {u: [] for u in self.u3}
        for u in self.u3:
            for v in self._inputs[u].masked_with:
                out.setdefault(v, []).append(u)
        return out

    def _pair_reveals(self, holder: int) -> set:
        """The surviving accusers whose pair seed `holder` must reveal: it masked with them, they did not."""
        u3 = set(self.u3)
        return {a for a, v in self.disputes if v == holder and a in u3 and a in self._inputs[holder].masked_with}

    # ----- round 3 (optional)
    def receive_consistency(self, channel: int, data: bytes):
        self._expect(ServerState.COLLECT_SIGNATURES)
        m = self._receive("consistency", channel, data, msgs.ConsistencySignature, self.u3)
        if m is None:
            return
        if not crypto.verify(self.config.verify_keys[channel], m.signature,
                             msgs.survivor_statement(self.session, self.u3, self.disputes)):
            self._reject(channel, "consistency", "bad signature over the survivor set")
            return
        self._signatures[channel] = m.signature

    def consistency_directory(self) -> bytes:
        self._expect(ServerState.COLLECT_SIGNATURES)
        sigs = tuple(sorted((c, s) for c, s in self._signatures.items() if c not in self.excluded))
        self._need(len(sigs), "consistency signatures")
        self.state = ServerState.COLLECT_UNMASK
        return msgs.ConsistencyDirectory(self.config.round_id, self.session, sigs).to_bytes()

    # ----- round 4
    def receive_unmask(self, channel: int, data: bytes):
        self._expect(ServerState.COLLECT_UNMASK)
        m = self._receive("unmask", channel, data, msgs.UnmaskShares, self.u3)
        if m is None:
            return
        u3 = set(self.u3)
        held = set(self._inputs[channel].masked_with)
        targets = [t for t, kind, _ in m.shares if kind != "p"]
        pairs = [t for t, kind, _ in m.shares if kind == "p"]
        if len(set(targets)) != len(targets) or set(targets) != held:
            self._reject(channel, "unmask", "shares do not cover exactly the peers it masked with")
            return
        if len(set(pairs)) != len(pairs) or set(pairs) != self._pair_reveals(channel):
            self._reject(channel, "unmask", "pair seeds do not match its disputes")
            return
        for t, kind, _ in m.shares:
            if kind != "p" and kind != ("b" if t in u3 else "s"):
                self._reject(channel, "unmask", f"sent a {kind!r} share of client {t} that was not requested")
                return
        self._unmask[channel] = m.shares

    def _rebuild(self, target: int, kind: str, got: dict[int, bytes]) -> bytes:
        """The secret of `target` from its shares, checked against its commitment (b) or public key (s). On a
        mismatch, a seeded search over `t`-subsets of the surplus shares finds a consistent one, and every holder
        whose share disagrees with it is named in `rejections`."""
        t, what = self.config.threshold, "self-mask seed" if kind == "b" else "mask key"
        expected = self._keys[target][2] if kind == "b" else self._keys[target][1]
        digest = msgs.seed_commitment if kind == "b" else crypto.public_from_private

        def attempt(holders):
            try:
                secret = shamir.reconstruct({h: got[h] for h in holders}, t, SECRET_BYTES)
            except SecureAggregationError:
                return None
            return secret if digest(secret) == expected else None

        holders = sorted(got)
        secret = attempt(holders[:t])
        if secret is not None:
            return secret
        search = random.Random(target)
        for _ in range(256 if len(holders) > t else 0):
            good = sorted(search.sample(holders, t))
            secret = attempt(good)
            if secret is not None:
                break
        if secret is None:
            self.state = ServerState.ABORTED
            raise SecureAggregationError(
                f"The {len(got)} shares of client {target}'s {what} from holders {holders} do not rebuild its "
                f"{'commitment' if kind == 'b' else 'advertised key'}, and no {t} of them agree: a holder sent a "
                "bad share.")
        for h in holders:
            if h not in good and attempt(good[:-1] + [h]) != secret:
                self.rejections.append(ProtocolRejection(
                    h, "unmask", f"its share of client {target}'s {what} disagrees with {t} consistent shares"))
        return secret

    def finish(self) -> np.ndarray:
        """Rebuilds the self-mask seeds of the survivors and the mask keys of dropped clients (checked, see
        `_rebuild`), removes their masks and the revealed pair masks, and returns the sum of the survivors' inputs
        modulo `2^bits`.

        Raises:
            SecureAggregationError: when some secret has fewer than t shares (too many dropped in unmasking), or
                no t of its shares rebuild its commitment or advertised key.
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
        for (accuser, kind), seeds in shares.items():
            if kind == "p":
                for holder, seed in seeds.items():
                    prg.add_into(acc, seed, -pairwise_sign(holder, accuser))
        info = crypto.kdf_info("pairwise-mask", cfg.round_id)
        for target in sorted(self._holders()):
            kind = "b" if target in u3 else "s"
            got = shares.get((target, kind), {})
            if len(got) < cfg.threshold:
                self.state = ServerState.ABORTED
                raise SecureAggregationError(
                    f"Too many dropouts during unmasking: {len(got)} shares of client {target}'s "
                    f"{'self-mask seed' if kind == 'b' else 'mask key'}, fewer than t={cfg.threshold}.")
            secret = self._rebuild(target, kind, got)
            if kind == "b":
                prg.add_into(acc, secret, -1)
                continue
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
            if kind != "p":
                kinds.setdefault(target, set()).add(kind)
        both = sorted(t for t, k in kinds.items() if len(k) > 1)
        if both:
            raise SecureAggregationError(f"Transcript holds both share kinds of clients {both}.")


__all__ = ["SecAggServer", "ServerState"]
