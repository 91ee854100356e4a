from medattn_networks.engine.handlers import ProgressLogger
from medattn_networks.engine.inputs import SKIPPED_REPORT, check_nifti, inference_datalist, require_checkpoint, with_weights

__all__ = ["ProgressLogger", "SKIPPED_REPORT", "check_nifti", "inference_datalist", "require_checkpoint", "with_weights"]
