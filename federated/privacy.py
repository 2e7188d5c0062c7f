"""Central differential privacy for the simulator: DP-FedAvg with fixed or adaptive clipping, accounted with
Google's `dp-accounting` (no second implementation of an accountant here).

DP-FedAvg (McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent Language Models", ICLR
2018): each client's update `delta_k` (its payload divided by its weight) is clipped to L2 norm `C` and sent with
weight 1, so every client counts equally and the sum has bounded sensitivity; the server adds Gaussian noise of
standard deviation `z C` to every coordinate of the sum before the aggregator divides by the number of clients.
Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private Learning with Adaptive
Clipping", NeurIPS 2021): each client also reports whether its update was within `C`; the server adds Gaussian
noise of standard deviation `sigma_b` to that count and moves `C` geometrically towards the target quantile,
`C <- C exp(-eta (b - gamma))`; the count is a second Gaussian query, accounted with the update's.

Sampling assumption, which is what `simulate` does: a cohort of fixed size `m` drawn without replacement from the
`N` clients each round (`sampling="fixed"`). The neighbouring relation is then replace-one (N is public): one
client's clipped update replaced by any other moves the sum by up to `2C`, and the count by up to 1, so the
accountant composes `SampledWithoutReplacementDpEvent(N, m, Gaussian(z / 2) [+ Gaussian(sigma_b)])` per round
with dp-accounting's RDP accountant (its PLD accountant does not support sampling without replacement).
`sampling="poisson"` (each client in each round independently with probability `m / N`, add-or-remove-one
relation: `PoissonSampledDpEvent(m / N, Gaussian(z) [+ Gaussian(2 sigma_b)])`, the count centred at 1/2) is for
deployments that sample that way, with either accountant. The server is trusted to add the noise (central DP);
noise comes from the round's seeded Generator, which is right for a reproducible simulation and wrong for a
deployment (use a cryptographic source there).
"""

from __future__ import annotations

import math

import numpy as np

from tfx_ext._validate import check_choice, check_int, check_number
from tfx_ext.federated.aggregators import Postprocessor

SAMPLINGS = ("fixed", "poisson")
ACCOUNTANTS = ("rdp", "pld")
_BELOW = "dp_within_clip"  # the payload extra carrying the adaptive-clipping indicator


def _dp():
    import dp_accounting  # a real dependency (setup.py); imported here so the simulator loads without it

    return dp_accounting


