"""Wake-word detection (`tfx_ext.streaming.detection`): smoothing, threshold and refractory period against hand-
computed cases and a plain-loop oracle, FA/h arithmetic, the DET curve and the operating point; and int8 LiteRT
streaming detections agreeing with Keras streaming ones on a tiny trained model."""

import numpy as np
import pytest

from tfx_ext.streaming.detection import accepted, det_curve, detect, false_accepts_per_hour, smooth, threshold_for


def test_smooth_is_a_causal_moving_average():
    np.testing.assert_allclose(smooth([0.0, 1.0, 1.0, 0.0], 2), [0.0, 0.5, 1.0, 0.5])
    np.testing.assert_allclose(smooth([3.0, 0.0, 0.0, 3.0, 3.0], 3), [3.0, 1.5, 1.0, 1.0, 2.0])
    np.testing.assert_allclose(smooth([1.0, 2.0, 4.0], 1), [1.0, 2.0, 4.0])
    np.testing.assert_allclose(smooth([1.0, 2.0, 6.0], 10), [1.0, 1.5, 3.0])  # window longer than the stream
    posteriors = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # (steps, classes), time on axis 0
    np.testing.assert_allclose(smooth(posteriors, 2), [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(smooth(posteriors.T, 2, axis=1), [[0.0, 0.5, 1.0], [1.0, 0.5, 0.0]])
    with pytest.raises(ValueError, match="window"):
        smooth([1.0], 0)


def _naive_detect(scores, threshold, refractory):
    fired, last = [], None
    for t, s in enumerate(scores):
        if s >= threshold and (last is None or t - last >= refractory):
            fired.append(t)
            last = t
    return fired


def test_detect_threshold_and_refractory_by_hand():
    scores = [0.1, 0.9, 0.9, 0.2, 0.95, 0.9]
    assert detect(scores, 0.5, 0).tolist() == [1, 2, 4, 5]  # no refractory: every step at or above
    assert detect(scores, 0.5, 2).tolist() == [1, 4]
    assert detect(scores, 0.5, 3).tolist() == [1, 4]
    assert detect(scores, 0.5, 4).tolist() == [1, 5]  # step 4 is 3 steps after 1: still silent
    assert detect(scores, 0.92, 0).tolist() == [4]
    assert detect([0.5], 0.5).tolist() == [0]  # reaching the threshold fires
    assert detect([0.1, 0.2], 0.5).tolist() == []
    with pytest.raises(ValueError, match="one score per step"):
        detect(np.zeros((2, 2)), 0.5)
    with pytest.raises(ValueError, match="refractory"):
        detect([0.1], 0.5, -1)


def test_detect_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = rng.uniform(size=int(rng.integers(1, 60)))
        threshold, refractory = rng.uniform(0.2, 0.9), int(rng.integers(0, 12))
        assert detect(scores, threshold, refractory).tolist() == _naive_detect(scores, threshold, refractory)


def test_false_accepts_per_hour_and_accepted_windows():
    assert false_accepts_per_hour(3, 1800) == 6.0
    assert false_accepts_per_hour(1, 7200) == 0.5
    assert false_accepts_per_hour(0, 10) == 0.0
    with pytest.raises(ValueError, match="seconds"):
        false_accepts_per_hour(1, 0)
    assert accepted([20, 5], [(0, 4), (3, 5), (6, 19), (20, 20)]).tolist() == [False, True, False, True]
    assert accepted([], [(0, 4)]).tolist() == [False]


def test_det_curve_and_operating_point_by_hand():
    negative = [0.2, 0.6, 0.6, 0.9, 0.1]  # 5 steps of 720 s: one hour
    positive = [0.0, 0.7, 0.0, 0.0, 0.95, 0.0]
    windows = [[(0, 2), (3, 5)]]
    curve = det_curve([negative], [positive], windows, step_seconds=720.0, thresholds=[0.5, 0.8, 1.0])
    assert curve["negative_hours"] == 1.0 and curve["positives"] == 2
    assert curve["false_accepts"] == [3, 1, 0] and curve["false_accepts_per_hour"] == [3.0, 1.0, 0.0]
    assert curve["false_rejection_rate"] == [0.0, 0.5, 1.0]
    refractory = det_curve([negative, negative], [positive], windows, step_seconds=360.0, thresholds=[0.5],
                           refractory=2)
    assert refractory["false_accepts"] == [4] and refractory["false_accepts_per_hour"] == [4.0]  # steps 1, 3 twice
    assert threshold_for(curve, 1.0) == {"threshold": 0.8, "false_accepts_per_hour": 1.0,
                                         "false_rejection_rate": 0.5, "met": True}
    assert threshold_for(curve, 0.0)["threshold"] == 1.0
    bumpy = {"thresholds": [0.1, 0.2, 0.3], "false_accepts_per_hour": [0.0, 5.0, 0.0],
             "false_rejection_rate": [0.0, 0.1, 0.2]}
    assert threshold_for(bumpy, 0.5)["threshold"] == 0.3  # 0.1 is below a threshold that fails
    never = {"thresholds": [0.1, 0.2], "false_accepts_per_hour": [9.0, 2.0], "false_rejection_rate": [0.0, 0.5]}
    assert threshold_for(never, 0.5) == {"threshold": 0.2, "false_accepts_per_hour": 2.0,
                                         "false_rejection_rate": 0.5, "met": False}
    with pytest.raises(ValueError, match="one list of windows per positive stream"):
        det_curve([negative], [positive], [], step_seconds=1.0)


def test_int8_litert_detections_agree_with_keras_streaming(tmp_path):
    """A tiny DS-CNN learns "a bump of energy in bins 2-5"; streamed over noise with three bumps, the int8 LiteRT
    export (batch 1, frame by frame, bound by signature names) fires at the same steps as Keras streaming (within a
    step), once per bump."""
    import keras

    from tfx_ext.apps.wakeword import export_int8, keras_posteriors, lite_posteriors
    from tfx_ext.models import ds_cnn

    rng = np.random.default_rng(0)
    frames, bins = 16, 8
    x = rng.standard_normal((384, frames, bins)).astype(np.float32)
    y = np.arange(384) % 2
    x[y == 1, 5:11, 2:6] += 3.0
    model = ds_cnn((frames, bins), 2, width=4, num_blocks=1, dropout=0.0)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=12, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] > 0.95
    stream = rng.standard_normal((1, 200, bins)).astype(np.float32)
    bumps = (40, 100, 160)
    for start in bumps:
        stream[0, start:start + 6, 2:6] += 3.0
    flatbuffer = export_int8(model, tmp_path / "tiny.tflite", x[:32])
    found = {}
    for name, posteriors in (("keras", keras_posteriors(model, stream)), ("int8", lite_posteriors(flatbuffer, stream))):
        assert posteriors.shape == (1, 200, 2)
        found[name] = detect(smooth(posteriors[0, :, 1], 3), 0.5, refractory=25)
    assert len(found["keras"]) == len(bumps), found
    assert all(start <= step < start + frames + 6 for step, start in zip(found["keras"], bumps)), found
    assert len(found["int8"]) == len(found["keras"])
    assert np.abs(found["int8"] - found["keras"]).max() <= 1, found
