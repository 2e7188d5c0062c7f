"""get_strategy by name, TF_CONFIG validation, logical CPU devices."""

import json

import pytest
import tensorflow as tf

from tfx_ext.distribute import (
    ClusterConfigError,
    DistributeError,
    configure_logical_cpus,
    get_strategy,
    is_chief,
    is_multi_worker,
    parse_tf_config,
    worker_id,
)

GOOD = {"cluster": {"worker": ["127.0.0.1:2000", "127.0.0.1:2001"]}, "task": {"type": "worker", "index": 1}}


def test_default_and_none_give_the_default_strategy():
    assert get_strategy() is tf.distribute.get_strategy()
    assert get_strategy("default") is tf.distribute.get_strategy()
    assert get_strategy("default").num_replicas_in_sync == 1
    assert is_chief(get_strategy()) and worker_id() == 0 and not is_multi_worker()


def test_strategy_instance_passes_through():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert get_strategy(strategy) is strategy


def test_mirrored_uses_every_logical_cpu():
    # tests/conftest.py split the CPU into two logical devices before TensorFlow started.
    strategy = get_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2
    assert is_chief(strategy) and not is_multi_worker(strategy)


def test_mirrored_with_the_same_logical_cpus_after_start_is_fine():
    assert get_strategy("mirrored", logical_cpus=2).num_replicas_in_sync == 2
    assert len(configure_logical_cpus(2)) == 2


def test_logical_cpus_after_tensorflow_started_is_a_named_error():
    with pytest.raises(DistributeError, match=r"logical CPU devices can no longer be configured: .* with 2 "
                                              r"logical CPU\(s\).*Received: logical_cpus=3"):
        get_strategy("mirrored", logical_cpus=3)


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_logical_cpus_must_be_positive_int(value):
    with pytest.raises(ValueError, match=r"`logical_cpus` must be an integer >= 1. Received: logical_cpus="):
        configure_logical_cpus(value)


def test_unknown_name():
    with pytest.raises(ValueError, match=r"`name` must be one of \['default', 'mirrored', 'multi_worker', "
                                         r"'auto'\] or None. Received: name='tpu'"):
        get_strategy("tpu")


@pytest.mark.parametrize("name", ["default", "multi_worker"])
def test_logical_cpus_only_for_mirrored_and_auto(name):
    with pytest.raises(ValueError, match=r"`logical_cpus` only applies to 'mirrored' and 'auto'"):
        get_strategy(name, logical_cpus=2)


def test_auto_without_cluster_or_gpus_is_default(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert get_strategy("auto") is tf.distribute.get_strategy()
    assert get_strategy("auto", logical_cpus=2).num_replicas_in_sync == 2  # Asking for CPUs means mirrored.


def test_auto_with_a_one_task_cluster_is_not_multi_worker(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:2000"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert get_strategy("auto") is tf.distribute.get_strategy()


def test_multi_worker_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ClusterConfigError, match=r"strategy 'multi_worker' needs the TF_CONFIG environment "
                                                 r"variable, which is not set.*Received: TF_CONFIG=None"):
        get_strategy("multi_worker")
    assert issubclass(ClusterConfigError, ValueError) and issubclass(ClusterConfigError, DistributeError)


def test_auto_with_malformed_tf_config_fails_loudly(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ClusterConfigError, match=r"TF_CONFIG is not valid JSON"):
        get_strategy("auto")


def test_parse_tf_config_accepts_a_good_one():
    assert parse_tf_config(json.dumps(GOOD)) == GOOD
    chief = {"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, "task": {"type": "chief", "index": 0}}
    assert parse_tf_config(json.dumps(chief))["task"]["type"] == "chief"


def _with(**changes):
    config = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        keys = path.split("__")
        target = config
        for key in keys[:-1]:
            target = target[key]
        if value is KeyError:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return json.dumps(config)


@pytest.mark.parametrize("text, pattern", [
    ("[1, 2]", r"TF_CONFIG must be a JSON object. Received: TF_CONFIG='\[1, 2\]'"),
    (_with(cluster=KeyError), r"TF_CONFIG\['cluster'\] must be a non-empty object .* Received: "
                              r"TF_CONFIG\['cluster'\]=None"),
    (_with(cluster={"boss": ["h:1"]}), r"TF_CONFIG\['cluster'\] keys must be among .* Received: key 'boss'"),
    (_with(cluster__worker=[]), r"TF_CONFIG\['cluster'\]\['worker'\] must be a non-empty list"),
    (_with(cluster__worker=["127.0.0.1:2000", "nohost"]),
     r"TF_CONFIG\['cluster'\]\['worker'\]\[1\] must be a 'host:port' string. Received: 'nohost'"),
    (_with(cluster__ps=["h:3"]), r"has 'ps' tasks: that is ParameterServerStrategy"),
    (_with(task=KeyError), r"TF_CONFIG\['task'\] must be an object .* Received: TF_CONFIG\['task'\]=None"),
    (_with(task__type="chief"), r"TF_CONFIG\['task'\]\['type'\] must be one of the cluster's task types "
                                r"\['worker'\]. Received: TF_CONFIG\['task'\]\['type'\]='chief'"),
    (_with(task__index=2), r"TF_CONFIG\['task'\]\['index'\] must be an integer in \[0, 2\) for task type "
                           r"'worker'. Received: TF_CONFIG\['task'\]\['index'\]=2"),
    (_with(task__index="0"), r"TF_CONFIG\['task'\]\['index'\] must be an integer .* Received: "
                             r"TF_CONFIG\['task'\]\['index'\]='0'"),
])
def test_malformed_tf_config_names_the_key(text, pattern):
    with pytest.raises(ClusterConfigError, match=pattern):
        parse_tf_config(text)


def test_multi_worker_with_malformed_env_names_the_key(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", _with(task__index=5))
    with pytest.raises(ClusterConfigError, match=r"TF_CONFIG\['task'\]\['index'\] must be an integer"):
        get_strategy("multi_worker")


def test_mirrored_is_one_shared_instance_per_device_set():
    """Two MirroredStrategy objects over the same devices collide in TF's collective keys when both run
    collectives in one process; get_strategy hands out one instance."""
    assert get_strategy("mirrored") is get_strategy("mirrored", logical_cpus=2)


def test_mirrored_runs_collectives_beside_a_directly_made_strategy():
    """The shared test strategy (made directly with tf.distribute.MirroredStrategy) and get_strategy's own
    instance both train, alternately, models of different sizes without a collective-key collision."""
    import keras
    import numpy as np

    from tfx_ext.testing import two_cpu_strategy
    from tfx_ext.distribute import fit

    x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
    for strategy, units in ((two_cpu_strategy(), 5), (get_strategy("mirrored"), 2), (two_cpu_strategy(), 7)):
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units), keras.layers.Dense(1)])
            model.compile(optimizer="sgd", loss="mse")
        history = fit(model, x, y, batch_size=4, epochs=1, strategy=strategy, verbose=0)
        assert np.isfinite(history.history["loss"][0])
