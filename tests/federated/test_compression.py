"""Update compression: stochastic quantization on its grid and unbiased (a z-test with the exact Bernoulli variance,
shown to catch a biased rounding), top-k / random-k with error feedback by hand, byte counts, and quantization
through SecAgg."""

import keras
import numpy as np
import pytest

from tfx_ext.federated import ClientData, ClientResult, FedAvg, Payload, RoundContext, SecAgg, simulate
from tfx_ext.federated.compression import RandomK, StochasticQuantizer, TopK, stochastic_quantize
from tfx_ext.federated.round import RoundInputs, aggregate_round


def ctx(client_id="a", seed=0, rnd=1):
    return RoundContext(rnd, client_id, np.random.default_rng(seed), 1)


def test_quantization_by_hand():
    # bits=2 over [0, 1]: levels 0, 1/3, 2/3, 1. 0.5 lies halfway between 1/3 and 2/3; the ends are exact.
    x = np.array([0.0, 0.5, 1.0])
    draws = np.stack([stochastic_quantize(x, 2, np.random.default_rng(s)) for s in range(400)])
    assert np.all(draws[:, 0] == 0.0) and np.all(draws[:, 2] == 1.0)
    assert set(np.round(draws[:, 1], 12)) == {round(1 / 3, 12), round(2 / 3, 12)}
    assert 0.4 < np.mean(np.isclose(draws[:, 1], 2 / 3)) < 0.6
    np.testing.assert_array_equal(stochastic_quantize(np.full(3, 0.7), 4, np.random.default_rng(0)), 0.7)


def z_scores(quantize, x, bits, trials=3000):
    """Per coordinate: (mean of the decoded draws - x) / its standard error, from the exact variance p (1 - p) step^2
    of rounding up with probability p between two grid points (an oracle independent of the code)."""
    lo, hi = x.min(), x.max()
    step = (hi - lo) / (2**bits - 1)
    p = (x - lo) / step - np.floor((x - lo) / step)
    se = np.sqrt(np.maximum(p * (1 - p), 1e-12) / trials) * step
    rng = np.random.default_rng(123)
    mean = np.mean([quantize(x, bits, rng) for _ in range(trials)], axis=0)
    return (mean - x) / se


def test_stochastic_quantization_is_unbiased():
    x = np.random.default_rng(7).normal(size=64)
    x[[0, 1]] = [x.min() - 1, x.max() + 1]  # known ends (quantized exactly)
    z = z_scores(stochastic_quantize, x, bits=3)[2:]
    assert np.max(np.abs(z)) < 4.5 and 30 < np.sum(z**2) < 110  # chi-square with 62 dof: 99.9% in [30, 110]

    def nearest(v, bits, rng):  # positive control: round-to-nearest is biased and the test sees it
        lo, step = v.min(), (v.max() - v.min()) / (2**bits - 1)
        return lo + np.round((v - lo) / step) * step

    assert np.sum(z_scores(nearest, x, bits=3)[2:] ** 2) > 1000


def test_quantizer_postprocessor_and_bytes():
    rng = np.random.default_rng(1)
    update = [rng.normal(size=10), rng.normal(size=(3,))]
    payload = Payload([4.0 * u for u in update], 4.0, {"counts": np.ones(2)})
    out, metrics = StochasticQuantizer(bits=8).on_client(payload, ctx())
    for got, u in zip(out.arrays, update):
        step = (u.max() - u.min()) / 255
        levels = (got / 4.0 - u.min()) / step
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-6)  # on the grid
        assert np.all(np.abs(got / 4.0 - u) <= step + 1e-12)  # a neighbouring level
    assert out.weight == 4.0 and np.array_equal(out.extras["counts"], np.ones(2))
    # (10 + 8) + (3 + 8) bytes of arrays (1 byte a value, float32 min and max), 16 of extras, 8 of weight.
    assert metrics["bytes_up"] == 18 + 11 + 16 + 8
    assert metrics["compression_ratio"] == pytest.approx((4 * 13 + 16 + 8) / 53)


