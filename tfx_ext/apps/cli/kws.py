"""`tfx-ext kws`: keyword spotting with the reference models.

    tfx-ext kws train --model=ds_cnn --data_root=DIR --output_dir=DIR [--epochs=30 --batch_size=64 --seed=0 --augment]
        Trains a reference model (ds_cnn, crnn, gru, tc_resnet) on a Speech Commands directory, saves
        DIR/<model>.keras and DIR/<model>_metrics.json and prints the metrics.
    tfx-ext kws convert --model_path=M.keras --mode=internal|external --output=S.keras [--tflite=S.tflite]
        Writes the streaming model (one frame per step, or the model's time stride) and optionally a float .tflite.
    tfx-ext kws evaluate --model_path=M.keras --data_root=DIR [--mode=none|internal|external --split=test]
        Accuracy on whole clips, or streamed clip by clip.
    tfx-ext kws export --model_path=M.keras --output=M.tflite [--quantize=none|dynamic|float16|int8]
        [--mode=internal|external|none --data_root=DIR]   (int8 calibrates on DIR; DIR also verifies in LiteRT)
        [--raw_audio]   (the model behind a LogMelFrontend: raw audio in, one hop of samples per streamed step)
        Float TFLite of a (streaming or non-streaming) model.
    tfx-ext kws wakeword --phrase="hey tiffany" --output_dir=DIR [--size=tiny|default --seed=0
        --max_false_accepts_per_hour=0.5 --engine=auto]
        Synthesizes the phrase and confusable negatives with many voices, trains a small streaming model, picks the
        threshold for the FA/h target, exports int8 streaming TFLite and writes DIR/report.md, report.json, det.png.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import flags

from tfx_ext.apps import kws
from tfx_ext.apps.cli import flags as cli_flags
from tfx_ext.apps.cli import parse_subcommand
from tfx_ext.data import LABEL_VIEWS
from tfx_ext.data.augment import AugmentConfig
from tfx_ext.errors import TfxExtError

FLAGS = flags.FLAGS

SUBCOMMANDS = {
    "train": "train a reference model on --data_root, save --output_dir/<model>.keras",
    "convert": "convert --model_path to a streaming model (--mode) saved at --output (and --tflite)",
    "evaluate": "accuracy of --model_path on --data_root (--mode=none for whole clips, or streamed)",
    "export": "write a TFLite of --model_path to --output (float, dynamic, float16 or full int8), verified",
    "wakeword": "train a wake-word detector for --phrase from synthesized speech; int8 TFLite + report in "
                "--output_dir",
}
SHARED_FLAGS_FOR = ("train",)  # --strategy, --local_workers, ... (tfx_ext.apps.cli.flags)
MODES = {"internal": "stream_internal_state", "external": "stream_external_state"}

cli_flags.define_strategy_flags()  # --strategy, --local_workers, --logical_cpus, --worker_timeout (train)
flags.DEFINE_enum("model", "ds_cnn", ["ds_cnn", "crnn", "gru", "tc_resnet", "svdf", "attention", "bc_resnet"],
                  "train: reference model.")
flags.DEFINE_string("data_root", None, "train/evaluate/export: Speech Commands directory (export: int8 calibration "
                    "and LiteRT verification data).")
flags.DEFINE_string("output_dir", None, "train/wakeword: where the .keras model and metrics (wakeword: the int8 "
                    ".tflite and the report) go.")
flags.DEFINE_integer("epochs", 30, "train: epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "train/evaluate: batch size.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "train/export/wakeword: random seed (export: of the calibration sample).")
flags.DEFINE_float("learning_rate", 6e-3, "train: peak learning rate (linear warm-up, then cosine decay).")
flags.DEFINE_bool("augment", False, "train: augment (tfx_ext.data.augment.AugmentConfig(); off by default: "
                  "not yet measured to help, bench/README.md).")
flags.DEFINE_float("unknown_keep", 1.0, "train: fraction of the _unknown_ clips each epoch keeps (drawn afresh "
                   "every epoch).", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_bool("progress", True, "train/wakeword: one progress line per epoch (loss, accuracy); --noprogress: "
                  "silent.")
flags.DEFINE_string("model_kwargs", None, 'train: JSON dict of model size knobs, e.g. \'{"width": 32}\'.')
flags.DEFINE_enum("labels", "12", list(LABEL_VIEWS), "train/evaluate/export: label view of the data set.")
flags.DEFINE_string("model_path", None, "convert/evaluate/export: a .keras model.")
flags.DEFINE_enum("mode", "internal", ["internal", "external", "none"],
                  "convert/evaluate/export: streaming mode (none: the whole-clip model).")
flags.DEFINE_string("output", None, "convert/export: where to write (convert: the streaming .keras; export: the "
                    ".tflite).")
flags.DEFINE_string("tflite", None, "convert: also write a float .tflite of the streaming model here.")
flags.DEFINE_integer("frames_per_step", None, "convert: frames per step (default: the model's time stride).")
flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "evaluate: split.")
flags.DEFINE_string("phrase", None, 'wakeword: the wake word, e.g. "hey tiffany".')
flags.DEFINE_enum("size", "default", ["tiny", "default"], "wakeword: tiny (tests, < 1 min) or default (a few "
                  "minutes on 2 cores).")
flags.DEFINE_float("max_false_accepts_per_hour", 0.5, "wakeword: false accepts per hour the threshold is chosen "
                   "for (on held-out negatives).", lower_bound=0)
flags.DEFINE_enum("engine", "auto", ["auto", "espeak", "libespeak", "numpy"], "wakeword: speech synthesis engine.")
flags.DEFINE_enum("quantize", "none", ["none", "dynamic", "float16", "int8"],
                  "export: quantization (int8: full integer, calibrated on --data_root).")
flags.DEFINE_bool("raw_audio", False, "export: the model behind a LogMelFrontend (its training features): raw audio "
                  "in, 1 s clips or one hop of samples per step when streamed; verified on raw clips (float only).")


def parse_model_kwargs(text: str | None, model: str) -> dict | None:
    """`--model_kwargs` as a dict of `model`'s size knobs; a ValueError naming the flag, the knobs and an example."""
    import inspect

    from tfx_ext.models import MODELS

    if not text:
        return None
    knobs = [name for name, p in inspect.signature(MODELS[model]).parameters.items() if p.kind == p.KEYWORD_ONLY
             and name != "name"]
    example = '\'{"width": 32}\'' if "width" in knobs else f"'{{\"{knobs[0]}\": 2}}'"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--model_kwargs must be a JSON object, e.g. --model_kwargs={example} ({error.msg}). "
                         f"Received: --model_kwargs={text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--model_kwargs must be a JSON object, e.g. --model_kwargs={example}. "
                         f"Received: --model_kwargs={text!r}")
    unknown = sorted(set(value) - set(knobs))
    if unknown:
        raise ValueError(f"--model_kwargs has knobs {unknown} that --model={model} does not take; its knobs: "
                         f"{knobs}. Received: --model_kwargs={text!r}")
    return value


