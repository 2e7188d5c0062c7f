"""The `tfx-ext` command line (also `python -m tfx_ext`).

`tfx-ext COMMAND [SUBCOMMAND] [--flags]`. Each command lives in its own module `tfx_ext.apps.cli.<command>` that
defines its absl flags at import and a `main(argv)`; only the chosen command's module is imported, so flags of
different commands never collide and `tfx-ext COMMAND --help` lists just that command's flags.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "demo": "End-to-end demo: synthesize keywords, train, stream, export, federated run, report.",
    "data": "Data sets: `data synthesize` writes the offline keyword data set in Speech Commands layout.",
    "kws": "Keyword spotting: `kws train`, `kws convert`, `kws export`, `kws evaluate`.",
    "federated": "Federated simulation: `federated simulate`.",
}


def _quiet_tensorflow() -> None:
    """Hides TensorFlow's start-up chatter (C++ INFO/WARNING logs); errors still print."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def subcommand_usage(command: str, subcommands: dict[str, str], synopsis: str = "[--flags]") -> str:
    """`tfx-ext COMMAND`'s usage: its synopsis and one line per subcommand."""
    width = max(len(name) for name in subcommands)
    lines = [f"usage: tfx-ext {command} SUBCOMMAND {synopsis}", "", "subcommands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, text in subcommands.items()]
    return "\n".join(lines)


def parse_subcommand(command: str, argv: list[str], subcommands: dict[str, str], synopsis: str = "[--flags]"):
    """The subcommand in `argv[1]`; None after printing what is wrong and the usage (the caller then returns 2)."""
    text = subcommand_usage(command, subcommands, synopsis)
    if len(argv) < 2 or argv[1] not in subcommands:
        given = argv[1] if len(argv) > 1 else None
        print((f"tfx-ext {command}: unknown subcommand {given!r}.\n\n" if given else "") + text, file=sys.stderr)
        return None
    if len(argv) > 2:
        print(f"tfx-ext {command} {argv[1]}: unexpected arguments {argv[2:]}.\n\n{text}", file=sys.stderr)
        return None
    return argv[1]


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: tfx-ext COMMAND [SUBCOMMAND] [--flags]   (tfx-ext COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help", "--helpfull"):
        print(usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    command = argv[1]
    if command not in COMMANDS:
        print(f"tfx-ext: unknown command {command!r}.\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    _quiet_tensorflow()
    module = importlib.import_module(f"tfx_ext.apps.cli.{command}")
    from absl import app, flags, logging

    if any(arg in ("-h", "--help", "--helpshort") for arg in argv[2:]):
        # absl would list only __main__'s flags; show this command's text and flags instead.
        print(f"tfx-ext {command}: {(module.__doc__ or COMMANDS[command]).strip()}\n")
        print(flags.FLAGS.module_help(module))
        if "tfx_ext.apps.cli.flags" in flags.FLAGS.flags_by_module_dict():  # Shared flags (--strategy, ...).
            print(flags.FLAGS.module_help("tfx_ext.apps.cli.flags"))
        sys.exit(0)

    def main(args):
        if not flags.FLAGS["verbosity"].present:  # TF's Python INFO lines (export, saving) unless -v asks.
            logging.set_verbosity(logging.WARNING)
        return module.main(args)

    app.run(main, argv=[f"tfx-ext {command}", *argv[2:]])
