"""Work held in progress for as long as a test needs: a model whose calls wait for an event (a video job
held in the running state), and a slot of the admission gate held by a thread (an inference running)."""

from __future__ import annotations

import threading

import numpy as np

from app.serving.gate import Gate


class GatedModel:
    """The real model, each call waiting for ``gate``: holds a job in the running state for a test."""

    def __init__(self, model, gate: threading.Event) -> None:
        self.model, self.gate = model, gate

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.gate.wait(60)
        return self.model(x)


def hold(gate: Gate, release: threading.Event, entered: threading.Event) -> threading.Thread:
    """A thread that takes one of ``gate``'s slots, sets ``entered`` and keeps the slot until ``release``
    (10 s at most); returned once it holds the slot."""
    def run() -> None:
        with gate.slot():
            entered.set()
            release.wait(10)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert entered.wait(5)
    return t
