"""An ``ffmpeg`` on PATH for nerfstudio's video writers, from the imageio-ffmpeg package.

``ns-render camera-path`` / ``interpolate`` refuse to start unless ``shutil.which("ffmpeg")``
finds one, and then write video through mediapy, which looks the same way. The project ships
imageio-ffmpeg's static binary, so when no system ffmpeg exists a link named ``ffmpeg`` to it is
kept in ``<asset cache>/bin`` and that folder is appended to this process's PATH. Called from the
entry-point module (imported by every ``ns-*`` command), so it must stay cheap and never raise.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional


def ensure_ffmpeg_on_path() -> Optional[str]:
    """The ffmpeg this process will use (None when neither the system nor imageio-ffmpeg has one)."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        from latentavatar_ns.assets.cache import cache_dir

        exe = Path(imageio_ffmpeg.get_ffmpeg_exe())
        folder = cache_dir() / "bin"
        link = folder / "ffmpeg"
        if not (link.exists() and link.resolve() == exe.resolve()):
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".ffmpeg.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(exe)
            os.replace(tmp, link)  # atomic: concurrent commands never see a half-made link
        os.environ["PATH"] = os.pathsep.join([p for p in (os.environ.get("PATH", ""), str(folder)) if p])
    except Exception:  # noqa: BLE001 - a missing ffmpeg must not break unrelated ns-* commands
        return None
    return shutil.which("ffmpeg")
