from medattn_networks.engine.handlers import ProgressLogger
from medattn_networks.engine.inputs import SKIPPED_REPORT, check_nifti, inference_datalist, require_checkpoint

__all__ = ["ProgressLogger", "SKIPPED_REPORT", "check_nifti", "inference_datalist", "require_checkpoint"]
