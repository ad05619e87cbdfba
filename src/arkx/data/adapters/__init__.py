"""Dataset adapters. Each module registers one provider layout; import it here to make it known."""

from . import chexpert, mimic_cxr, nih14, rsna, shenzhen, vindr_cxr  # noqa: F401  (registers the adapters)
from . import chestdr, covidx, cxr_lt, generic_csv, generic_folder, pediatric_pneumonia  # noqa: F401
from . import chexmask, generic_mask_folder, jsrt, montgomery, vindr_ribcxr  # noqa: F401  (segmentation)
from . import candid_ptx, chestx_det, generic_coco, node21, siim_acr, tbx11k  # noqa: F401  (localization)
from ._common import check_images_exist
from .registry import (AdapterOptions, AdapterSpec, adapter_names, default_uncertain, get_adapter, read_dataset,
                       register)

__all__ = ["AdapterOptions", "AdapterSpec", "adapter_names", "check_images_exist", "default_uncertain", "get_adapter",
           "read_dataset", "register"]
