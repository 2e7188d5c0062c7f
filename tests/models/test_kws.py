"""tfx_ext.apps.kws and `tfx-ext kws`: train, evaluate (whole clips == streamed), stream posteriors, plot, convert."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfx_ext.apps import kws
from tfx_ext.data import COMMAND_WORDS, FeatureConfig, compute_features, label_names
from tfx_ext.apps.synthesis import synthesize_keywords

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("kws_data")
    synthesize_keywords(root, words=COMMAND_WORDS, speakers=3, clips_per_speaker=1, engine="numpy",
                        progress=False, seed=0)
    out = tmp_path_factory.mktemp("kws_out")
    model, metrics = kws.train("ds_cnn", root, out, epochs=1, batch_size=8, seed=0,
                               model_kwargs={"width": 4, "num_blocks": 1})
    return root, out, model, metrics


def test_train_saves_model_and_metrics(trained):
    root, out, model, metrics = trained
    assert pathlib.Path(metrics["model_path"]).exists() and (out / "ds_cnn_metrics.json").exists()
    assert metrics["input_shape"] == [49, 40] and metrics["num_classes"] == 12
    assert metrics["params"] == model.count_params()
    # the reported figure is the test split's accuracy, recomputed apart by evaluate()
    whole = kws.evaluate(model, root, split="test", batch_size=4)
    assert metrics["test_accuracy"] == pytest.approx(whole["accuracy"], abs=1e-6), (metrics, whole)


def test_streamed_accuracy_equals_whole_clip_accuracy(trained):
    root, _, model, _ = trained
    whole = kws.evaluate(model, root, split="test", batch_size=4)
    for mode in ("stream_internal_state", "stream_external_state"):
        streamed = kws.evaluate(model, root, split="test", batch_size=4, mode=mode)
        assert streamed["num_examples"] == whole["num_examples"] > 0
        assert streamed["accuracy"] == whole["accuracy"]


def test_stream_posteriors_over_concatenated_clips(trained, tmp_path):
    root, _, model, _ = trained
    waveform, segments = kws.long_stream(root, num_clips=3, split="train", seed=1)
    assert waveform.shape == (3 * 16000,) and [s[:2] for s in segments] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    posteriors = kws.stream_posteriors(model, waveform)
    frames = np.asarray(compute_features(waveform, FeatureConfig())).shape[0]
    assert posteriors.shape == (frames, 12)
    np.testing.assert_allclose(posteriors.sum(-1), 1.0, atol=1e-5)
    # After the first clip's 49 frames from a fresh state, the stream equals the model on that clip.
    first = np.asarray(compute_features(waveform[:16000], FeatureConfig()))[None]
    np.testing.assert_allclose(posteriors[48], np.asarray(model(first, training=False))[0], atol=1e-5)
    import matplotlib

    backend = matplotlib.get_backend()
    png = kws.plot_posteriors(posteriors, label_names("12"), tmp_path / "posteriors.png", segments=segments,
                              waveform=waveform, title="ds_cnn streaming")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend  # the user's backend is left alone (no forced Agg)
    with pytest.raises(ValueError, match=r"`waveform_or_features` must be a waveform"):
        kws.stream_posteriors(model, np.zeros((1, 2, 3)))


CLI_SCRIPT = """
import contextlib, io, json, sys
from absl import flags
from tfx_ext.apps.cli import kws
results = []
for flag_args in [sys.argv[1:], ["--mode=internal"]]:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["tfx-ext kws", *flag_args])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = kws.main(["tfx-ext kws", "convert"])
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


@pytest.mark.slow  # one TensorFlow start-up in a subprocess (the flags are parsed as the dispatcher does)
def test_cli_convert_writes_streaming_keras_and_tflite(trained, tmp_path):
    import json

    _, _, model, metrics = trained
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, f"--model_path={metrics['model_path']}", "--mode=external",
         f"--output={tmp_path / 'stream.keras'}", f"--tflite={tmp_path / 'stream.tflite'}"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (ok, ok_err), (missing, missing_err) = json.loads(result.stdout.strip().splitlines()[-1])
    assert ok == 0, ok_err
    streaming = keras.saving.load_model(tmp_path / "stream.keras")
    assert [t.name for t in streaming.inputs][0] == "features"
    assert "pool_buffer" in streaming.output
    from tfx_ext.lite import TFLiteModel

    lite = TFLiteModel(tmp_path / "stream.tflite")
    assert set(lite.input_names) == {t.name for t in streaming.inputs}
    assert missing == 2 and "--model_path, --output required" in missing_err


