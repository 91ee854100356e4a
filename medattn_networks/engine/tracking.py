"""Experiment tracking of a training run: the learning rate in TensorBoard, and training curves as a PNG.

The bundles log the training loss and every validation metric with MONAI's TensorBoardStatsHandler into the run
folder; :class:`LearningRateLogger` adds the learning rate; :func:`plot_run` (``medattn plot RUN_DIR``) reads the
event files back and draws ``curves.png``, which :class:`CurvePlotter` refreshes during training.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from medattn_networks.engine.checkpoints import atomic_output
from medattn_networks.errors import MissingPathError

__all__ = ["summary_writer", "NullWriter", "LearningRateLogger", "CurvePlotter", "read_scalars", "plot_run"]

logger = logging.getLogger("medattn.training")


class NullWriter:
    """Stands in for a SummaryWriter on the processes of a distributed run that do not log."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def summary_writer(log_dir: str | os.PathLike) -> Any:
    """A TensorBoard ``SummaryWriter`` writing into ``log_dir``; a :class:`NullWriter` on ranks > 0 of a
    distributed run (only rank 0 logs)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
        return NullWriter()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


class LearningRateLogger:
    """Write the learning rate of each optimizer parameter group at the start of every epoch.

    Args:
        summary_writer: the run's ``SummaryWriter``.
        optimizer: the optimizer.
        tag: scalar name (``lr``; ``lr/<group>`` when there are several groups).
    """

    def __init__(self, summary_writer: Any, optimizer: Any, tag: str = "lr") -> None:
        self.writer = summary_writer
        self.optimizer = optimizer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        groups = self.optimizer.param_groups
        for i, group in enumerate(groups):
            self.writer.add_scalar(self.tag if len(groups) == 1 else f"{self.tag}/{i}", group["lr"], engine.state.epoch)


def read_scalars(run_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from every TensorBoard event file in ``run_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path(run_dir)
    if not folder.is_dir():
        raise MissingPathError(f"run folder not found: '{folder}'")
    files = sorted(folder.glob("events.out.tfevents.*"))
    if not files:
        raise MissingPathError(f"no TensorBoard event files in '{folder}' (is it a training run folder?)")
    scalars: dict[str, dict[int, float]] = defaultdict(dict)
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags().get("scalars", []):
            for event in events.Scalars(tag):
                scalars[tag][int(event.step)] = float(event.value)
    return {tag: sorted(values.items()) for tag, values in scalars.items()}


def plot_run(run_dir: str | os.PathLike, output: str | os.PathLike | None = None) -> str:
    """Draw the training loss, the validation metrics and the learning rate of a run as ``curves.png``.

    Args:
        run_dir: the training's run folder (holding TensorBoard event files).
        output: PNG file (default ``run_dir/curves.png``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scalars = read_scalars(run_dir)
    output = Path(output) if output else Path(run_dir) / "curves.png"
    loss = scalars.get("train_loss", [])
    lr = next((v for k, v in scalars.items() if k == "lr" or k.startswith("lr/")), [])
    metrics = {k: v for k, v in scalars.items() if k.startswith("val_")}
    panels = [p for p in (("training loss", {"train_loss": loss}), ("validation", metrics), ("learning rate", {"lr": lr})) if any(p[1].values())]
    if not panels:
        raise MissingPathError(f"'{run_dir}' holds no train_loss, val_* or lr scalars to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels):
        for name, points in series.items():
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, label=name, marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("iteration" if title == "training loss" else "epoch")
        ax.grid(alpha=0.3)
        if title == "validation":
            ax.legend(fontsize=8)
    fig.suptitle(Path(run_dir).name, fontsize=9)
    fig.tight_layout()
    try:
        with atomic_output(output, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return str(output)


class CurvePlotter:
    """Redraw ``curves.png`` of the run after every ``interval`` epochs and when training ends.

    Args:
        run_dir: the run folder.
        summary_writer: the run's ``SummaryWriter`` (flushed before reading).
        interval: epochs between redraws.
    """

    def __init__(self, run_dir: str | os.PathLike, summary_writer: Any = None, interval: int = 1) -> None:
        self.run_dir = run_dir
        self.writer = summary_writer
        self.interval = max(1, int(interval))

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.writer is not None:
            self.writer.flush()
        try:
            plot_run(self.run_dir)
        except MissingPathError as e:
            logger.debug("no curves yet: %s", e)
