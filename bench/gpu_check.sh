#!/usr/bin/env bash
# The GPU job of issue 26: run on a machine with a CUDA GPU (the project's `device` tool when a task is lent one),
# from the repository root with the project's venv (`pip install -e ".[test]"` and a CUDA build of TensorFlow).
# It records the device, then runs on the GPU: the QAT recurrent tests (a cuDNN GRU/LSTM kernel would skip the
# quantized cell's own call: QAT sets use_cudnn=False), the federated simulator's tests and CLI quick run, and a
# streaming parity sample (every reference model streamed vs its whole-window model). Output: $OUT (or ./gpu_out).
set -uo pipefail
out="${OUT:-gpu_out}"
mkdir -p "$out"
py="${PYTHON:-.venv/bin/python}"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
  "$py" -c "import tensorflow as tf; print('tf', tf.__version__, 'GPUs', tf.config.list_physical_devices('GPU'))"
} > "$out/device.txt" 2>&1
status=0
run() {  # name, then the pytest arguments
  local name="$1"; shift
  start=$(date +%s)
  "$py" -m pytest -q -p no:cacheprovider -rs "$@" > "$out/$name.log" 2>&1
  code=$?
  echo "$name rc=$code $(( $(date +%s) - start ))s $(tail -n 1 "$out/$name.log")" | tee -a "$out/summary.txt"
  [ "$code" = 0 ] || status=1
}
run qat_recurrent tests/export/test_qat.py -k "recurrent or gru or lstm"
run simulator tests/federated/test_simulation.py tests/federated/test_training.py tests/federated/test_rng_state.py
run streaming_parity tests/models/test_models.py -k "streaming_parity"
"$py" -m tfx_ext federated simulate --dataset=digits --partition=dirichlet --alpha=0.5 --clients=16 \
  --clients_per_round=8 --rounds=8 --output_dir="$out/fed" --progress=false > "$out/federated_cli.log" 2>&1 \
  || status=1
grep "final eval accuracy" "$out/federated_cli.log" | tee -a "$out/summary.txt"
exit $status
