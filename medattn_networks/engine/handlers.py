"""Ignite handlers the bundles attach for progress reporting."""

from __future__ import annotations

import logging
import time

from ignite.engine import Engine, Events

__all__ = ["ProgressLogger"]


class ProgressLogger:
    """Log ``i/N <file>`` after every iteration of an inference or evaluation run, with the elapsed time.

    Args:
        image_key: key whose MetaTensor carries ``filename_or_obj``.
        name: logger name.
    """

    def __init__(self, image_key: str = "image", name: str = "medattn.progress") -> None:
        self.image_key = image_key
        self.logger = logging.getLogger(name)
        self.start = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._log)

    def _started(self, engine: Engine) -> None:
        self.start = time.perf_counter()

    def _log(self, engine: Engine) -> None:
        batch = engine.state.batch
        names = []
        items = batch if isinstance(batch, list) else [batch]
        for item in items:
            meta = getattr(item.get(self.image_key), "meta", {}) if isinstance(item, dict) else {}
            name = meta.get("filename_or_obj", "?")
            names.extend(name if isinstance(name, (list, tuple)) else [name])
        total = engine.state.epoch_length or "?"
        self.logger.info(
            "%s/%s done (%.1f s): %s", engine.state.iteration, total, time.perf_counter() - self.start, ", ".join(map(str, names))
        )
