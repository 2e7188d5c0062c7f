"""Writes the three Colab notebooks of this folder (outputs cleared). Run from anywhere:

    python colab/build_notebooks.py

Edit the cells here, not in the .ipynb files, so the notebooks stay consistent (install cell, size switch, helpers).
tests/colab/test_notebooks.py executes every notebook top to bottom with TFX_EXT_NOTEBOOK_SIZE=tiny.
"""

from __future__ import annotations

import pathlib
import textwrap

import nbformat

HERE = pathlib.Path(__file__).resolve().parent
REPO_URL = "https://github.com/OWNER/tfx-ext"


def md(text: str):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str):
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


def header(name: str, title: str, summary: str) -> list:
    badge = f"https://colab.research.google.com/github/{REPO_URL.split('github.com/')[1]}/blob/main/colab/{name}"
    return [
        md(f"""
        # {title}

        [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({badge})

        {summary}
        """),
        md("""
        ## Install

        In Colab this installs tfx-ext from its repository (edit `REPO_URL` if you use a fork); it is skipped when
        `tfx_ext` already imports (a local checkout installed with `pip install -e .`).
        """),
        code(f'''
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up logs out of the output
        REPO_URL = "{REPO_URL}"  # edit: the repository to install from

        try:
            import tfx_ext
        except ImportError:
            %pip install -q "tfx-ext @ git+{{REPO_URL}}"
            import tfx_ext
        print("tfx_ext", tfx_ext.__version__)
        '''),
        md("""
        ## Size switch

        `SIZE = "full"` (the default) gives meaningful results in Colab (minutes); the test suite sets
        `TFX_EXT_NOTEBOOK_SIZE=tiny`, which runs every cell in seconds with toy settings (the numbers are then
        meaningless, only the plumbing is exercised).
        """),
        code('''
        import pathlib

        SIZE = os.environ.get("TFX_EXT_NOTEBOOK_SIZE", "full")
        if SIZE not in ("tiny", "full"):
            raise ValueError(f"TFX_EXT_NOTEBOOK_SIZE must be 'tiny' or 'full'. Received: {SIZE!r}")
        TINY = SIZE == "tiny"
        WORK = pathlib.Path("tfx_ext_notebook")  # data, models and .tflite files go here
        WORK.mkdir(exist_ok=True)
        print(f"SIZE={SIZE}, working directory {WORK.resolve()}")
        '''),
    ]


SETUP_PLOTS = '''
%matplotlib inline
import time

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from IPython.display import Image, display

tf.get_logger().setLevel("ERROR")  # no "Assets written" lines from TFLite export


def show(fig):
    """Shows a matplotlib figure inline and closes it (works whatever backend a library switched to)."""
    display(fig)
    plt.close(fig)


def show_png(path):
    display(Image(filename=str(path)))
'''


