"""The `tfx-ext` command line (also `python -m tfx_ext`).

`tfx-ext COMMAND [SUBCOMMAND] [--flags]`. Each command lives in its own module `tfx_ext.apps.cli.<command>` that
defines its absl flags at import and a `main(argv)`; only the chosen command's module is imported, so flags of
different commands never collide and `tfx-ext COMMAND --help` lists just that command's flags.

`tfx-ext COMMAND SUBCOMMAND --help` lists only the flags that subcommand reads. A flag's scope is the prefix of its
help text (`"train/evaluate: batch size."` is read by `train` and `evaluate`; no prefix: every subcommand); the
shared flags of `tfx_ext.apps.cli.flags` (`--strategy`, ...) belong to the subcommands in the command module's
`SHARED_FLAGS_FOR` (default: all).
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import sys

COMMANDS = {
    "demo": "End-to-end demo: synthesize keywords, train, stream, export, federated run, report.",
    "data": "Data sets: `data synthesize` writes the offline keyword data set in Speech Commands layout.",
    "kws": "Keyword spotting: `kws train`, `kws convert`, `kws export`, `kws evaluate`, `kws wakeword`.",
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


_SCOPE = re.compile(r"^(<[^>]*>: )?([a-z_]+(?:/[a-z_]+)*): ")  # absl puts an enum's "<a|b>: " first
SHARED_FLAGS_MODULE = "tfx_ext.apps.cli.flags"


def flag_scope(help_text: str, subcommands) -> tuple[tuple[str, ...], str]:
    """`(subcommands that read the flag, help text without its scope prefix)` from a flag's help text."""
    match = _SCOPE.match(help_text or "")
    if match and set(match.group(2).split("/")) <= set(subcommands):
        return tuple(match.group(2).split("/")), (match.group(1) or "") + help_text[match.end():]
    return tuple(subcommands), help_text


def subcommand_flags(module, subcommand: str, flag_values=None) -> list:
    """The absl flags `tfx-ext COMMAND SUBCOMMAND` reads, help texts without their scope prefix."""
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    by_module = flag_values.flags_by_module_dict()
    subcommands = getattr(module, "SUBCOMMANDS", {subcommand: ""})
    selected = []
    for flag in by_module.get(module.__name__, []):
        scope, text = flag_scope(flag.help, subcommands)
        if subcommand in scope:
            flag = copy.deepcopy(flag)
            flag.help = text
            selected.append(flag)
    if subcommand in getattr(module, "SHARED_FLAGS_FOR", subcommands):
        selected += by_module.get(SHARED_FLAGS_MODULE, [])
    return sorted(selected, key=lambda flag: flag.name)


def subcommand_help(command: str, module, subcommand: str, flag_values=None) -> str:
    """`tfx-ext COMMAND SUBCOMMAND --help`: what the subcommand does and only the flags it reads."""
    from absl import flags

    listing = flags.FlagValues()
    for flag in subcommand_flags(module, subcommand, flag_values):
        listing[flag.name] = flag
    text = getattr(module, "SUBCOMMANDS", {}).get(subcommand, "")
    return f"usage: tfx-ext {command} {subcommand} [--flags]\n\n{text}\n\nflags:\n" + listing.get_help(
        prefix="  ", include_special_flags=False)


def _print_help(command: str, module, args: list[str]) -> None:
    from absl import flags

    positional = [arg for arg in args if not arg.startswith("-")]
    subcommands = getattr(module, "SUBCOMMANDS", {})
    if positional and positional[0] in subcommands:
        print(subcommand_help(command, module, positional[0]))
        return
    print(f"tfx-ext {command}: {(module.__doc__ or COMMANDS[command]).strip()}\n")
    if subcommands:
        print(subcommand_usage(command, subcommands) + f"\n\n(tfx-ext {command} SUBCOMMAND --help for its flags)\n")
    print(flags.FLAGS.module_help(module))
    if SHARED_FLAGS_MODULE in flags.FLAGS.flags_by_module_dict():  # Shared flags (--strategy, ...).
        print(flags.FLAGS.module_help(SHARED_FLAGS_MODULE))


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
        # absl would list only __main__'s flags; show this command's (or subcommand's) text and flags instead.
        _print_help(command, module, argv[2:])
        sys.exit(0)

    def main(args):
        if not flags.FLAGS["verbosity"].present:  # TF's Python INFO lines (export, saving) unless -v asks.
            logging.set_verbosity(logging.WARNING)
        return module.main(args)

    app.run(main, argv=[f"tfx-ext {command}", *argv[2:]])
