"""Inference over a folder where one bad input never stops the others.

:class:`SkipOnErrorDataset` turns a failure while reading or transforming one file into a marker item;
:class:`FolderSegmenter` (MONAI's SupervisedEvaluator) skips marker items and catches a failure while segmenting or
writing one file (out of memory included). Each such file is logged and appended to ``skipped_inputs.csv`` in the
output folder; the run goes on with the next file.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any, Sequence

import torch
from ignite.engine import Engine, Events
from monai.data import Dataset
from monai.engines import SupervisedEvaluator

from medattn_networks.data.files import append_skipped_report

__all__ = ["SKIP_KEY", "SkipOnErrorDataset", "FolderSegmenter", "root_cause"]

logger = logging.getLogger("medattn.inputs")

SKIP_KEY = "skipped_input"


def root_cause(exc: BaseException) -> str:
    """``Type: message`` of the innermost cause of ``exc`` (MONAI wraps transform errors in RuntimeErrors)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class SkipOnErrorDataset(Dataset):
    """A MONAI Dataset whose items that fail to load or transform become ``{SKIP_KEY: file, "problem": why}``.

    Args:
        data: items (dicts with ``image_key``).
        transform: the preprocessing.
        image_key: key of the input path (named in the report).
    """

    def __init__(self, data: Sequence[dict], transform: Any = None, image_key: str = "image") -> None:
        super().__init__(data=data, transform=transform)
        self.image_key = image_key

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as e:
            source = self.data[index].get(self.image_key, f"item {index}")
            return {SKIP_KEY: str(source), "problem": f"could not be read or preprocessed ({root_cause(e)})"}


class FolderSegmenter(SupervisedEvaluator):
    """SupervisedEvaluator that skips, reports and survives inputs that cannot be segmented.

    Args:
        report_dir: folder of ``skipped_inputs.csv`` (the output folder).
        kwargs: SupervisedEvaluator arguments.
    """

    def __init__(self, *args: Any, report_dir: str | os.PathLike | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.report_dir = report_dir
        self.skipped: list[tuple[str, str]] = []
        self.add_event_handler(Events.COMPLETED, self._write_report)

    def _skip(self, engine: Engine, source: str, problem: str) -> dict:
        logger.error("%s: %s; skipped", source, problem)
        self.skipped.append((source, problem))
        engine.state.skipped_input = (source, problem)
        return {}

    def _iteration(self, engine: Engine, batchdata: dict) -> dict:
        engine.state.skipped_input = None
        if isinstance(batchdata, dict) and SKIP_KEY in batchdata:
            sources, problems = batchdata[SKIP_KEY], batchdata["problem"]
            for source, problem in zip(sources, problems):
                self._skip(engine, source, problem)
            return {}
        try:
            return super()._iteration(engine, batchdata)
        except Exception as e:
            source = _source_of(batchdata)
            if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower():
                problem = f"out of memory while segmenting ({root_cause(e)}); try a smaller sw_batch_size or the CPU"
            else:
                problem = f"failed while segmenting or writing ({root_cause(e)})"
            engine.state.output = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return self._skip(engine, source, problem)

    def _write_report(self, engine: Engine) -> None:
        if self.report_dir is not None:
            append_skipped_report(self.report_dir, self.skipped)


def _source_of(batchdata: Any) -> str:
    if isinstance(batchdata, dict):
        for value in batchdata.values():
            name = getattr(value, "meta", {}).get("filename_or_obj") if hasattr(value, "meta") else None
            if name is not None:
                return str(name[0] if isinstance(name, (list, tuple)) else name)
    return "?"
