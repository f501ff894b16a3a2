"""Learning-curve reports out of a training loop, for whoever listens (a hyperparameter search's pruner).

The rank trainer reports each epoch's valid AUC, the sequence retriever each evaluation's valid score, as
(step, value). With no listener (every ordinary run) a report costs nothing. A listener may stop the run by
raising `Pruned`: the exception leaves the stage like any other (its temporary folder removed by the
artifact layer, nothing of the stage written), and the sweep records the trial as pruned (recstack.sweep).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[int, float], None]
_listener: Listener | None = None


class Pruned(Exception):
    """Raised by a listener to stop training: the trial is not worth finishing."""

    def __init__(self, step: int, value: float):
        super().__init__(f"pruned at step {step} (valid {value:.5f})")
        self.step, self.value = step, value


def report(step: int, value: float) -> None:
    """One point of the learning curve (epoch or evaluation step, the stage's validated figure)."""
    if _listener is not None:
        _listener(step, value)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send every report inside the block to `listener`."""
    global _listener
    previous, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = previous