class DPAccountant:
    """Privacy of `rounds` rounds of DP-FedAvg, from dp-accounting (module docstring for the assumptions).

    Args:
        population_size: `N`, clients that can be sampled.
        cohort_size: `m`, clients per round (the expected count for Poisson sampling).
        noise_multiplier: `z`: the update noise's standard deviation over the clip norm.
        clipped_count_stddev: `sigma_b` of the adaptive-clipping count (None: fixed clipping, no count query).
        sampling: "fixed" (without replacement, replace-one) or "poisson" (add-or-remove-one).
        accountant: "rdp" or "pld" (PLD needs Poisson sampling).
    """

    def __init__(self, *, population_size: int, cohort_size: int, noise_multiplier: float,
                 clipped_count_stddev: float | None = None, sampling: str = "fixed", accountant: str = "rdp"):
        check_int("population_size", population_size, minimum=1)
        check_int("cohort_size", cohort_size, minimum=1, maximum=population_size)
        check_number("noise_multiplier", noise_multiplier, low=0, low_open=True)
        if clipped_count_stddev is not None:
            check_number("clipped_count_stddev", clipped_count_stddev, low=0, low_open=True)
        check_choice("sampling", sampling, SAMPLINGS)
        check_choice("accountant", accountant, ACCOUNTANTS)
        if sampling == "fixed" and accountant == "pld":
            raise ValueError("dp-accounting's PLD accountant does not support sampling without replacement "
                             "(`sampling='fixed'`, what `simulate` does): use `accountant='rdp'`, or "
                             "`sampling='poisson'` for a deployment that samples each client independently.")
        self.population_size, self.cohort_size = int(population_size), int(cohort_size)
        self.noise_multiplier, self.clipped_count_stddev = float(noise_multiplier), clipped_count_stddev
        self.sampling, self.accountant = sampling, accountant

    def round_event(self, noise_multiplier: float | None = None):
        """The `DpEvent` of one round (module docstring)."""
        dp = _dp()
        z = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        fixed = self.sampling == "fixed"
        queries = [dp.GaussianDpEvent(z / 2 if fixed else z)]  # sensitivity 2C (replace-one) or C
        if self.clipped_count_stddev is not None:  # the count's sensitivity: 1 (replace-one) or 1/2 (centred)
            queries.append(dp.GaussianDpEvent(self.clipped_count_stddev * (1 if fixed else 2)))
        inner = queries[0] if len(queries) == 1 else dp.ComposedDpEvent(queries)
        if fixed:
            return dp.SampledWithoutReplacementDpEvent(self.population_size, self.cohort_size, inner)
        return dp.PoissonSampledDpEvent(self.cohort_size / self.population_size, inner)

    def fresh_accountant(self):
        dp = _dp()
        if self.accountant == "pld":
            return dp.pld.PLDAccountant(dp.NeighboringRelation.ADD_OR_REMOVE_ONE)
        relation = dp.NeighboringRelation.REPLACE_ONE if self.sampling == "fixed" \
            else dp.NeighboringRelation.ADD_OR_REMOVE_ONE
        return dp.rdp.RdpAccountant(neighboring_relation=relation)

    def epsilon(self, rounds: int, target_delta: float) -> float:
        """epsilon at `target_delta` after `rounds` rounds (0 for no rounds)."""
        check_int("rounds", rounds, minimum=0)
        check_number("target_delta", target_delta, low=0, high=1, low_open=True, high_open=True)
        if rounds == 0:
            return 0.0
        accountant = self.fresh_accountant()
        accountant.compose(self.round_event(), int(rounds))
        return float(accountant.get_epsilon(target_delta))

    def calibrate(self, target_epsilon: float, target_delta: float, rounds: int) -> float:
        """The smallest noise multiplier whose `rounds` rounds stay within `target_epsilon` at `target_delta`."""
        dp = _dp()
        check_number("target_epsilon", target_epsilon, low=0, low_open=True)
        check_int("rounds", rounds, minimum=1)
        return float(dp.mechanism_calibration.calibrate_dp_mechanism(
            self.fresh_accountant, lambda z: dp.SelfComposedDpEvent(self.round_event(z), int(rounds)),
            target_epsilon, target_delta,
            bracket_interval=dp.mechanism_calibration.LowerEndpointAndGuess(1e-3, 1.0), tol=1e-4))


def clip_to_norm(arrays, clip_norm: float) -> tuple[list[np.ndarray], float]:
    """`arrays` scaled so their joint L2 norm is at most `clip_norm`; also returns the norm before clipping."""
    norm = math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return [np.asarray(a, np.float64) * scale for a in arrays], norm