@pytest.mark.parametrize("mode", [None, "external"])
def test_export_int8_is_verified_against_keras(trained, tmp_path, mode):
    root, _, model, metrics = trained
    report = kws.export(metrics["model_path"], tmp_path / "m.tflite", quantize="int8", mode=mode, data_root=root,
                        calibration_clips=16)
    assert (tmp_path / "m.tflite").stat().st_size == report["bytes"]
    assert report["examples"] > 0 and 0.0 <= report["agreement"] <= 1.0
    assert report["accuracy_model"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert report["max_abs_error"] < 0.5  # int8 posteriors stay posteriors of the same model


def test_export_raw_audio_streams_hops_and_agrees_with_the_features_model(trained, tmp_path):
    """`kws export --raw_audio`: the TFLite takes 320 samples per step; verified on raw test clips against the
    trained model behind the front end, whose accuracy is the features model's (the front end is compute_features)."""
    root, _, model, metrics = trained
    out = tmp_path / "raw.tflite"
    report = kws.export(metrics["model_path"], out, mode="external", data_root=root, raw_audio=True)
    from tfx_ext.lite import TFLiteModel

    lite = TFLiteModel(out)
    assert report["raw_audio"] and tuple(lite.input_details["audio"]["shape"]) == (1, 320)
    assert report["agreement"] == 1.0 and report["max_abs_error"] <= 1e-4
    assert report["accuracy_model"] == pytest.approx(metrics["test_accuracy"], abs=1.0 / report["examples"])


@pytest.mark.parametrize("quantize", ["int8", "dynamic"])
def test_export_raw_audio_refuses_a_quantized_front_end(trained, tmp_path, quantize):
    with pytest.raises(ValueError, match=rf"`quantize='{quantize}'` with raw_audio=True would quantize the LogMel"):
        kws.export(trained[3]["model_path"], tmp_path / "m.tflite", quantize=quantize, raw_audio=True)


def test_export_int8_needs_calibration_data(trained, tmp_path):
    with pytest.raises(ValueError, match="int8 export calibrates on training clips: pass `data_root`"):
        kws.export(trained[3]["model_path"], tmp_path / "m.tflite", quantize="int8")


def test_breakdown_by_voice_and_word_counted_by_hand():
    from tfx_ext.apps.kws_metrics import breakdown

    names = ("_silence_", "_unknown_", "yes")
    result = breakdown(labels=[2, 2, 1, 1, 0, 2], predictions=[2, 1, 1, 2, 0, 2],
                       words=["yes", "yes", "cat", "dog", "_silence_", "yes"],
                       unseen=[False, True, True, False, None, True], label_names=names)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["seen_voice_accuracy"] == pytest.approx(1 / 2)  # examples 0, 3: right, wrong (4 is silence)
    assert result["unseen_voice_accuracy"] == pytest.approx(2 / 3)  # examples 1, 2, 5: wrong, right, right
    assert (result["num_seen"], result["num_unseen"]) == (2, 3)
    assert result["per_word"] == {"_silence_": 1.0, "cat": 1.0, "dog": 0.0, "yes": pytest.approx(2 / 3)}
    assert result["per_label"] == {"_silence_": 1.0, "_unknown_": 0.5, "yes": pytest.approx(2 / 3)}
    assert result["confusion"] == [[1, 0, 0], [0, 1, 1], [0, 1, 2]]
    empty = breakdown([1], [1], ["cat"], [False], names)
    assert empty["unseen_voice_accuracy"] is None and empty["seen_voice_accuracy"] == 1.0
    with pytest.raises(ValueError, match="must have one entry per example. Received: 2, 2, 1 and 2"):
        breakdown([1, 2], [1, 2], ["cat"], [False, True], names)


def test_evaluate_breaks_accuracy_down_by_the_voices_in_speakers_json(trained):
    """Recomputed apart: the model's own predictions on the unshuffled split, voices read from speakers.json."""
    import json

    from tfx_ext.data import list_examples, load_speech_commands

    root, _, model, _ = trained
    unseen_of = {sid: p["unseen"] for sid, p in json.loads((root / "speakers.json").read_text()).items()}
    for split in ("train", "test"):
        result = kws.evaluate(model, root, split=split, batch_size=4)
        x, y = zip(*((a.numpy(), b.numpy()) for a, b in load_speech_commands(root, split, batch_size=4, shuffle=False)))
        correct = np.argmax(model.predict(np.concatenate(x), verbose=0), -1) == np.concatenate(y)
        examples = list_examples(root, split)
        unseen = np.array([unseen_of.get(e.speaker, False) for e in examples])
        seen = np.array([e.speaker != "" and not unseen_of[e.speaker] for e in examples])
        assert result["accuracy"] == pytest.approx(correct.mean())
        for key, mask in (("seen_voice_accuracy", seen), ("unseen_voice_accuracy", unseen)):
            assert result[key] == (pytest.approx(correct[mask].mean()) if mask.any() else None)
        yes = np.array([e.speaker != "" and os.path.basename(os.path.dirname(e.path)) == "yes" for e in examples])
        assert result["per_word"]["yes"] == pytest.approx(correct[yes].mean())
        assert np.sum(result["confusion"]) == len(examples) == result["num_examples"]
    assert result["num_unseen"] > 0  # The test split's one speaker has a held-out voice.


def test_unknown_subsampling_keeps_a_fresh_fraction_each_epoch(tmp_path):
    from tfx_ext.data.speech_commands import list_examples

    words = COMMAND_WORDS + ("bed", "bird", "cat", "dog", "wow", "happy", "house", "learn", "marvin", "nine")
    synthesize_keywords(tmp_path, words=words, speakers=4, clips_per_speaker=2, engine="numpy", progress=False,
                        seed=0)
    counts = np.bincount([e.label for e in list_examples(tmp_path, "train", "12")], minlength=12)
    ds = kws._train_dataset(tmp_path, 16, FeatureConfig(), "12", 0, None, 0.5)
    expected = int(np.ceil((counts.sum() - counts[1] / 2) / 16))  # counted here, not by the code under test
    assert int(ds.cardinality()) == expected
    epochs = [np.concatenate([y.numpy() for _, y in ds]) for _ in range(2)]
    for labels in epochs:
        assert abs(np.sum(labels == 1) / len(labels) - counts[1] / 2 / (counts.sum() - counts[1] / 2)) < 0.15
    assert not np.array_equal(epochs[0], epochs[1])
    weights = kws.class_weights(tmp_path, "12", 0, 0.5)
    assert weights[1] * counts[1] / 2 == pytest.approx(weights[2] * counts[2])  # unknown weighs like one keyword
