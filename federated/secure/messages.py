"""Typed protocol messages and their byte encoding (no pickle).

Wire format: `b"TSA1" | type (u8) | header length (u32, big endian) | header | blob`. The header is UTF-8 JSON
whose byte fields are base64; the blob carries the one large array a message may have (a masked input vector,
little-endian uint32/uint64). Decoding checks the magic, the type, every field's presence and type, and rejects
extra fields, so a malformed message raises `MessageError` (a `SecureAggregationError`) instead of producing a
half-built object. Sender ids are positive integers; 0 is the server.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import struct
from typing import ClassVar

import numpy as np

from tfx_ext._validate import is_int
from tfx_ext.errors import SecureAggregationError

MAGIC = b"TSA1"
SERVER = 0


class MessageError(SecureAggregationError):
    """A message that does not decode: bad magic, type, field or length."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s) -> bytes:
    if not isinstance(s, str):
        raise MessageError(f"Expected a base64 string. Received: {type(s).__name__}")
    try:
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise MessageError(f"Malformed base64 field: {e}") from None


def _int(v) -> int:
    if not is_int(v) or v < 0:
        raise MessageError(f"Expected a non-negative integer. Received: {v!r}")
    return v


def _list(v) -> list:
    if not isinstance(v, list):
        raise MessageError(f"Expected a list. Received: {type(v).__name__}")
    return v


# field kind -> (to JSON, from JSON)
_KINDS = {
    "int": (lambda v: int(v), _int),
    "bytes": (_b64, _unb64),
    "ints": (lambda v: [int(x) for x in v], lambda v: tuple(_int(x) for x in _list(v))),
    "id_bytes": (lambda v: [[int(i), _b64(b)] for i, b in v],
                 lambda v: tuple((_int(_list(e)[0]), _unb64(e[1])) for e in _list(v) if len(e) == 2 or _bad(e))),
    "id_kind_bytes": (lambda v: [[int(i), str(k), _b64(b)] for i, k, b in v],
                      lambda v: tuple((_int(_list(e)[0]), _kind(e[1]), _unb64(e[2]))
                                      for e in _list(v) if len(e) == 3 or _bad(e))),
    "pairs": (lambda v: [[int(a), int(b)] for a, b in v],
              lambda v: tuple((_int(_list(e)[0]), _int(e[1])) for e in _list(v) if len(e) == 2 or _bad(e))),
    "keys": (lambda v: _b64(b"".join(_key_record(*e) for e in v)), lambda v: _key_records(_unb64(v))),
}


_KEY_HEAD = struct.Struct(">QH")


def _key_record(cid, c_pk, s_pk, b_commit, sig) -> bytes:
    """One key-directory entry as bytes: id (u64), signature length (u16), c_pk, s_pk, b_commit (32 each), signature."""
    if len(c_pk) != 32 or len(s_pk) != 32 or len(b_commit) != 32:
        raise MessageError(f"Keys and commitments are 32 bytes. Received: {len(c_pk)}, {len(s_pk)} and "
                           f"{len(b_commit)} for client {cid}")
    return _KEY_HEAD.pack(int(cid), len(sig)) + bytes(c_pk) + bytes(s_pk) + bytes(b_commit) + bytes(sig)


def _key_records(blob: bytes) -> tuple:
    out, pos = [], 0
    while pos < len(blob):
        if pos + _KEY_HEAD.size + 96 > len(blob):
            raise MessageError("Truncated key-directory entry.")
        cid, siglen = _KEY_HEAD.unpack_from(blob, pos)
        pos += _KEY_HEAD.size
        end = pos + 96 + siglen
        if end > len(blob):
            raise MessageError("Truncated key-directory signature.")
        out.append((cid, blob[pos:pos + 32], blob[pos + 32:pos + 64], blob[pos + 64:pos + 96], blob[pos + 96:end]))
        pos = end
    return tuple(out)


def _bad(e):
    raise MessageError(f"Malformed list entry. Received: {e!r}")


def _kind(k):
    if k not in ("b", "s", "p"):
        raise MessageError(f"Share kind must be 'b', 's' or 'p'. Received: {k!r}")
    return k


