"""README's first lines hold the two commands, `.ci/run` runs the test one, and every quick start executes and prints
what README claims for it (each claim parsed from its output and checked against a figure worked out here)."""

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
# The `### heading` each quick start sits under (its claim checker below is keyed by it).
TITLES = [re.findall(r"^### (.+)$", README[: README.index(f"```python\n{code}```")], flags=re.M)[-1]
          for code in SNIPPETS]


def _numbers(text):
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]


def _streaming(out):
    # `# ~1e-7: the stream equals the whole-window model`
    assert float(out) <= 1e-5


def _raw_audio(out):
    # The in-model front end against compute_features (measured ~7e-6: two float32 DFTs), then the stream of
    # 50 hops against the whole clip (measured 0: the same ops on the same frames).
    front, stream = _numbers(out)
    assert front <= 1e-4 and stream <= 1e-5


def _tflite_states(out):
    # Named external states (conv buffers, GRU state) besides the features; the crnn's 12 class posteriors.
    names = ast.literal_eval(out[: out.index("]") + 1])
    rest = out[out.index("]") + 1:].split(")")
    assert "features" in names and any(n.endswith("_buffer") for n in names) and "gru_h" in names
    assert ast.literal_eval(rest[0] + ")") == (1, 12) and int(rest[1]) > 0


def _int8(out):
    dtype, errors = out.splitlines()
    assert dtype == "<class 'numpy.int8'>"  # the state inputs are int8 too
    max_abs_error, size_bytes = _numbers(errors)
    # Streamed int8 vs the whole-clip float model on softmax outputs: measured 0.0013 (one int8 output step is
    # 1/256 = 0.0039); the bound is 7x the measured figure.
    assert max_abs_error <= 0.01 and size_bytes > 0


def _delta(out):
    # The DeltaActivation reports a temporal sparsity and the MACs it saves (measured 0.27 and 0.27 after 1 epoch).
    sparsity, savings = _numbers(out)
    assert 0.05 <= sparsity <= 1.0 and 0.05 <= savings <= 1.0


def _tensor_regression(out):
    # "factorized vs full weight": the Tucker layer holds the core and factor matrices plus a bias, fewer than
    # the full (4, 4, 8, 10) weight.
    params, *shape = (int(v) for v in _numbers(out))
    core = 4 * 4 * 6 * 10
    factors = 4 * 4 + 4 * 4 + 8 * 6 + 10 * 10
    assert tuple(shape) == (4, 4, 8, 10)
    assert params == core + factors + 10 < 4 * 4 * 8 * 10


def _hypernetwork(out):
    # Baking keeps the outputs and leaves two ordinary Conv1D layers (3x8x16 + 16 and 3x16x8 + 8 weights).
    hyper, plain, difference = _numbers(out)
    assert plain == 3 * 8 * 16 + 16 + 3 * 16 * 8 + 8 and hyper > plain
    assert difference <= 1e-6


def _distribute(out):
    losses = ast.literal_eval(out)
    assert len(losses) == 2 and losses[1] < losses[0]  # distribute.fit trains


def _federated(out):
    # `# ~0.8 after 5 rounds` (measured 0.85); no client dropped, so the 4 sampled clients all survive SecAgg+.
    accuracy, survivors = _numbers(out)
    assert accuracy >= 0.7 and survivors == 4


def _personalization(out):
    # The head, trained 100 Adam steps in LiteRT on 8 clips of two new words: from no clip right (they are new
    # classes) to all right (measured 1.0 for seeds 0-5; 30 steps were not enough for some seeds), the frozen body
    # bit for bit unchanged; the int8 streaming model with that head classifies 8 fresh clips of the new words
    # (measured 1.0); the training export (float weights, Adam slots, four signatures) is larger than the int8
    # streaming model.
    lines = out.splitlines()
    before, after, body = _numbers(lines[0])
    accuracy, train_size, int8_size = _numbers(lines[1])
    assert before <= 0.25 and after == 1.0 and body == 0.0
    assert accuracy >= 0.75 and train_size > int8_size > 0


def _wakeword(out):
    # The tiny run's operating point (a threshold in [0, 1], FA/h >= 0, FRR in [0, 1]); smoothing [0.1, 0.9, 0.9,
    # 0.2, 0.1, 0.95, 0.9] over 2 steps gives [0.1, 0.5, 0.9, 0.55, 0.15, 0.525, 0.925]: steps 1, 2, 3, 5, 6 reach
    # 0.5, and a 3-step refractory period keeps 1 and 5.
    point, fired = out.splitlines()[-2:]
    threshold, fa_per_hour, frr = _numbers(point)
    assert 0.0 <= threshold <= 1.0 and fa_per_hour >= 0.0 and 0.0 <= frr <= 1.0
    assert fired == "[1 5]"


CLAIMS = {
    "Streaming conversion": _streaming,
    "Streaming a plain Keras model you already trained": _streaming,  # ~1e-7 against the original plain model
    "Raw audio in the model: the front end streams too": _raw_audio,
    "TFLite export with named states": _tflite_states,
    "Full-integer int8 export, states included": _int8,
    "DeltaActivation: train for temporal sparsity": _delta,
    "Tensor regression with tensor dropout": _tensor_regression,
    "Hypernetwork layers, baked for export": _hypernetwork,
    "tf.distribute, including multi-worker": _distribute,
    "Federated learning with client-side matching and secure aggregation": _federated,
    "On-device personalization: fine-tune the head in LiteRT": _personalization,
    "Custom wake words: detection, FA/h and an int8 streaming detector": _wakeword,
}


def _command_after(marker):
    lines = README.splitlines()
    index = lines.index(marker)
    assert lines[index + 1] == "```bash"
    return lines[index + 2]


def test_readme_opens_with_the_demo_and_test_commands():
    head = "\n".join(README.splitlines()[:15])
    demo = _command_after("<!-- demo-command -->")
    tests = _command_after("<!-- test-command -->")
    assert demo in head and tests in head
    assert demo.startswith("python3 -m venv .venv") and "tfx-ext demo" in demo
    assert tests.startswith("python3 -m venv .venv") and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    result = subprocess.run(["awk", "/<!-- test-command -->/{getline; getline; print; exit}", "README.md"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == _command_after("<!-- test-command -->")
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_there_are_quick_starts_and_each_has_its_claim_checked():
    assert len(SNIPPETS) >= 8
    assert sorted(TITLES) == sorted(CLAIMS), "a quick start without a claim check (or a check without its quick start)"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SNIPPETS)), ids=TITLES)
def test_quick_start_prints_its_claim(index, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run([sys.executable, "-c", SNIPPETS[index]], capture_output=True, text=True, cwd=tmp_path,
                            env=env, timeout=600)
    assert result.returncode == 0, f"quick start {index} failed:\n{SNIPPETS[index]}\n{result.stderr[-3000:]}"
    CLAIMS[TITLES[index]](result.stdout.strip())
