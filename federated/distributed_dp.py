"""Distributed DP inside secure aggregation: the Distributed Discrete Gaussian mechanism (DDG; Kairouz, Liu, Steinke,
"The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation", ICML 2021).

The server never sees a sum without noise: every client adds its share of the noise before the (modular) secure
sum, so no one, the server included, holds a noiseless aggregate. One round, with clip norm `C`, noise multiplier
`z`, `n` expected clients and field bits `b`:

- client (`DistributedDP.on_client`): its update `x = payload / weight` clipped to L2 norm `C`, flattened and
  zero-padded to `d = 2^k`; randomly rotated, `H D x / sqrt(d)` (Walsh-Hadamard `H`, random signs `D` drawn from a
  public seed shared by the round, so the server can invert it); scaled by `scale` (the inverse of the paper's
  granularity gamma); rounded coordinate by coordinate up or down at random, unbiased, again until the rounded
  vector's norm is within `Delta_2` (conditional randomized rounding, `Delta_2` below); discrete Gaussian noise
  `N_Z(0, s^2)` added to every coordinate, `s = scale z C / sqrt(n)` (its share of the variance); the integers
  reduced modulo `2^b`. It sends a `FieldPayload` of `d` integers with weight 1.
- secure sum (`SecAgg`): a `FieldPayload` is summed as is, modulo `2^b`, the protocol running at `b` bits (`b` bits
  a coordinate on the wire); the sum's weight is the number of survivors.
- server (`on_server`): centred residue (`[-2^(b-1), 2^(b-1))`), divided by `scale`, inverse rotation, unpadded,
  reshaped: the sum of the survivors' clipped updates plus noise of standard deviation `sqrt(m / n) z C` (m
  survivors) per coordinate, plus rounding noise of variance at most `m / (4 scale^2)`.

Bit budget (`ddg_scale`): the integer sum cannot wrap as long as every coordinate stays within `k` standard
deviations (`k_stddevs`, default 6) of its bound, `k sqrt(n^2 C^2 scale^2 / d + n / 4 + n s^2) < 2^(b-1)`: the
rotation spreads an update of norm `C` so that each coordinate is sub-Gaussian with variance proxy `C^2 / d`,
`n^2` is the worst case of `n` aligned updates (a sum of norm `n C`), `n / 4` the rounding's and `n s^2` the noise's
variance. A coordinate wraps with probability at most `2 exp(-k^2 / 2)` (3e-8 at k = 6). `scale` is the largest
that satisfies it; too few bits (a noise share under one integer step, or the rounding alone too wide) raise
`SecureAggregationError` naming the smallest `bits` that work.

Accounting (`ddg_epsilon`, `DistributedDP.epsilon`): dp-accounting has no discrete Gaussian event. Kairouz et al.'s
Theorem 1: the sum of `m` independent `N_Z(0, s^2)` vectors added to integer vectors whose difference has L2 norm at
most `D` is `(1/2) eps^2`-concentrated DP with

    eps = min(sqrt(D^2 / (m s^2) + tau d / 2), D / (sqrt(m) s) + tau sqrt(d)),
    tau = 10 sum_{k=1}^{m-1} exp(-2 pi^2 s^2 k / (k + 1)),

with `d` the (padded) dimension in the place of the L1 term. Here `D = 2 Delta_2` (replace-one: one client's
rounded vector replaced by another) and `Delta_2^2 = min((scale C + sqrt(d))^2, scale^2 C^2 + d / 4 +
sqrt(2 ln(1/beta)) (scale C + sqrt(d) / 2))` (the rounding's bound, `beta = exp(-1/2)` by default). A Gaussian with
noise multiplier `1 / eps` (over its sensitivity) has the same concentrated-DP curve, so each round enters
dp-accounting as `GaussianDpEvent(1 / eps)` inside the sampling event the central path uses
(`privacy.DPAccountant`: fixed-size cohorts without replacement, replace-one, RDP). We report
`noise_multiplier_equivalent = 2 / eps`, the central DP-FedAvg multiplier of the same per-round guarantee.
Assumption, stated: dp-accounting's amplification by sampling without replacement (Wang, Balle, Kasiviswanathan
2019, Thm 27) is computed for the Gaussian; we apply it to a mechanism whose unsampled RDP curve is at most that
Gaussian's at every order, not to the Gaussian itself. google-research's `distributed_dp/accounting_utils.py`
instead composes the DDG's RDP bound directly with a generic (Poisson) subsampling bound, and TensorFlow Privacy's
`DistributedDiscreteGaussianSumQuery` returns an `UnsupportedDpEvent`; our route keeps one accountant (dp-accounting)
for both DP modes, at the cost of that assumption.

Dropouts: a client that drops takes its noise share with it, so `m < n` survivors leave `m / n` of the target
variance. Each round is accounted with the noise really in its sum (the survivors', `s` at `m`: the conservative
choice), and reports it: `DistributedDP/survivors`, `DistributedDP/noise_stddev` (realised, model units) next to
`target_noise_stddev = z C`, and `epsilon` (cumulative). `expected_clients` below the cohort size over-provisions
every share to cover that many dropouts.

Noise comes from the client's seeded Generator through a vectorised Canonne-Kamath-Steinke sampler (discrete
Laplace proposals by differences of geometrics, then rejection) in floating point: right for a reproducible
simulation, wrong for a deployment, which needs CKS's exact arithmetic and a cryptographic source.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

from tfx_ext._validate import check_int, check_number
from tfx_ext.errors import FederatedError, MalformedUpdateError, SecureAggregationError
from tfx_ext.federated.aggregators import Postprocessor
from tfx_ext.federated.payload import FieldPayload, Payload
from tfx_ext.federated.privacy import DPAccountant, clip_to_norm

DEFAULT_BETA = math.exp(-0.5)
_MAX_ROUNDING_TRIES = 1000


def padded_size(size: int) -> int:
    """The power of two at least `size` (and at least 1): the Hadamard transform's length."""
    return 1 << max(0, int(size) - 1).bit_length()


