"""`tfx-ext data`: the offline keyword data set.

    tfx-ext data synthesize --root=DIR [--speakers=36 --clips_per_speaker=3 --engine=auto --seed=0 --words=...]
        Writes a keyword data set in the Speech Commands layout (espeak-ng binary, the espeakng-loader
        library, or, loudly, the numpy fallback) into DIR.
        Returns at once when DIR already holds one made with the same settings.
    tfx-ext data info --root=DIR
        Prints the number of clips per word and split, speakers and background-noise files of a Speech Commands
        directory (real or synthesized).
"""

from __future__ import annotations

import sys

from absl import flags

from tfx_ext.apps.cli import parse_subcommand
from tfx_ext.apps.synthesis import DEFAULT_WORDS, ENGINES, NUMPY_FALLBACK_WARNING, synthesize_keywords
from tfx_ext.data import SPLITS, speech_commands_info
from tfx_ext.errors import DataError

FLAGS = flags.FLAGS

SUBCOMMANDS = {
    "synthesize": "write the keyword data set in Speech Commands layout into --root",
    "info": "print counts per word and split of the Speech Commands directory --root",
}

flags.DEFINE_string("root", None, "Speech Commands directory (written by `synthesize`, read by `info`).")
flags.DEFINE_integer("speakers", 36, "synthesize: number of synthetic speakers.", lower_bound=1)
flags.DEFINE_integer("clips_per_speaker", 3, "synthesize: clips per speaker and word.", lower_bound=1)
flags.DEFINE_enum("engine", "auto", list(ENGINES), "synthesize: espeak (binary), libespeak (pip wheel), numpy, or auto.")
flags.DEFINE_integer("seed", 0, "synthesize: random seed.")
flags.DEFINE_list("words", None, "synthesize: comma-separated words (default: 10 command words + 4 unknown words).")
flags.DEFINE_float("noise", 0.02, "synthesize: maximum standard deviation of the noise added to each clip.")
flags.DEFINE_bool("progress", True, "synthesize: show a progress bar.")


def format_info(info: dict) -> str:
    """A fixed-width table of `speech_commands_info(root)`."""
    splits = SPLITS
    width = max([len(word) for word in info["counts"]] + [5])
    lines = [f"Speech Commands directory: {info['root']}", ""]
    lines.append(f"{'word'.ljust(width)}  " + "  ".join(f"{s:>10}" for s in splits) + f"  {'total':>7}")
    for word, counts in info["counts"].items():
        lines.append(
            f"{word.ljust(width)}  " + "  ".join(f"{counts[s]:>10}" for s in splits) + f"  {sum(counts.values()):>7}"
        )
    totals = info["split_totals"]
    lines.append(f"{'total'.ljust(width)}  " + "  ".join(f"{totals[s]:>10}" for s in splits) + f"  "
                 f"{info['num_examples']:>7}")  # fmt: skip
    per_split = ", ".join(f"{s} {n}" for s, n in info["speakers_per_split"].items())
    lines += ["", f"speakers: {info['num_speakers']} ({per_split})"]
    lines.append(f"background noise: {', '.join(info['background_noise']) or 'none'}")
    return "\n".join(lines)


def main(argv):
    if parse_subcommand("data", argv, SUBCOMMANDS, "--root=DIR [--flags]") is None:
        return 2
    if not FLAGS.root:
        print(f"tfx-ext data {argv[1]}: --root=DIR is required.", file=sys.stderr)
        return 2
    try:
        if argv[1] == "synthesize":
            summary = synthesize_keywords(
                FLAGS.root,
                words=tuple(FLAGS.words) if FLAGS.words else DEFAULT_WORDS,
                speakers=FLAGS.speakers,
                clips_per_speaker=FLAGS.clips_per_speaker,
                seed=FLAGS.seed,
                engine=FLAGS.engine,
                noise=FLAGS.noise,
                progress=FLAGS.progress,
            )
            state = "reused existing" if summary["cached"] else f"wrote in {summary['seconds']:.1f} s"
            splits = ", ".join(f"{s} {n}" for s, n in summary["split_counts"].items())
            print(
                f"{summary['num_clips']} clips of {len(summary['words'])} words by {summary['num_speakers']} speakers "
                f"(engine {summary['engine']}, {state}) in {summary['root']}\nsplits: {splits}"
            )
            if summary["engine"] == "numpy":
                print(f"WARNING: {NUMPY_FALLBACK_WARNING}", file=sys.stderr)
        else:
            print(format_info(speech_commands_info(FLAGS.root)))
    except (DataError, ValueError, RuntimeError) as error:
        print(f"tfx-ext data {argv[1]}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0
