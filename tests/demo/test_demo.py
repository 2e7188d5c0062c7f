"""The end-to-end demo runs from the CLI on tiny settings and its report holds every stage's figures."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tfx_ext.apps.demo import STAGES, DemoConfig, DemoContext, stage_tflite


@pytest.mark.slow
def test_demo_cli_runs_every_stage_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run(
        [sys.executable, "-m", "tfx_ext", "demo", "--size=tiny", f"--output_dir={out}"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    titles = [section["title"] for section in report["sections"]]
    assert titles == [title for title, _ in STAGES]
    for section in report["sections"]:
        for figure in section["figures"]:
            assert (out / figure).read_bytes()[:4] == b"\x89PNG"
    sections = {section["title"]: section for section in report["sections"]}
    assert sections["Streaming"]["metrics"]["max |stream - window model|, first window"] < 1e-5
    assert sections["Streaming"]["metrics"]["max |external - internal|"] < 1e-5
    tflite = sections["TFLite in LiteRT (float and int8)"]["metrics"]
    assert tflite["max |float LiteRT - Keras| posterior"] < 1e-4
    assert (out / "tflite" / "ds_cnn_stream_external_int8.tflite").read_bytes()[4:8] == b"TFL3"
    # The trained model behind LogMelFrontend, float LiteRT on 320 raw samples per step, equals the Keras stream on
    # features one step later (measured 2.2e-8 on the tiny espeak demo).
    assert tflite["max |raw-audio float LiteRT - Keras on features| posterior"] < 1e-4
    assert (out / "tflite" / "ds_cnn_raw_audio_stream_external.tflite").read_bytes()[4:8] == b"TFL3"
    # Behaviour floors (measured on the tiny demo, numpy and espeak data, 2 and 8 epochs: int8 vs float posteriors
    # 0.0021-0.0036, top-1 agreement 0.80-0.97 on 30 clips). The tiny keyword model does not beat the majority
    # class (4 of 14 words are `_unknown_`), so learning is checked on the federated digits stage instead.
    assert tflite["max |int8 - float| posterior (recording)"] <= 0.02
    assert tflite["top-1 agreement int8 vs Keras"] >= 0.6
    streaming = sections["Streaming"]["metrics"]
    train = sections["Train"]["metrics"]
    # Streamed clip by clip == whole clips, and both == the Keras accuracy the TFLite stage measured.
    assert streaming["test accuracy, streamed clip by clip"] == pytest.approx(streaming["test accuracy, whole clips"],
                                                                              abs=1e-6)
    assert train["test_accuracy"] == pytest.approx(streaming["test accuracy, whole clips"], abs=1e-6)
    assert tflite["test accuracy, Keras"] == pytest.approx(train["test_accuracy"], abs=1e-6)
    # Federated digits learn far above chance (0.1) in 2 rounds (measured 0.86 FedAvg, 0.82 matching + SecAgg+),
    # and SecAgg+ recovers the plain sum with every client kept.
    federated = sections["Federated learning"]["metrics"]
    assert federated["FedAvg test accuracy"] >= 0.6 and federated["matching + SecAgg+ test accuracy"] >= 0.6
    assert federated["SecAgg+ relative error of the sum (simulation only)"] <= 1e-5  # measured 7.7e-8
    assert federated["SecAgg+ survivors (last round)"] == federated["clients per round"]
    markdown = (out / "report.md").read_text()
    assert "confusion_matrix.png" in markdown and "posteriors_int8.png" in markdown
    assert "I0000" not in result.stderr, "TensorFlow start-up noise leaked into the CLI output"


def test_demo_config_validates_its_settings():
    with pytest.raises(ValueError, match=r"`epochs` must be an integer >= 1. Received: epochs=0"):
        DemoConfig(epochs=0)
    with pytest.raises(ValueError, match=r"`federated_rounds` must be an integer >= 0"):
        DemoConfig(federated_rounds=-1)
    with pytest.raises(ValueError, match=r"`epochs` must be an integer >= 1. Received: epochs=True"):
        DemoConfig(epochs=True)  # Once accepted as one epoch.
    with pytest.raises(ValueError, match=r"`labels` must be one of '12', '35'. Received: labels='10'"):
        DemoConfig(labels="10")


def test_demo_context_takes_labels_from_the_config(tmp_path):
    twelve = DemoContext.for_config(DemoConfig.tiny(str(tmp_path / "out")))
    assert twelve.num_classes == 12 and twelve.label_names[:2] == ("_silence_", "_unknown_")
    config = DemoConfig.tiny(str(tmp_path / "out"), labels="35")
    assert DemoContext.for_config(config).num_classes == 35 and len(config.words) == 35
    assert config.data_root != DemoConfig.tiny(str(tmp_path / "out")).data_root


def test_a_stage_run_out_of_order_names_the_stage_it_needs(tmp_path):
    config = DemoConfig.tiny(str(tmp_path / "out"))
    with pytest.raises(RuntimeError, match="needs `stream`, which the 'Streaming' stage sets"):
        stage_tflite(config, DemoContext.for_config(config), None)


def test_demo_cache_directory_is_keyed_by_data_settings(tmp_path):
    a = DemoConfig.tiny(str(tmp_path / "out"))
    b = DemoConfig.tiny(str(tmp_path / "out"), speakers=6)
    assert a.data_root != b.data_root and a.data_root.parent == pathlib.Path(tmp_path / ".cache")


def test_demo_cli_rejects_positional_arguments(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tfx_ext", "demo", "extra"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and "takes no positional arguments" in (result.stderr + result.stdout)
