"""The end-to-end demo: keyword data -> trained model -> streaming -> TFLite in LiteRT -> federated run -> report.

Each stage is a function of the run's `DemoConfig`, a `DemoContext` (what earlier stages produced: the data root and
label names, the trained model, the test split, the streamed recording) and the `Report`; it returns a report
`Section`. The report is rewritten after every stage, so an interrupted run leaves a readable report of what
finished. Nothing here downloads: the keyword data are synthesized (espeak-ng, binary or pip wheel; numpy patterns only
as a loudly reported last resort)
into a cache directory reused across runs.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Callable

import keras
import numpy as np

from tfx_ext._validate import check_choice, check_int
from tfx_ext.apps import kws
from tfx_ext.apps.federated_experiments import (
    digits_cnn,
    load_dataset,
    make_client_data,
    run_federated_demo,
)
from tfx_ext.apps.plots import confusion_matrix, plot_confusion_matrix, plot_curves
from tfx_ext.apps.report import Report, Section
from tfx_ext.apps.synthesis import DEFAULT_WORDS, NUMPY_FALLBACK_WARNING, synthesize_keywords
from tfx_ext.data import (
    LABEL_VIEWS,
    WORDS_35,
    compute_features,
    label_names,
    load_speech_commands,
    speech_commands_info,
)
from tfx_ext.federated import ClientSideMatching, History, SecAgg, simulate
from tfx_ext.lite.convert import to_tflite
from tfx_ext.lite.runtime import TFLiteModel
from tfx_ext.lite.int8 import streaming_calibration_data
from tfx_ext.lite.verification import verify
from tfx_ext.streaming.contract import Mode
from tfx_ext.streaming.convert import min_frames_per_step, to_streaming
from tfx_ext.streaming.runner import StreamingRunner


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run; `DemoConfig.tiny()` is the seconds-long variant the tests run.

    Args:
        output_dir: where the report, figures and models go.
        cache_dir: where the synthesized data set is kept between runs (default `<output_dir>/../.cache`).
        speakers: synthetic speakers per word.
        clips_per_speaker: clips per speaker and word.
        engine: keyword synthesis engine ("auto", "espeak", "numpy").
        model: reference KWS model name (`tfx_ext.models.MODELS`).
        model_kwargs: its size knobs.
        epochs: training epochs.
        batch_size: training batch size.
        stream_clips: clips concatenated into the long stream that is run frame by frame.
        federated_rounds: rounds of the federated stage (0 skips it).
        federated_clients: clients of the federated stage.
        seed: seeds data synthesis, training and the federated run.
        labels: the Speech Commands label view trained on (`"12"`: ten command words, `_silence_`, `_unknown_`;
            `"35"`: the 35 words, synthesized for it).
    """

    output_dir: str = "demo_output"
    cache_dir: str | None = None
    speakers: int = 108
    clips_per_speaker: int = 1
    engine: str = "auto"
    model: str = "ds_cnn"
    model_kwargs: dict = dataclasses.field(default_factory=lambda: {"width": 32})
    epochs: int = 30
    batch_size: int = 64
    stream_clips: int = 8
    federated_rounds: int = 10
    federated_clients: int = 20
    seed: int = 0
    labels: str = "12"

    def __post_init__(self):
        for name in ("speakers", "clips_per_speaker", "epochs", "batch_size", "stream_clips", "federated_clients"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("federated_rounds", self.federated_rounds, minimum=0)
        check_choice("labels", self.labels, LABEL_VIEWS)

    @classmethod
    def tiny(cls, output_dir: str, **overrides) -> "DemoConfig":
        """A run of a few tens of seconds for tests: few clips, a narrow model, one or two epochs."""
        settings = dict(
            output_dir=output_dir, speakers=5, clips_per_speaker=2, model_kwargs={"width": 8, "num_blocks": 1},
            epochs=2, batch_size=16, stream_clips=3, federated_rounds=2, federated_clients=4,
        )
        settings.update(overrides)
        return cls(**settings)

    @property
    def data_root(self) -> pathlib.Path:
        cache = pathlib.Path(self.cache_dir) if self.cache_dir else pathlib.Path(self.output_dir).parent / ".cache"
        view = "" if self.labels == "12" else f"_words{self.labels}"  # The 12-label data set keeps its old name.
        return cache / f"keywords_{self.engine}_{self.speakers}x{self.clips_per_speaker}_seed{self.seed}{view}"

    @property
    def words(self) -> tuple[str, ...]:
        """The words synthesized: every word the label view names (plus unknown words for the 12-label view)."""
        return DEFAULT_WORDS if self.labels == "12" else WORDS_35


@dataclasses.dataclass(frozen=True)
class StreamRun:
    """The long recording the Streaming stage streamed and its external-state runner (the TFLite stage exports
    that runner's model and compares the LiteRT posteriors with the Keras ones)."""

    step: int  # Frames per step.
    features: np.ndarray  # (frames, bins), a whole number of steps.
    segments: list  # (start_s, end_s, label name) of each clip in the recording.
    waveform: np.ndarray
    keras_posteriors: np.ndarray  # (steps, num_classes) of the internal-state Keras model.
    external_runner: StreamingRunner


def _set_by(stage: str):
    """A context field that starts empty and is filled in by the stage titled `stage`."""
    return dataclasses.field(default=None, metadata={"set_by": stage})


@dataclasses.dataclass
class DemoContext:
    """What the stages hand on: set up by `run_demo` from the config, then filled in stage by stage."""

    data_root: pathlib.Path
    label_names: tuple[str, ...]
    data_info: dict | None = _set_by("Keyword data")
    model: keras.Model | None = _set_by("Train")
    train_metrics: dict | None = _set_by("Train")
    test_split: tuple[np.ndarray, np.ndarray] | None = _set_by("Train")  # Features and labels of the test split.
    stream: StreamRun | None = _set_by("Streaming")

    @classmethod
    def for_config(cls, config: DemoConfig) -> "DemoContext":
        return cls(data_root=config.data_root, label_names=label_names(config.labels))

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def need(self, name: str):
        """The field `name`; a RuntimeError naming the stage that fills it in when that stage has not run."""
        value = getattr(self, name)
        if value is None:
            (field,) = [f for f in dataclasses.fields(self) if f.name == name]
            raise RuntimeError(f"This demo stage needs `{name}`, which the {field.metadata['set_by']!r} stage "
                               "sets; run the stages in the order of `STAGES`.")
        return value


Stage = Callable[[DemoConfig, DemoContext, Report], Section]


def stage_data(config: DemoConfig, context: DemoContext, report: Report) -> Section:
    """Synthesizes (or reuses) the keyword data set in the Speech Commands layout."""
    summary = synthesize_keywords(
        context.data_root, words=config.words, speakers=config.speakers,
        clips_per_speaker=config.clips_per_speaker, engine=config.engine, seed=config.seed, progress=True,
    )
    context.data_info = speech_commands_info(context.data_root)
    text = (
        f"Synthesized with **{summary['engine']}** into `{context.data_root}`"
        f"{' (reused from the cache)' if summary.get('cached') else ''}: {summary['num_clips']} clips of "
        f"{len(summary['words'])} words by {summary['num_speakers']} synthetic speakers, split by speaker "
        "like Speech Commands (validation/testing lists)."
    )
    if summary["engine"] == "numpy":
        text = f"**WARNING: {NUMPY_FALLBACK_WARNING}**\n\n{text}"
    split_counts = summary.get("split_counts", {})
    metrics = {"clips": summary["num_clips"], "engine": summary["engine"], "speakers": summary["num_speakers"]}
    metrics.update({f"clips ({split})": count for split, count in split_counts.items()})
    metrics["words"] = ", ".join(summary["words"])
    return Section("Keyword data", text=text, metrics=metrics)


def _test_split(config: DemoConfig, context: DemoContext) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the whole test split (loaded once; the train and TFLite stages both use it)."""
    batches = load_speech_commands(context.data_root, "test", labels=config.labels, batch_size=64, shuffle=False)
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in batches))
    return np.concatenate(xs), np.concatenate(ys)


def stage_train(config: DemoConfig, context: DemoContext, report: Report) -> Section:
    """Trains the streaming-ready reference model on the synthesized data."""
    model, metrics = kws.train(
        config.model, context.data_root, pathlib.Path(config.output_dir) / "models", epochs=config.epochs,
        batch_size=config.batch_size, seed=config.seed, model_kwargs=config.model_kwargs, labels=config.labels,
        verbose=2,
    )
    context.model, context.train_metrics = model, metrics
    x_test, y_test = context.test_split = _test_split(config, context)
    predictions = np.argmax(model.predict(x_test, batch_size=64, verbose=0), -1)
    matrix = confusion_matrix(y_test, predictions, context.num_classes)
    plot_confusion_matrix(matrix, context.label_names, report.figure_path("confusion_matrix.png"),
                          title=f"{config.model} on the synthesized test split")
    text = (
        f"Trained `{config.model}` ({metrics['params']:,} parameters) for {metrics['epochs']} epochs in "
        f"{metrics['seconds']:.0f} s; saved to `{metrics['model_path']}`."
    )
    shown = {k: metrics[k] for k in ("params", "epochs", "train_accuracy", "val_accuracy", "test_accuracy",
                                     "test_seen_voice_accuracy", "test_unseen_voice_accuracy")}
    shown["test accuracy per word"] = ", ".join(f"{w} {a:.2f}" for w, a in metrics["test_per_word"].items())
    text += (" The test split holds speakers whose voices (espeak variants; numpy: frequency shifts) no training "
             "speaker has: `test_unseen_voice_accuracy` is the figure that says whether the model generalizes.")
    return Section("Train", text=text, metrics=shown, figures=["confusion_matrix.png"])


def _window_parity(model: keras.Model, features: np.ndarray, posteriors: np.ndarray, step: int) -> tuple[float, float]:
    """(difference at the first full window, mean difference at later ones) of streamed vs whole-window posteriors.

    From a reset state, the posterior after the first full window equals the whole-window model exactly. Later
    windows differ a little: the stream has heard what came before the window (receptive fields reach past its
    start), where the whole-window model pads with zeros.
    """
    window = model.inputs[0].shape[1]
    first = window // step - 1 if window % step == 0 else window // step
    ends = list(range(first, posteriors.shape[0], max(1, window // step)))
    windows = np.stack([features[(i + 1) * step - window:(i + 1) * step] for i in ends])
    reference = np.asarray(model(windows, training=False))  # the trained model itself: an independent oracle
    differences = np.abs(posteriors[ends] - reference).max(axis=-1)
    return float(differences[0]), float(differences[1:].mean()) if len(ends) > 1 else 0.0


def stage_streaming(config: DemoConfig, context: DemoContext, report: Report) -> Section:
    """Converts to streaming, checks parity with the whole-clip model and streams a long recording."""
    model = context.need("model")
    step = min_frames_per_step(model)
    waveform, segments = kws.long_stream(context.data_root, num_clips=config.stream_clips, labels=config.labels,
                                         seed=config.seed)
    features = np.asarray(compute_features(waveform))
    features = features[: features.shape[0] - features.shape[0] % step]
    internal = to_streaming(model, Mode.STREAM_INTERNAL_STATE, batch_size=1, frames_per_step=step)
    posteriors = kws.stream_posteriors(internal, features)
    parity, context_effect = _window_parity(model, features, posteriors, step)
    external = to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=1, frames_per_step=step)
    external_posteriors = kws.stream_posteriors(external, features)
    external_parity = float(np.max(np.abs(external_posteriors - posteriors)))
    kws.plot_posteriors(posteriors, context.label_names, report.figure_path("posteriors.png"), step_s=0.02 * step,
                        segments=segments, waveform=waveform, title="Streaming posteriors (Keras, internal state)")
    context.stream = StreamRun(step=step, features=features, segments=segments, waveform=waveform,
                               keras_posteriors=posteriors, external_runner=external)
    stream_accuracy = kws.evaluate(model, context.data_root, mode=Mode.STREAM_EXTERNAL_STATE, batch_size=32,
                                   labels=config.labels)
    text = (
        f"`to_streaming` turned the trained model into a frame-by-frame model ({step} frame(s) = {20 * step} ms "
        f"per step) with its past kept in state buffers. Over a {len(segments)} s recording of concatenated test "
        f"clips ({', '.join(s[2] for s in segments)}), the streamed posterior after the first window equals the "
        "whole-window model, and the external-state model (states as named inputs/outputs) equals the "
        "internal-state one. At later windows the stream also carries context from before the window, which the "
        "whole-window model replaces with zero padding; the mean difference shows how much that matters."
    )
    metrics = {
        "frames per step": step,
        "max |stream - window model|, first window": parity,
        "mean |stream - window model|, later windows": context_effect,
        "max |external - internal|": external_parity,
        "test accuracy, streamed clip by clip": stream_accuracy["accuracy"],
        "test accuracy, whole clips": context.need("train_metrics")["test_accuracy"],
    }
    return Section("Streaming", text=text, metrics=metrics, figures=["posteriors.png"])


def _export_both(config: DemoConfig, context: DemoContext, runner) -> tuple[TFLiteModel, TFLiteModel]:
    """The external-state streaming model as float and full-int8 TFLite, loaded in LiteRT."""
    directory = pathlib.Path(config.output_dir) / "tflite"
    directory.mkdir(parents=True, exist_ok=True)
    streaming_model = runner.model
    float_lite = TFLiteModel(to_tflite(streaming_model, directory / f"{config.model}_stream_external.tflite"))
    # Calibration streams the float model over real training clips, so the int8 ranges cover realistic states.
    train = next(iter(load_speech_commands(context.data_root, "train", labels=config.labels, batch_size=64,
                                           seed=config.seed)))[0]
    calibration = streaming_calibration_data(runner, np.asarray(train)[:32])
    int8_lite = TFLiteModel(to_tflite(streaming_model, directory / f"{config.model}_stream_external_int8.tflite",
                                      quantize="int8", representative_data=calibration))
    return float_lite, int8_lite


def _stream_in_litert(lite: TFLiteModel, stream: StreamRun, num_classes: int) -> tuple[np.ndarray, float]:
    """(posteriors of every step, milliseconds per step) of the recording streamed through `lite`."""
    (output_name,) = [n for n in lite.output_names if n not in lite.state_names]
    start = time.perf_counter()
    posteriors = lite.run_stream(stream.features[None])[output_name][0].reshape(-1, num_classes)
    step_ms = 1000 * (time.perf_counter() - start) / max(1, stream.features.shape[0] // stream.step)
    return posteriors, step_ms


def _raw_audio_in_litert(config: DemoConfig, context: DemoContext, stream: StreamRun) -> dict:
    """The trained model behind its LogMelFrontend (`with_frontend`), exported as float TFLite and streamed on the
    recording's samples, one hop per step; its posteriors against the features stream's, one warm-up step later."""
    from tfx_ext.data import FeatureConfig
    from tfx_ext.errors import NotStreamableError
    from tfx_ext.models import with_frontend

    features = FeatureConfig()  # the front end the demo trained with (`compute_features` defaults)
    samples_per_step = features.hop_samples * stream.step
    try:
        raw = with_frontend(context.need("model"), features, features.sample_rate)
        runner = to_streaming(raw, Mode.STREAM_EXTERNAL_STATE, batch_size=1, frames_per_step=samples_per_step)
    except NotStreamableError as error:
        return {"raw-audio LiteRT": f"not streamable on raw audio: {str(error).splitlines()[0]}"}
    path = pathlib.Path(config.output_dir) / "tflite" / f"{config.model}_raw_audio_stream_external.tflite"
    lite = TFLiteModel(to_tflite(runner.model, path))
    waveform = stream.waveform[: len(stream.waveform) // samples_per_step * samples_per_step]
    (output_name,) = [n for n in lite.output_names if n not in lite.state_names]
    start = time.perf_counter()
    posteriors = lite.run_stream(waveform[None])[output_name][0].reshape(-1, context.num_classes)
    step_ms = 1000 * (time.perf_counter() - start) / max(1, len(posteriors))
    lag = runner.output_delays[runner.output_names[0]] // samples_per_step  # the front end's warm-up steps
    count = min(len(stream.keras_posteriors), len(posteriors) - lag)
    parity = float(np.max(np.abs(posteriors[lag:lag + count] - stream.keras_posteriors[:count])))
    return {"raw-audio float tflite size (bytes)": lite.size_bytes,
            "max |raw-audio float LiteRT - Keras on features| posterior": parity, "raw-audio float step (ms)": step_ms}


def stage_tflite(config: DemoConfig, context: DemoContext, report: Report) -> Section:
    """Exports the streaming model to float and full-int8 TFLite and streams the recording through LiteRT."""
    stream = context.need("stream")
    float_lite, int8_lite = _export_both(config, context, stream.external_runner)
    float_posteriors, float_step_ms = _stream_in_litert(float_lite, stream, context.num_classes)
    int8_posteriors, int8_step_ms = _stream_in_litert(int8_lite, stream, context.num_classes)
    parity = float(np.max(np.abs(float_posteriors - stream.keras_posteriors)))
    for posteriors, name, kind in ((float_posteriors, "posteriors_tflite.png", "float32"),
                                   (int8_posteriors, "posteriors_int8.png", "full int8")):
        kws.plot_posteriors(posteriors, context.label_names, report.figure_path(name), step_s=0.02 * stream.step,
                            segments=stream.segments, waveform=stream.waveform,
                            title=f"Streaming posteriors ({kind} TFLite in LiteRT, states bound by name)")
    checked = verify(context.need("model"), int8_lite, context.need("test_split"), float_size=float_lite.size_bytes)
    text = (
        "The external-state streaming model was exported twice with named signature inputs/outputs "
        f"({', '.join(float_lite.state_names)}): float32, and full int8 (weights, activations and states; "
        "calibrated by streaming the float model over training clips). Both ran step by step in the LiteRT "
        "interpreter with the states fed back by name; the int8 model also streamed every test clip for its accuracy. "
        "The same trained model behind a `LogMelFrontend` (its features computed inside, from 320 raw samples per "
        "20 ms step) ran as float TFLite on the recording's samples; its posteriors are compared with the Keras "
        "stream on features, one step later (the front end's warm-up frame)."
    )
    metrics = {
        "float tflite size (bytes)": float_lite.size_bytes,
        "int8 tflite size (bytes)": int8_lite.size_bytes,
        "int8 / float size": int8_lite.size_bytes / float_lite.size_bytes,
        "max |float LiteRT - Keras| posterior": parity,
        "max |int8 - float| posterior (recording)": float(np.max(np.abs(int8_posteriors - float_posteriors))),
        "test accuracy, Keras": checked.accuracy_model,
        "test accuracy, int8 LiteRT streamed": checked.accuracy_tflite,
        "top-1 agreement int8 vs Keras": checked.agreement,
        "float step (ms)": float_step_ms,
        "int8 step (ms)": int8_step_ms,
        **_raw_audio_in_litert(config, context, stream),
    }
    return Section("TFLite in LiteRT (float and int8)", text=text, metrics=metrics,
                   figures=["posteriors_tflite.png", "posteriors_int8.png"])


def _secure_matching_run(config: DemoConfig, rounds: int, clients: int) -> dict:
    """Client-side matching (FedMA's aligned averaging) under SecAgg+ on the same digits partition as FedAvg."""
    x_train, y_train, _, x_test, y_test, num_classes = load_dataset("digits", seed=config.seed)
    client_data = make_client_data(x_train, y_train, None, partition="dirichlet", clients=clients, alpha=0.5,
                                   seed=config.seed)

    def model_fn():
        return digits_cnn(num_classes, seed=config.seed)

    keras.utils.set_random_seed(config.seed)
    cohort = min(10, clients)
    dropout = 0.1 if cohort >= 8 else 0.0  # Tiny cohorts (tests) run without dropouts: the threshold is their size.
    history, _ = simulate(
        model_fn, client_data, rounds=rounds, clients_per_round=cohort, batch_size=16,
        client_optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(True),
        aggregator=ClientSideMatching(model_fn, class_counts=client_data),
        secure=SecAgg(variant="secagg+", dropout_rate=dropout, seed=config.seed),
        eval_data=(x_test, y_test), eval_every=1, seed=config.seed, progress=False,
    )
    return {"history": history, "dropout": dropout}


def stage_federated(config: DemoConfig, context: DemoContext, report: Report) -> Section:
    """Short federated runs on digits: FedAvg, then client-side matching under SecAgg+ with simulated dropouts."""
    clients = config.federated_clients
    result = run_federated_demo(pathlib.Path(config.output_dir) / "federated", rounds=config.federated_rounds,
                                clients=clients, clients_per_round=min(10, clients), seed=config.seed)
    fedavg = History.from_json(result["history_json"])
    secure_run = _secure_matching_run(config, config.federated_rounds, clients)
    secure = secure_run["history"]
    figures = []
    label_png = result.get("label_distribution_png")
    if label_png and pathlib.Path(label_png).exists():
        report.figure_path("federated_label_distribution.png").write_bytes(pathlib.Path(label_png).read_bytes())
        figures.append("federated_label_distribution.png")
    plot_curves({"FedAvg": fedavg["eval_accuracy"], "client-side matching + SecAgg+": secure["eval_accuracy"]},
                report.figure_path("federated_learning_curves.png"), xlabel="round", ylabel="test accuracy",
                title=f"digits, {clients} non-IID clients")
    figures.append("federated_learning_curves.png")
    last = secure.rounds[-1]
    metrics = {
        "clients": result["clients"],
        "clients per round": result["clients_per_round"],
        "rounds": result["rounds"],
        "FedAvg test accuracy": result["final_eval_accuracy"],
        "FedAvg client updates/s": result["client_updates_per_s"],
        "matching + SecAgg+ test accuracy": secure.last("eval_accuracy"),
        "SecAgg+ survivors (last round)": last.get("secure/survivors"),
        "SecAgg+ dropped (last round)": last.get("secure/dropped"),
        "SecAgg+ relative error of the sum (simulation only)": last.get("secure/sim_only_relative_error"),
        "SecAgg+ bytes up per client": last.get("secure/bytes_up_per_client"),
        "plain bytes up per client": result["bytes_up"] // max(1, result["rounds"] * result["clients_per_round"]),
    }
    text = (
        f"Scikit-learn's digits split over {result['clients']} clients with a Dirichlet(alpha={result['alpha']}) "
        "label skew. FedAvg trains every sampled client in one compiled graph. The second run aligns each "
        "client's units to the global model on the client (FedMA's matching without growth), so the server only "
        "needs a sum, which SecAgg+ (X25519, AES-GCM, Shamir shares over a sparse neighbour graph) computes "
        f"without seeing any client's update, while {secure_run['dropout']:.0%} of the clients drop out at each "
        "protocol stage."
    )
    return Section("Federated learning", text=text, metrics=metrics, figures=figures)


STAGES: list[tuple[str, Stage]] = [
    ("Keyword data", stage_data),
    ("Train", stage_train),
    ("Streaming", stage_streaming),
    ("TFLite in LiteRT (float and int8)", stage_tflite),
    ("Federated learning", stage_federated),
]


def run_demo(config: DemoConfig, *, stages: list[tuple[str, Stage]] | None = None) -> Report:
    """Runs the stages in order, writing `<output_dir>/report.md` (+ `report.json`) after each one."""
    keras.utils.set_random_seed(config.seed)
    report = Report(config.output_dir, "tfx-ext end-to-end demo")
    context = DemoContext.for_config(config)
    stages = STAGES if stages is None else stages
    for index, (title, stage) in enumerate(stages, 1):
        if title == "Federated learning" and config.federated_rounds == 0:
            continue
        print(f"\n=== [{index}/{len(stages)}] {title} ===", flush=True)
        start = time.perf_counter()
        section = stage(config, context, report)
        section.seconds = time.perf_counter() - start
        report.add(section)
        print(f"    done in {section.seconds:.1f} s", flush=True)
    print(f"\nReport: {report.markdown_path}")
    return report