def test_topk_with_error_feedback_by_hand():
    topk = TopK(0.5)
    # Update (0.1, -5, 2, 0.3) with weight 2: keeps -5 and 2; residual (0.1, 0, 0, 0.3).
    out, m = topk.on_client(Payload([2.0 * np.array([0.1, -5.0, 2.0, 0.3])], 2.0), ctx("a"))
    np.testing.assert_allclose(out.arrays[0], 2.0 * np.array([0.0, -5.0, 2.0, 0.0]))
    np.testing.assert_allclose(topk.residuals["a"], [0.1, 0.0, 0.0, 0.3])
    assert m["bytes_up"] == 2 * 8 + 8 and m["residual_norm"] == pytest.approx(np.hypot(0.1, 0.3))
    # Another client starts without a residual.
    other, _ = topk.on_client(Payload([np.array([1.0, 0.0, 0.0, 0.0])], 1.0), ctx("b"))
    np.testing.assert_allclose(other.arrays[0], [1.0, 0.0, 0.0, 0.0])
    # Next round, client a sends (0.1, 0, 0, 0): the residual is added back: v = (0.2, 0, 0, 0.3), both sent.
    out, _ = topk.on_client(Payload([np.array([0.1, 0.0, 0.0, 0.0])], 1.0), ctx("a", rnd=2))
    np.testing.assert_allclose(out.arrays[0], [0.2, 0.0, 0.0, 0.3])
    np.testing.assert_allclose(topk.residuals["a"], 0.0)
    plain = TopK(0.5, error_feedback=False)  # without feedback nothing is kept
    plain.on_client(Payload([np.array([0.1, -5.0, 2.0, 0.3])], 1.0), ctx("a"))
    assert plain.residuals == {}


@pytest.mark.parametrize("make", [lambda: TopK(0.1), lambda: RandomK(0.1)])
def test_error_feedback_sends_everything_eventually(make):
    """Telescoping: what a client sent over the rounds plus its final residual equals the sum of its updates."""
    sparsifier = make()
    rng = np.random.default_rng(0)
    total_update = [np.zeros((4, 5)), np.zeros(7)]
    total_sent = [np.zeros((4, 5)), np.zeros(7)]
    for rnd in range(6):
        update = [rng.normal(size=(4, 5)), rng.normal(size=7)]
        out, metrics = sparsifier.on_client(Payload([3.0 * u for u in update], 3.0), ctx("c", seed=rnd, rnd=rnd))
        assert sum(int(np.count_nonzero(a)) for a in out.arrays) == 3  # ceil(0.1 * 27)
        for t, s, u, a in zip(total_update, total_sent, update, out.arrays):
            t += u
            s += a / 3.0
    flat = np.concatenate([s.ravel() for s in total_sent]) + sparsifier.residuals["c"]
    np.testing.assert_allclose(flat, np.concatenate([t.ravel() for t in total_update]), atol=1e-12)


def test_randomk_bytes_and_seeded_indices():
    x = Payload([np.arange(1.0, 101.0)], 1.0)
    a, m = RandomK(0.05, error_feedback=False).on_client(x, ctx(seed=5))
    b, _ = RandomK(0.05, error_feedback=False).on_client(x, ctx(seed=5))
    np.testing.assert_array_equal(a.arrays[0], b.arrays[0])
    assert m["bytes_up"] == 5 * 4 + 8 + 8 and m["compression_ratio"] == pytest.approx(408 / 36)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"`bits` must be an integer >= 1 and <= 16. Received: bits=0"):
        StochasticQuantizer(0)
    with pytest.raises(ValueError, match=r"`fraction` must be a finite number > 0 and <= 1. Received: fraction=0"):
        TopK(0)


