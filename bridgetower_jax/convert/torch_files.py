"""Read a PyTorch weights file (state dict, Lightning .ckpt, TorchScript archive, safetensors) to numpy.

Pickled checkpoints can run arbitrary code when unpickled, so nothing here unpickles with the
full Python unpickler: `torch.load(weights_only=True)` first, and for containers that also hold
training objects (a Lightning .ckpt pickles its callbacks, hyper-parameters, ...) an unpickler
that rebuilds tensors and plain containers and turns every other class into an inert placeholder.
OpenAI's CLIP `.pt` files are TorchScript archives and are read with `torch.jit.load`.
Every error names the file.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bridgetower_jax.convert.pytorch import tensor_to_numpy

# Globals a checkpoint may reference that rebuild tensors or plain data and run nothing else.
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Size"), ("torch", "Tensor"), ("torch.nn.parameter", "Parameter"), ("torch", "device"),
}


class _Placeholder:
    """Stands in for a class that a checkpoint pickled besides its tensors (never executed)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):   # dict subclasses are rebuilt item by item
        self.__dict__.setdefault("items", {})[key] = value


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        import torch
        is_torch_data = module == "torch" and (name.endswith("Storage")
                                               or isinstance(getattr(torch, name, None), torch.dtype))
        if (module, name) in _SAFE_GLOBALS or is_torch_data:
            return super().find_class(module, name)
        return type(name, (_Placeholder,), {"__module__": f"placeholder:{module}"})


class _InertPickleModule:
    """The `pickle_module` torch.load uses: tensors rebuilt, every other class inert."""
    Unpickler = _InertUnpickler
    load = staticmethod(lambda f, **kw: _InertUnpickler(f, **kw).load())
    __name__ = "bridgetower_jax.convert.torch_files"


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in z.namelist())


def load_torch_object(path: str | os.PathLike) -> Any:
    """The object stored in a torch file, with tensors as torch tensors and foreign classes inert."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    try:
        if _is_torchscript_archive(path):
            return torch.jit.load(str(path), map_location="cpu").state_dict()
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # Not only tensors (e.g. Lightning's callback and hyper-parameter objects): read it
            # again with the inert unpickler instead of trusting the file.
            return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_InertPickleModule)
    except Exception as e:
        raise ValueError(f"cannot read {path} as a PyTorch weights file (truncated or not a checkpoint?): "
                         f"{type(e).__name__}: {e}") from e


def read_weights_file(path: str | os.PathLike) -> dict[str, Any]:
    """A weights file -> its top-level mapping (a state dict, or a checkpoint container around one).

    Values are left as read (torch tensors, numpy arrays for safetensors): a Lightning container
    also holds optimizer states, which nobody should pay to convert.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        try:
            return load_file(str(path))
        except Exception as e:
            raise ValueError(f"cannot read weights file {path}: {e}") from e
    obj = load_torch_object(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict or a checkpoint dictionary")
    return obj


def numpy_state_dict(mapping: dict[str, Any], path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A flat state dict (str -> tensor or array) as numpy; ValueError naming `path` for anything else."""
    import torch
    bad = [k for k, v in mapping.items() if not isinstance(k, str) or not isinstance(v, (torch.Tensor, np.ndarray))]
    if bad:
        raise ValueError(f"{path} is not a flat state dict: entries {bad[:5]} are not tensors")
    return {k: tensor_to_numpy(v) if isinstance(v, torch.Tensor) else v for k, v in mapping.items()}
