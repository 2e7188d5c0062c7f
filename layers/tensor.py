"""Tensor layers with tensor dropout: `TensorRegression` (TRL), `TensorContraction` (TCL) and `FactorizedDense`.

The weight of `TensorRegression` and `FactorizedDense` is a tensor of shape `in_dims + out_dims` kept in CP,
Tucker or tensor-train (TT) form; the layers compute in that factorized form (sequences of `keras.ops.tensordot`,
which export to plain TFLite reshapes and matmuls) and never build the full weight unless asked to with
`implementation="reconstructed"`. `count_params()` counts the factors (plus bias) only, and `reconstruct()` returns
the full weight.

Tensor dropout (`rank_dropout=p`, see `layers/tensor_dropout.py`) puts Bernoulli masks on the rank components:

* CP: one mask on the `R` rank-one components;
* Tucker: an independent mask on each mode's rank (equivalently, the core is masked and rescaled by the product of
  the per-mode scales, `1/(1-p)^N` for `N` dropped modes);
* TT: one mask on each internal rank `r_1 ... r_{N-1}`;
* TCL: one mask on each output mode.

Kept components are rescaled by `1/q`, `q` the exact keep probability (`1/(1-p)` unless `min_keep` can bind), so
inference without dropout equals the expectation of the model under dropout. Ranks `<= min_dim` are never dropped.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

import tfx_ext.layers.decompositions as dec
from tfx_ext._validate import check_choice, check_int, check_number, is_int
from tfx_ext.layers.tensor_dropout import check_dropout_args, keep_probability, sample_keep_mask

__all__ = ["TensorRegression", "TensorContraction", "FactorizedDense"]

FACTORIZATIONS = ("cp", "tucker", "tt")
IMPLEMENTATIONS = ("factorized", "reconstructed")


def _check_rank_arg(rank, factorization):
    """The constructor's `rank`: a Python int or float (see `decompositions.check_rank`), or a tuple of them."""
    if isinstance(rank, (tuple, list)):
        if factorization == "cp":
            raise ValueError("A CP `rank` is a single int or fraction (one rank for all modes); per-mode ranks are "
                             f"for 'tucker' and 'tt'. Received: rank={rank!r}")
        if not rank:
            raise ValueError(f"A per-mode `rank` must not be empty. Received: rank={rank!r}")
        return tuple(dec.check_rank(r) for r in rank)
    return dec.check_rank(rank)


def _check_dims(value, name, allow_none=False):
    """A positive int or a non-empty tuple of them, as a tuple of Python ints (numpy ints accepted, floats not)."""
    if value is None and allow_none:
        return None
    dims = (value,) if is_int(value) else value
    if not isinstance(dims, (tuple, list)) or not dims or not all(is_int(d) and d >= 1 for d in dims):
        raise ValueError(f"`{name}` must be a positive int or a non-empty tuple of positive ints. "
                         f"Received: {name}={value!r}")
    return tuple(int(d) for d in dims)