def test_quantization_composes_with_secagg():
    """The same round (same seeded draws) with the plain sum and with SecAgg gives the same weights within SecAgg's
    error bound; 2-bit quantization changes them (positive control)."""
    g = [np.zeros(6, np.float32), np.zeros((2, 3), np.float32)]
    rng = np.random.default_rng(0)
    results = [ClientResult(k, [rng.normal(scale=0.1, size=w.shape).astype(np.float32) for w in g], 5 + k)
               for k in range(6)]

    def run(secure, postprocessors):
        inputs = RoundInputs(1, results, g, {}, FedAvg(), np.random.default_rng(42), secure, postprocessors)
        return aggregate_round(inputs)

    secagg = SecAgg(clip=1.0, variant="secagg", seed=0)
    plain = run(None, (StochasticQuantizer(2),))
    secure = run(secagg, (StochasticQuantizer(2),))
    bound, _ = secagg.error_bound(6)
    for a, b in zip(plain.weights, secure.weights):
        np.testing.assert_allclose(a, b, atol=bound + 1e-7)
    assert secure.metrics["StochasticQuantizer/bytes_up"] == 2 + 8 + 2 + 8 + 8  # ceil(6 * 2 / 8) = 2 per array
    unquantized = run(None, ())
    assert not all(np.allclose(a, b, atol=1e-3) for a, b in zip(plain.weights, unquantized.weights))


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_simulate_reports_bytes_up_per_client_and_still_learns():
    r = np.random.default_rng(0)
    x = r.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    cd = ClientData.iid(x[:160], y[:160], 8, seed=0)

    def model_fn():
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])

    kw = dict(rounds=5, clients_per_round=4, batch_size=10, loss=LOSS, client_optimizer=keras.optimizers.SGD(0.3),
              progress=False, eval_data=(x[160:], y[160:]), seed=0)
    topk = TopK(0.25)
    h, _ = simulate(model_fn, cd, postprocessors=[topk], **kw)
    # 14 parameters: ceil(0.25 * 14) = 4 (index, value) pairs + the weight.
    assert h["TopK/bytes_up"] == [4 * 8 + 8] * 5 and h["TopK/compression_ratio"][0] == pytest.approx(64 / 40)
    assert h["bytes_up"] == [4 * 40] * 5  # the round's total: 4 clients' compressed messages
    assert set(topk.residuals) <= set(range(8)) and len(topk.residuals) >= 4
    q, _ = simulate(model_fn, cd, postprocessors=[StochasticQuantizer(8)], **kw)
    assert q["StochasticQuantizer/bytes_up"][0] == (12 + 8) + (2 + 8) + 8  # kernel 6x2, bias 2, weight
    assert q["eval_accuracy"][-1] > 0.8  # the task is x0 > 0; majority class ~0.5


def test_resume_keeps_the_error_feedback_residuals(tmp_path):
    r = np.random.default_rng(1)
    x = r.normal(size=(160, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    cd = ClientData.iid(x, y, 6, seed=0)

    def model_fn():
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])

    kw = dict(clients_per_round=3, batch_size=10, loss=LOSS, client_optimizer=keras.optimizers.SGD(0.3),
              progress=False, seed=3)
    full_topk = TopK(0.2)
    _, full = simulate(model_fn, cd, rounds=4, postprocessors=[full_topk], **kw)
    simulate(model_fn, cd, rounds=2, postprocessors=[TopK(0.2)], checkpoint_dir=tmp_path, **kw)
    resumed_topk = TopK(0.2)  # a fresh process: empty residuals until the checkpoint restores them
    _, resumed = simulate(model_fn, cd, rounds=4, postprocessors=[resumed_topk], checkpoint_dir=tmp_path,
                          resume=True, **kw)
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed_topk.residuals.keys() == full_topk.residuals.keys()
    for cid, res in full_topk.residuals.items():
        np.testing.assert_array_equal(resumed_topk.residuals[cid], res)
