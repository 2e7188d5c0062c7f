"""Moving units: permute (or scatter into a wider global layer) every axis a group's units index.

Pure NumPy over positional weight lists and a `MatchSpec` (adapters.py). An assignment maps a client's local unit
`l` to global unit `assignment[l]`; applying it to a client's weights moves the unit's entries on every axis tagged
with the group: its own parameters (kernel columns, bias, BatchNormalization vectors, LSTM gate blocks), the next
layer's incoming axis (across a Flatten: every spatial position's block) and, for recurrent layers, both axes of the
recurrent kernel. Global positions the client has no unit for are filled with zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tfx_ext.federated.fedma.adapters import MatchSpec, UnitAxis, WeightSpec


def _split_shape(shape, axis, tag: UnitAxis, width):
    return tuple(shape[:axis]) + (tag.blocks, width, tag.inner) + tuple(shape[axis + 1:])


def axis_width(shape, axis, tag: UnitAxis) -> int:
    """Number of units on `axis` of an array of `shape`."""
    size = int(shape[axis])
    if size % (tag.blocks * tag.inner):
        raise ValueError(f"Axis {axis} of size {size} is not a multiple of blocks*inner={tag.blocks * tag.inner}.")
    return size // (tag.blocks * tag.inner)


def scatter_axis(array, axis: int, tag: UnitAxis, assignment, width: int) -> np.ndarray:
    """Moves local unit `l` on `axis` to position `assignment[l]` of a `width`-unit axis (zeros elsewhere)."""
    array = np.asarray(array)
    units = axis_width(array.shape, axis, tag)
    assignment = np.asarray(assignment, np.int64)
    if assignment.shape != (units,):
        raise ValueError(f"The assignment has {assignment.shape[0]} entries for {units} units on axis {axis}.")
    split = array.reshape(_split_shape(array.shape, axis, tag, units))
    out = np.zeros(_split_shape(array.shape, axis, tag, width), array.dtype)
    index = (slice(None),) * (axis + 1) + (assignment,)
    out[index] = split
    shape = list(array.shape)
    shape[axis] = tag.blocks * width * tag.inner
    return out.reshape(shape)


def gather_axis(array, axis: int, tag: UnitAxis, index) -> np.ndarray:
    """Keeps units `index` (in that order) on `axis`."""
    array = np.asarray(array)
    units = axis_width(array.shape, axis, tag)
    split = array.reshape(_split_shape(array.shape, axis, tag, units))
    out = np.take(split, np.asarray(index, np.int64), axis=axis + 1)
    shape = list(array.shape)
    shape[axis] = tag.blocks * len(index) * tag.inner
    return out.reshape(shape)


def to_global(weights: Sequence[np.ndarray], spec: MatchSpec, assignments: Mapping[int, np.ndarray],
              widths: Mapping[int, int]) -> list:
    """A client's weights with the units of every group in `assignments` moved to their global positions.

    Args:
        weights: the client's positional weights.
        spec: the model's `MatchSpec`.
        assignments: group index -> this client's assignment (local unit -> global unit). Groups left out stay.
        widths: group index -> global width.

    Returns:
        New list of arrays (inputs untouched).
    """
    out = [np.asarray(w) for w in weights]
    for ws in spec.weights:
        arr = out[ws.index]
        for axis, tag in ws.axes:
            if tag.group in assignments:
                arr = scatter_axis(arr, axis, tag, assignments[tag.group], int(widths[tag.group]))
        out[ws.index] = arr
    return out


def permute_units(weights: Sequence[np.ndarray], spec: MatchSpec, perms: Mapping[int, np.ndarray]) -> list:
    """Applies a permutation of units per group (`perms[g][l]` = new position of unit `l`); the function the
    network computes is unchanged (tested)."""
    return to_global(weights, spec, perms, {g: len(p) for g, p in perms.items()})


def unit_features(weights: Sequence[np.ndarray], spec: MatchSpec, group: int) -> np.ndarray:
    """`(U, D)` matching features of a group: each unit's slices of the group's feature arrays, concatenated."""
    parts = []
    for ws in spec.weights_of_group(group, features_only=True):
        axis, tag = ws.def_axis()
        arr = np.asarray(weights[ws.index], np.float64)
        units = axis_width(arr.shape, axis, tag)
        split = arr.reshape(_split_shape(arr.shape, axis, tag, units))
        parts.append(np.moveaxis(split, axis + 1, 0).reshape(units, -1))
    return np.concatenate(parts, axis=1)


def _axis_vector(ws: WeightSpec, axis, vector):
    shape = [1] * len(ws.shape)
    shape[axis] = -1
    return np.asarray(vector, np.float64).reshape(shape)


def _ownership(ws: WeightSpec, assignment, width):
    """1 where the client has the global unit, along the def axis (blocks and inner repeated)."""
    axis, tag = ws.def_axis()
    mask = np.zeros((tag.blocks, width, tag.inner))
    mask[:, np.asarray(assignment, np.int64), :] = 1.0
    return axis, mask.reshape(-1)


def matched_average(aligned: Sequence[Sequence[np.ndarray]], spec: MatchSpec, num_examples: Sequence[float], *,
                    assignments: Mapping[int, Sequence[np.ndarray]] | None = None,
                    widths: Mapping[int, int] | None = None, class_counts: Sequence[np.ndarray] | None = None,
                    reference: Sequence[np.ndarray] | None = None) -> list:
    """Matched average of clients' weights that are already in global unit order.

    A global unit's own parameters (its "def" entries) are averaged over the clients matched to it, weighted by
    their example counts; incoming axes average the clients' zero-filled entries (the average of the clients'
    functions); the output layer's class axis is weighted by each client's count of that class.

    Args:
        aligned: per client, positional weights in global order (`to_global`).
        spec: the `MatchSpec`.
        num_examples: per client example count.
        assignments: group -> per-client assignment; groups left out are owned by every client.
        widths: group -> global width (needed with `assignments`).
        class_counts: per client, `(num_classes,)` label counts (None: example counts).
        reference: where integer arrays (seed states) are taken from (default: the first client).

    Returns:
        The global weights (each in its input dtype).
    """
    assignments = assignments or {}
    n = np.asarray(num_examples, np.float64)
    out = []
    for ws in spec.weights:
        arrays = [np.asarray(a[ws.index]) for a in aligned]
        dtype = arrays[0].dtype
        if dtype.kind != "f":
            out.append(np.array((reference or aligned[0])[ws.index]))
            continue
        num = np.zeros(arrays[0].shape)
        den = np.zeros(arrays[0].shape)
        plain = np.zeros(arrays[0].shape)
        d = ws.def_axis()
        for j, arr in enumerate(arrays):
            factor = np.full((1,) * arr.ndim, n[j])
            if ws.class_axis is not None and class_counts is not None:
                factor = _axis_vector(ws, ws.class_axis, class_counts[j])
            elif d is not None and d[1].group in assignments:
                axis, mask = _ownership(ws, assignments[d[1].group][j], int(widths[d[1].group]))
                factor = n[j] * _axis_vector(ws, axis, mask)
            num = num + factor * arr
            den = den + factor * np.ones_like(arr, np.float64)
            plain = plain + n[j] * arr
        fallback = plain / n.sum()
        safe = np.where(den > 0, den, 1.0)
        out.append(np.where(den > 0, num / safe, fallback).astype(dtype))
    return out


__all__ = ["axis_width", "gather_axis", "matched_average", "permute_units", "scatter_axis", "to_global",
           "unit_features"]