# --------------------------------------------------------------------------------------------- streaming_kws
def streaming_kws() -> list:
    cells = header(
        "streaming_kws.ipynb",
        "Streaming keyword spotting: train, stream, export to TFLite, run in LiteRT",
        "Trains a small keyword-spotting model (Speech Commands in Colab, or keywords synthesized offline), "
        "converts it to a frame-by-frame streaming model, exports it to TFLite (float32, dynamic-range and full "
        "int8), runs it in the LiteRT interpreter over a long recording and compares the float and int8 models.",
    )
    cells += [
        code('''
        if TINY:
            SYNTH = dict(speakers=5, clips_per_speaker=1)   # 70 clips of 14 words
            MODEL_KWARGS = {"width": 8, "num_blocks": 1}
            EPOCHS, BATCH_SIZE = 2, 16
            STREAM_CLIPS, MAX_EVAL_CLIPS, CALIBRATION_CLIPS = 3, 16, 8
        else:
            SYNTH = dict(speakers=36, clips_per_speaker=3)  # used when USE_SPEECH_COMMANDS is False
            MODEL_KWARGS = {"width": 64, "num_blocks": 4}  # ds_cnn at its defaults (~23K parameters)
            EPOCHS, BATCH_SIZE = 12, 64
            STREAM_CLIPS, MAX_EVAL_CLIPS, CALIBRATION_CLIPS = 10, 500, 100
        # Full size only: download Speech Commands v2 (2.3 GB; training then goes over ~85,000 clips per epoch, so
        # prefer a GPU runtime). False: train on 1,512 synthesized clips instead (minutes on a CPU runtime).
        USE_SPEECH_COMMANDS = True
        '''),
        code(SETUP_PLOTS),
        md("""
        ## 1. Data

        Speech Commands v2 has 1 s clips of 35 words by 2,618 speakers; the 12-label view keeps ten command words
        plus `_unknown_` (every other word) and `_silence_` (cut from background noise). Offline (and in the tiny
        run, and whenever the download fails: no network) `synthesize_keywords` writes a data set in exactly the
        same layout, spoken by espeak-ng (the `espeakng-loader` wheel, or the binary), with speakers split like the
        real data set.
        """),
        code('''
        from tfx_ext.apps.synthesis import speech_commands_or_synthesized
        from tfx_ext.data import compute_features, label_names, read_wav, speech_commands_info

        # Without a network the download fails with a named DataError: this then says so and synthesizes instead.
        DATA_ROOT, SOURCE = speech_commands_or_synthesized(
            WORK, download=SIZE == "full" and USE_SPEECH_COMMANDS, engine="auto", seed=0, progress=not TINY, **SYNTH)
        info = speech_commands_info(DATA_ROOT)
        print(f"data: {SOURCE}")
        NAMES = label_names("12")
        print("clips per split:", info["split_totals"], "| speakers per split:", info["speakers_per_split"])
        '''),
        md("""
        The model sees log-mel features: 49 frames (20 ms hop, 30 ms window) x 40 mel bins per second.
        """),
        code('''
        word = "yes"
        wav_path = sorted((pathlib.Path(DATA_ROOT) / word).glob("*.wav"))[0]
        audio, rate = read_wav(wav_path)
        features = np.asarray(compute_features(audio[:rate]))
        fig, axes = plt.subplots(1, 2, figsize=(11, 2.8))
        axes[0].plot(np.arange(len(audio)) / rate, audio, lw=0.5)
        axes[0].set(title=f"'{word}' waveform", xlabel="time (s)")
        axes[1].imshow(features.T, origin="lower", aspect="auto", cmap="magma")
        axes[1].set(title=f"log-mel features {features.shape}", xlabel="frame", ylabel="mel bin")
        fig.tight_layout()
        show(fig)
        '''),
        md("""
        ## 2. Train

        `kws.train` builds a reference model (`ds_cnn`: depthwise-separable convolutions, each time-mixing layer
        wrapped in a streamable `Stream`), trains it as an ordinary Keras model and saves it as `.keras`.
        """),
        code('''
        from tfx_ext.apps import kws

        model, metrics = kws.train("ds_cnn", DATA_ROOT, WORK / "models", epochs=EPOCHS, batch_size=BATCH_SIZE,
                                   model_kwargs=MODEL_KWARGS, seed=0, verbose=0 if TINY else 2)
        print({k: metrics[k] for k in ("params", "epochs", "seconds", "train_accuracy", "val_accuracy",
                                        "test_accuracy")})
        '''),
        md("""
        ## 3. Convert to streaming

        `to_streaming` rebuilds the trained graph so that each call consumes `frames_per_step` new frames and keeps
        what it needs from the past in state buffers. With external state the states are named inputs and outputs
        (`<layer>_<state>`, e.g. `conv0_buffer`), which is what a TFLite app binds by name. From a reset state, the posterior after the
        first full second equals the whole-clip model.
        """),
        code('''
        from tfx_ext import Mode
        from tfx_ext.data import load_speech_commands_arrays
        from tfx_ext.streaming.convert import min_frames_per_step, to_streaming

        STEP = min_frames_per_step(model)  # the model's total time stride (1 frame for ds_cnn)
        stream = to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=1, frames_per_step=STEP)
        print(f"{STEP} frame(s) = {20 * STEP} ms per step; states: {stream.state_names}")

        x_test, y_test, _ = load_speech_commands_arrays(DATA_ROOT, "test")
        clip = x_test[0]
        usable = clip.shape[0] - clip.shape[0] % STEP
        streamed = kws.stream_posteriors(stream, clip[:usable])[-1]
        whole = np.asarray(model(clip[None, :usable], training=False))[0]  # the trained model on the whole clip
        print(f"max |streamed - whole clip| = {np.max(np.abs(streamed - whole)):.2e}")
        '''),
        md("""
        ## 4. Stream a long recording (Keras)

        `long_stream` concatenates test clips into one recording; `stream_posteriors` runs the streaming model over
        it step by step. Shaded spans mark the spoken words.
        """),
        code('''
        waveform, segments = kws.long_stream(DATA_ROOT, num_clips=STREAM_CLIPS, seed=0)
        stream_features = np.asarray(compute_features(waveform))
        stream_features = stream_features[: stream_features.shape[0] - stream_features.shape[0] % STEP]
        keras_posteriors = kws.stream_posteriors(stream, stream_features)
        show_png(kws.plot_posteriors(keras_posteriors, NAMES, WORK / "posteriors_keras.png", step_s=0.02 * STEP,
                                     segments=segments, waveform=waveform, title="Streaming posteriors (Keras)"))
        '''),
        md("""
        ## 5. Export to TFLite: float32 and int8

        `to_tflite` exports a signature whose inputs and outputs are named after the Keras inputs, outputs and
        states. We export the external-state streaming model three ways:

        * float32;
        * `quantize="dynamic"`: int8 weights, float activations (the converter leaves weights under 1,024 values in
          float, so the tiny model does not shrink);
        * `quantize="int8"`: full integer (weights, activations, inputs, outputs and streaming states in int8), what
          microcontrollers and NPUs run. Its activation ranges are calibrated on real streams: the float streaming
          model is run over training clips and every step's inputs and states become calibration samples
          (`streaming_calibration_data`). `TFLiteModel` quantizes float inputs and dequantizes outputs for us.
        """),
        code('''
        from tfx_ext.lite import TFLiteModel, to_tflite
        from tfx_ext.lite.int8 import streaming_calibration_data

        from tfx_ext.data import load_speech_commands

        # One shuffled batch of training clips (reading only those clips, not the whole split).
        batch, _ = next(iter(load_speech_commands(DATA_ROOT, "train", batch_size=CALIBRATION_CLIPS, shuffle=True)))
        calibration_clips = np.asarray(batch)[:, : batch.shape[1] // STEP * STEP]
        calibration = streaming_calibration_data(stream, calibration_clips)
        print(f"{len(calibration)} calibration samples from {len(calibration_clips)} streamed clips")

        EXPORTS = {
            "float32": to_tflite(stream.model, WORK / "kws_stream_float.tflite"),
            "dynamic": to_tflite(stream.model, WORK / "kws_stream_dynamic.tflite", quantize="dynamic"),
            "int8": to_tflite(stream.model, WORK / "kws_stream_int8.tflite", quantize="int8",
                              representative_data=calibration),
        }
        lite_models = {name: TFLiteModel(flatbuffer) for name, flatbuffer in EXPORTS.items()}
        for name, lite in lite_models.items():
            dtypes = sorted({np.dtype(d["dtype"]).name for d in lite.input_details.values()})
            print(f"{name:>8}: {lite.size_bytes:>8,} bytes; inputs {lite.input_names} ({', '.join(dtypes)})")
        '''),
        md("""
        ## 6. Run it in LiteRT over the long recording

        One interpreter call per step: the features of the new frames plus the states from the previous call, all
        bound by name; the returned states are fed back. This loop is what an app does on the device.
        """),
        code('''
        def stream_lite(lite, features, step=STEP):
            """Streams (frames, bins) features through a TFLite streaming model; returns (posteriors, seconds/step)."""
            states = [n for n in lite.input_names if n in lite.output_names]
            (feature_name,) = [n for n in lite.input_names if n not in states]
            (output_name,) = [n for n in lite.output_names if n not in states]
            # Float zeros: TFLiteModel quantizes float inputs of an int8 model (zero -> the tensor's zero point).
            state = {n: np.zeros(lite.input_details[n]["shape"], np.float32) for n in states}
            outputs, seconds = [], []
            for start in range(0, features.shape[0] - features.shape[0] % step, step):
                begin = time.perf_counter()
                result = lite({feature_name: features[None, start:start + step], **state})
                seconds.append(time.perf_counter() - begin)
                state = {n: result[n] for n in states}
                outputs.append(result[output_name].reshape(-1))
            return np.stack(outputs), float(np.median(seconds))


        lite_posteriors, lite_latency = {}, {}
        for name, lite in lite_models.items():
            lite_posteriors[name], lite_latency[name] = stream_lite(lite, stream_features)
        show_png(kws.plot_posteriors(lite_posteriors["float32"], NAMES, WORK / "posteriors_tflite.png",
                                     step_s=0.02 * STEP, segments=segments, waveform=waveform,
                                     title="Streaming posteriors (float TFLite in LiteRT)"))
        print(f"max |LiteRT float - Keras| = {np.max(np.abs(lite_posteriors['float32'] - keras_posteriors)):.2e}")
        '''),
        md("""
        ## 7. Float vs int8

        Size, step latency, agreement with the Keras posteriors over the long recording, and test accuracy when
        each test clip is streamed from a reset state (the posterior after its last frame is the prediction).
        """),
        code('''
        rng = np.random.default_rng(0)
        eval_index = rng.permutation(len(x_test))[:MAX_EVAL_CLIPS]


        def clip_accuracy(lite):
            correct = 0
            for i in eval_index:
                posteriors, _ = stream_lite(lite, x_test[i])
                correct += int(np.argmax(posteriors[-1]) == y_test[i])
            return correct / len(eval_index)


        keras_top = np.argmax(keras_posteriors, -1)
        rows = []
        for name, lite in lite_models.items():
            rows.append({
                "model": name,
                "bytes": lite.size_bytes,
                "ms / step": 1000 * lite_latency[name],
                "max |p - p_keras|": float(np.max(np.abs(lite_posteriors[name] - keras_posteriors))),
                "top-1 agreement": float(np.mean(np.argmax(lite_posteriors[name], -1) == keras_top)),
                f"accuracy ({len(eval_index)} clips)": clip_accuracy(lite),
            })
        for row in rows:
            print(" | ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items()))
        '''),
        code('''
        quantized = "int8"
        times = 0.03 + 0.02 * STEP * np.arange(keras_posteriors.shape[0])
        keywords = [k for k, n in enumerate(NAMES) if not n.startswith("_")]
        fig, axes = plt.subplots(2, 1, figsize=(12, 5), sharex=True)
        for k in keywords:
            line, = axes[0].plot(times, lite_posteriors["float32"][:, k], lw=1.2, label=NAMES[k])
            axes[0].plot(times, lite_posteriors[quantized][:, k], "--", lw=1.0, color=line.get_color())
        for start, end, label in segments:
            axes[0].axvspan(start, end, color="0.93", zorder=0)
            axes[0].text((start + end) / 2, 1.02, label, ha="center", fontsize=8)
        axes[0].set(ylabel="posterior", ylim=(0, 1.1), title="float32 (solid) vs int8 (dashed), in LiteRT")
        axes[0].legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=7)
        axes[1].plot(times, np.max(np.abs(lite_posteriors[quantized] - lite_posteriors["float32"]), -1), lw=0.8)
        axes[1].set(xlabel="time (s)", ylabel="max |int8 - float|")
        fig.tight_layout()
        show(fig)
        '''),
        md("""
        Next steps: `tfx-ext kws convert` does steps 3 and 5 from the command line; `tfx-ext demo` runs the whole
        pipeline offline and writes a report.
        """),
    ]
    return cells