class CentralDP(Postprocessor):
    """DP-FedAvg as a postprocessor (module docstring): clients clip, the server adds Gaussian noise to the sum.

    Composes with every sum-based aggregator and server optimizer (`simulate(postprocessors=[CentralDP(...)])`),
    with secure aggregation included (the server adds the noise to the securely computed sum). Clients are weighted
    equally. Each round reports `CentralDP/epsilon` (at `target_delta`, from `DPAccountant`), `CentralDP/clip_norm`,
    `CentralDP/noise_stddev` and the fraction of clients clipped (`CentralDP/clipped`).

    Args:
        clip_norm: `C` (the starting value with adaptive clipping).
        population_size: `N`, the number of clients `simulate` samples from (`len(client_data)`).
        cohort_size: `m`, `simulate`'s `clients_per_round` (checked every round).
        noise_multiplier: `z`; or None with `target_epsilon` and `rounds` to calibrate it.
        target_delta: delta at which epsilon is reported (default `1 / N^1.1`, below `1 / N`).
        target_epsilon, rounds: calibrate `z` so that `rounds` rounds spend at most `target_epsilon`.
        adaptive_clip_quantile: `gamma` in (0, 1): adapt `C` towards that quantile of the update norms.
        clip_learning_rate: `eta` of the geometric update.
        clipped_count_stddev: `sigma_b` (default `m / 20`, as Andrew et al. suggest).
        accountant: "rdp" (the one that supports `simulate`'s sampling).
    """

    def __init__(self, *, clip_norm: float, population_size: int, cohort_size: int,
                 noise_multiplier: float | None = None, target_delta: float | None = None,
                 target_epsilon: float | None = None, rounds: int | None = None,
                 adaptive_clip_quantile: float | None = None, clip_learning_rate: float = 0.2,
                 clipped_count_stddev: float | None = None, accountant: str = "rdp"):
        self.clip_norm = check_number("clip_norm", clip_norm, low=0, low_open=True)
        if adaptive_clip_quantile is not None:
            check_number("adaptive_clip_quantile", adaptive_clip_quantile, low=0, high=1, low_open=True,
                         high_open=True)
            clipped_count_stddev = cohort_size / 20 if clipped_count_stddev is None else clipped_count_stddev
        elif clipped_count_stddev is not None:
            raise ValueError("`clipped_count_stddev` needs `adaptive_clip_quantile`. Received: "
                             f"clipped_count_stddev={clipped_count_stddev!r}, adaptive_clip_quantile=None")
        self.quantile, self.clip_learning_rate = adaptive_clip_quantile, check_number(
            "clip_learning_rate", clip_learning_rate, low=0)
        self.target_delta = float(target_delta) if target_delta is not None else 1.0 / population_size**1.1
        if (noise_multiplier is None) == (target_epsilon is None):
            raise ValueError("Give exactly one of `noise_multiplier` and `target_epsilon` (with `rounds`). Received: "
                             f"noise_multiplier={noise_multiplier!r}, target_epsilon={target_epsilon!r}")
        self.accountant = DPAccountant(population_size=population_size, cohort_size=cohort_size,
                                       noise_multiplier=noise_multiplier or 1.0,
                                       clipped_count_stddev=clipped_count_stddev, accountant=accountant)
        if target_epsilon is not None:
            if rounds is None:
                raise ValueError("`target_epsilon` needs `rounds` (the run's length) to calibrate the noise.")
            self.accountant.noise_multiplier = self.accountant.calibrate(target_epsilon, self.target_delta, rounds)
        self.target_epsilon = target_epsilon
        self.rounds_done = 0

    @property
    def noise_multiplier(self) -> float:
        return self.accountant.noise_multiplier

    @property
    def payload_extras(self) -> dict:
        """Fields this postprocessor adds to every client payload (the round's template gains them too)."""
        return {_BELOW: np.zeros(())} if self.quantile is not None else {}

    def epsilon(self, rounds: int | None = None) -> float:
        """epsilon at `target_delta` after `rounds` (default: the rounds done so far)."""
        return self.accountant.epsilon(self.rounds_done if rounds is None else rounds, self.target_delta)

    def on_client(self, payload, ctx):
        if ctx.num_clients != self.accountant.cohort_size:
            raise ValueError(f"CentralDP was accounted for cohorts of {self.accountant.cohort_size} clients, but "
                             f"round {ctx.round} has {ctx.num_clients}: pass `cohort_size=clients_per_round`.")
        clipped, norm = clip_to_norm([a / payload.weight for a in payload.arrays], self.clip_norm)
        extras = dict(payload.extras)
        if self.quantile is not None:
            extras[_BELOW] = np.asarray(float(norm <= self.clip_norm))
        return payload.replace(arrays=clipped, weight=1.0, extras=extras), {"clipped": float(norm > self.clip_norm),
                                                                            "update_norm": norm}

    def on_server(self, payload_sum, ctx):
        std = self.noise_multiplier * self.clip_norm
        noisy = [a + ctx.rng.normal(0.0, std, np.shape(a)) for a in payload_sum.arrays]
        extras = dict(payload_sum.extras)
        metrics = {"noise_stddev": std, "clip_norm_used": self.clip_norm}
        if self.quantile is not None:
            count = float(extras.pop(_BELOW)) + ctx.rng.normal(0.0, self.accountant.clipped_count_stddev)
            below = count / self.accountant.cohort_size
            self.clip_norm *= math.exp(-self.clip_learning_rate * (below - self.quantile))
            metrics["within_clip_fraction"] = below
        self.rounds_done += 1
        metrics.update(epsilon=self.epsilon(), delta=self.target_delta, noise_multiplier=self.noise_multiplier,
                       clip_norm=self.clip_norm)
        return payload_sum.replace(arrays=noisy, extras=extras), metrics

    def get_state(self) -> dict:
        """What a checkpoint keeps: the (adapted) clip norm and the rounds accounted."""
        return {"clip_norm": self.clip_norm, "rounds_done": self.rounds_done}

    def set_state(self, state: dict) -> None:
        self.clip_norm = float(state["clip_norm"])
        self.rounds_done = int(state["rounds_done"])

    def __repr__(self):
        return (f"CentralDP(clip_norm={self.clip_norm}, noise_multiplier={self.noise_multiplier:.4g}, "
                f"population_size={self.accountant.population_size}, cohort_size={self.accountant.cohort_size}, "
                f"adaptive_clip_quantile={self.quantile})")


__all__ = ["ACCOUNTANTS", "CentralDP", "DPAccountant", "SAMPLINGS", "clip_to_norm"]