class Message:
    """Base of the typed messages: `to_bytes()` and `Message.from_bytes(data)` (dispatches on the type byte)."""

    TYPE: ClassVar[int]
    FIELDS: ClassVar[dict[str, str]]
    _REGISTRY: ClassVar[dict[int, type]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        Message._REGISTRY[cls.TYPE] = cls

    def to_bytes(self) -> bytes:
        header = {name: _KINDS[kind][0](getattr(self, name)) for name, kind in self.FIELDS.items()}
        blob = b""
        vec = getattr(self, "vector", None)
        if vec is not None:
            vec = np.ascontiguousarray(vec)
            if vec.dtype not in (np.uint32, np.uint64):
                raise MessageError(f"Vectors are uint32 or uint64. Received: dtype={vec.dtype}")
            header["dtype"] = "u4" if vec.dtype == np.uint32 else "u8"
            header["length"] = int(vec.size)
            blob = vec.astype(vec.dtype.newbyteorder("<"), copy=False).tobytes()
        h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
        return MAGIC + struct.pack(">BI", self.TYPE, len(h)) + h + blob

    @staticmethod
    def from_bytes(data: bytes) -> "Message":
        if not isinstance(data, (bytes, bytearray)) or len(data) < 9 or data[:4] != MAGIC:
            raise MessageError("Not a secure-aggregation message (bad magic or too short).")
        mtype, hlen = struct.unpack(">BI", data[4:9])
        cls = Message._REGISTRY.get(mtype)
        if cls is None:
            raise MessageError(f"Unknown message type {mtype}.")
        if 9 + hlen > len(data):
            raise MessageError(f"{cls.__name__}: header length {hlen} exceeds the message.")
        try:
            header = json.loads(bytes(data[9:9 + hlen]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MessageError(f"{cls.__name__}: malformed header: {e}") from None
        if not isinstance(header, dict):
            raise MessageError(f"{cls.__name__}: header must be an object.")
        blob = bytes(data[9 + hlen:])
        expected = set(cls.FIELDS) | ({"dtype", "length"} if "vector" in cls.__dataclass_fields__ else set())
        if set(header) != expected:
            raise MessageError(f"{cls.__name__}: fields {sorted(header)} differ from {sorted(expected)}.")
        kwargs = {name: _KINDS[kind][1](header[name]) for name, kind in cls.FIELDS.items()}
        if "vector" in cls.__dataclass_fields__:
            dtype = {"u4": np.dtype("<u4"), "u8": np.dtype("<u8")}.get(header["dtype"])
            length = _int(header["length"])
            if dtype is None or len(blob) != length * dtype.itemsize:
                raise MessageError(f"{cls.__name__}: vector of {len(blob)} bytes does not match its header.")
            kwargs["vector"] = np.frombuffer(blob, dtype).astype(dtype.newbyteorder("="))
        elif blob:
            raise MessageError(f"{cls.__name__}: unexpected trailing bytes.")
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class AdvertiseKeys(Message):
    """Round 0, client -> server: two X25519 public keys (`c_pk` encrypts shares, `s_pk` derives masks), the
    commitment `b_commit = H(b)` to its self-mask seed (checked after reconstruction), and an Ed25519 signature
    over all three when the deployment has a PKI (empty otherwise)."""

    TYPE: ClassVar[int] = 1
    FIELDS: ClassVar[dict] = {"round": "int", "sender": "int", "c_pk": "bytes", "s_pk": "bytes",
                              "b_commit": "bytes", "signature": "bytes"}
    round: int
    sender: int
    c_pk: bytes
    s_pk: bytes
    b_commit: bytes
    signature: bytes = b""


@dataclasses.dataclass(frozen=True)
class KeyDirectory(Message):
    """Server -> every client: the adverts `(id, c_pk, s_pk, b_commit, signature)` of U1 and the public round seed."""

    TYPE: ClassVar[int] = 2
    FIELDS: ClassVar[dict] = {"round": "int", "entries": "keys", "public_seed": "bytes"}
    round: int
    entries: tuple
    public_seed: bytes


@dataclasses.dataclass(frozen=True)
class EncryptedShares(Message):
    """Round 1, client -> server: one AES-GCM ciphertext per neighbour, `(receiver, ciphertext)`."""

    TYPE: ClassVar[int] = 3
    FIELDS: ClassVar[dict] = {"round": "int", "session": "bytes", "sender": "int", "shares": "id_bytes"}
    round: int
    session: bytes
    sender: int
    shares: tuple


@dataclasses.dataclass(frozen=True)
class ForwardedShares(Message):
    """Server -> client `receiver`: the ciphertexts addressed to it, `(sender, ciphertext)`."""

    TYPE: ClassVar[int] = 4
    FIELDS: ClassVar[dict] = {"round": "int", "session": "bytes", "receiver": "int", "shares": "id_bytes"}
    round: int
    session: bytes
    receiver: int
    shares: tuple


@dataclasses.dataclass(frozen=True)
class MaskedInput(Message):
    """Round 2, client -> server: the masked vector, the peers whose pairwise masks it holds, the peers whose
    shares it rejected (failed decryption or checks: a dispute, not proof), and its signature over all of it when
    the deployment has a PKI (empty otherwise)."""

    TYPE: ClassVar[int] = 5
    FIELDS: ClassVar[dict] = {"round": "int", "session": "bytes", "sender": "int", "masked_with": "ints",
                              "rejected": "ints", "signature": "bytes"}
    round: int
    session: bytes
    sender: int
    masked_with: tuple
    rejected: tuple
    signature: bytes
    vector: np.ndarray = dataclasses.field(compare=False, default=None)


@dataclasses.dataclass(frozen=True)
class SurvivorSet(Message):
    """Server -> clients: U3, the clients whose masked inputs enter the sum, and the disputes `(accuser, accused)`:
    pairs whose shares failed, which leave the sum as a pair (the accused reveals the pair's mask seed)."""

    TYPE: ClassVar[int] = 6
    FIELDS: ClassVar[dict] = {"round": "int", "session": "bytes", "survivors": "ints", "disputes": "pairs"}
    round: int
    session: bytes
    survivors: tuple
    disputes: tuple = ()


@dataclasses.dataclass(frozen=True)
class ConsistencySignature(Message):
    """Round 3 (active-adversary variant), client -> server: Ed25519 signature over (session, U3, disputes)."""

    TYPE: ClassVar[int] = 7
    FIELDS: ClassVar[dict] = {"round": "int", "session": "bytes", "sender": "int", "signature": "bytes"}
    round: int
    session: bytes
    sender: int
    signature: bytes


@dataclasses.dataclass(frozen=True)
class ConsistencyDirectory(Message):
    """Server -> clients: the signatures `(id, signature)` over U3 it collected."""

    TYPE: ClassVar[int] = 8
    FIELDS: ClassVar[dict] = {"round": "int", "session": "bytes", "signatures": "id_bytes"}
    round: int
    session: bytes
    signatures: tuple


@dataclasses.dataclass(frozen=True)
class UnmaskShares(Message):
    """Round 4, client -> server: `(client id, kind, value)` with kind "b" (share of a survivor's self-mask seed),
    "s" (share of the mask key of a client that dropped after sharing) or "p" (the sender's own pair mask seed with
    a surviving client that disputed it)."""

    TYPE: ClassVar[int] = 9
    FIELDS: ClassVar[dict] = {"round": "int", "session": "bytes", "sender": "int", "shares": "id_kind_bytes"}
    round: int
    session: bytes
    sender: int
    shares: tuple


def decode(data: bytes, expected: type, round_id: int, session: bytes | None = None) -> Message:
    """Decodes `data` and checks it is an `expected` message of round `round_id` and, when given, of `session`
    (else `MessageError`)."""
    msg = Message.from_bytes(data)
    if not isinstance(msg, expected):
        raise MessageError(f"Expected {expected.__name__}, got {type(msg).__name__}.")
    if msg.round != round_id:
        raise MessageError(f"{expected.__name__} belongs to round {msg.round}, not round {round_id}.")
    if session is not None and msg.session != session:
        raise MessageError(f"{expected.__name__} belongs to another session of round {round_id} (replayed?).")
    return msg


def session_id(round_id: int, graph_seed: bytes, entries) -> bytes:
    """`H(round, graph seed, key directory)`: binds every later message of the round to this one key directory."""
    h = hashlib.sha256(b"tfx-ext/secagg/session" + struct.pack(">Q", round_id) + graph_seed)
    for entry in sorted(entries):
        h.update(_key_record(*entry))
    return h.digest()


def seed_commitment(b: bytes) -> bytes:
    """`H(b)`: the commitment to a self-mask seed, published in the advert and checked after reconstruction."""
    return hashlib.sha256(b"tfx-ext/secagg/self-mask" + b).digest()


def _ids(values) -> bytes:
    ids = [int(i) for i in values]
    return struct.pack(f">Q{len(ids)}Q", len(ids), *ids)


def survivor_statement(session: bytes, survivors, disputes=()) -> bytes:
    """What the consistency check signs: the session, the sorted survivor set U3 and the sorted disputes."""
    pairs = [int(i) for pair in sorted(tuple(p) for p in disputes) for i in pair]
    return b"tfx-ext/secagg/survivors" + session + _ids(sorted(survivors)) + _ids(pairs)


def advert_statement(round_id: int, sender: int, c_pk: bytes, s_pk: bytes, b_commit: bytes) -> bytes:
    """What a signed key advert signs: round, sender, both public keys and the self-mask commitment."""
    return b"tfx-ext/secagg/advert" + struct.pack(">QQ", round_id, sender) + c_pk + s_pk + b_commit


def masked_statement(session: bytes, sender: int, masked_with, rejected, vector: np.ndarray) -> bytes:
    """What a signed masked input signs: session, sender, both peer lists and the vector's SHA-256."""
    digest = hashlib.sha256(np.ascontiguousarray(vector).astype(vector.dtype.newbyteorder("<")).tobytes()).digest()
    return (b"tfx-ext/secagg/masked" + session + struct.pack(">Q", sender) + _ids(masked_with) + _ids(rejected)
            + digest)


__all__ = [
    "AdvertiseKeys",
    "ConsistencyDirectory",
    "ConsistencySignature",
    "EncryptedShares",
    "ForwardedShares",
    "KeyDirectory",
    "MaskedInput",
    "Message",
    "MessageError",
    "SurvivorSet",
    "UnmaskShares",
    "advert_statement",
    "decode",
    "masked_statement",
    "seed_commitment",
    "session_id",
    "survivor_statement",
]