# --------------------------------------------------------------------------------------------- layers_tour
def layers_tour() -> list:
    cells = header(
        "layers_tour.ipynb",
        "A tour of the tfx-ext layers: temporal sparsity, tensor dropout, hypernetworks",
        "Three layer families, each trained on a small task, measured, and exported to TFLite: "
        "`DeltaActivation` (sparsity over training and the multiply-accumulates a delta engine saves), tensor "
        "layers with tensor dropout (robustness to input noise) and hypernetwork layers (parameter count vs "
        "accuracy).",
    )
    cells += [
        code('''
        if TINY:
            SYNTH = dict(speakers=5, clips_per_speaker=1)
            KWS_KWARGS = {"width": 8, "num_blocks": 1}
            KWS_EPOCHS, DELTA_EPOCHS = 2, 2
            DIGIT_EPOCHS = 3
            DROPOUT_RATES = (0.0, 0.25)
            EMBEDDING_DIMS = (2, 8)
        else:
            SYNTH = dict(speakers=36, clips_per_speaker=3)
            KWS_KWARGS = {"width": 32, "num_blocks": 2}
            KWS_EPOCHS, DELTA_EPOCHS = 15, 8
            DIGIT_EPOCHS = 30
            DROPOUT_RATES = (0.0, 0.25, 0.5)
            EMBEDDING_DIMS = (1, 2, 4, 8, 16, 32)
        '''),
        code(SETUP_PLOTS),
        code('''
        from tfx_ext.lite import TFLiteModel, to_tflite


        def export_and_check(model, x, path):
            """Exports `model` to float TFLite, runs one example in LiteRT; returns (bytes, max |LiteRT - Keras|)."""
            lite = TFLiteModel(to_tflite(model, path))
            x = np.asarray(x[:1], np.float32)
            got = lite({lite.input_names[0]: x})[lite.output_names[0]]
            want = np.asarray(model(x, training=False))
            return lite.size_bytes, float(np.max(np.abs(got - want)))
        '''),
        md("""
        ## 1. DeltaActivation: temporal sparsity

        A delta engine (a streaming accelerator) only multiplies the *changes* of a layer's input from one frame to
        the next. `DeltaActivation` rounds activations to a step (`method="quantize"`) so that consecutive frames
        often give identical values, and an L1 penalty on the deltas (weighted by what each costs in the next layer)
        pushes more of them to zero. We train a small keyword model on synthesized keywords, insert a
        `DeltaActivation` after every hidden ReLU (`insert_delta_activations`, weights copied) and fine-tune.
        """),
        code('''
        from tfx_ext.data import load_speech_commands_arrays
        from tfx_ext.apps.synthesis import synthesize_keywords
        from tfx_ext.transforms.temporal_sparsity import delta_mac_savings, insert_delta_activations, sparsity_report
        from tfx_ext.models import get_model

        root = synthesize_keywords(WORK / "keywords", engine="auto", seed=0, progress=not TINY, **SYNTH)["root"]
        x_train, y_train, _ = load_speech_commands_arrays(root, "train")
        x_test, y_test, _ = load_speech_commands_arrays(root, "test")
        print("train", x_train.shape, "test", x_test.shape)

        keras.utils.set_random_seed(0)
        base = get_model("ds_cnn", x_train.shape[1:], 12, **KWS_KWARGS)
        base.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                     metrics=["accuracy"])
        base.fit(x_train, y_train, epochs=KWS_EPOCHS, batch_size=32, verbose=0)
        print("baseline test accuracy:", base.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])
        '''),
        code('''
        delta_model = insert_delta_activations(base, threshold=0.1, method="quantize", penalty=2e-5)
        delta_model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
        names = [name for name in sparsity_report(delta_model, [x_test])]
        curve = {"epoch": [], "accuracy": [], "savings": [], **{name: [] for name in names}}
        for epoch in range(DELTA_EPOCHS + 1):
            if epoch:
                delta_model.fit(x_train, y_train, epochs=1, batch_size=32, verbose=0)
            report = sparsity_report(delta_model, [x_test])
            curve["epoch"].append(epoch)
            curve["accuracy"].append(delta_model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])
            curve["savings"].append(delta_mac_savings(delta_model, [x_test])["savings"])
            for name in names:
                curve[name].append(report[name]["temporal_sparsity"])
        print({name: (report[name]["consumer"], report[name]["fan_out"]) for name in names})
        print(f"MAC savings after fine-tuning: {curve['savings'][-1]:.1%}, test accuracy {curve['accuracy'][-1]:.3f}")
        '''),
        code('''
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
        for ax in axes:
            ax.xaxis.get_major_locator().set_params(integer=True)
        for name in names:
            axes[0].plot(curve["epoch"], curve[name], "o-", label=name)
        axes[0].set(xlabel="fine-tuning epoch", ylabel="temporal sparsity (zero deltas)", ylim=(0, 1),
                    title="Sparsity over training (test clips)")
        axes[0].legend(fontsize=8)
        axes[1].plot(curve["epoch"], curve["savings"], "o-", label="MACs saved by a delta engine")
        axes[1].plot(curve["epoch"], curve["accuracy"], "s--", label="test accuracy")
        axes[1].set(xlabel="fine-tuning epoch", ylim=(0, 1), title="MAC savings vs accuracy")
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        show(fig)
        '''),
        md("""
        Export: the inference form (`to_non_streaming`) exports like any Keras model; it could also be converted to
        streaming first (`DeltaActivation` keeps the last transmitted value as its state).
        """),
        code('''
        from tfx_ext.streaming.convert import to_non_streaming

        size, error = export_and_check(to_non_streaming(delta_model), x_test, WORK / "delta_ds_cnn.tflite")
        print(f"DeltaActivation model: {size:,} bytes, max |LiteRT - Keras| = {error:.2e}")
        '''),
        md("""
        ## 2. Tensor layers and tensor dropout: robustness

        `TensorContraction` projects each mode of a feature map to a smaller size and `TensorRegression` maps the
        result to the classes through a Tucker-factorized weight, never flattening the feature map. Tensor dropout
        (`rank_dropout=p`) drops rank components of the factorization during training (a mask per sample here),
        rescaling the kept ones so inference needs no change. On scikit-learn's 8x8 digits we compare models
        trained with different rates by their test accuracy as Gaussian noise is added to the inputs.
        """),
        code('''
        from tfx_ext.data import load_digits
        from tfx_ext.layers.tensor import TensorContraction, TensorRegression

        (xd, yd), (xd_test, yd_test) = load_digits(seed=0)
        LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


        def tensor_model(rate):
            keras.utils.set_random_seed(0)
            inputs = keras.Input((8, 8, 1))
            h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
            h = TensorContraction((6, 6, 12), activation="relu")(h)
            outputs = TensorRegression(10, factorization="tucker", rank=1.0, rank_dropout=rate, mask_per_sample=True,
                                       seed=2)(h)
            model = keras.Model(inputs, outputs, name=f"trl_dropout_{rate}")
            model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=LOSS, metrics=["accuracy"])
            return model


        NOISE = (0.0, 0.1, 0.2, 0.3, 0.5)
        noise_rng = np.random.default_rng(0)
        noises = {s: noise_rng.normal(scale=s, size=xd_test.shape).astype("float32") for s in NOISE}
        tensor_models, robustness = {}, {}
        for rate in DROPOUT_RATES:
            model = tensor_model(rate)
            model.fit(xd, yd, epochs=DIGIT_EPOCHS, batch_size=32, verbose=0)
            tensor_models[rate] = model
            robustness[rate] = [model.evaluate(xd_test + noises[s], yd_test, verbose=0, return_dict=True)["accuracy"]
                                for s in NOISE]
            print(f"rank_dropout={rate}: {model.count_params():,} parameters, accuracy by noise level",
                  [round(a, 3) for a in robustness[rate]])
        '''),
        code('''
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for rate, accuracy in robustness.items():
            ax.plot(NOISE, accuracy, "o-", label=f"rank_dropout={rate}")
        ax.set(xlabel="input noise (std, pixels in [0, 1])", ylabel="test accuracy", ylim=(0, 1),
               title="Tensor dropout: robustness to input noise")
        ax.legend()
        ax.grid(alpha=0.3)
        show(fig)
        rate = max(DROPOUT_RATES)
        size, error = export_and_check(tensor_models[rate], xd_test, WORK / "tensor_regression.tflite")
        print(f"rank_dropout={rate} model: {size:,} bytes, max |LiteRT - Keras| = {error:.2e} (no dropout at inference)")
        '''),
        md("""
        ## 3. Hypernetworks: parameter count vs accuracy

        A `HyperNetwork` generates kernel chunks from small embeddings; `HyperDense` layers tile their kernels from
        chunks of one shared generator, so the number of trainable parameters depends on the embedding size rather
        than on the layer widths. We train the same two-hidden-layer MLP on digits with plain `Dense` layers and
        with `HyperDense` layers at several embedding sizes.
        """),
        code('''
        from tfx_ext.transforms.baking import bake, hyper_parameter_report
        from tfx_ext.layers.hyper_network import HyperNetwork
        from tfx_ext.layers.hyper_layers import HyperDense

        xf, xf_test = xd.reshape(len(xd), -1), xd_test.reshape(len(xd_test), -1)


        def mlp(embedding_dim=None):
            keras.utils.set_random_seed(0)
            inputs = keras.Input((64,), name="pixels")
            if embedding_dim is None:
                h = keras.layers.Dense(64, activation="relu", name="hidden1")(inputs)
                h = keras.layers.Dense(64, activation="relu", name="hidden2")(h)
            else:
                hnet = HyperNetwork(embedding_dim=embedding_dim, chunk_shape=(16, 16), name="hypernetwork")
                h = HyperDense(64, hypernetwork=hnet, activation="relu", name="hidden1")(inputs)
                h = HyperDense(64, hypernetwork=hnet, activation="relu", name="hidden2")(h)
            model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
            model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=LOSS, metrics=["accuracy"])
            return model


        hyper_results, hyper_models = {}, {}
        for dim in (None, *EMBEDDING_DIMS):
            model = mlp(dim)
            model.fit(xf, yd, epochs=DIGIT_EPOCHS, batch_size=32, verbose=0)
            accuracy = model.evaluate(xf_test, yd_test, verbose=0, return_dict=True)["accuracy"]
            hyper_results[dim] = (hyper_parameter_report(model), accuracy)
            hyper_models[dim] = model
            label = "plain Dense" if dim is None else f"embedding_dim={dim}"
            print(f"{label:>18}: {hyper_results[dim][0]['total']:>6,} trainable parameters, accuracy {accuracy:.3f}")
        '''),
        code('''
        fig, ax = plt.subplots(figsize=(6, 3.6))
        dims = [d for d in hyper_results if d is not None]
        ax.plot([hyper_results[d][0]["total"] for d in dims], [hyper_results[d][1] for d in dims], "o-",
                label="HyperDense")
        for d in dims:
            ax.annotate(f"z={d}", (hyper_results[d][0]["total"], hyper_results[d][1]), fontsize=8,
                        xytext=(3, -10), textcoords="offset points")
        ax.plot([hyper_results[None][0]["total"]], [hyper_results[None][1]], "s", color="k", label="plain Dense")
        ax.set(xscale="log", xlabel="trainable parameters", ylabel="test accuracy", ylim=(0, 1),
               title="Hypernetwork: parameters vs accuracy")
        ax.legend()
        ax.grid(alpha=0.3)
        show(fig)
        '''),
        md("""
        Export: `bake` replaces the hyper layers by plain `Dense` layers holding the generated kernels (outputs
        unchanged), which TFLite, streaming conversion and any Keras tool accept.
        """),
        code('''
        dim = max(EMBEDDING_DIMS)
        baked = bake(hyper_models[dim])
        print("baked layers:", [type(layer).__name__ for layer in baked.layers])
        print(f"max |baked - hyper| = {np.max(np.abs(baked(xf_test[:8]) - hyper_models[dim](xf_test[:8]))):.2e}")
        size, error = export_and_check(baked, xf_test, WORK / "hyper_mlp.tflite")
        print(f"embedding_dim={dim} model: {size:,} bytes, max |LiteRT - Keras| = {error:.2e}")
        '''),
    ]
    return cells


