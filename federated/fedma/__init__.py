"""FedMA: federated matched averaging (Wang et al., ICLR 2020) for Dense, Conv, Depthwise/Separable, BN, LSTM/GRU.

- `matching`: the PFNM/BBP-MAP cost and the Hungarian solver (`match_units`, `match_to_global`);
- `adapters`: one table of where each layer keeps its units (`build_spec`, `MatchSpec`);
- `permute`: moving units on every axis they index (`permute_units`, `to_global`, `matched_average`);
- `growth`: rebuilding a model at a new width (`grow_model`);
- `aggregator`: `FedMA` (server-side) and `ClientSideMatching` (sum-based, composes with secure aggregation)
  for `simulate`, and the pure `match_networks` / `align_to_global`;
- `schedule`: `run_fedma`, the paper's layer-wise schedule with freezing, then communication rounds.
"""

from tfx_ext.federated.fedma.adapters import ADAPTERS, MatchSpec, UnitAxis, UnitGroup, WeightSpec, build_spec
from tfx_ext.federated.fedma.aggregator import ClientSideMatching, FedMA, align_to_global, match_networks
from tfx_ext.federated.fedma.growth import grow_model, widen_config
from tfx_ext.federated.fedma.matching import MatchResult, match_to_global, match_units
from tfx_ext.federated.fedma.permute import matched_average, permute_units, to_global, unit_features
from tfx_ext.federated.fedma.schedule import run_fedma

__all__ = [
    "ADAPTERS",
    "ClientSideMatching",
    "FedMA",
    "MatchResult",
    "MatchSpec",
    "UnitAxis",
    "UnitGroup",
    "WeightSpec",
    "align_to_global",
    "build_spec",
    "grow_model",
    "match_networks",
    "match_to_global",
    "match_units",
    "matched_average",
    "permute_units",
    "run_fedma",
    "to_global",
    "unit_features",
    "widen_config",
]
