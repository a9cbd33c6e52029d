"""SAM state dicts from checkpoint files: read as weights only, their architecture told by their shapes."""

from __future__ import annotations

import collections
import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from geosam.errors import ModelError

if TYPE_CHECKING:
    import torch

ARCHITECTURES = ("vit_t", "vit_b", "vit_l", "vit_h")
VIT_WIDTHS = {
    768: "vit_b",
    1024: "vit_l",
    1280: "vit_h",
}  # channels of the ViT image encoder's patch embedding
WRAPPERS = ("model", "state_dict")  # {"model": state_dict}, as training scripts save them
PREFIX = "module."  # left by torch.nn.DataParallel / DistributedDataParallel


class _Shape(NamedTuple):
    """A tensor's shape, as read from a checkpoint without torch."""

    shape: tuple[int, ...]


class _ShapeReader(pickle.Unpickler):
    """Unpickles a torch zip checkpoint's ``data.pkl`` into names and shapes; refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, *rest: _Shape(tuple(size))
        if module == "torch" and name.endswith("Storage"):
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> None:
        return None  # tensor data stays in the archive


def read_shapes(path: Path) -> dict[str, Any]:
    """The state dict in ``path`` as names and shapes, without importing torch (which takes about
    180 MB): the common case of a plain state dict in torch's zip format. Anything else is read
    by ``read_state_dict``, which also names what is wrong with a file."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) == 1:
                with archive.open(pickles[0]) as f:
                    state = _unwrap(_ShapeReader(f).load())
                if isinstance(state, dict) and all(isinstance(v, _Shape) for v in state.values()):
                    return state
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, TypeError, ValueError):
        pass
    return read_state_dict(path, mmap=True)


def read_state_dict(path: Path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, unwrapped; never runs pickled code (``torch.load(weights_only=True)``).

    ``mmap`` maps the tensors instead of reading them (cheap for a look at names and shapes).
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise ModelError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))  # a class or function the pickle would call
        if found is None:
            raise ModelError(f"{path} is not a torch checkpoint (unreadable pickle)") from None
        raise ModelError(
            f"{path} holds pickled objects other than tensors ({found.group(1)}), which geosam never "
            "unpickles: save a plain state dict, torch.save(model.state_dict(), path)"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError) as exc:
        if mmap and "mmap" in str(exc):  # the legacy (non-zip) format cannot be mapped: read it
            return read_state_dict(path)
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
        if zipped:
            raise ModelError(
                f"{path} is truncated or corrupt (incomplete archive): download it again"
            ) from None
        raise ModelError(f"{path} is not a torch checkpoint ({type(exc).__name__}: {exc})") from None
    state = _unwrap(state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        kind = type(state).__name__ if not isinstance(state, dict) else "dict with values other than tensors"
        raise ModelError(
            f"{path} is not a state dict (a {kind}): save one with torch.save(model.state_dict(), path)"
        )
    return state


def _unwrap(state: Any) -> Any:
    """The state dict inside ``{"model": ...}`` or ``{"state_dict": ...}``, without DataParallel's prefix."""
    for key in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if isinstance(state, dict) and state and all(isinstance(k, str) and k.startswith(PREFIX) for k in state):
        state = {k[len(PREFIX) :]: v for k, v in state.items()}
    return state


def architecture_of(state: dict[str, Any]) -> str | None:
    """vit_t (TinyViT), vit_b, vit_l or vit_h from a SAM state dict's names and shapes; None if not SAM's."""
    if any(k.startswith("image_encoder.layers.") for k in state):
        return "vit_t"
    patch = state.get("image_encoder.patch_embed.proj.weight")
    return VIT_WIDTHS.get(int(patch.shape[0])) if patch is not None and len(patch.shape) == 4 else None


def check_architecture(path: Path, state: dict[str, Any], expected: str) -> None:
    """Fail with a message naming both architectures when ``state`` is not ``expected``'s."""
    found = architecture_of(state)
    if found is not None and found != expected:
        raise ModelError(f"{path} is a SAM {found} checkpoint, not {expected}: give --architecture {found}")


def identify(path: Path, architecture: str | None = None) -> str:
    """The architecture of the checkpoint at ``path``: detected, or checked against the one given."""
    if architecture is not None and architecture not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
    state = read_shapes(path)
    if architecture is not None:
        check_architecture(path, state, architecture)
        return architecture
    found = architecture_of(state)
    if found is None:
        raise ModelError(
            f"cannot tell the SAM architecture of {path}: give --architecture ({', '.join(ARCHITECTURES)})"
        )
    return found
