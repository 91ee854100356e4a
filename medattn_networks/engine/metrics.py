"""Per-case 3D Dice and HD95 per foreground class with TransUNet's rules (Synapse and ACDC tables).

TransUNet ``utils.calculate_metric_percase(pred, gt)`` on the binary masks of one class of one case:

* pred and gt both non-empty → (Dice, HD95) — medpy's ``dc`` and ``hd95``;
* pred non-empty, gt empty → (1, 0);
* otherwise (pred empty) → (0, 0).

The table mean is over classes then cases (``test.py``: per-class means over cases, then their mean).
HD95 follows medpy: the surface of a mask is the mask minus its erosion by the face-connected structuring
element (voxels on the array border are surface), distances from each surface voxel to the other surface by
a Euclidean distance transform (voxel units unless ``spacing`` is given), and the 95th percentile of the union
of both directed distance sets. MONAI's ``compute_hausdorff_distance(percentile=95)`` instead takes the larger
of the two directed 95th percentiles; the numbers differ slightly.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric, HausdorffDistanceMetric
from monai.metrics.utils import do_metric_reduction
from scipy import ndimage

__all__ = [
    "dice_coefficient",
    "surface_distances",
    "hd95",
    "metric_percase",
    "case_metrics",
    "summarize_case_metrics",
    "write_case_metrics",
    "TransUNetCaseMetric",
    "CaseMetricsSaver",
    "voxel_spacing",
    "PhysicalHausdorffDistanceMetric",
    "HausdorffDistanceMM",
    "PER_CASE_CSV",
    "SUMMARY_CSV",
]

PER_CASE_CSV = "per_case_metrics.csv"
SUMMARY_CSV = "summary_metrics.csv"


def _as_bool(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask) > 0


def dice_coefficient(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> float:
    """2|P∩G| / (|P| + |G|) of two binary masks (0 when both are empty, as medpy's ``dc``)."""
    p, g = _as_bool(pred), _as_bool(gt)
    total = int(p.sum()) + int(g.sum())
    return 2.0 * int(np.logical_and(p, g).sum()) / total if total else 0.0


def _surface(mask: np.ndarray, connectivity: int) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, iterations=1)