def _auto_modes(n: int) -> tuple[int, ...]:
    """Splits `n` into two factors as close to sqrt(n) as possible; `(n,)` when `n` is prime or 1."""
    for d in range(math.isqrt(n), 1, -1):
        if n % d == 0:
            return (d, n // d)
    return (n,)


def _on_last_axis(mask, ndim):
    """Reshapes a `(B, r)` mask to broadcast over the last axis of a rank-`ndim` tensor with batch first."""
    return ops.reshape(mask, (-1,) + (1,) * (ndim - 2) + (mask.shape[-1],)) if ndim > 2 else mask


def _on_axis_1(mask, ndim):
    """Reshapes a `(B, r)` mask to broadcast over axis 1 of a rank-`ndim` tensor with batch first."""
    return ops.reshape(mask, (-1, mask.shape[-1]) + (1,) * (ndim - 2)) if ndim > 2 else mask


def _khatri_rao(factors):
    """Column-wise Kronecker product: `(prod dims, R)` from factors of shape `(dim_k, R)` (first mode slowest)."""
    out = factors[0]
    for f in factors[1:]:
        rank = f.shape[-1]
        out = ops.reshape(out[:, None, :] * f[None, :, :], (-1, rank))
    return out


class _DropoutMixin:
    """Tensor-dropout bookkeeping shared by the tensor layers: which ranks are dropped, their keep probabilities,
    and drawing (rescaled) masks for a call."""

    def _init_dropout(self, rank_dropout, min_dim, min_keep, mask_per_sample, drop_at_inference, seed):
        self.rank_dropout, self.min_dim, self.min_keep, self.seed = check_dropout_args(
            rank_dropout, min_dim, min_keep, mask_per_sample, drop_at_inference, seed)
        self.mask_per_sample = mask_per_sample
        self.drop_at_inference = drop_at_inference
        if self.rank_dropout > 0:
            self.seed_generator = keras.random.SeedGenerator(self.seed)

    def _dropped(self, rank: int) -> bool:
        return self.rank_dropout > 0 and rank > self.min_dim and self.min_keep < rank

    def _dropout_ranks(self) -> list[int]:
        """The sizes of the ranks that carry a mask (one entry per mask group); overridden per factorization."""
        raise NotImplementedError

    def keep_probabilities(self) -> list[float | None]:
        """The keep probability `q` of each mask group (`None` for ranks that are never dropped)."""
        return [keep_probability(r, self.rank_dropout, self.min_keep) if self._dropped(r) else None
                for r in self._dropout_ranks()]

    def sample_masks(self, batch_size=1):
        """Draws one set of 0/1 masks, one `(batch_size, rank)` tensor per mask group (`None` if never dropped)."""
        return [sample_keep_mask(self.seed_generator, batch_size, r, self.rank_dropout, self.min_keep,
                                 self.compute_dtype) if self._dropped(r) else None
                for r in self._dropout_ranks()]

    def _call_masks(self, inputs, training):
        """Rescaled masks for this call, or None when dropout is off (inference, unless `drop_at_inference`)."""
        if self.rank_dropout == 0 or not (training or self.drop_at_inference):
            return None
        batch = ops.shape(inputs)[0] if self.mask_per_sample else 1
        masks = self.sample_masks(batch)
        return [None if m is None else m * (1.0 / q) for m, q in zip(masks, self.keep_probabilities())]


class _FactorizedWeightLayer(_DropoutMixin, keras.layers.Layer):
    """A layer whose weight has shape `in_dims + out_dims`, kept as CP, Tucker or TT factors, with tensor dropout."""

    def __init__(self, factorization, rank, *, activation=None, use_bias=True, bias_initializer="zeros",
                 init_std=None, rank_dropout=0.0, min_dim=1, min_keep=1, mask_per_sample=False,
                 drop_at_inference=False, seed=None, implementation="factorized", **kwargs):
        super().__init__(**kwargs)
        check_choice("factorization", factorization, FACTORIZATIONS)
        check_choice("implementation", implementation, IMPLEMENTATIONS)
        init_std = check_number("init_std", init_std, low=0.0, low_open=True, allow_none=True)
        self.factorization = factorization
        self.rank = _check_rank_arg(rank, factorization)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.init_std = init_std
        self.implementation = implementation
        self._init_dropout(rank_dropout, min_dim, min_keep, mask_per_sample, drop_at_inference, seed)
        if implementation == "reconstructed" and mask_per_sample and self.rank_dropout > 0:
            raise ValueError("Per-sample masks need the factorized form (one weight per sample would be "
                             "reconstructed). Use implementation='factorized' or mask_per_sample=False. "
                             f"Received: implementation={implementation!r}, mask_per_sample={mask_per_sample!r}")

    # ------------------------------------------------------------------------------------------------ weights
    def _build_weight(self, in_dims: tuple[int, ...], out_dims: tuple[int, ...], bias_shape=None):
        self.in_dims, self.out_dims = tuple(in_dims), tuple(out_dims)
        shape = self.in_dims + self.out_dims
        n = len(shape)
        fan_in, fan_out = math.prod(self.in_dims), math.prod(self.out_dims)
        std = self.init_std if self.init_std is not None else math.sqrt(2.0 / (fan_in + fan_out))
        normal = keras.initializers.RandomNormal
        if self.factorization == "cp":
            self.ranks = (dec.cp_rank(shape, self.rank),)
            r = self.ranks[0]
            s = (std**2 / r) ** (1.0 / (2 * n))  # var(W) = R * s^(2N)
            self.factors = [self.add_weight(name=f"factor_{k}", shape=(d, r), initializer=normal(stddev=s))
                            for k, d in enumerate(shape)]
        elif self.factorization == "tucker":
            self.ranks = dec.tucker_ranks(shape, self.rank)
            # Factors with variance 1/r_k make each mode product variance-preserving; the core carries std.
            self.core = self.add_weight(name="core", shape=self.ranks, initializer=normal(stddev=std))
            self.factors = [self.add_weight(name=f"factor_{k}", shape=(d, r),
                                            initializer=normal(stddev=1.0 / math.sqrt(r)))
                            for k, (d, r) in enumerate(zip(shape, self.ranks))]
        else:
            self.ranks = dec.tt_ranks(shape, self.rank)
            full = (1,) + self.ranks + (1,)
            # Core k has variance 1/r_k, the last core carries std: var(W) = prod r_k * prod var_k = std^2.
            self.cores = [self.add_weight(name=f"core_{k}", shape=(full[k], d, full[k + 1]),
                                          initializer=normal(stddev=(1.0 / math.sqrt(full[k + 1]) if k < n - 1
                                                                     else std)))
                          for k, d in enumerate(shape)]
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=bias_shape or self.out_dims,
                                        initializer=self.bias_initializer)

    def _dropout_ranks(self):
        return list(self.ranks)

    @property
    def full_weight_shape(self) -> tuple[int, ...]:
        return self.in_dims + self.out_dims

    def reconstruct(self):
        """Returns the full weight, shape `in_dims + out_dims` (without dropout)."""
        return self._reconstruct(None)

    def assign_full_weight(self, weight, *, n_iter: int = 200, seed: int = 0) -> float:
        """Sets the factors from a full weight by decomposition (CP-ALS, HOSVD or TT-SVD at the layer's ranks).

        Args:
            weight: array of shape `in_dims + out_dims` (or any shape with that many entries, reshaped).
            n_iter: CP-ALS sweeps (ignored for Tucker and TT).
            seed: seed of CP-ALS's random initial columns.

        Returns:
            The relative reconstruction error `||W_hat - W|| / ||W||`.
        """
        w = np.asarray(weight, np.float64).reshape(self.full_weight_shape)
        if self.factorization == "cp":
            factors = dec.cp_als(w, self.ranks[0], n_iter=n_iter, seed=seed)
            for var, f in zip(self.factors, factors):
                var.assign(f.astype(var.dtype))
            approx = dec.cp_to_tensor(factors)
        elif self.factorization == "tucker":
            core, factors = dec.hosvd(w, self.ranks, n_iter=2)
            self.core.assign(core.astype(self.core.dtype))
            for var, f in zip(self.factors, factors):
                var.assign(f.astype(var.dtype))
            approx = dec.tucker_to_tensor(core, factors)
        else:
            cores = dec.tt_svd(w, self.ranks)
            for var, c in zip(self.cores, cores):
                var.assign(c.astype(var.dtype))
            approx = dec.tt_to_tensor(cores)
        return dec.relative_error(approx, w)

    # ------------------------------------------------------------------------------------------------ maths
    def _reconstruct(self, masks):
        """Full weight with (per-batch) masks applied to the rank components."""
        k = len(self.in_dims)
        if self.factorization == "cp":
            left = _khatri_rao([ops.convert_to_tensor(f) for f in self.factors[:k]])
            if masks is not None and masks[0] is not None:
                left = left * masks[0]
            right = _khatri_rao([ops.convert_to_tensor(f) for f in self.factors[k:]])
            return ops.reshape(ops.matmul(left, ops.transpose(right)), self.full_weight_shape)
        if self.factorization == "tucker":
            out = ops.convert_to_tensor(self.core)
            for f, m in zip(self.factors, masks or [None] * len(self.factors)):
                f = ops.convert_to_tensor(f)
                if m is not None:
                    f = f * m
                out = ops.tensordot(out, f, axes=[[0], [1]])  # cycles the modes: contracted rank goes, dim comes last
            return out
        out = ops.convert_to_tensor(self.cores[0])[0]  # (d_1, r_1)
        masks = masks or [None] * len(self.ranks)
        for core, m in zip(self.cores[1:], masks):
            if m is not None:
                out = out * m[0]
            out = ops.tensordot(out, core, axes=[[out.ndim - 1], [0]])
        return ops.reshape(out, self.full_weight_shape)

    def _contract(self, x, masks):
        """`y[b, o] = sum_i x[b, i] W[i, o]` computed in the factorized form; x has shape `(B,) + in_dims`."""
        if self.implementation == "reconstructed":
            w = self._reconstruct(masks)
            nin = len(self.in_dims)
            return ops.tensordot(x, w, axes=[list(range(1, nin + 1)), list(range(nin))])
        k, n = len(self.in_dims), len(self.in_dims) + len(self.out_dims)
        if self.factorization == "cp":
            z = ops.matmul(ops.reshape(x, (-1, math.prod(self.in_dims))), _khatri_rao(self.factors[:k]))
            if masks is not None and masks[0] is not None:
                z = z * masks[0]
            y = ops.matmul(z, ops.transpose(_khatri_rao(self.factors[k:])))
            return ops.reshape(y, (-1,) + self.out_dims)
        masks = masks or [None] * len(self.ranks)
        if self.factorization == "tucker":
            t = x
            for j in range(k):  # project each input mode onto its rank; the new axis comes last
                t = ops.tensordot(t, self.factors[j], axes=[[1], [0]])
                if masks[j] is not None:
                    t = t * _on_last_axis(masks[j], t.ndim)
            t = ops.tensordot(t, self.core, axes=[list(range(1, k + 1)), list(range(k))])
            for j in range(k, n):  # expand each output rank to its mode; the new axis comes last
                if masks[j] is not None:
                    t = t * _on_axis_1(masks[j], t.ndim)
                t = ops.tensordot(t, self.factors[j], axes=[[1], [1]])
            return t
        # TT: sweep the cores left to right, carrying the current internal rank as the last axis.
        t = ops.tensordot(x, ops.convert_to_tensor(self.cores[0])[0], axes=[[1], [0]])  # (B, d_2..d_K, r_1)
        for j in range(1, n):
            if masks[j - 1] is not None:
                t = t * _on_last_axis(masks[j - 1], t.ndim)
            if j < k:
                t = ops.tensordot(t, self.cores[j], axes=[[1, t.ndim - 1], [1, 0]])
            else:
                t = ops.tensordot(t, self.cores[j], axes=[[t.ndim - 1], [0]])
        return ops.reshape(t, (-1,) + self.out_dims)

    def _finish(self, y):
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation is not None else y

    def _base_config(self):
        return {
            "factorization": self.factorization,
            "rank": list(self.rank) if isinstance(self.rank, tuple) else self.rank,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "init_std": self.init_std,
            "rank_dropout": self.rank_dropout,
            "min_dim": self.min_dim,
            "min_keep": self.min_keep,
            "mask_per_sample": self.mask_per_sample,
            "drop_at_inference": self.drop_at_inference,
            "seed": self.seed,
            "implementation": self.implementation,
        }


