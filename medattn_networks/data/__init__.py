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
