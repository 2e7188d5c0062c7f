"""`tfx-ext COMMAND SUBCOMMAND --help` lists only that subcommand's flags; `kws train` shows per-epoch progress.

Each command module defines its absl flags at import, so each command runs in its own subprocess (two modules in
one process would define `--seed` twice).
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}

_HELP_SCRIPT = """
import contextlib, io, json, sys
from tfx_ext.apps.cli import run
out = {}
for args in %r:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        try:
            run(["tfx-ext", *args])
        except SystemExit as stop:
            code = stop.code
    out[" ".join(args)] = [code, buffer.getvalue()]
print(json.dumps(out))
"""


def _helps(*commands):
    script = _HELP_SCRIPT % ([list(c) for c in commands],)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=REPO,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _flag_names(text):
    return set(re.findall(r"^\s+--(?:\[no\])?([a-z_]+):", text, flags=re.M))


def test_kws_subcommand_help_lists_only_its_flags():
    helps = _helps(*[("kws", sub, "--help") for sub in ("train", "convert", "evaluate", "export", "wakeword")],
                   ("kws", "--help"))
    codes = {key: code for key, (code, _) in helps.items()}
    assert set(codes.values()) == {0}, codes
    train, convert = helps["kws train --help"][1], helps["kws convert --help"][1]
    evaluate, export = helps["kws evaluate --help"][1], helps["kws export --help"][1]
    assert train.startswith("usage: tfx-ext kws train [--flags]") and "train a reference model" in train
    assert _flag_names(train) == {"model", "data_root", "output_dir", "epochs", "batch_size", "seed", "learning_rate",
                                  "progress", "model_kwargs", "labels", "strategy", "local_workers", "logical_cpus",
                                  "worker_timeout", "augment", "unknown_keep"}
    assert _flag_names(convert) == {"model_path", "mode", "output", "tflite", "frames_per_step"}
    assert _flag_names(evaluate) == {"model_path", "data_root", "mode", "split", "batch_size", "labels"}
    assert _flag_names(export) == {"model_path", "output", "quantize", "mode", "data_root", "labels", "seed",
                                   "raw_audio"}
    wakeword = helps["kws wakeword --help"][1]
    assert wakeword.startswith("usage: tfx-ext kws wakeword [--flags]") and "train a wake-word detector" in wakeword
    assert _flag_names(wakeword) == {"phrase", "output_dir", "size", "seed", "max_false_accepts_per_hour", "engine",
                                     "progress"}
    # Each flag keeps its help text, without the scope prefix that selected it (the enum's values stay).
    assert "--epochs: epochs." in train and "train: epochs" not in train
    assert "--mode: <internal|external|none>: streaming mode" in convert
    # The command's own --help still lists every flag and points to the subcommand help.
    whole = helps["kws --help"][1]
    assert "(tfx-ext kws SUBCOMMAND --help for its flags)" in whole
    assert _flag_names(whole) >= _flag_names(train) | _flag_names(convert) | _flag_names(export)


def test_federated_and_data_subcommand_help():
    (code, simulate), = _helps(("federated", "simulate", "--help")).values()
    assert code == 0 and simulate.startswith("usage: tfx-ext federated simulate [--flags]")
    names = _flag_names(simulate)
    assert {"aggregator", "secure", "secure_threshold", "dropout_rate", "consistency_check", "output_dir",
            "client_lr", "local_epochs", "strategy"} <= names
    assert "--dropout_rate: Simulated client dropout rate" in simulate
    helps = _helps(("data", "synthesize", "--help"), ("data", "info", "-h"))
    synthesize, info = helps["data synthesize --help"][1], helps["data info -h"][1]
    assert _flag_names(info) == {"root"}
    assert _flag_names(synthesize) == {"root", "speakers", "clips_per_speaker", "engine", "seed", "words", "noise",
                                       "progress"}


@pytest.mark.slow  # one TensorFlow start-up and two 2-epoch trainings of a 4-channel ds_cnn (~20 s on 2 cores)
def test_kws_train_progress_prints_one_line_per_epoch(tmp_path):
    script = textwrap.dedent(
        f"""
        import contextlib, io, json
        from absl import flags
        from tfx_ext.apps.cli import kws as cli
        from tfx_ext.apps.synthesis import synthesize_keywords
        from tfx_ext.data import COMMAND_WORDS
        root = {str(tmp_path / "data")!r}
        synthesize_keywords(root, words=COMMAND_WORDS, speakers=3, clips_per_speaker=1, engine="numpy",
                            progress=False, seed=0)
        results = {{}}
        for progress in ("--progress", "--noprogress"):
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["tfx-ext kws", f"--data_root={{root}}", f"--output_dir={str(tmp_path)}/" + progress,
                         "--epochs=2", "--batch_size=8", '--model_kwargs={{"width": 4, "num_blocks": 1}}', progress])
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = cli.main(["tfx-ext kws", "train"])
            results[progress] = [code, out.getvalue()]
        print(json.dumps(results))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=REPO,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    (code, shown), (quiet_code, quiet) = results["--progress"], results["--noprogress"]
    assert code == 0 and quiet_code == 0
    epochs = re.findall(r"^Epoch (\d+)/2$", shown, flags=re.M)
    assert epochs == ["1", "2"], shown
    # Each epoch's line reports its loss and accuracy (Keras verbose=2: one line per epoch, no bar redraws).
    lines = re.findall(r"^.*- loss: [0-9.]+.*accuracy: [0-9.]+.*$", shown, flags=re.M)
    assert len(lines) == 2, shown
    assert "\r" not in shown and "Epoch" not in quiet
    # Both runs print the same metrics JSON at the end (the progress lines are extra, not a replacement).
    for text in (shown, quiet):
        metrics = json.loads(text[text.index("{"):])
        assert metrics["epochs"] == 2 and metrics["model_path"].endswith("ds_cnn.keras")


def test_kws_train_bad_model_kwargs_and_missing_data_are_named_errors(tmp_path):
    script = textwrap.dedent(
        f"""
        import contextlib, io, json
        from absl import flags
        from tfx_ext.apps.cli import kws as cli
        results = []
        for extra in (["--model_kwargs={{width: 4}}"], ["--model_kwargs=[4]"], ['--model_kwargs={{"widht": 4}}'],
                      ["--data_root={str(tmp_path / 'missing')}"]):
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["tfx-ext kws", "--data_root={str(tmp_path)}", "--output_dir={str(tmp_path / 'out')}", *extra])
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = cli.main(["tfx-ext kws", "train"])
            results.append([code, err.getvalue()])
        print(json.dumps(results))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=REPO,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    not_json, not_object, unknown, missing = json.loads(result.stdout.strip().splitlines()[-1])
    assert not_json[0] == 2 and "--model_kwargs must be a JSON object, e.g. --model_kwargs='{\"width\": 32}'" in not_json[1]
    assert "Received: --model_kwargs='{width: 4}'" in not_json[1]
    assert not_object[0] == 2 and "must be a JSON object" in not_object[1]
    assert unknown[0] == 2 and "knobs ['widht'] that --model=ds_cnn does not take" in unknown[1]
    assert "'width'" in unknown[1] and "'num_blocks'" in unknown[1]
    assert missing[0] == 1 and "DataError" in missing[1] and "missing" in missing[1]
    assert all("Traceback" not in err for _, err in (not_json, not_object, unknown, missing))