@keras.saving.register_keras_serializable(package="tfx_ext")
class TensorRegression(_FactorizedWeightLayer):
    """Low-rank tensor regression layer (TRL) with tensor dropout.

    Maps an input tensor `(batch, d_1, ..., d_N)` to `(batch,) + units` through a regression weight of shape
    `(d_1, ..., d_N) + units`, contracting every non-batch input mode. The weight is kept in CP, Tucker or TT form
    and the computation runs in that form. With `rank_dropout=p`, Bernoulli masks drop rank components during
    training (CP: the rank-one components; Tucker: each mode's rank; TT: each internal rank), with the kept ones
    rescaled so that the expected output equals the deterministic (inference) output.

    Args:
        units: int or tuple of ints, the output shape (without batch).
        factorization: `"cp"`, `"tucker"` (default) or `"tt"`.
        rank: an int, a float in (0, 1] (fraction of full rank: of each mode's size for Tucker, of the maximal rank
            at each link for TT, of the full parameter count for CP), or for Tucker/TT a tuple with one entry per
            mode (Tucker, `N + len(units)` entries) or per internal link (TT, one fewer).
        activation: activation applied after the bias.
        use_bias: whether to add a bias of shape `units`.
        bias_initializer: initializer of the bias.
        init_std: standard deviation of the reconstructed weight at initialization (default
            `sqrt(2 / (fan_in + fan_out))`, Glorot); the factors are drawn so the full weight has it.
        rank_dropout: tensor dropout rate `p` in [0, 1).
        min_dim: ranks of size `<= min_dim` are never dropped.
        min_keep: at least this many components of each dropped rank are kept in every draw.
        mask_per_sample: draw a mask per sample (the paper's choice) instead of one per batch (the default,
            False: one draw shared by the whole batch, cheaper).
        drop_at_inference: also drop at inference (Monte-Carlo tensor dropout).
        seed: seed of the `keras.random.SeedGenerator` of the masks.
        implementation: `"factorized"` (default) computes with the factors; `"reconstructed"` builds the full
            weight and does one contraction (larger graph and memory, sometimes faster for tiny weights).

    Call arguments:
        inputs: tensor of shape `(batch, d_1, ..., d_N)`.
        training: whether tensor dropout is active.

    Input shape:
        `(batch, d_1, ..., d_N)`.

    Output shape:
        `(batch,) + units`.

    Example:
    >>> layer = TensorRegression(10, factorization="tucker", rank=(3, 3, 4, 5), rank_dropout=0.2)
    >>> layer(np.ones((2, 4, 4, 8), "float32")).shape
    TensorShape([2, 10])
    >>> layer.count_params(), layer.reconstruct().shape
    (296, TensorShape([4, 4, 8, 10]))
    """

    def __init__(self, units, factorization="tucker", rank=0.5, **kwargs):
        self.units = _check_dims(units, "units")
        super().__init__(factorization, rank, **kwargs)

    def build(self, input_shape):
        if len(input_shape) < 2 or any(d is None for d in input_shape[1:]):
            raise ValueError("TensorRegression needs inputs of shape (batch, d_1, ..., d_N) with known d_k. "
                             f"Received: input_shape={tuple(input_shape)}")
        self._build_weight(tuple(input_shape[1:]), self.units)

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        return self._finish(self._contract(x, self._call_masks(x, training)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.units

    def get_config(self):
        config = super().get_config()
        config.update({"units": list(self.units)}, **self._base_config())
        return config


@keras.saving.register_keras_serializable(package="tfx_ext")
class FactorizedDense(_FactorizedWeightLayer):
    """A Dense layer whose `(in_features, units)` kernel is a tensorized CP, Tucker or TT factorization.

    The kernel is reshaped to `in_modes + out_modes` (with `prod(in_modes) == in_features` and
    `prod(out_modes) == units`) and kept factorized; the input's last axis is reshaped to `in_modes` and contracted
    with the factors. `FactorizedDense.from_dense` initializes one from a trained `keras.layers.Dense` by
    decomposition. Supports tensor dropout like `TensorRegression`.

    Args:
        units: number of output features.
        factorization: `"cp"`, `"tucker"` (default) or `"tt"`.
        rank: as in `TensorRegression`, over the `len(in_modes) + len(out_modes)` modes of the reshaped kernel.
        in_modes: tuple whose product is the number of input features (default: two near-equal factors).
        out_modes: tuple whose product is `units` (default: two near-equal factors).
        activation, use_bias, bias_initializer, init_std, rank_dropout, min_dim, min_keep, mask_per_sample,
        drop_at_inference, seed, implementation: as in `TensorRegression`.

    Call arguments:
        inputs: tensor of shape `(..., in_features)`.
        training: whether tensor dropout is active.

    Input shape:
        `(..., in_features)`.

    Output shape:
        `(..., units)`.

    Example:
    >>> layer = FactorizedDense(32, factorization="tt", rank=4, in_modes=(4, 4, 4), out_modes=(4, 8))
    >>> layer(np.ones((2, 64), "float32")).shape
    TensorShape([2, 32])
    >>> layer.count_params()
    272
    """

    def __init__(self, units, factorization="tucker", rank=0.5, in_modes=None, out_modes=None, **kwargs):
        self.units = units = check_int("units", units, minimum=1)
        self.in_modes = _check_dims(in_modes, "in_modes", allow_none=True)
        self.out_modes = _check_dims(out_modes, "out_modes", allow_none=True)
        if self.out_modes is not None and math.prod(self.out_modes) != units:
            raise ValueError(f"The product of `out_modes` must equal `units` ({units}). Received: "
                             f"out_modes={out_modes!r}")
        super().__init__(factorization, rank, **kwargs)

    def build(self, input_shape):
        in_features = input_shape[-1]
        if in_features is None:
            raise ValueError(f"FactorizedDense needs a known last input dimension. Received: input_shape={input_shape}")
        in_modes = self.in_modes or _auto_modes(in_features)
        if math.prod(in_modes) != in_features:
            raise ValueError(f"The product of `in_modes` must equal the number of input features ({in_features}). "
                             f"Received: in_modes={self.in_modes!r}")
        self._build_weight(in_modes, self.out_modes or _auto_modes(self.units), bias_shape=(self.units,))

    def reconstruct(self):
        """Returns the full kernel, shape `(in_features, units)` (without dropout)."""
        return ops.reshape(self._reconstruct(None), (math.prod(self.in_dims), self.units))

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        lead = ops.shape(x)[:-1]
        flat = ops.reshape(x, (-1,) + self.in_dims)
        y = self._contract(flat, self._call_masks(flat, training))
        y = ops.reshape(y, (-1, self.units)) if len(lead) == 1 else ops.reshape(y, tuple(lead) + (self.units,))
        return self._finish(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "in_modes": None if self.in_modes is None else list(self.in_modes),
            "out_modes": None if self.out_modes is None else list(self.out_modes),
        }, **self._base_config())
        return config

    @classmethod
    def from_dense(cls, dense, rank, factorization="tucker", in_modes=None, out_modes=None, *, n_iter=200,
                   seed=0, **kwargs):
        """Builds a `FactorizedDense` approximating a built `keras.layers.Dense` by decomposing its kernel.

        Args:
            dense: a built `keras.layers.Dense`.
            rank: rank of the factorization (see the class docstring); the full rank reproduces the Dense exactly
                for Tucker (HOSVD) and TT (TT-SVD), and for CP when the kernel is kept as a matrix (SVD).
            factorization: `"cp"`, `"tucker"` or `"tt"`.
            in_modes, out_modes: mode sizes of the reshaped kernel (default: two near-equal factors each).
            n_iter: CP-ALS sweeps.
            seed: seed of CP-ALS's initial random columns.
            **kwargs: other constructor arguments (e.g. `rank_dropout`, `name`).

        Returns:
            A built `FactorizedDense` with the Dense's activation, bias and the decomposed kernel; its attribute
            `decomposition_error` holds the relative error of the kernel approximation.

        Raises:
            TypeError: if `dense` is not a built `keras.layers.Dense`.
        """
        if not isinstance(dense, keras.layers.Dense) or not dense.built:
            raise TypeError(f"`dense` must be a built keras.layers.Dense. Received: dense={dense!r}")
        kernel = np.asarray(dense.kernel)
        kwargs.setdefault("activation", keras.activations.serialize(dense.activation))
        kwargs.setdefault("use_bias", dense.use_bias)
        layer = cls(kernel.shape[1], factorization=factorization, rank=rank, in_modes=in_modes, out_modes=out_modes,
                    **kwargs)
        layer.build((None, kernel.shape[0]))
        layer.decomposition_error = layer.assign_full_weight(kernel, n_iter=n_iter, seed=seed)
        if layer.use_bias:
            layer.bias.assign(np.asarray(dense.bias))
        return layer


@keras.saving.register_keras_serializable(package="tfx_ext")
class TensorContraction(_DropoutMixin, keras.layers.Layer):
    """Tensor contraction layer (TCL): multiplies each non-batch mode by a factor matrix (a Tucker-style projection).

    `y = x x_1 U_1^T x_2 U_2^T ... x_N U_N^T`, so an input `(batch, d_1, ..., d_N)` becomes `(batch, r_1, ..., r_N)`,
    typically smaller: the compression layer used before a `TensorRegression`. With `rank_dropout=p`, each output
    mode gets a Bernoulli mask on its `r_k` components (modes with `r_k <= min_dim` excepted), rescaled by the exact
    keep probability.

    Args:
        rank: output size per mode: an int or a float in (0, 1] (fraction of each mode's size) for all modes, or a
            tuple with one entry per mode.
        activation: activation applied after the bias.
        use_bias: whether to add a bias of shape `(r_1, ..., r_N)` (default False).
        bias_initializer: initializer of the bias.
        kernel_initializer: initializer of the factor matrices (default `"glorot_normal"`).
        rank_dropout, min_dim, min_keep, mask_per_sample, drop_at_inference, seed: tensor dropout, as in
            `TensorRegression`.

    Call arguments:
        inputs: tensor of shape `(batch, d_1, ..., d_N)`.
        training: whether tensor dropout is active.

    Input shape:
        `(batch, d_1, ..., d_N)`.

    Output shape:
        `(batch, r_1, ..., r_N)`.

    Example:
    >>> layer = TensorContraction((2, 2, 8))
    >>> layer(np.ones((3, 4, 4, 16), "float32")).shape
    TensorShape([3, 2, 2, 8])
    >>> layer.count_params()
    144
    """

    def __init__(self, rank, activation=None, use_bias=False, bias_initializer="zeros",
                 kernel_initializer="glorot_normal", rank_dropout=0.0, min_dim=1, min_keep=1, mask_per_sample=False,
                 drop_at_inference=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rank = _check_rank_arg(rank, "tucker")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self._init_dropout(rank_dropout, min_dim, min_keep, mask_per_sample, drop_at_inference, seed)

    def build(self, input_shape):
        if len(input_shape) < 2 or any(d is None for d in input_shape[1:]):
            raise ValueError("TensorContraction needs inputs of shape (batch, d_1, ..., d_N) with known d_k. "
                             f"Received: input_shape={tuple(input_shape)}")
        self.in_dims = tuple(input_shape[1:])
        rank = self.rank
        if isinstance(rank, tuple) and len(rank) != len(self.in_dims):
            raise ValueError(f"A per-mode `rank` needs one entry per input mode ({len(self.in_dims)}). "
                             f"Received: rank={rank!r}")
        ranks = rank if isinstance(rank, tuple) else (rank,) * len(self.in_dims)
        # Fractions are of each mode's size; ints may exceed it (a TCL may also expand a mode).
        self.ranks = tuple(max(1, int(round(r * d))) if isinstance(r, float) else int(r)
                           for r, d in zip(ranks, self.in_dims))
        self.factors = [self.add_weight(name=f"factor_{k}", shape=(d, r), initializer=self.kernel_initializer)
                        for k, (d, r) in enumerate(zip(self.in_dims, self.ranks))]
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=self.ranks, initializer=self.bias_initializer)

    def _dropout_ranks(self):
        return list(self.ranks)

    def reconstruct(self):
        """Returns the full linear map as a weight of shape `in_dims + ranks` (`W[i, j] = prod_k U_k[i_k, j_k]`)."""
        n = len(self.factors)
        w = ops.convert_to_tensor(self.factors[0])
        for f in self.factors[1:]:
            w = ops.tensordot(w, f, axes=0)  # (d_1, r_1, d_2, r_2, ...)
        return ops.transpose(w, [2 * k for k in range(n)] + [2 * k + 1 for k in range(n)])

    def call(self, inputs, training=None):
        t = ops.cast(inputs, self.compute_dtype)
        masks = self._call_masks(t, training) or [None] * len(self.factors)
        for f, m in zip(self.factors, masks):  # each projected mode moves to the end: after N steps, order is kept
            t = ops.tensordot(t, f, axes=[[1], [0]])
            if m is not None:
                t = t * _on_last_axis(m, t.ndim)
        if self.use_bias:
            t = t + self.bias
        return self.activation(t) if self.activation is not None else t

    def compute_output_shape(self, input_shape):
        ranks = self.rank if isinstance(self.rank, tuple) else (self.rank,) * (len(input_shape) - 1)
        return (input_shape[0],) + tuple(max(1, int(round(r * d))) if isinstance(r, float) else int(r)
                                         for r, d in zip(ranks, input_shape[1:]))

    def get_config(self):
        config = super().get_config()
        config.update({
            "rank": list(self.rank) if isinstance(self.rank, tuple) else self.rank,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "rank_dropout": self.rank_dropout,
            "min_dim": self.min_dim,
            "min_keep": self.min_keep,
            "mask_per_sample": self.mask_per_sample,
            "drop_at_inference": self.drop_at_inference,
            "seed": self.seed,
        })
        return config