# --------------------------------------------------------------------------------------------- federated
def federated() -> list:
    cells = header(
        "federated.ipynb",
        "Federated learning: non-IID clients, FedAvg vs FedMA vs client-side matching, secure aggregation",
        "Splits scikit-learn's digits over clients with a Dirichlet label skew, trains a small CNN with FedAvg, "
        "FedMA (server-side matched averaging) and client-side matching, each sum-based algorithm with and without "
        "secure aggregation (SecAgg+ with real cryptography), and compares learning curves and bytes on the wire.",
    )
    cells += [
        code('''
        if TINY:
            CLIENTS, CLIENTS_PER_ROUND, ROUNDS, LOCAL_EPOCHS = 6, 3, 3, 1  # run_fedma needs >= 3 rounds here
            WIDTHS = (4, 8)
        else:
            CLIENTS, CLIENTS_PER_ROUND, ROUNDS, LOCAL_EPOCHS = 50, 10, 30, 2
            WIDTHS = (16, 32)
        ALPHA = 0.3  # Dirichlet concentration: smaller = more skewed label mixes per client
        '''),
        code(SETUP_PLOTS),
        md("""
        ## 1. Non-IID clients

        `ClientData.dirichlet` gives each client a label mix drawn from Dirichlet(alpha): with a small alpha most
        clients see only a few digits.
        """),
        code('''
        from tfx_ext.data import load_digits
        from tfx_ext.federated import ClientData, FedAvg, plot_history, plot_label_distribution, simulate

        (x, y), (x_test, y_test) = load_digits(seed=0)
        clients = ClientData.dirichlet(x, y, CLIENTS, alpha=ALPHA, seed=0)
        print(f"{len(clients)} clients, sizes {clients.sizes().min()}..{clients.sizes().max()}")
        show(plot_label_distribution(clients, num_classes=10))
        '''),
        md("""
        ## 2. The model and the runs

        A small CNN (two convolutions and a classifier). Every run starts from the same weights and samples the same
        clients each round (`seed`). FedMA matches the units (filters, neurons) of the clients' models before
        averaging them, which needs each client's weights at the server; client-side matching lets each client
        align its units to the global model, so the server only needs a *sum* and secure aggregation applies.
        """),
        code('''
        from tfx_ext.federated.fedma import ClientSideMatching, FedMA, run_fedma
        from tfx_ext.federated import Payload
        from tfx_ext.federated.secure import SecAgg

        LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


        def model_fn():
            keras.utils.set_random_seed(0)
            return keras.Sequential([
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(WIDTHS[0], 3, activation="relu", name="conv1"),
                keras.layers.Conv2D(WIDTHS[1], 3, activation="relu", name="conv2"),
                keras.layers.Flatten(name="flatten"),
                keras.layers.Dense(10, name="logits"),
            ], name="digits_cnn")


        COMMON = dict(rounds=ROUNDS, clients_per_round=CLIENTS_PER_ROUND, local_epochs=LOCAL_EPOCHS, batch_size=16,
                      loss=LOSS, client_optimizer=lambda: keras.optimizers.SGD(0.1), eval_data=(x_test, y_test),
                      seed=0, progress=False)
        RUNS = {
            "FedAvg": dict(aggregator=FedAvg()),
            "FedAvg + SecAgg+": dict(aggregator=FedAvg(), secure=SecAgg(variant="secagg+", clip=2.0, seed=0)),
            "FedMA": dict(aggregator=FedMA(model_fn, class_counts=clients)),
            "client-side matching": dict(aggregator=ClientSideMatching(model_fn, class_counts=clients)),
            "client-side matching + SecAgg+": dict(aggregator=ClientSideMatching(model_fn, class_counts=clients),
                                                   secure=SecAgg(variant="secagg+", clip=2.0, seed=0)),
        }
        histories = {}
        for name, settings in RUNS.items():
            start = time.perf_counter()
            histories[name], _ = simulate(model_fn, clients, **COMMON, **settings)
            print(f"{name:>36}: eval accuracy {histories[name].last('eval_accuracy'):.3f} "
                  f"({time.perf_counter() - start:.1f} s)")

        # The FedMA paper's schedule: clients start from their own random initializations; one layer is matched,
        # frozen and the rest retrained per round, then ordinary communication rounds follow.
        start = time.perf_counter()
        name = "FedMA layer-wise, independent inits"
        histories[name], _ = run_fedma(model_fn, clients, rounds=ROUNDS, local_epochs=LOCAL_EPOCHS, batch_size=16,
                                       loss=LOSS, client_optimizer=lambda: keras.optimizers.SGD(0.1),
                                       eval_data=(x_test, y_test), clients_per_round=CLIENTS_PER_ROUND,
                                       independent_init=True, seed=0)
        print(f"{name:>36}: eval accuracy {histories[name].last('eval_accuracy'):.3f} "
              f"({time.perf_counter() - start:.1f} s)")
        '''),
        md("""
        How far did matching move the units? When every client starts from the broadcast global model, its units
        stay where they were and matching finds the identity permutation: FedMA and client-side matching then equal
        FedAvg with class-count weights on the output layer (their curves coincide). Matching matters when the
        clients' units are not aligned, as with independent initializations in the layer-wise schedule.
        """),
        code('''
        print("FedMA, fraction of client units moved per round:", histories["FedMA"]["aggregator/moved_fraction"])
        layer_wise = histories["FedMA layer-wise, independent inits"]
        print("layer-wise FedMA:", [(r["stage"], r.get("moved_fraction")) for r in layer_wise.rounds[:3]])
        '''),
        md("""
        Server-side FedMA needs every client's weights, so secure aggregation refuses it (with a pointer to
        client-side matching):
        """),
        code('''
        from tfx_ext.errors import FederatedError

        try:
            simulate(model_fn, clients, **{**COMMON, "rounds": 1}, aggregator=FedMA(model_fn), secure=SecAgg())
        except FederatedError as error:
            print(f"{type(error).__name__}: {error}")
        '''),
        md("""
        ## 3. Learning curves and bytes

        Bytes up per client and round: the plain runs send the model update (float32); with SecAgg+ each client
        also exchanges keys and secret shares with its neighbours, and its update travels as masked 64-bit words
        (`SecAgg(bits=32)` halves that at a coarser fixed-point step).
        """),
        code('''
        def bytes_up_per_client(history):
            per_round = [r["secure/bytes_up_per_client"] if "secure/bytes_up_per_client" in r
                         else r["bytes_up"] / CLIENTS_PER_ROUND for r in history.rounds]
            return float(np.mean(per_round))


        fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
        for name, history in histories.items():
            points = [(r["round"], r["eval_accuracy"]) for r in history.rounds if r.get("eval_accuracy") is not None]
            secure = "SecAgg" in name  # dashed: they coincide with their plain runs (same sums, up to ~1e-6)
            axes[0].plot(*zip(*points), "x--" if secure else "o-", markersize=4, lw=1 if secure else 1.6, label=name)
        axes[0].set(xlabel="round", ylabel="test accuracy", title="Learning curves")
        axes[0].legend(fontsize=8)
        axes[0].grid(alpha=0.3)
        names = list(histories)
        axes[1].barh(names, [bytes_up_per_client(histories[n]) / 1024 for n in names])
        axes[1].set(xlabel="KiB uploaded per client per round", title="Bytes on the wire")
        fig.tight_layout()
        show(fig)
        show(plot_history(histories["client-side matching + SecAgg+"], title="client-side matching + SecAgg+"))
        '''),
        md("""
        ## 4. What secure aggregation did

        Each SecAgg+ round runs the real protocol in-process (X25519 key agreement, AES-GCM encrypted Shamir shares,
        AES-CTR masks). The server's transcript records which shares it asked for: for every surviving client only
        the shares of its self-mask seed, for every dropped client only the shares of its pairwise key, never both.
        The per-round metrics say how many clients survived, how exact the decoded sum was and what it cost; the
        `sim_only_*` ones (relative error, clipped fraction, capped weights) are computed by the simulator from the
        clients' plaintext, which a real server never sees.
        """),
        code('''
        from collections import Counter

        SHARE_KINDS = {"b": "self-mask seed shares (survivors)", "s": "mask-key shares (dropped clients)"}


        def transcript_summary(result):
            """What the server learned in one round: share kinds revealed, per target client and in all."""
            kinds = Counter(kind for _, _, kind in result.transcript)
            targets = {kind: sorted({t for _, t, k in result.transcript if k == kind}) for kind in kinds}
            return {SHARE_KINDS[k]: f"{n} shares about clients {targets[k]}" for k, n in kinds.items()}


        rounds = histories["client-side matching + SecAgg+"].rounds
        keys = ("secure/survivors", "secure/dropped", "secure/threshold", "secure/degree",
                "secure/sim_only_relative_error", "secure/bytes_up_per_client", "secure/time_critical_path_s")
        for r in rounds if len(rounds) <= 3 else rounds[:2] + rounds[-1:]:
            print(f"round {r['round']}: " + ", ".join(f"{k.split('/')[1]}={r[k]:.3g}" for k in keys))
        result = RUNS["client-side matching + SecAgg+"]["secure"].last_result
        print("last round: survivors", result.survivors, "| dropped per stage", result.dropped)
        print("transcript:", transcript_summary(result))
        '''),
        md("""
        Dropouts: the same protocol on 12 clients where each drops with probability 0.3 somewhere in the round. The
        sum over the survivors is still recovered, exactly up to the fixed-point encoding (the dropped clients'
        pairwise masks are rebuilt from the shares the survivors hold).
        """),
        code('''
        rng = np.random.default_rng(0)
        payloads = [Payload([rng.normal(scale=0.1, size=200) * n], float(n)) for n in rng.integers(5, 50, size=12)]
        secure = SecAgg(variant="secagg", dropout_rate=0.3, threshold=0.5, seed=2)
        total, metrics = secure.secure_sum(payloads, [f"client{k}" for k in range(12)], np.random.default_rng(0))
        survivors = metrics["survivor_ids"]
        plain = sum(payloads[int(c[6:])].arrays[0] for c in survivors)
        print(f"survivors {len(survivors)}/12, threshold {metrics['threshold']}, "
              f"max |secure sum - plain sum| = {np.max(np.abs(total.arrays[0] - plain)):.2e}")
        result = secure.last_result
        print("dropped per stage:", {stage: list(ids) for stage, ids in result.dropped.items() if ids})
        print("transcript:", transcript_summary(result))
        print({k: round(v, 4) for k, v in metrics.items() if k.startswith(("bytes", "server_bytes", "time_"))})
        '''),
        md("""
        ## 5. LiteRT clients: train where you deploy

        What a phone runs is a `.tflite` with a training signature. `client_runtime="litert"` exports the model
        once (`tfx_ext.to_trainable_tflite`: `train`, `infer`, `get_weights`, `set_weights` on builtin ops) and
        trains every sampled client through it. Signatures have a fixed batch, so both runs below use
        `clients.whole_batches(16)`: then the LiteRT clients' global model equals the Keras clients' one.
        """),
        code('''
        whole = clients.whole_batches(16)
        litert_settings = dict(COMMON, rounds=min(ROUNDS, 2), aggregator=FedAvg())
        runtimes = {}
        for runtime in ("keras", "litert"):
            history, model = simulate(model_fn, whole, client_runtime=runtime, **litert_settings)
            runtimes[runtime] = (history, model.get_weights())
            print(f"{runtime:>6} clients: eval accuracy {history.last('eval_accuracy'):.3f}, "
                  f"{history.last('client_updates_per_s'):.1f} client updates/s")
        gap = max(float(np.max(np.abs(a - b))) for a, b in zip(runtimes["keras"][1], runtimes["litert"][1]))
        print(f"max |LiteRT global weights - Keras global weights| = {gap:.1e}")
        '''),
        md("""
        Next steps: `tfx_ext.federated.fedma.run_fedma` runs the FedMA paper's layer-wise schedule (match one layer,
        freeze it, retrain the rest); `tfx-ext federated simulate` runs these experiments from the command line.
        """),
    ]
    return cells


NOTEBOOKS = {"streaming_kws.ipynb": streaming_kws, "layers_tour.ipynb": layers_tour, "federated.ipynb": federated}


def build(directory=HERE) -> list[pathlib.Path]:
    written = []
    for name, cells in NOTEBOOKS.items():
        notebook = nbformat.v4.new_notebook(cells=cells())
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        notebook.metadata["language_info"] = {"name": "python"}
        notebook.metadata["colab"] = {"provenance": [], "toc_visible": True}
        for index, cell in enumerate(notebook.cells):  # stable ids: regenerating gives identical files
            cell["id"] = f"{pathlib.Path(name).stem[:12]}-{index:02d}"
        nbformat.validate(notebook)
        path = pathlib.Path(directory) / name
        nbformat.write(notebook, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in build():
        print("wrote", path)
