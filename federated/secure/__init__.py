"""Secure aggregation (`tfx_ext.federated.secure`): Bonawitz et al.'s SecAgg (CCS 2017) and Bell et al.'s SecAgg+
(CCS 2020) with real cryptography (X25519, HKDF, AES-GCM, AES-CTR masks, Ed25519, Shamir over GF(2^31 - 1)).

- `SecAgg`: the `simulate(..., secure=SecAgg(...))` wrapper around any sum-based aggregator;
- `run_round`, `make_config`, `KeyStore`/`make_pki`: one protocol round in-process, bytes on the wire, seeded
  dropouts, an optional adversary; `THREAT_MODELS`: "semi-malicious" (default) and "active";
- `SecAggClient`, `SecAggServer`: the two state machines; `messages`: typed messages <-> bytes;
- `FixedPointEncoder`, `WeightedEncoder`, `required_bits`: clipping, fixed point, overflow guard;
- `choose_parameters`: SecAgg+ degree and threshold from n, dropout rate and security parameter.
"""

from tfx_ext.federated.secure.client import ClientState, SecAggClient
from tfx_ext.federated.secure.config import ProtocolRejection, RoundConfig
from tfx_ext.federated.secure.encoding import FixedPointEncoder, WeightedEncoder, required_bits
from tfx_ext.federated.secure.graph import GraphParameters, choose_parameters
from tfx_ext.federated.secure.graph import THREAT_MODELS
from tfx_ext.federated.secure.protocol import STAGES, KeyStore, RoundResult, make_config, make_pki, run_round
from tfx_ext.federated.secure.server import SecAggServer, ServerState
from tfx_ext.federated.secure.wrapper import SecAgg, check_aggregator

__all__ = [
    "ClientState",
    "FixedPointEncoder",
    "GraphParameters",
    "KeyStore",
    "ProtocolRejection",
    "RoundConfig",
    "RoundResult",
    "STAGES",
    "THREAT_MODELS",
    "SecAgg",
    "SecAggClient",
    "SecAggServer",
    "ServerState",
    "WeightedEncoder",
    "check_aggregator",
    "choose_parameters",
    "make_config",
    "make_pki",
    "required_bits",
    "run_round",
]
