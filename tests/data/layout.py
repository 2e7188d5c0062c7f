"""Writes hand-made Speech Commands directories whose clips are constants that identify each file."""

import os

import numpy as np
from scipy.io import wavfile

from tfx_ext.data import COMMAND_WORDS

# A hand-made layout: every word folder has clips of 3 speakers, each clip a constant whose value identifies the file.
HAND_SPEAKERS = ("aaaa1111", "bbbb2222", "cccc3333")
HAND_WORDS = (*COMMAND_WORDS, "cat", "marvin")


def clip_value(word_index: int, speaker_index: int, k: int) -> int:
    """The constant int16 sample value written into a hand-made clip."""
    return 100 * (word_index + 1) + 10 * speaker_index + k


def write_wav(path, samples, rate=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    wavfile.write(path, rate, np.asarray(samples, dtype=np.int16))


def make_layout(root, words=HAND_WORDS, speakers=HAND_SPEAKERS, clips=2, noise=True, lists=True, length=16000):
    """Writes a Speech Commands directory; speaker 1 is in validation, speaker 2 in test, speaker 0 in train."""
    os.makedirs(root, exist_ok=True)
    validation, testing = [], []
    for w, word in enumerate(words):
        for s, speaker in enumerate(speakers):
            for k in range(clips):
                relative = f"{word}/{speaker}_nohash_{k}.wav"
                write_wav(os.path.join(root, relative), np.full(length, clip_value(w, s, k)))
                if s == 1:
                    validation.append(relative)
                elif s == 2:
                    testing.append(relative)
    if noise:
        rng = np.random.default_rng(0)
        write_wav(os.path.join(root, "_background_noise_", "noise_a.wav"), rng.integers(-1000, 1000, 40000))
        write_wav(os.path.join(root, "_background_noise_", "noise_b.wav"), rng.integers(-1000, 1000, 24000))
    if lists:
        with open(os.path.join(root, "validation_list.txt"), "w") as f:
            f.write("\n".join(validation) + "\n")
        with open(os.path.join(root, "testing_list.txt"), "w") as f:
            f.write("\n".join(testing) + "\n")
    return str(root)