def hadamard(x: np.ndarray) -> np.ndarray:
    """The unnormalised Walsh-Hadamard transform `H x` of a vector whose length is a power of two (`H H = d I`); exact
    in integer dtypes."""
    x = np.array(x)
    d = x.shape[0]
    if d & (d - 1):
        raise ValueError(f"The Hadamard transform needs a power-of-two length. Received: length {d}")
    h = 1
    while h < d:
        y = x.reshape(-1, 2, h)
        x = np.stack([y[:, 0] + y[:, 1], y[:, 0] - y[:, 1]], axis=1).reshape(d)
        h *= 2
    return x


def rotation_signs(d: int, seed, round_id: int) -> np.ndarray:
    """The round's public random signs (+-1.0): every client and the server draw the same from `(seed, round)`."""
    return np.random.default_rng([int(seed), int(round_id), d]).choice(np.array([-1.0, 1.0]), size=d)


def rotate(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """`H D x / sqrt(d)`: an orthogonal map (norms kept), so `unrotate` inverts it."""
    return hadamard(signs * np.asarray(x, np.float64)) / math.sqrt(signs.size)


def unrotate(y: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """The inverse of `rotate`: `D H y / sqrt(d)` (`H` is symmetric and `H H / d = I`)."""
    return signs * hadamard(np.asarray(y, np.float64)) / math.sqrt(signs.size)


def discrete_gaussian(sigma: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` samples of the discrete Gaussian `N_Z(0, sigma^2)` (`P(x) ~ exp(-x^2 / (2 sigma^2))` on the integers),
    by Canonne, Kamath and Steinke's rejection sampler (NeurIPS 2020, Algorithm 3), vectorised: discrete Laplace
    proposals of scale `t = floor(sigma) + 1` (a difference of two geometrics) accepted with probability
    `exp(-(|y| - sigma^2 / t)^2 / (2 sigma^2))`."""
    check_number("sigma", sigma, low=0, low_open=True)
    t = math.floor(sigma) + 1
    p = -math.expm1(-1.0 / t)  # geometric success probability: P(G = k) = p (1 - p)^k, k >= 0
    out = np.empty(int(size), np.int64)
    todo = np.arange(int(size))
    while todo.size:
        y = rng.geometric(p, todo.size) - rng.geometric(p, todo.size)
        accept = rng.random(todo.size) < np.exp(-np.square(np.abs(y) - sigma**2 / t) / (2 * sigma**2))
        out[todo[accept]] = y[accept]
        todo = todo[~accept]
    return out


def rounding_bound(scale: float, clip_norm: float, d: int, beta: float = DEFAULT_BETA) -> float:
    """`Delta_2`: the L2 norm that conditional randomized rounding guarantees (module docstring), integer units."""
    c = scale * clip_norm
    always = (c + math.sqrt(d)) ** 2  # every coordinate moved by < 1
    likely = c**2 + d / 4 + math.sqrt(2 * math.log(1 / beta)) * (c + math.sqrt(d) / 2)  # holds w.p. >= 1 - beta
    return math.sqrt(min(always, likely))


def conditional_round(y: np.ndarray, bound: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """`y` rounded up or down at random (unbiased) until the result's L2 norm is at most `bound`; the integers and
    the number of tries.

    Raises:
        FederatedError: `_MAX_ROUNDING_TRIES` tries all exceeded the bound (it is then too tight for `y`).
    """
    low = np.floor(y)
    frac = y - low
    for tries in range(1, _MAX_ROUNDING_TRIES + 1):
        q = low + (rng.random(y.shape) < frac)
        if float(np.sum(q * q)) <= bound * bound:
            return q.astype(np.int64), tries
    raise FederatedError(f"Conditional rounding failed {_MAX_ROUNDING_TRIES} times in a row: the norm bound {bound:.4g} "
                         f"is too tight for a vector of norm {float(np.linalg.norm(y)):.4g}; raise `beta`.")


def wrap_bound(num_clients: int, clip_norm: float, d: int, scale: float, local_stddev: float, k: float) -> float:
    """`k` standard deviations of a coordinate of the integer sum (module docstring): it must stay below `2^(b-1)`."""
    n = num_clients
    return k * math.sqrt(n * n * (scale * clip_norm) ** 2 / d + n / 4 + n * (scale * local_stddev) ** 2)


def ddg_scale(*, bits: int, num_clients: int, clip_norm: float, noise_multiplier: float, d: int,
              k_stddevs: float = 6.0) -> float:
    """The largest `scale` whose integer sum of `num_clients` clients fits `bits` bits at `k_stddevs` (module
    docstring).

    Raises:
        SecureAggregationError: `bits` cannot hold it with a noise share of at least one integer step; names the
            smallest `bits` that can.
    """
    def largest(b):
        limit = (1 << (b - 1)) - 1
        spare = (limit / k_stddevs) ** 2 - num_clients / 4
        if spare <= 0:
            return 0.0
        return math.sqrt(spare / (clip_norm**2 * (num_clients**2 / d + noise_multiplier**2)))

    def enough(b):  # the per-client integer noise share is at least one step
        return largest(b) * noise_multiplier * clip_norm / math.sqrt(num_clients) >= 1

    if not enough(bits):
        need = next(b for b in range(bits + 1, 64) if enough(b))
        raise SecureAggregationError(
            f"bits={bits} cannot hold the sum of {num_clients} clients (clip norm {clip_norm}, noise multiplier "
            f"{noise_multiplier}, {d} coordinates) within {k_stddevs} standard deviations with a noise share of at "
            f"least one integer step; use bits >= {need} (or fewer clients per round). Received: bits={bits}")
    return largest(bits)


def ddg_tau(num_clients: int, local_stddev: float) -> float:
    """Kairouz et al.'s `tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k / (k + 1))` (integer units `s`)."""
    k = np.arange(1, int(num_clients), dtype=np.float64)
    return float(10 * np.sum(np.exp(-2 * math.pi**2 * local_stddev**2 * k / (k + 1))))


def ddg_epsilon(*, sensitivity: float, num_clients: int, local_stddev: float, d: int) -> float:
    """The concentrated-DP `eps` of a sum of `num_clients` discrete Gaussians `N_Z(0, local_stddev^2)` on a `d`-vector
    query of L2 sensitivity `sensitivity` (Kairouz et al. Thm 1, module docstring; all in integer units)."""
    n, s = int(num_clients), float(local_stddev)
    tau = ddg_tau(n, s)
    return min(math.sqrt(sensitivity**2 / (n * s * s) + tau * d / 2), sensitivity / (math.sqrt(n) * s) + tau * math.sqrt(d))


@dataclasses.dataclass(frozen=True)
class _Layout:
    """What the server knows of a round's payloads: the model's shapes, the padded length and the scale."""

    shapes: tuple
    d: int
    scale: float
    bound: float  # Delta_2, integer units


class DistributedDP(Postprocessor):
    """The Distributed Discrete Gaussian mechanism (module docstring): clients clip, rotate, scale, round, add their
    share of discrete Gaussian noise and wrap modulo `2^bits`; secure aggregation sums them; the server decodes.

    Use with `simulate(postprocessors=[..., DistributedDP(...)], secure=SecAgg(...))` as the last postprocessor
    (it turns the update into field integers). Clients count equally (weight 1, as in `CentralDP`). Each round
    reports `DistributedDP/epsilon` (cumulative, at `target_delta`), `noise_multiplier_equivalent`, `survivors`,
    `noise_stddev` (realised), `target_noise_stddev`, `scale`, `bits`, and the clients' `clipped` fraction and
    `rounding_tries`.

    Args:
        clip_norm: `C`, the L2 bound of each client's update.
        noise_multiplier: `z`: the sum's noise standard deviation over `C` when all `expected_clients` survive.
        population_size: `N`, the number of clients `simulate` samples from.
        cohort_size: `simulate`'s `clients_per_round` (checked every round).
        bits: the field's bits `b`: what secure aggregation sends per coordinate.
        expected_clients: `n`, the clients whose shares make up the target variance (default `cohort_size`; fewer
            over-provisions the noise against dropouts).
        target_delta: delta at which epsilon is reported (default `1 / N^1.1`).
        k_stddevs: the no-wrap margin of the bit budget.
        beta: conditional rounding's failure probability per try (sets `Delta_2`).
        seed: the public seed of the rotations (with the round number).
    """

    def __init__(self, *, clip_norm: float, noise_multiplier: float, population_size: int, cohort_size: int,
                 bits: int = 16, expected_clients: int | None = None, target_delta: float | None = None,
                 k_stddevs: float = 6.0, beta: float = DEFAULT_BETA, seed: int = 0):
        self.clip_norm = check_number("clip_norm", clip_norm, low=0, low_open=True)
        self.noise_multiplier = check_number("noise_multiplier", noise_multiplier, low=0, low_open=True)
        self.bits = check_int("bits", bits, minimum=2, maximum=62)
        self.accountant = DPAccountant(population_size=population_size, cohort_size=cohort_size,
                                       noise_multiplier=noise_multiplier)
        self.expected_clients = check_int("expected_clients", cohort_size if expected_clients is None
                                          else expected_clients, minimum=1, maximum=cohort_size)
        self.target_delta = float(target_delta) if target_delta is not None else 1.0 / population_size**1.1
        check_number("target_delta", self.target_delta, low=0, high=1, low_open=True, high_open=True)
        self.k_stddevs = check_number("k_stddevs", k_stddevs, low=0, low_open=True)
        self.beta = check_number("beta", beta, low=0, high=1, low_open=True, high_open=True)
        self.seed = check_int("seed", seed, error=TypeError)
        self.round_multipliers: list[float] = []  # each accounted round's equivalent Gaussian multiplier
        self._layouts: dict = {}
        self._last = None  # the layout of the round in progress (`payload_layout`)

    @property
    def local_stddev(self) -> float:
        """Each client's noise standard deviation in model units, `z C / sqrt(n)`."""
        return self.noise_multiplier * self.clip_norm / math.sqrt(self.expected_clients)

    def layout(self, shapes) -> _Layout:
        """The round's `_Layout` for arrays of `shapes` (scale from the bit budget; cached)."""
        shapes = tuple(tuple(s) for s in shapes)
        if shapes not in self._layouts:
            d = padded_size(sum(math.prod(s) for s in shapes))
            scale = ddg_scale(bits=self.bits, num_clients=self.expected_clients, clip_norm=self.clip_norm,
                              noise_multiplier=self.noise_multiplier, d=d, k_stddevs=self.k_stddevs)
            self._layouts[shapes] = _Layout(shapes, d, scale, rounding_bound(scale, self.clip_norm, d, self.beta))
        return self._layouts[shapes]

    def payload_layout(self, template: Payload) -> FieldPayload:
        """The payload every client sends after this postprocessor (`round.aggregate_round` checks against it)."""
        lay = self.layout([a.shape for a in template.arrays])
        self._last = lay
        return FieldPayload([np.zeros(lay.d, np.int64)], 1.0, bits=self.bits)

    def check_composition(self, *, secure, postprocessors) -> None:
        """`simulate`'s check: distributed DP needs secure aggregation and must be the last postprocessor.

        Raises:
            FederatedError: without `secure=`, or with a postprocessor after it or another DP postprocessor.
        """
        if secure is None:
            raise FederatedError(
                "DistributedDP needs secure aggregation: without it the server sees each client's update with only "
                "its 1/n share of the noise. Pass `secure=SecAgg(...)`, or use `CentralDP` for server-side noise.")
        if postprocessors[-1] is not self:
            raise FederatedError("DistributedDP must be the last postprocessor (it turns each update into integers "
                                 f"modulo 2^bits). Received: postprocessors={list(postprocessors)!r}")
        others = [p for p in postprocessors if p is not self and hasattr(p, "noise_multiplier")]
        if others:
            raise FederatedError(f"DistributedDP does not compose with another DP postprocessor. Received: {others!r}")

    def encode(self, x: np.ndarray, lay: _Layout, round_id: int, rng: np.random.Generator):
        """A client's flat update `x` (already clipped) as integers modulo `2^bits`; also the rounding tries."""
        y = np.zeros(lay.d)
        y[:x.size] = x
        y = rotate(y, rotation_signs(lay.d, self.seed, round_id)) * lay.scale
        q, tries = conditional_round(y, lay.bound, rng)
        q += discrete_gaussian(lay.scale * self.local_stddev, lay.d, rng)
        return np.mod(q, 1 << self.bits), tries

    def decode(self, total: np.ndarray, lay: _Layout, round_id: int) -> list[np.ndarray]:
        """The real-valued arrays of a (modular) sum of encoded updates: centred residue, unscaled, unrotated."""
        modulus = 1 << self.bits
        centred = np.mod(np.rint(np.asarray(total, np.float64)).astype(np.int64), modulus)
        centred = np.where(centred >= modulus // 2, centred - modulus, centred)
        flat = unrotate(centred.astype(np.float64) / lay.scale, rotation_signs(lay.d, self.seed, round_id))
        arrays, start = [], 0
        for shape in lay.shapes:
            size = math.prod(shape)
            arrays.append(flat[start:start + size].reshape(shape))
            start += size
        return arrays

    def on_client(self, payload, ctx):
        if ctx.num_clients != self.accountant.cohort_size:
            raise ValueError(f"DistributedDP was accounted for cohorts of {self.accountant.cohort_size} clients, but "
                             f"round {ctx.round} has {ctx.num_clients}: pass `cohort_size=clients_per_round`.")
        if payload.extras:
            raise MalformedUpdateError(f"DistributedDP encodes the update arrays only; this payload also carries "
                                       f"extras {sorted(payload.extras)} (use a FedAvg-family aggregator).")
        lay = self.layout([a.shape for a in payload.arrays])
        clipped, norm = clip_to_norm([np.asarray(a) / payload.weight for a in payload.arrays], self.clip_norm)
        x = np.concatenate([a.ravel() for a in clipped] or [np.zeros(0)])
        words, tries = self.encode(x, lay, ctx.round, ctx.rng)
        return FieldPayload([words], 1.0, bits=self.bits), {"clipped": float(norm > self.clip_norm),
                                                            "rounding_tries": tries}

    def round_epsilon(self, survivors: int, lay: _Layout) -> float:
        """This round's concentrated-DP eps with `survivors` noise shares (replace-one: sensitivity `2 Delta_2`)."""
        return ddg_epsilon(sensitivity=2 * lay.bound, num_clients=survivors,
                           local_stddev=lay.scale * self.local_stddev, d=lay.d)

    def on_server(self, payload_sum, ctx):
        lay = self._last
        survivors = int(round(payload_sum.weight))
        arrays = self.decode(payload_sum.arrays[0], lay, ctx.round)
        eps = self.round_epsilon(survivors, lay)
        self.round_multipliers.append(2.0 / eps)  # the central multiplier with the same per-round guarantee
        metrics = {"survivors": survivors, "noise_stddev": math.sqrt(survivors) * self.local_stddev,
                   "target_noise_stddev": self.noise_multiplier * self.clip_norm, "scale": lay.scale,
                   "bits": self.bits, "noise_multiplier_equivalent": 2.0 / eps, "epsilon": self.epsilon(),
                   "delta": self.target_delta}
        return Payload(arrays, float(survivors)), metrics

    def epsilon(self, rounds: int | None = None) -> float:
        """epsilon at `target_delta` after the first `rounds` accounted rounds (default all), each with its own
        survivors' noise (module docstring)."""
        multipliers = self.round_multipliers if rounds is None else self.round_multipliers[:rounds]
        if not multipliers:
            return 0.0
        accountant = self.accountant.fresh_accountant()
        for z, count in collections.Counter(multipliers).items():
            accountant.compose(self.accountant.round_event(z), count)
        return float(accountant.get_epsilon(self.target_delta))

    def get_state(self) -> dict:
        """What a checkpoint keeps: each accounted round's equivalent multiplier."""
        return {"round_multipliers": list(self.round_multipliers)}

    def set_state(self, state: dict) -> None:
        self.round_multipliers = [float(z) for z in state["round_multipliers"]]

    def __repr__(self):
        return (f"DistributedDP(clip_norm={self.clip_norm}, noise_multiplier={self.noise_multiplier}, bits={self.bits}, "
                f"population_size={self.accountant.population_size}, cohort_size={self.accountant.cohort_size}, "
                f"expected_clients={self.expected_clients})")


__all__ = ["DistributedDP", "FieldPayload", "conditional_round", "ddg_epsilon", "ddg_scale", "ddg_tau",
           "discrete_gaussian", "hadamard", "padded_size", "rotate", "rotation_signs", "rounding_bound", "unrotate",
           "wrap_bound"]
