from medattn_networks.data.brats import (
    BRATS_MODALITIES,
    BRATS_REGIONS,
    BratsRegionsd,
    BratsRegionsToLabelsd,
    brats_datalist,
    brats_inference_datalist,
    brats_name_formatter,
    find_brats_cases,
)
from medattn_networks.data.files import is_nifti, nifti_stem, require_dir
from medattn_networks.data.msd import msd_datalist, split_cases
from medattn_networks.data.synthetic import make_brats_cases, make_msd_task, make_nifti_folder
from medattn_networks.data.transforms import CheckChannelsd, source_name

__all__ = [
    "BRATS_MODALITIES",
    "BRATS_REGIONS",
    "BratsRegionsd",
    "BratsRegionsToLabelsd",
    "brats_datalist",
    "brats_inference_datalist",
    "brats_name_formatter",
    "find_brats_cases",
"is_nifti", "nifti_stem", "require_dir", "msd_datalist", "split_cases", "make_brats_cases", "make_msd_task", "make_nifti_folder", "CheckChannelsd", "source_name"]

from medattn_networks.data.synapse import (  # noqa: E402
    BTCV_LABELS,
    BTCV_TO_SYNAPSE,
    SYNAPSE_CLASSES,
    SYNAPSE_HU_RANGE,
    SYNAPSE_TEST_CASES,
    SYNAPSE_TRAIN_CASES,
    TOTALSEG_TO_SYNAPSE,
    LoadNpzH5d,
    RandomRotFlipd,
    RemapLabelsd,
    ZScoreShiftd,
    btcv_case_files,
    btcv_datalist,
    convert_btcv_to_transunet,
    remap_labels,
    slice_train_transforms,
    synapse_datalist,
    synapse_nifti_transforms,
    write_transunet_case,
    zscore_shift,
)
from medattn_networks.data.acdc import ACDC_CLASSES, ACDC_LISTS, acdc_datalist, acdc_train_transforms  # noqa: E402

__all__ += [
    "BTCV_LABELS",
    "BTCV_TO_SYNAPSE",
    "SYNAPSE_CLASSES",
    "SYNAPSE_HU_RANGE",
    "SYNAPSE_TEST_CASES",
    "SYNAPSE_TRAIN_CASES",
    "TOTALSEG_TO_SYNAPSE",
    "LoadNpzH5d",
    "RandomRotFlipd",
    "RemapLabelsd",
    "ZScoreShiftd",
    "btcv_case_files",
    "btcv_datalist",
    "convert_btcv_to_transunet",
    "remap_labels",
    "slice_train_transforms",
    "synapse_datalist",
    "synapse_nifti_transforms",
    "write_transunet_case",
    "zscore_shift",
    "ACDC_CLASSES",
    "ACDC_LISTS",
    "acdc_datalist",
    "acdc_train_transforms",
]
