"""Shared helpers: atomic writes, the uint8 conversion, and the one user-error base class."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentavatar_ns.assets.cache import AssetChecksumError, AssetMissingError, FetchError
from latentavatar_ns.data.format import DatasetError
from latentavatar_ns.process.decode import InputError
from latentavatar_ns.process.face import MissingDependencyError
from latentavatar_ns.process.video_to_dataset import ProcessError
from latentavatar_ns.reenact.inputs import ReenactError
from latentavatar_ns.render.novel_views import RenderError
from latentavatar_ns.utils.checkpoints import TrainingError
from latentavatar_ns.utils.errors import LatentAvatarError, OutputExistsError, cli_command, error_line
from latentavatar_ns.utils.image import to_uint8
from latentavatar_ns.utils.io import atomic_write

# ----------------------------------------------------------------------------- atomic_write


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.png"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and tmp.name.startswith(".")
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["out.png"]


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(OSError, match="disk full"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half of the")
            raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half of the")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_atomic_write_temporary_elsewhere(tmp_path: Path) -> None:
    """nerfstudio lists checkpoint folders wholesale: the temporary can live beside the folder."""
    folder, scratch = tmp_path / "models", tmp_path / "run"
    with atomic_write(folder / "step-000000001.ckpt", tmp_dir=scratch) as tmp:
        assert tmp.parent == scratch
        assert list(folder.iterdir()) == []
        tmp.write_bytes(b"x")
    assert [p.name for p in folder.iterdir()] == ["step-000000001.ckpt"] and list(scratch.iterdir()) == []


# ----------------------------------------------------------------------------- to_uint8


def test_to_uint8() -> None:
    image = np.array([[-0.5, 0.0, 0.2, 0.5, 1.0, 7.0]], dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(image), [[0, 0, 51, 128, 255, 255]])
    assert to_uint8(image).dtype == np.uint8
    raw = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    assert to_uint8(raw) is raw


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("cls, builtin", [
    (DatasetError, ValueError), (InputError, ValueError), (ProcessError, ValueError), (ReenactError, ValueError),
    (RenderError, ValueError), (AssetChecksumError, ValueError), (AssetMissingError, FileNotFoundError),
    (OutputExistsError, FileExistsError), (MissingDependencyError, RuntimeError), (FetchError, RuntimeError),
    (TrainingError, RuntimeError),
])
def test_every_user_error_shares_the_base_and_keeps_its_builtin(cls, builtin) -> None:
    assert issubclass(cls, LatentAvatarError) and issubclass(cls, builtin)


def test_cli_command_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    @cli_command(KeyError)
    def main(what: str) -> str:
        if what == "user":
            raise DatasetError(f"{tmp_path}/img.png: cannot read image\n(truncated)")
        if what == "also":
            raise KeyError("k")
        if what == "bug":
            raise ZeroDivisionError("bug")
        return "ran"

    assert main("fine") == "ran"
    with pytest.raises(SystemExit) as exc:
        main("user")
    assert str(exc.value) == f"error: {tmp_path}/img.png: cannot read image; (truncated)"
    with pytest.raises(SystemExit, match="error: 'k'"):
        main("also")
    with pytest.raises(ZeroDivisionError):  # not the user's problem: a traceback
        main("bug")
    assert error_line(TrainingError("a: b")) == "error: a: b"


def test_excepthook_of_the_nerfstudio_commands() -> None:
    """ns-train and friends import configs.py, whose hook prints a user error as one line (status 1)."""
    code = ("import latentavatar_ns.method.configs\n"
            "from latentavatar_ns.utils.checkpoints import TrainingError\n"
            "raise TrainingError('run: diverged')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: run: diverged"
