"""Federated learning simulator of tfx-ext (installed as `tfx_ext.federated`).

- `ClientData` and the partitioners (`iid_partition`, `dirichlet_partition`, `shard_partition`,
  `natural_partition`), `plot_label_distribution`;
- `Payload` (what a client sends in a round) and `sum_payloads`;
- `CentralDP` (DP-FedAvg with fixed or adaptive clipping, a postprocessor) and `DPAccountant` (dp-accounting);
  `DistributedDP` (the distributed discrete Gaussian: clients add the noise inside secure aggregation);
- aggregators (`FedAvg`, `FedProx`, `FedAvgM`, `FedAdam`, `FedYogi`, `FedAdagrad`) over the pure maths of `aggregate`, and
  the server optimizers;
- robust aggregators (`Median`, `TrimmedMean`, `GeometricMedian`, `Krum`, `MultiKrum`, `Bulyan`, `CenteredClipping`,
  `NormBounding`, in `robust`);
- attack simulation (`with_attack`, `UnderAttack`, `SignFlip`, `Scaling`, `GaussianNoise`, `LabelFlip`, in
  `attacks`);
- update compression postprocessors (`StochasticQuantizer`, `TopK`, `RandomK` with error feedback, in
  `compression`);
- `LocalTrainer` (one compiled graph trains a whole cohort), `simulate` (a loop over `round.aggregate_round`,
  with `Callback`s for checkpoints, history files, TensorBoard and progress), `History`, `plot_history`.

Ready-made experiments (what `tfx-ext federated simulate` runs) are application code:
`tfx_ext.apps.federated_experiments`.

Subpackages built on these: `tfx_ext.federated.fedma` (matched averaging) and `tfx_ext.federated.secure`
(secure aggregation, plugged in through `simulate(secure=...)`).
"""

from tfx_ext.federated.aggregators import (
    AGGREGATORS,
    Aggregator,
    ClientResult,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    PlainSum,
    Postprocessor,
    RoundContext,
    ServerAdagrad,
    ServerAdam,
    ServerMomentum,
    ServerSGD,
    ServerYogi,
)
from tfx_ext.federated.attacks import GaussianNoise, LabelFlip, Scaling, SignFlip, UnderAttack, with_attack
from tfx_ext.federated.aggregate import weighted_average, weighted_delta_sum
from tfx_ext.federated.callbacks import Callback
from tfx_ext.federated.client_data import ClientData, plot_label_distribution
from tfx_ext.federated.compression import RandomK, StochasticQuantizer, TopK
from tfx_ext.federated.distributed_dp import DistributedDP
from tfx_ext.federated.fedma.aggregator import ClientSideMatching, FedMA
from tfx_ext.federated.fedma.schedule import run_fedma
from tfx_ext.federated.fused import Execution
from tfx_ext.federated.history import History, plot_history
from tfx_ext.federated.partition import dirichlet_partition, iid_partition, natural_partition, shard_partition
from tfx_ext.federated.payload import Payload, sum_payloads
from tfx_ext.federated.privacy import CentralDP, DPAccountant
from tfx_ext.federated.robust import Bulyan, CenteredClipping, GeometricMedian, Krum, Median, MultiKrum, NormBounding, TrimmedMean
from tfx_ext.federated.round import validate_client_result
from tfx_ext.federated.secure.wrapper import SecAgg, check_aggregator
from tfx_ext.federated.simulation import simulate
from tfx_ext.federated.training import ClientOptimizer, LocalTrainer

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "Callback",
    "CentralDP",
    "DistributedDP",
    "DPAccountant",
    "GaussianNoise",
    "Bulyan",
    "CenteredClipping",
    "GeometricMedian",
    "LabelFlip",
    "Scaling",
    "SignFlip",
    "UnderAttack",
    "with_attack",
    "ClientData",
    "ClientOptimizer",
    "ClientResult",
    "ClientSideMatching",
    "FedMA",
    "SecAgg",
    "check_aggregator",
    "run_fedma",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "History",
    "Krum",
    "Median",
    "MultiKrum",
    "NormBounding",
    "TrimmedMean",
    "LocalTrainer",
    "Payload",
    "PlainSum",
    "Postprocessor",
    "RandomK",
    "RoundContext",
    "ServerAdagrad",
    "ServerAdam",
    "ServerMomentum",
    "ServerSGD",
    "ServerYogi",
    "StochasticQuantizer",
    "TopK",
    "dirichlet_partition",
    "iid_partition",
    "natural_partition",
    "plot_history",
    "plot_label_distribution",
    "shard_partition",
    "simulate",
    "Execution",
    "sum_payloads",
    "validate_client_result",
    "weighted_average",
    "weighted_delta_sum",
]