def surface_distances(
    source: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None, connectivity: int = 1
) -> np.ndarray:
    """Distances from each surface voxel of ``source`` to the nearest one of ``target`` (medpy ``__surface_distances``)."""
    s, t = _as_bool(source), _as_bool(target)
    if not s.any() or not t.any():
        raise ValueError("surface distances need two non-empty masks")
    # crop to the union's bounding box with a 1-voxel margin: same surfaces (the array border still erodes)
    # and same distances, much less work on 512² slices
    where = np.argwhere(s | t)
    low = np.maximum(where.min(0) - 1, 0)
    high = np.minimum(where.max(0) + 2, s.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    s, t = s[box], t[box]
    target_surface = _surface(t, connectivity)
    distance = ndimage.distance_transform_edt(~target_surface, sampling=None if spacing is None else list(spacing))
    return distance[_surface(s, connectivity)]


def hd95(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    spacing: Sequence[float] | None = None,
    connectivity: int = 1,
) -> float:
    """95th percentile of the union of both directed surface distance sets (medpy ``hd95``); masks non-empty."""
    forward = surface_distances(pred, gt, spacing, connectivity)
    backward = surface_distances(gt, pred, spacing, connectivity)
    both = np.hstack((forward, backward))
    return float(np.percentile(both, 95))


def metric_percase(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    spacing: Sequence[float] | None = None,
    compute_hd95: bool = True,
) -> tuple[float, float]:
    """(Dice, HD95) of one class of one case with TransUNet's rules (see the module doc).

    With ``compute_hd95=False`` the HD95 slot is NaN when both masks are non-empty (Dice only, fast).
    """
    p, g = _as_bool(pred), _as_bool(gt)
    if p.any() and g.any():
        return dice_coefficient(p, g), hd95(p, g, spacing) if compute_hd95 else float("nan")
    if p.any():
        return 1.0, 0.0
    return 0.0, 0.0


def case_metrics(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    compute_hd95: bool = True,
) -> np.ndarray:
    """``(num_classes - 1, 2)`` array of (Dice, HD95) for classes 1..num_classes-1 of two label maps (no channel)."""
    p = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    g = gt.detach().cpu().numpy() if isinstance(gt, torch.Tensor) else np.asarray(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} must have the same shape")
    rows = [metric_percase(p == c, g == c, spacing, compute_hd95) for c in range(1, num_classes)]
    return np.array(rows, dtype=np.float64)


def summarize_case_metrics(dice: np.ndarray, hd: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class means over cases and the overall means (over classes, then cases) of (cases, classes) tables."""
    dice, hd = np.asarray(dice, np.float64), np.asarray(hd, np.float64)
    return {
        "dice_per_class": dice.mean(0),
        "hd95_per_class": hd.mean(0),
        "mean_dice": float(dice.mean(1).mean()),
        "mean_hd95": float(hd.mean(1).mean()),
    }


def write_case_metrics(
    save_dir: str | os.PathLike,
    cases: Sequence[str],
    dice: np.ndarray,
    hd: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, np.ndarray | float]:
    """Write ``per_case_metrics.csv`` and ``summary_metrics.csv`` in ``save_dir``; returns the summary.

    Both have the foreground class names as columns plus ``mean``. Per case: rows ``case, metric`` (metric
    ``dice`` or ``hd95``). Summary: rows ``dice`` and ``hd95``, means over cases; ``mean`` is the mean over
    classes then cases (the number the papers report).

    Args:
        cases: case names, one per row of ``dice`` / ``hd``.
        dice, hd: (cases, foreground classes) tables, e.g. stacked :func:`case_metrics` columns.
        class_names: foreground class names (background excluded), or all names starting with background.
    """
    dice, hd = np.asarray(dice, np.float64), np.asarray(hd, np.float64)
    if dice.shape != hd.shape or dice.ndim != 2 or dice.shape[0] != len(cases):
        raise ValueError(f"dice {dice.shape} and hd95 {hd.shape} must both be (cases={len(cases)}, classes)")
    names = list(class_names)
    if len(names) == dice.shape[1] + 1:
        names = names[1:]
    if len(names) != dice.shape[1]:
        raise ValueError(f"{len(names)} class names for {dice.shape[1]} foreground classes")
    folder = Path(save_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / PER_CASE_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "metric", *names, "mean"])
        for case, d_row, h_row in zip(cases, dice, hd):
            writer.writerow([case, "dice", *(f"{v:.6f}" for v in d_row), f"{d_row.mean():.6f}"])
            writer.writerow([case, "hd95", *(f"{v:.6f}" for v in h_row), f"{h_row.mean():.6f}"])
    summary = summarize_case_metrics(dice, hd)
    with open(folder / SUMMARY_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", *names, "mean"])
        writer.writerow(["dice", *(f"{v:.6f}" for v in summary["dice_per_class"]), f"{summary['mean_dice']:.6f}"])
        writer.writerow(["hd95", *(f"{v:.6f}" for v in summary["hd95_per_class"]), f"{summary['mean_hd95']:.6f}"])
    return summary


def _to_labels(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, ...) label maps or (B, C, ...) one-hot / logits → (B, ...) integer labels."""
    if x.ndim < 3:
        raise ValueError(f"expected batch-first channel-first tensors (B, C, ...), got shape {tuple(x.shape)}")
    return torch.round(x[:, 0]).long() if x.shape[1] == 1 else x.argmax(1)


class TransUNetCaseMetric(CumulativeIterationMetric):
    """Dice or HD95 per case and foreground class with TransUNet's rules, for MONAI evaluators.

    Wrap it in ``monai.handlers.IgniteMetricHandler`` (``save_details=True`` stores the (cases, classes) table
    in ``engine.state.metric_details`` for :class:`CaseMetricsSaver`). Inputs: batch-first label maps
    (B, 1, ...) or one-hot / logits (B, C, ...), e.g. ``from_engine(["pred", "label"])`` after ``AsDiscreted``.

    Args:
        num_classes: classes including background.
        metric: ``"dice"`` or ``"hd95"``.
        spacing: voxel spacing for HD95 (None: voxel units, as TransUNet).
        reduction: MONAI reduction of the (cases, classes) buffer in :meth:`aggregate`; ``"mean"`` is the mean
            over classes then cases, ``"mean_batch"`` the per-class means.
    """

    def __init__(
        self, num_classes: int, metric: str = "dice", spacing: Sequence[float] | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        if metric not in ("dice", "hd95"):
            raise ValueError(f"metric must be 'dice' or 'hd95', got '{metric}'")
        if num_classes < 2:
            raise ValueError(f"num_classes must count background and at least one class, got {num_classes}")
        self.num_classes, self.metric, self.spacing, self.reduction = num_classes, metric, spacing, reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if y is None:
            raise ValueError("TransUNetCaseMetric needs ground truth")
        pred, gt = _to_labels(y_pred), _to_labels(y)
        column = 0 if self.metric == "dice" else 1
        rows = [
            case_metrics(p, g, self.num_classes, self.spacing, compute_hd95=self.metric == "hd95")[:, column]
            for p, g in zip(pred, gt)
        ]
        return torch.as_tensor(np.stack(rows), dtype=torch.float32, device=y_pred.device)

    def aggregate(self, reduction: str | None = None) -> torch.Tensor:
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"the metric buffer must be a tensor, got {type(data)}")
        value, _ = do_metric_reduction(data, reduction or self.reduction)
        return value


class CaseMetricsSaver:
    """Ignite handler writing :func:`write_case_metrics` CSVs at the end of an evaluation.

    It reads the per-case tables that ``IgniteMetricHandler(TransUNetCaseMetric(...), save_details=True)``
    left in ``engine.state.metric_details`` under ``dice_name`` and ``hd95_name`` (a missing one is written as
    NaN), and names the cases from the batches (file name without folder and .h5/.npz/.nii.gz suffixes).

    Args:
        save_dir: output folder.
        class_names: class names (with or without background).
        dice_name, hd95_name: metric names the two handlers were attached with.
        batch_transform: batch → list of meta dicts (default: the ``image`` meta of each decollated item).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        class_names: Sequence[str],
        dice_name: str = "val_mean_dice",
        hd95_name: str = "val_hd95",
        batch_transform: Callable | None = None,
    ) -> None:
        self.save_dir = save_dir
        self.class_names = list(class_names)
        self.dice_name, self.hd95_name = dice_name, hd95_name
        self.batch_transform = batch_transform or (lambda batch: [item["image"].meta for item in batch])
        self.cases: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _started(self, _engine: Engine) -> None:
        self.cases = []

    def _collect(self, engine: Engine) -> None:
        for meta in self.batch_transform(engine.state.batch):
            fallback = f"case{len(self.cases)}"
            name = meta.get("filename_or_obj", fallback) if isinstance(meta, dict) else fallback
            name = Path(str(name)).name
            for suffix in (".npy.h5", ".h5", ".npz", ".nii.gz", ".nii"):
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            self.cases.append(name)

    def __call__(self, engine: Engine) -> None:
        details = getattr(engine.state, "metric_details", {})
        tables = {}
        for name in (self.dice_name, self.hd95_name):
            table = details.get(name)
            if table is not None:
                tables[name] = table.detach().cpu().numpy() if isinstance(table, torch.Tensor) else np.asarray(table)
        if not tables:
            raise RuntimeError(
                f"no per-case metrics '{self.dice_name}' or '{self.hd95_name}' in engine.state.metric_details: attach "
                "IgniteMetricHandler(TransUNetCaseMetric(...), save_details=True) under those names"
            )
        shape = next(iter(tables.values())).shape
        dice = tables.get(self.dice_name, np.full(shape, np.nan))
        hd = tables.get(self.hd95_name, np.full(shape, np.nan))
        cases = self.cases if len(self.cases) == shape[0] else [f"case{i}" for i in range(shape[0])]
        write_case_metrics(self.save_dir, cases, dice, hd, self.class_names)


def voxel_spacing(image: torch.Tensor) -> list[list[float]] | None:
    """Per-case voxel spacing (mm) of a batch-first MetaTensor from its affine: column norms, ``None`` without meta.

    A (4, 4) affine serves every case of the batch; a (B, 4, 4) one gives one spacing per case.
    """
    if not isinstance(image, MetaTensor):
        return None
    spatial = image.ndim - 2
    affine = torch.as_tensor(image.affine, dtype=torch.float64)
    affines = affine[None].expand(image.shape[0], -1, -1) if affine.ndim == 2 else affine
    if affines.shape[0] != image.shape[0]:
        return None
    return [torch.linalg.vector_norm(a[:spatial, :spatial], dim=0).tolist() for a in affines]


class PhysicalHausdorffDistanceMetric(HausdorffDistanceMetric):
    """MONAI's ``HausdorffDistanceMetric`` in millimetres: each case's spacing is read from its affine.

    MONAI's metric measures in voxels unless ``spacing`` is passed to every call, which its Ignite handler never
    does; after resampling (e.g. to 1 × 1 × 1.2 mm) voxel distances are not millimetres. This reads the spacing
    from the ground truth's affine (the prediction's when the label has none); an explicit ``spacing`` still wins.
    Arguments as ``HausdorffDistanceMetric``.
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:  # type: ignore[override]
        if kwargs.get("spacing") is None:
            kwargs["spacing"] = voxel_spacing(y) or voxel_spacing(y_pred)
        return super()._compute_tensor(y_pred, y, **kwargs)


class HausdorffDistanceMM(IgniteMetricHandler):
    """Ignite handler of :class:`PhysicalHausdorffDistanceMetric`: as ``monai.handlers.HausdorffDistance``, in mm.

    Args:
        include_background: include the first channel.
        distance_metric: ``"euclidean"`` (the only one where spacing matters), ``"chessboard"`` or ``"taxicab"``.
        percentile: e.g. 95 for HD95; ``None`` for the maximum.
        directed: directed distance from prediction to ground truth.
        reduction: MONAI metric reduction.
        output_transform: engine output → (y_pred, y), e.g. ``from_engine(["pred", "label"])``.
        save_details: keep the (cases, classes) table in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        include_background: bool = False,
        distance_metric: str = "euclidean",
        percentile: float | None = None,
        directed: bool = False,
        reduction: str = "mean",
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = PhysicalHausdorffDistanceMetric(
            include_background=include_background,
            distance_metric=distance_metric,
            percentile=percentile,
            directed=directed,
            reduction=reduction,
        )
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
