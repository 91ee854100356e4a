from medattn_networks.engine.cam import (
    CAMHandler,
    GradCAMPredictor,
    NormalizeCAMd,
    SegmentationGradCAM,
    classifier_cam,
    grad_cam,
    normalize_maps,
)
from medattn_networks.engine.handlers import NamedMetricsSaver, ProgressLogger
from medattn_networks.engine.inputs import inference_datalist, require_checkpoint, with_weights

__all__ = [
    "CAMHandler",
    "GradCAMPredictor",
    "NormalizeCAMd",
    "SegmentationGradCAM",
    "classifier_cam",
    "grad_cam",
    "normalize_maps",
    "NamedMetricsSaver",
    "ProgressLogger",
    "inference_datalist",
    "require_checkpoint",
    "with_weights",
]

from medattn_networks.engine.metrics import (  # noqa: E402
    PER_CASE_CSV,
    SUMMARY_CSV,
    CaseMetricsSaver,
    TransUNetCaseMetric,
    case_metrics,
    dice_coefficient,
    hd95,
    metric_percase,
    summarize_case_metrics,
    surface_distances,
    write_case_metrics,
)
from medattn_networks.engine.slicewise import SliceWiseInferer, resize_slices, slicewise_inference  # noqa: E402

__all__ += [
    "PER_CASE_CSV",
    "SUMMARY_CSV",
    "CaseMetricsSaver",
    "TransUNetCaseMetric",
    "case_metrics",
    "dice_coefficient",
    "hd95",
    "metric_percase",
    "summarize_case_metrics",
    "surface_distances",
    "write_case_metrics",
    "SliceWiseInferer",
    "resize_slices",
    "slicewise_inference",
]

from medattn_networks.engine.flops import FlopCounter, count_flops, count_params, format_count  # noqa: E402

__all__ += ["FlopCounter", "count_flops", "count_params", "format_count"]

from medattn_networks.engine.bundle_helpers import flag, pick, slices_first_order  # noqa: E402

__all__ += ["flag", "pick", "slices_first_order"]
