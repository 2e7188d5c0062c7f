"""Data for tfx-ext: Speech Commands (real or synthesized offline), the speech front end, small image sets.

    speech_commands   the Speech Commands v2 layout: `list_examples`, `load_speech_commands` (tf.data),
                      `load_speech_commands_arrays` (numpy + speaker ids, for per-speaker partitions),
                      `speech_commands_info`, `speaker_id`, `download_speech_commands`, LABEL_VIEWS,
                      LABELS_12, WORDS_35
    features          `FeatureConfig`, `compute_features` (log-mel / MFCC with tf.signal), `num_frames`
    digits            `load_digits`: scikit-learn's 8x8 digits
    keras_datasets    `load_image_dataset`: CIFAR-10 / MNIST / Fashion-MNIST from keras.datasets

Keyword synthesis (writing a data set in the Speech Commands layout) is application code:
`tfx_ext.apps.synthesis`.
"""

from tfx_ext.data.digits import load_digits
from tfx_ext.data.features import FeatureConfig, compute_features, num_frames
from tfx_ext.data.keras_datasets import IMAGE_DATASETS, load_image_dataset
from tfx_ext.data.speech_commands import (
    BACKGROUND_NOISE_DIR,
    COMMAND_WORDS,
    LABEL_VIEWS,
    LABELS_12,
    SAMPLE_RATE,
    SILENCE_LABEL,
    SPEECH_COMMANDS_URL,
    SPLITS,
    UNKNOWN_LABEL,
    WORDS_35,
    Example,
    background_noise_files,
    download_speech_commands,
    label_names,
    list_examples,
    load_speech_commands,
    load_speech_commands_arrays,
    read_wav,
    speaker_id,
    speech_commands_info,
)
from tfx_ext.errors import DataError

__all__ = [
    "BACKGROUND_NOISE_DIR",
    "COMMAND_WORDS",
    "DataError",
    "Example",
    "FeatureConfig",
    "IMAGE_DATASETS",
    "LABEL_VIEWS",
    "LABELS_12",
    "SAMPLE_RATE",
    "SILENCE_LABEL",
    "SPEECH_COMMANDS_URL",
    "SPLITS",
    "UNKNOWN_LABEL",
    "WORDS_35",
    "background_noise_files",
    "compute_features",
    "download_speech_commands",
    "label_names",
    "list_examples",
    "load_digits",
    "load_image_dataset",
    "load_speech_commands",
    "load_speech_commands_arrays",
    "num_frames",
    "read_wav",
    "speaker_id",
    "speech_commands_info",
]
