"""Import ``mobile_sam``'s model code where torchvision cannot load.

PyPI's torchvision cannot load beside a CPU-only torch (its compiled ops link CUDA libraries), and
``mobile_sam`` needs it only outside the parts geosam uses: its package ``__init__`` imports the
predictor and mask generator (torchvision transforms and NMS), and TinyViT imports four trivial
helpers from timm, whose every release imports torchvision. When those imports fail, this module
imports ``mobile_sam.build_sam`` and ``mobile_sam.utils.amg`` without the package ``__init__`` and
registers the timm helpers, provided from torch, under timm's module names. Inference is
unaffected: TinyViT is built with ``drop_path_rate=0``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import torch
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at inference)."""

    def __init__(self, drop_prob: float | None = None) -> None:
        super().__init__()
        self.drop_prob = drop_prob or 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep


def to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def register_model(fn):
    return fn


def _install_timm() -> None:
    try:
        import timm.models.layers
        import timm.models.registry  # noqa: F401

        return
    except ImportError:
        pass
    # vars(): a ModuleType declares no attributes to set
    layers = types.ModuleType("timm.models.layers")
    vars(layers).update(DropPath=DropPath, to_2tuple=to_2tuple, trunc_normal_=nn.init.trunc_normal_)
    registry = types.ModuleType("timm.models.registry")
    vars(registry).update(register_model=register_model)
    models = types.ModuleType("timm.models")
    vars(models).update(layers=layers, registry=registry)
    root = types.ModuleType("timm")
    vars(root).update(models=models)
    for module in (root, models, layers, registry):
        sys.modules[module.__name__] = module


def _install_package_without_init() -> None:
    spec = importlib.util.find_spec("mobile_sam")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("No module named 'mobile_sam'")
    package = types.ModuleType("mobile_sam")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["mobile_sam"] = package


def import_mobile_sam() -> tuple[types.ModuleType, types.ModuleType]:
    """Return the modules ``mobile_sam.build_sam`` and ``mobile_sam.utils.amg``."""
    try:
        import mobile_sam  # noqa: F401
    except ImportError:
        sys.modules.pop("mobile_sam", None)
        _install_package_without_init()
        _install_timm()
    return importlib.import_module("mobile_sam.build_sam"), importlib.import_module("mobile_sam.utils.amg")


def import_sam_onnx() -> type:
    """segment-anything's ``SamOnnxModel`` (``mobile_sam.utils.onnx``), whose point embedding geosam
    reuses."""
    import_mobile_sam()
    return importlib.import_module("mobile_sam.utils.onnx").SamOnnxModel
