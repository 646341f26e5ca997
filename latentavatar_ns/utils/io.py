"""Files that appear whole or not at all: every output that a crash must not leave half-written.

Checkpoints, cached assets, videos and previews are written to a temporary file, flushed to disk and
renamed over their final name with ``os.replace`` (atomic on one file system). A reader, or a resumed
run, sees either the previous file or the new one; a failed or interrupted write (Ctrl-C included)
removes its temporary.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator, Optional, Union


@contextlib.contextmanager
def atomic_write(path: Union[str, Path], tmp_dir: Optional[Union[str, Path]] = None) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it replaces ``path``.

    The temporary keeps ``path``'s suffix (video and image writers pick the format from it) and
    starts with a dot. It lives next to ``path``, or in ``tmp_dir`` (which must be on the same file
    system) for folders that other tools list wholesale: nerfstudio parses every name in
    ``nerfstudio_models/`` as a step. Whatever wrote the temporary must have closed it; it is then
    fsync-ed before the rename, so a power cut cannot leave a renamed but empty file::

        with atomic_write(out / "step-000000100.ckpt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    folder = Path(tmp_dir) if tmp_dir is not None else path.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    # Unique per process and call: two commands filling the same cache never share a temporary.
    tmp = folder / f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}"
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR)  # some systems refuse fsync on a read-only descriptor
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
