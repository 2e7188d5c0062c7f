"""Moving units on tagged axes and the matched average, on arrays small enough to check by hand."""

import numpy as np
import pytest

from tfx_ext.federated.fedma import MatchSpec, UnitAxis, UnitGroup, WeightSpec, matched_average, to_global
from tfx_ext.federated.fedma.permute import gather_axis, scatter_axis


def test_scatter_axis_blocks_and_inner_layouts():
    # Two gate blocks of 2 units: [g0u0, g0u1, g1u0, g1u1] -> 3 global units, local 0 -> 2, local 1 -> 0.
    x = np.array([1.0, 2.0, 3.0, 4.0])
    out = scatter_axis(x, 0, UnitAxis(0, "def", blocks=2), [2, 0], 3)
    np.testing.assert_array_equal(out, [2.0, 0.0, 1.0, 4.0, 0.0, 3.0])
    # Depthwise-style inner entries: unit u owns [u*2, u*2+1].
    y = np.array([[1.0, 2.0, 3.0, 4.0]])
    out = scatter_axis(y, 1, UnitAxis(0, "in", inner=2), [1, 0], 2)
    np.testing.assert_array_equal(out, [[3.0, 4.0, 1.0, 2.0]])
    np.testing.assert_array_equal(gather_axis(out, 1, UnitAxis(0, "in", inner=2), [1, 0]), y)
    with pytest.raises(ValueError, match="2 units on axis 0"):
        scatter_axis(np.zeros(2), 0, UnitAxis(0, "def"), [0, 1, 2], 3)


def _spec():
    # hidden: kernel (1, 2) def axis 1; output: kernel (2, 2) rows "in", columns = classes.
    return MatchSpec(
        groups=(UnitGroup(0, "h", "dense", 2, "units"),),
        weights=(
            WeightSpec(0, "h/kernel", (1, 2), "h", ((1, UnitAxis(0, "def")),), True),
            WeightSpec(1, "out/kernel", (2, 2), "out", ((0, UnitAxis(0, "in")),), False, 1),
        ),
        output_layer="out",
    )


def test_matched_average_by_hand():
    spec = _spec()
    a = [np.array([[1.0, 2.0]]), np.array([[1.0, 1.0], [1.0, 1.0]])]
    b = [np.array([[3.0, 5.0]]), np.array([[3.0, 3.0], [3.0, 3.0]])]
    # Client a keeps its order in 3 global units; client b's unit 0 -> global 2, unit 1 -> global 0.
    assign = {0: [np.array([0, 1]), np.array([2, 0])]}
    widths = {0: 3}
    aligned = [to_global(w, spec, {0: assign[0][j]}, widths) for j, w in enumerate([a, b])]
    np.testing.assert_array_equal(aligned[1][0], [[5.0, 0.0, 3.0]])
    new = matched_average(aligned, spec, [1, 3], assignments=assign, widths=widths,
                          class_counts=[np.array([1.0, 0.0]), np.array([1.0, 2.0])])
    # Unit 0: a (n=1) has 1, b (n=3) has 5 -> (1 + 15) / 4 = 4; unit 1: only a -> 2; unit 2: only b -> 3.
    np.testing.assert_allclose(new[0], [[4.0, 2.0, 3.0]])
    # Output rows use zero fill; class 0 weights 1:1, class 1 weights 0:2.
    np.testing.assert_allclose(new[1], [[2.0, 3.0], [0.5, 0.0], [1.5, 3.0]])
