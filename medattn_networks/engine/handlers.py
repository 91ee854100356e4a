"""Ignite handlers the bundles attach: progress reporting, metric reports with class names."""

from __future__ import annotations

import logging
import time
from typing import Sequence

import ignite.distributed as idist
from ignite.engine import Engine, Events
from monai.handlers import MetricsSaver
from monai.handlers.utils import write_metrics_reports
from monai.utils import string_list_all_gather

__all__ = ["ProgressLogger", "NamedMetricsSaver"]


class ProgressLogger:
    """Log ``i/N <file>`` after every iteration of an inference or evaluation run, with the elapsed time.

    Args:
        image_key: key whose MetaTensor carries ``filename_or_obj``.
        name: logger name.
        prefix: put before each line (e.g. "validation").
    """

    def __init__(self, image_key: str = "image", name: str = "medattn.progress", prefix: str = "") -> None:
        self.image_key = image_key
        self.prefix = f"{prefix} " if prefix else ""
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
        skipped = getattr(engine.state, "skipped_input", None)
        if skipped:
            self.logger.info("%s%s/%s skipped (%.1f s): %s", self.prefix, engine.state.iteration, total, time.perf_counter() - self.start, skipped[0])
            return
        self.logger.info(
            "%s%s/%s done (%.1f s): %s",
            self.prefix,
            engine.state.iteration,
            total,
            time.perf_counter() - self.start,
            ", ".join(map(str, names)),
        )


class NamedMetricsSaver(MetricsSaver):
    """MONAI's ``MetricsSaver`` with class names, not ``class0, class1, ...``, in the per-case and summary CSVs.

    Args:
        save_dir: folder of the reports.
        class_names: one name per channel of every saved metric (the foreground classes when the metric leaves
            the background out); a metric with another channel count stops the run with a message.
        kwargs: further ``MetricsSaver`` options (``metrics``, ``metric_details``, ``batch_transform``,
            ``summary_ops``, ``save_rank``, ``delimiter``, ``output_type``).
    """

    def __init__(self, save_dir: str, class_names: Sequence[str], **kwargs) -> None:
        super().__init__(save_dir=save_dir, **kwargs)
        self.class_names = [str(name) for name in class_names]

    def __call__(self, engine: Engine) -> None:
        # MetricsSaver.__call__ with class_labels passed on (MONAI 1.6.1 has no option for them)
        world_size = idist.get_world_size()
        if self.save_rank >= world_size:
            raise ValueError("target save rank is greater than the distributed group size.")
        images = string_list_all_gather(strings=self._filenames) if world_size > 1 else self._filenames
        if idist.get_rank() != self.save_rank:
            return
        metrics = {}
        if self.metrics is not None and len(engine.state.metrics) > 0:
            metrics = {k: v for k, v in engine.state.metrics.items() if k in self.metrics or "*" in self.metrics}
        details = {}
        if self.metric_details is not None and len(getattr(engine.state, "metric_details", {}) or {}) > 0:
            wanted = self.metric_details
            details = {k: v for k, v in engine.state.metric_details.items() if k in wanted or "*" in wanted}
        for name, values in details.items():
            channels = values.shape[1] if values.ndim > 1 else 1
            if channels != len(self.class_names):
                raise ValueError(
                    f"metric '{name}' has {channels} class channel(s) but class_names lists {len(self.class_names)}: "
                    f"{self.class_names}"
                )
        write_metrics_reports(
            save_dir=self.save_dir,
            images=images or None,
            metrics=metrics,
            metric_details=details,
            summary_ops=self.summary_ops,
            deli=self.deli,
            output_type=self.output_type,
            class_labels=self.class_names,
        )


class GradientClipper:
    """Clip the gradient norm after each backward pass, before the optimizer step (nnU-Net's ``clip_grad_norm_(12)``).

    Attaches to MONAI's ``IterationEvents.BACKWARD_COMPLETED``; under AMP the gradients are unscaled first (the
    scaler's later ``step`` knows and does not unscale twice).

    Args:
        max_norm: largest total L2 norm of the gradients.
    """

    def __init__(self, max_norm: float = 12.0) -> None:
        if max_norm <= 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm}")
        self.max_norm = float(max_norm)

    def attach(self, engine: Engine) -> None:
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        import torch

        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            engine.scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm)
