"""simulate: resume equals an uninterrupted run, bad updates rejected, hooks ordered, logs and checkpoints."""

import json
import logging
import os

import keras
import numpy as np
import pytest

from tfx_ext.errors import FederatedError, MalformedUpdateError
from tfx_ext.federated import (
    Aggregator,
    ClientData,
    ClientResult,
    FedAdam,
    FedAvg,
    History,
    PlainSum,
    Postprocessor,
    plot_history,
    simulate,
    validate_client_result,
)
from tfx_ext.federated.checkpoint import CHECKPOINT_NAME, load_checkpoint

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tiny_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


def population(n_clients=8, n=160, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
    return ClientData.dirichlet(x, y, n_clients, alpha=0.5, seed=seed), (x[:40], y[:40])


KW = dict(clients_per_round=4, batch_size=8, loss=LOSS, client_optimizer=keras.optimizers.SGD(0.1), progress=False)


def test_simulation_learns_and_reports_metrics(tmp_path):
    cd, ev = population()
    seen = []
    h, model = simulate(tiny_model, cd, rounds=6, eval_data=ev, eval_every=3, log_dir=tmp_path, seed=1,
                        callbacks=[lambda m, mdl: seen.append(m["round"])], local_epochs=3,
                        **dict(KW, client_optimizer=keras.optimizers.SGD(0.3)))
    assert len(h) == 6 and seen == [1, 2, 3, 4, 5, 6]
    assert h["eval_accuracy"][:2] == [None, None] and h["eval_accuracy"][2] is not None
    assert np.mean(h["train_loss"][-2:]) < np.mean(h["train_loss"][:2])
    assert h["eval_accuracy"][-1] > max(h["eval_accuracy"][2], 0.6)  # majority class is below 0.5
    r = h.rounds[-1]
    model_bytes = sum(w.nbytes for w in model.get_weights())
    assert r["bytes_down"] == 4 * model_bytes and r["bytes_up"] == 4 * (model_bytes + 8)
    assert r["clients_accepted"] == 4 and r["clients_rejected"] == 0 and r["wall_time_s"] > 0
    assert len(set(h["examples"])) > 1 and h["graph_traces"] == [1] * 6  # clients of many sizes, one trace
    # Logs: JSON, CSV and TensorBoard events, written every round.
    assert History.from_json(tmp_path / "history.json").rounds == h.rounds
    assert (tmp_path / "history.csv").read_text().splitlines()[0].startswith("round,")
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
    assert plot_history(h, tmp_path / "curve.png").endswith("curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_train_metrics_are_last_epoch_means_not_sums_over_epochs():
    cd, ev = population()
    kw = dict(KW, client_optimizer=keras.optimizers.SGD(1e-12), seed=2)  # (almost) frozen: every epoch the same
    h1, _ = simulate(tiny_model, cd, rounds=2, local_epochs=1, **kw)
    h3, _ = simulate(tiny_model, cd, rounds=2, local_epochs=3, **kw)
    np.testing.assert_allclose(h3["train_loss"], h1["train_loss"], rtol=1e-5)  # was 3x
    np.testing.assert_allclose(h3["train_accuracy"], h1["train_accuracy"], rtol=1e-6)
    h, _ = simulate(tiny_model, cd, rounds=3, local_epochs=3, **dict(KW, client_optimizer=keras.optimizers.SGD(0.3)))
    assert all(0 <= a <= 1 for a in h["train_accuracy"])  # was 1.5-2.1


def test_infinite_train_loss_is_kept_and_warns_that_the_run_diverged():
    import tensorflow as tf

    def inf_loss(y, out):  # finite gradients, infinite value
        return LOSS.call(y, out) + tf.stop_gradient(tf.fill(tf.shape(out)[:1], np.inf))

    cd, _ = population()
    with pytest.warns(RuntimeWarning, match="Round 1: the run diverged"):
        h, _ = simulate(tiny_model, cd, rounds=1, **dict(KW, loss=inf_loss))
    assert h.last("train_loss") == np.inf


def test_same_seed_same_run_and_other_seed_differs():
    cd, _ = population()
    _, m1 = simulate(tiny_model, cd, rounds=2, seed=5, **KW)
    _, m2 = simulate(tiny_model, cd, rounds=2, seed=5, **KW)
    _, m3 = simulate(tiny_model, cd, rounds=2, seed=6, **KW)
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(m1.get_weights()[0], m3.get_weights()[0])


def _strip_time(rounds):
    return [{k: v for k, v in r.items() if k not in ("wall_time_s", "client_updates_per_s")} for r in rounds]


def _centered_clipping():
    from tfx_ext.federated import CenteredClipping, ServerMomentum

    return CenteredClipping(iterations=2, server_optimizer=ServerMomentum(1.0, 0.5))


RESUME_STATE = {"fedavg": set(), "fedadam": {"m", "v"}, "centered_clipping": {"velocity", "cc_center"}}


@pytest.mark.parametrize("aggregator", [FedAvg, lambda: FedAdam(learning_rate=0.05), _centered_clipping],
                         ids=list(RESUME_STATE))
def test_resume_equals_uninterrupted(tmp_path, aggregator, request):
    cd, ev = population()
    kw = dict(KW, eval_data=ev, seed=11)
    h_full, m_full = simulate(tiny_model, cd, rounds=5, aggregator=aggregator(), **kw)
    # Interrupted after 2 rounds (the checkpoint is what a crash would leave), then resumed to 5.
    simulate(tiny_model, cd, rounds=2, aggregator=aggregator(), checkpoint_dir=tmp_path, **kw)
    weights, state, meta = load_checkpoint(tmp_path)
    assert meta["round"] == 2 and len(meta["history"]) == 2
    assert set(state) == RESUME_STATE[request.node.callspec.id]  # centered clipping's center is checkpointed
    h_res, m_res = simulate(tiny_model, cd, rounds=5, aggregator=aggregator(), checkpoint_dir=tmp_path,
                            resume=True, **kw)
    for a, b in zip(m_full.get_weights(), m_res.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert _strip_time(h_full.rounds) == _strip_time(h_res.rounds)
    assert not any(f.startswith(".tmp-") for f in os.listdir(tmp_path))  # atomic write left no temporaries
    assert load_checkpoint(tmp_path)[2]["round"] == 5


def test_checkpoint_has_no_pickles_and_seed_mismatch_is_named(tmp_path):
    cd, _ = population()
    simulate(tiny_model, cd, rounds=1, checkpoint_dir=tmp_path, seed=1, **KW)
    with np.load(tmp_path / CHECKPOINT_NAME, allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)
        json.loads(bytes(f["meta"]).decode())
    with pytest.raises(FederatedError, match=r"written with seed=1, not seed=2"):
        simulate(tiny_model, cd, rounds=2, checkpoint_dir=tmp_path, resume=True, seed=2, **KW)


class Corrupt(Postprocessor):
    """Test helper: corrupts the payload of chosen clients (NaN, wrong shape or dtype)."""

    def __init__(self, how):
        self.how = how  # client id -> kind

    def on_client(self, payload, ctx):
        kind = self.how.get(ctx.client_id)
        if kind == "nan":
            payload = payload.map(lambda p: np.full_like(p, np.nan))
        elif kind == "shape":
            payload = payload.replace(arrays=[np.zeros(3), *payload.arrays[1:]])
        elif kind == "dtype":
            payload = payload.map(lambda p: p.astype(str))
        return payload, {}


def test_bad_updates_are_rejected_with_client_id(caplog):
    r = np.random.default_rng(0)
    x = r.normal(size=(50, 6)).astype(np.float32)
    y = r.integers(0, 3, 50).astype(np.int32)
    parts = [np.arange(0, 10), np.arange(10, 20), np.arange(20, 30), np.arange(30, 50), np.array([], np.int64)]
    cd = ClientData.from_partition(x, y, parts, client_ids=["a", "b", "c", "d", "empty"])
    with caplog.at_level(logging.WARNING, logger="tfx_ext.federated"):
        h, _ = simulate(tiny_model, cd, rounds=1, clients_per_round=5, batch_size=8, loss=LOSS,
                        postprocessors=[Corrupt({"a": "nan", "b": "shape", "c": "dtype"})], progress=False)
    r0 = h.rounds[0]
    assert r0["clients_accepted"] == 1 and r0["clients_rejected"] == 4 and r0["examples"] == 20
    reasons = dict(r0["rejected"])
    assert set(reasons) == {"a", "b", "c", "empty"}
    assert "NaN" in reasons["a"] and "shape" in reasons["b"] and "dtype" in reasons["c"]
    assert "zero" in reasons["empty"]
    assert "rejected client 'a'" in caplog.text and "rejected client 'empty'" in caplog.text
    with pytest.raises(MalformedUpdateError, match=r"only 1 valid client results, fewer than min_clients=2.*'a'"):
        simulate(tiny_model, cd, rounds=1, clients_per_round=5, batch_size=8, loss=LOSS, min_clients=2,
                 postprocessors=[Corrupt({"a": "nan", "b": "shape", "c": "dtype"})], progress=False)


def test_validate_client_result_reasons():
    ref = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]
    ok = ClientResult(0, [np.ones((2, 2), np.float32), np.ones(2, np.float32)], 3)
    assert validate_client_result(ok, ref) is None
    assert "zero" in validate_client_result(ClientResult(0, ok.weights, 0), ref)
    assert "expected 2 weight arrays, got 1" in validate_client_result(ClientResult(0, ok.weights[:1], 3), ref)
    bad_shape = ClientResult(0, [np.ones((2, 3), np.float32), ok.weights[1]], 3)
    assert "weight 0 has shape (2, 3), expected (2, 2)" == validate_client_result(bad_shape, ref)
    bad_dtype = ClientResult(0, [ok.weights[0], np.ones(2, np.float64)], 3)
    assert "weight 1 has dtype float64, expected float32" == validate_client_result(bad_dtype, ref)
    inf = ClientResult(0, [ok.weights[0], np.array([1, np.inf], np.float32)], 3)
    assert "weight 1 holds NaN or Inf" == validate_client_result(inf, ref)


class Scale(Postprocessor):
    """Multiplies on the client and divides on the server; records the hook order."""

    def __init__(self, factor, log):
        self.factor, self.log = factor, log

    def on_client(self, payload, ctx):
        self.log.append(("client", self.factor))
        return payload.map(lambda p: p * self.factor), {"factor": self.factor}

    def on_server(self, payload_sum, ctx):
        self.log.append(("server", self.factor))
        return payload_sum.map(lambda p: p / self.factor), {}


def test_postprocessor_hooks_run_in_order_and_secure_sum_plugs_in():
    cd, _ = population()
    kw = dict(KW, clients_per_round=2, seed=4)
    _, plain = simulate(tiny_model, cd, rounds=2, **kw)
    log = []
    h, wrapped = simulate(tiny_model, cd, rounds=2, postprocessors=[Scale(2.0, log), Scale(4.0, log)],
                          secure=PlainSum(), **kw)
    for a, b in zip(plain.get_weights(), wrapped.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert log[:4] == [("client", 2.0), ("client", 4.0), ("client", 2.0), ("client", 4.0)]
    assert log[4:6] == [("server", 4.0), ("server", 2.0)]  # reverse order on the server
    assert h.rounds[0]["secure/survivors"] == 2 and h.rounds[0]["Scale/factor"] == 3.0


class NeedsEachClient(Aggregator):
    needs_individual_updates = True

    def aggregate(self, global_weights, results, state):
        return [np.asarray(w) for w in results[0].weights], state, {"first": str(results[0].client_id)}


def test_non_sum_aggregator_gets_client_results_and_refuses_secure():
    cd, _ = population()
    h, _ = simulate(tiny_model, cd, rounds=1, aggregator=NeedsEachClient(), **KW)
    assert "aggregator/first" in h.rounds[0]
    with pytest.raises(ValueError, match=r"`postprocessors` \(compression, DP, clipping\) transform the payloads of "
                                         r"sum-based aggregators; NeedsEachClient is not sum-based: it needs"):
        simulate(tiny_model, cd, rounds=1, aggregator=NeedsEachClient(), postprocessors=[Postprocessor()], **KW)
    with pytest.raises(FederatedError, match=r"Secure aggregation needs a sum-based aggregator"):
        simulate(tiny_model, cd, rounds=1, aggregator=NeedsEachClient(), secure=PlainSum(), **KW)


def test_simulate_errors():
    cd, _ = population()
    with pytest.raises(TypeError, match=r"`client_data` must be a ClientData"):
        simulate(tiny_model, {}, rounds=1, **KW)
    with pytest.raises(ValueError, match=r"`clients_per_round` must not exceed the number of clients \(8\)"):
        simulate(tiny_model, cd, rounds=1, **dict(KW, clients_per_round=9))
    with pytest.raises(ValueError, match=r"`min_clients` must not exceed `clients_per_round` \(4\)"):
        simulate(tiny_model, cd, rounds=1, min_clients=5, **KW)
    with pytest.raises(ValueError, match=r"`rounds` must be an integer >= 0. Received: rounds=-1"):
        simulate(tiny_model, cd, rounds=-1, **KW)
    with pytest.raises(ValueError, match=r"`resume=True` needs a `checkpoint_dir`"):
        simulate(tiny_model, cd, rounds=1, resume=True, **KW)
    with pytest.raises(ValueError, match=r"`loss` must be given, or `model_fn` must return a compiled model"):
        simulate(tiny_model, cd, rounds=1, **dict(KW, loss=None))
    with pytest.raises(ValueError, match=r"`server_optimizer` applies to FedAvg-family aggregators only"):
        simulate(tiny_model, cd, rounds=1, aggregator=NeedsEachClient(), server_optimizer=object(), **KW)
    with pytest.raises(ValueError, match=r"`strategy` supports FedAvg-family aggregators"):
        simulate(tiny_model, cd, rounds=1, strategy=object(), secure=PlainSum(), **KW)


def test_server_optimizer_argument_equals_the_preset_aggregator_and_leaves_the_input_alone():
    from tfx_ext.federated import ServerAdam

    cd, _ = population()
    mine = FedAvg()
    _, a = simulate(tiny_model, cd, rounds=2, aggregator=mine, server_optimizer=ServerAdam(learning_rate=0.05), **KW)
    _, b = simulate(tiny_model, cd, rounds=2, aggregator=FedAdam(learning_rate=0.05), **KW)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert type(mine.server_optimizer).__name__ == "ServerSGD"


# ----- resume mismatches are named (issue 18) -------------------------------------------------------------------------
def test_resume_with_another_aggregator_names_the_checkpoints_aggregator(tmp_path):
    cd, _ = population()
    simulate(tiny_model, cd, rounds=1, aggregator=FedAdam(learning_rate=0.05), checkpoint_dir=tmp_path, **KW)
    with pytest.raises(FederatedError, match=r"written by the aggregator FedAdam\(.*\(server state: \['m', 'v'\]\), "
                                             r"not FedAvg\(.*resume with the same aggregator"):
        simulate(tiny_model, cd, rounds=2, aggregator="fedavg", checkpoint_dir=tmp_path, resume=True, **KW)
    simulate(tiny_model, cd, rounds=1, checkpoint_dir=tmp_path / "avg", **KW)  # the other way: was KeyError: 'm'
    with pytest.raises(FederatedError, match=r"written by the aggregator FedAvg\(.*\(server state: none\), not FedAdam"):
        simulate(tiny_model, cd, rounds=2, aggregator="fedadam", checkpoint_dir=tmp_path / "avg", resume=True, **KW)


def test_resume_with_another_model_names_the_model(tmp_path):
    cd, _ = population()
    simulate(tiny_model, cd, rounds=1, checkpoint_dir=tmp_path, **KW)

    def wider():
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])

    with pytest.raises(FederatedError, match=r"holds the weights of another model .* than `model_fn` builds") as e:
        simulate(wider, cd, rounds=2, checkpoint_dir=tmp_path, resume=True, **KW)
    assert "FedAvg" not in str(e.value)


def test_secagg_round_id_is_checkpointed(tmp_path):
    from tfx_ext.federated import SecAgg

    cd, _ = population()
    kw = dict(KW, aggregator="fedavg", checkpoint_dir=tmp_path)
    simulate(tiny_model, cd, rounds=2, secure=SecAgg(variant="secagg", seed=0), **kw)
    assert load_checkpoint(tmp_path)[2]["secure"] == {"round": 2}
    resumed = SecAgg(variant="secagg", seed=0)
    simulate(tiny_model, cd, rounds=3, secure=resumed, resume=True, **kw)
    assert resumed.get_state() == {"round": 3}  # continued, not restarted at 1 (round ids are never reused)


# ----- secure rounds: survivors only, a failed round is skipped (issue 18) --------------------------------------------
def test_secure_round_metrics_count_only_the_survivors():
    from tfx_ext.federated import SecAgg

    cd, _ = population(n_clients=10)
    h, _ = simulate(tiny_model, cd, rounds=4, secure=SecAgg(variant="secagg", dropout_rate=0.3, seed=1),
                    **dict(KW, clients_per_round=8))
    ok = [r for r in h if not r["round_failed"]]
    assert ok and any(r["secure/dropped"] > 0 for r in ok)
    for r in ok:
        assert r["clients_accepted"] == r["secure/survivors"] == 8 - r["secure/dropped"]  # counted all 8 before
        assert r["examples"] == sum(cd.num_examples(c) for c in r["secure/survivor_ids"]) \
            if "secure/survivor_ids" in r else True


def test_a_failed_secure_round_is_skipped_and_reported_or_raised():
    from tfx_ext.errors import SecureAggregationError
    from tfx_ext.federated import SecAgg

    cd, _ = population()
    failing = dict(KW, secure=SecAgg(variant="secagg", threshold=1.0, dropout_rate=0.4, seed=0))  # t = k
    _, start = simulate(tiny_model, cd, rounds=0, **KW)
    seen = [start.get_weights()]
    h, model = simulate(tiny_model, cd, rounds=4, callbacks=[lambda m, mdl: seen.append(mdl.get_weights())], **failing)
    assert sum(h["round_failed"]) >= 2 and set(h["round_failed"]) <= {0, 1}
    for r, before, after in zip(h, seen, seen[1:]):
        if r["round_failed"]:
            assert "dropouts" in r["failure_reason"] and r["clients_accepted"] == 0 and "train_loss" not in r
            for a, b in zip(before, after):
                np.testing.assert_array_equal(a, b)  # the same global model went on
        else:
            assert "failure_reason" not in r and r["clients_accepted"] > 0
    with pytest.raises(SecureAggregationError):
        simulate(tiny_model, cd, rounds=3, on_round_failure="raise", **failing)
    with pytest.raises(ValueError, match="`on_round_failure` must be one of 'skip', 'raise'"):
        simulate(tiny_model, cd, rounds=1, on_round_failure="ignore", **KW)
