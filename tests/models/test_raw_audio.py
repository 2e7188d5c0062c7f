"""`get_model(..., raw_audio=True)` / `with_frontend`: the reference model behind a LogMelFrontend equals the
features model on `compute_features` (computed apart), streams one hop per step in both state modes, keeps a
trained model's weights, round-trips through `.keras`; models the front end's lag cannot stream are refused by name."""

import keras
import numpy as np
import pytest

from tfx_ext.data import FeatureConfig, compute_features
from tfx_ext.errors import NotStreamableError
from tfx_ext.models import TINY_KWARGS, get_model, with_frontend
from tfx_ext.streaming.convert import to_streaming
from tfx_ext.testing import save_and_load, verify_streaming

SAMPLES = 3200  # 9 frames at 30/20 ms: tiny models, fast steps


def audio(batch=2, seed=0):
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (batch, SAMPLES)).astype("float32")


@pytest.mark.parametrize("name", ["ds_cnn", "crnn", "gru"])
def test_raw_model_streams_like_the_features_model(name):
    keras.utils.set_random_seed(0)
    features_model = get_model(name, (9, 40), **TINY_KWARGS[name])
    raw = with_frontend(features_model, FeatureConfig(), SAMPLES)
    x = audio()
    want = features_model(compute_features(x, FeatureConfig()), training=False)  # the original model, apart
    np.testing.assert_allclose(raw(x, training=False), want, atol=1e-4)
    errors = verify_streaming(raw, x, frames_per_step=(320,), compiled=(True,), check_reset=False)
    assert len(errors) == 2 and max(errors.values()) <= 1e-5
    assert to_streaming(raw, frames_per_step=320).output_delays == {"probs": 320}  # one 20 ms frame late


def test_get_model_raw_audio_and_its_keras_file():
    keras.utils.set_random_seed(1)
    config = FeatureConfig(hop_ms=10.0)  # 3 hops per window: two warm-up frames
    model = get_model("ds_cnn", raw_audio=True, feature_config=config, clip_samples=1600, **TINY_KWARGS["ds_cnn"])
    assert model.input_shape == (None, 1600) and model.get_layer("frontend").config == config
    assert model.get_layer("conv0").warmup_frames == 2
    loaded = save_and_load(model)
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (2, 1600)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    errors = verify_streaming(loaded, x, frames_per_step=(160,), compiled=(True,), check_reset=False)
    assert max(errors.values()) <= 1e-5


def test_trained_weights_carry_over():
    keras.utils.set_random_seed(2)
    features_model = get_model("ds_cnn", (9, 40), **TINY_KWARGS["ds_cnn"])
    features_model.compile("adam", "sparse_categorical_crossentropy")
    x = audio(8, seed=3)
    features_model.fit(compute_features(x, FeatureConfig()), np.arange(8) % 12, epochs=2, verbose=0)
    raw = with_frontend(features_model, FeatureConfig(), SAMPLES)
    np.testing.assert_allclose(raw.predict(x, verbose=0), features_model.predict(
        compute_features(x, FeatureConfig()), verbose=0), atol=1e-4)


@pytest.mark.parametrize("name, why", [
    ("tc_resnet", r"time stride|multiple of"), ("svdf", r"layer 'svdf1' \(SVDF\) carries state"),
    ("attention", r"layer 'attention1' \(StreamingMultiHeadAttention\) carries state")])
def test_models_the_lag_cannot_stream_train_whole_and_are_refused_by_name(name, why):
    model = get_model(name, raw_audio=True, clip_samples=SAMPLES, **TINY_KWARGS[name])
    assert tuple(model(audio()).shape) == (2, 12)  # trains and runs on whole clips
    with pytest.raises(NotStreamableError, match=why):
        to_streaming(model, frames_per_step=2560 if name == "tc_resnet" else 320)


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match=r"`input_shape` must be \(9, 40\)"):
        get_model("ds_cnn", (49, 40), raw_audio=True, clip_samples=SAMPLES)
    with pytest.raises(ValueError, match=r"pass raw_audio=True"):
        get_model("ds_cnn", clip_samples=SAMPLES)
    with pytest.raises(ValueError, match=r"`model` must take \(frames, features\) = \(49, 40\)"):
        with_frontend(get_model("ds_cnn", (9, 40), **TINY_KWARGS["ds_cnn"]))
