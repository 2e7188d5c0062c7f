"""Per-phase timing of `simulate`'s rounds, off by default: `with profiling() as p: simulate(...)`.

`simulate` wraps each phase of a round (sampling, data, training, validation, payload, aggregation, evaluation,
bookkeeping, callbacks) in `phase(name)`. With no `profiling()` active, `phase` returns one shared no-op context,
so the hook costs a function call and a global read per phase; inside `profiling()` it adds the phase's
`time.perf_counter()` span to the active profile. Why a module-level hook and not a `simulate` argument: the
benchmark times the phases with its own clock without the simulator knowing who measures.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

PHASES = ("sampling", "data", "training", "validation", "payload", "aggregation", "evaluation", "bookkeeping",
          "callbacks")

_NULL = contextlib.nullcontext()
_active = None


class Profile:
    """Wall and process-CPU seconds per phase summed over the rounds seen (`totals`, `cpu_totals`), and the
    rounds counted (`rounds`). CPU time (all threads) is the steadier figure when other processes share the cores."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self.cpu_totals: dict[str, float] = defaultdict(float)
        self.rounds = 0

    @contextlib.contextmanager
    def _span(self, name):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - t0
            self.cpu_totals[name] += time.process_time() - c0

    def per_round_ms(self, cpu: bool = False) -> dict[str, float]:
        """Mean wall (or CPU) milliseconds per round of each phase (in `PHASES` order, then any others)."""
        totals = self.cpu_totals if cpu else self.totals
        names = [p for p in PHASES if p in totals] + [p for p in totals if p not in PHASES]
        return {p: 1000 * totals[p] / max(self.rounds, 1) for p in names}


def phase(name: str):
    """A context timing phase `name` of the current round into the active profile (a no-op when none is)."""
    return _NULL if _active is None else _active._span(name)


def round_done() -> None:
    """Counts one round in the active profile."""
    if _active is not None:
        _active.rounds += 1


def reset(profile: Profile) -> None:
    """Forgets what `profile` measured so far (e.g. the first round, which traces the graph)."""
    profile.totals.clear()
    profile.cpu_totals.clear()
    profile.rounds = 0


@contextlib.contextmanager
def profiling():
    """Activates a fresh `Profile` for the `with` block and yields it."""
    global _active
    previous, _active = _active, Profile()
    try:
        yield _active
    finally:
        _active = previous


__all__ = ["PHASES", "Profile", "phase", "profiling", "reset", "round_done"]