def _require(subcommand: str, *names: str) -> bool:
    missing = [name for name in names if not getattr(FLAGS, name)]
    if missing:
        print(f"tfx-ext kws {subcommand}: " + ", ".join(f"--{n}" for n in missing) + " required.", file=sys.stderr)
        return False
    return True


def main(argv):
    command = parse_subcommand("kws", argv, SUBCOMMANDS)
    if command is None:
        return 2
    try:
        if command == "train":
            if not _require(command, "data_root", "output_dir"):
                return 2
            try:
                model_kwargs = parse_model_kwargs(FLAGS.model_kwargs, FLAGS.model)
            except ValueError as error:
                print(f"tfx-ext kws train: error: {error}", file=sys.stderr)
                return 2
            if cli_flags.run_local_cluster_if_requested():
                return 0  # The local worker processes trained (the chief saved the model).
            strategy = cli_flags.strategy_from_flags() if FLAGS.strategy != "default" else None
            _, metrics = kws.train(FLAGS.model, FLAGS.data_root, FLAGS.output_dir, epochs=FLAGS.epochs,
                                   strategy=strategy,
                                   batch_size=FLAGS.batch_size, seed=FLAGS.seed, labels=FLAGS.labels,
                                   learning_rate=FLAGS.learning_rate, verbose=2 if FLAGS.progress else 0,
                                   model_kwargs=model_kwargs, unknown_keep=FLAGS.unknown_keep,
                                   augment=AugmentConfig() if FLAGS.augment else None)
            print(json.dumps(metrics, indent=2))
        elif command == "convert":
            if not _require(command, "model_path", "output"):
                return 2
            if FLAGS.mode == "none":
                print("tfx-ext kws convert: --mode must be internal or external.", file=sys.stderr)
                return 2
            result = kws.convert(FLAGS.model_path, FLAGS.output, mode=MODES[FLAGS.mode],
                                 frames_per_step=FLAGS.frames_per_step, tflite=FLAGS.tflite)
            print(json.dumps(result, indent=2))
        elif command == "evaluate":
            if not _require(command, "model_path", "data_root"):
                return 2
            result = kws.evaluate(FLAGS.model_path, FLAGS.data_root, split=FLAGS.split, batch_size=FLAGS.batch_size,
                                  labels=FLAGS.labels, mode=None if FLAGS.mode == "none" else MODES[FLAGS.mode])
            print(json.dumps(result, indent=2))
        elif command == "wakeword":
            return _wakeword()
        else:
            if not _require(command, "model_path", "output"):
                return 2
            result = kws.export(FLAGS.model_path, FLAGS.output,
                                quantize=None if FLAGS.quantize == "none" else FLAGS.quantize,
                                mode=None if FLAGS.mode == "none" else MODES[FLAGS.mode], data_root=FLAGS.data_root,
                                labels=FLAGS.labels, seed=FLAGS.seed, raw_audio=FLAGS.raw_audio)
            print(json.dumps(result, indent=2))
    except (TfxExtError, ValueError, OSError) as error:
        print(f"tfx-ext kws {command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


def _wakeword() -> int:
    """`kws wakeword`: a bad --phrase is a usage error (exit 2), named like the other flags."""
    from tfx_ext.apps import wakeword

    if not _require("wakeword", "phrase", "output_dir"):
        return 2
    try:
        wakeword.check_phrase(FLAGS.phrase)
    except ValueError as error:
        print(f"tfx-ext kws wakeword: error: --phrase: {error}", file=sys.stderr)
        return 2
    report = wakeword.train_wakeword(FLAGS.phrase, FLAGS.output_dir, size=FLAGS.size, seed=FLAGS.seed,
                                     engine=FLAGS.engine, max_false_accepts_per_hour=FLAGS.max_false_accepts_per_hour,
                                     verbose=2 if FLAGS.progress else 0)
    summary = {key: report[key] for key in ("phrase", "tflite", "tflite_bytes", "seconds")}
    summary.update({name: {k: report[name][k] for k in ("threshold", "test_false_accepts_per_hour",
                                                        "test_false_rejection_rate", "test_frr_unseen_voices")}
                    for name in ("keras", "int8")})
    summary["report"] = str(pathlib.Path(FLAGS.output_dir) / "report.md")
    print(json.dumps(summary, indent=2))
    return 0
