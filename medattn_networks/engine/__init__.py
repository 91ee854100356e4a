from medattn_networks.engine.cam import (
    CAMHandler,
    GradCAMPredictor,
    NormalizeCAMd,
    SegmentationGradCAM,
    classifier_cam,
    grad_cam,
    normalize_maps,
)
from medattn_networks.engine.handlers import GradientClipper, NamedMetricsSaver, ProgressLogger
from medattn_networks.engine.inputs import (
    SaveLabelMapd,
    SaveMaskPNGd,
    SingleRegiond,
    InvertArgmaxd,
    check_image,
    image_folder_datalist,
    inference_datalist,
    require_checkpoint,
    with_weights,
)

__all__ = [
    "CAMHandler",
    "GradCAMPredictor",
    "NormalizeCAMd",
    "SegmentationGradCAM",
    "classifier_cam",
    "grad_cam",
    "normalize_maps",
    "GradientClipper",
    "NamedMetricsSaver",
    "ProgressLogger",
    "inference_datalist",
    "image_folder_datalist",
    "check_image",
    "SaveMaskPNGd",
    "SingleRegiond",
    "InvertArgmaxd",
    "SaveLabelMapd",
    "require_checkpoint",
    "with_weights",
]

from medattn_networks.engine.metrics import (  # noqa: E402
    PER_CASE_CSV,
    SUMMARY_CSV,
    CaseMetricsSaver,
    HausdorffDistanceMM,
    PhysicalHausdorffDistanceMetric,
    TransUNetCaseMetric,
    case_metrics,
    dice_coefficient,
    hd95,
    metric_percase,
    summarize_case_metrics,
    surface_distances,
    voxel_spacing,
    write_case_metrics,
)
from medattn_networks.engine.slicewise import SliceWiseInferer, resize_slices, slicewise_inference  # noqa: E402

__all__ += [
    "PER_CASE_CSV",
    "SUMMARY_CSV",
    "CaseMetricsSaver",
    "HausdorffDistanceMM",
    "PhysicalHausdorffDistanceMetric",
    "TransUNetCaseMetric",
    "case_metrics",
    "dice_coefficient",
    "hd95",
    "metric_percase",
    "summarize_case_metrics",
    "surface_distances",
    "voxel_spacing",
    "write_case_metrics",
    "SliceWiseInferer",
    "resize_slices",
    "slicewise_inference",
]

from medattn_networks.engine.losses import BoundaryDoULoss, boundary_voxels  # noqa: E402

__all__ += ["BoundaryDoULoss", "boundary_voxels"]

from medattn_networks.engine.position_inferer import (  # noqa: E402
    CropPositiond,
    MirroredPredictor,
    PositionSlidingWindowInferer,
    crop_position,
    nnunet_window_starts,
    window_positions,
)

__all__ += ["CropPositiond", "MirroredPredictor", "PositionSlidingWindowInferer", "crop_position", "nnunet_window_starts", "window_positions"]

from medattn_networks.engine.flops import FlopCounter, count_flops, count_params, format_count  # noqa: E402

__all__ += ["FlopCounter", "count_flops", "count_params", "format_count"]

from medattn_networks.engine.bundle_helpers import flag, pick, slices_first_order  # noqa: E402

__all__ += ["flag", "pick", "slices_first_order"]

from medattn_networks.engine.checkpoints import (  # noqa: E402
    BestModelSaver,
    EpochSeeder,
    TrainingStateSaver,
    WeightsLoader,
    atomic_save,
    latest_state,
    load_weights,
    promote,
    resume_checkpoint,
    run_folder,
    sha256_file,
)
from medattn_networks.engine.runtime import finish_inference, require_writable, running_from_cli, start_run  # noqa: E402
from medattn_networks.engine.segmenter import FolderSegmenter, SkipOnErrorDataset  # noqa: E402
from medattn_networks.engine.tracking import CurvePlotter, LearningRateLogger, NullWriter, plot_run, read_scalars, summary_writer  # noqa: E402

__all__ += [
    "BestModelSaver",
    "EpochSeeder",
    "TrainingStateSaver",
    "WeightsLoader",
    "atomic_save",
    "latest_state",
    "load_weights",
    "promote",
    "resume_checkpoint",
    "run_folder",
    "sha256_file",
    "finish_inference",
    "require_writable",
    "running_from_cli",
    "start_run",
    "FolderSegmenter",
    "SkipOnErrorDataset",
    "CurvePlotter",
    "LearningRateLogger",
    "NullWriter",
    "plot_run",
    "read_scalars",
    "summary_writer",
]
