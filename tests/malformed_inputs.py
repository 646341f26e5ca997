"""Malformed input for every command, and how each run ended.

The catalogue behind ``tests/test_robustness.py`` and ``scripts/bench_robustness.py``. A case
builds one bad input in its own folder and names the command line that must refuse it; the
runner runs the real command and sorts the ending into ``error`` (one ``error: <file>: <problem>``
line, exit status non-zero), ``skip`` (finished, reporting what it skipped), or a failure:
``traceback``, ``unclear-error`` (no such line, or it does not name the input), ``accepted``
(malformed input taken as good), ``timeout``. It also checks that a refused run left no output
behind and that no input was written to.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional, Tuple

import numpy as np
from PIL import Image

Expect = Literal["error", "skip"]


@dataclass
class Invocation:
    """One command line over one bad input, and what must hold after it ran."""

    argv: List[str]
    """The command (a console script of this environment) and its arguments."""
    names: str
    """What the error line must name: the bad file or folder."""
    expect: Expect = "error"
    outputs: List[Path] = field(default_factory=list)
    """Paths that must hold no file after a refused run (the command's outputs)."""
    inputs: List[Path] = field(default_factory=list)
    """Files and folders that must be exactly as before (the command's inputs)."""


@dataclass
class Fixtures:
    """Valid inputs the cases start from (copied before being broken, never changed)."""

    dataset: Path
    """A small valid dataset (train/ and eval/)."""
    avatar_config: Optional[Path] = None
    """config.yml of a trained latentavatar-tiny run, for the reenactment and Y-network cases."""
    face_video: Optional[Path] = None
    """A short real video with a face, for the preprocessing cases."""
    face_noface_video: Optional[Path] = None
    """A real video alternating frames with and without a face."""
    face_image: Optional[Path] = None
    """A real photo with one face."""


@dataclass
class Case:
    name: str
    command: str
    build: Callable[[Path, Fixtures], Invocation]
    needs: Tuple[str, ...] = ()
    """Fixtures fields the case needs (it is not run without them)."""


@dataclass
class Outcome:
    case: str
    command: str
    expected: str
    ended: str
    message: str
    partial_output: bool
    input_changed: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.ended == self.expected and not self.partial_output and not self.input_changed

    def to_dict(self) -> Dict:
        return {**asdict(self), "ok": self.ok}


# ----------------------------------------------------------------------------------------------
# Breaking a dataset: each function damages a copy and returns the path the error must name.


def _frame(root: Path, kind: str, split: str = "train", index: int = 1) -> Path:
    found = sorted((root / split).glob(f"{kind}_{index:05d}.*"))
    if not found:
        raise FileNotFoundError(f"{root / split}: no {kind}_{index:05d} file to break")
    return found[0]


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _replace_image(path: Path, image: Image.Image) -> Path:
    """Write ``image`` under ``path``'s name (PNG content even for .jpg: readers go by content)."""
    image.save(path, format="PNG")
    return path


def _params(root: Path, **arrays) -> Path:
    path = _frame(root, "params")
    np.savez(path, **arrays)
    return path


def _remove(path: Path) -> Path:
    """Delete a file; the error names the file expected there, whatever its extension."""
    path.unlink()
    return path.with_suffix("")


def _frame_size(root: Path) -> Tuple[int, int]:
    with Image.open(_frame(root, "img")) as img:
        return img.size


def _every_mask(root: Path, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    """Rewrite every train mask's matte; the error names the folder of the masks."""
    for path in sorted((root / "train").glob("mask_*")):
        with Image.open(path) as img:
            matte = np.asarray(img.convert("L"))
        _replace_image(path, Image.fromarray(change(matte).astype(np.uint8)))
    return root / "train"


def _every_params(root: Path, change: Callable[[Dict[str, np.ndarray], Tuple[int, int]], None]) -> Path:
    """Change every train params file (its arrays, given the frame size); the error names the split folder."""
    size = _frame_size(root)
    for path in sorted((root / "train").glob("params_*.npz")):
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in npz.files}
        change(arrays, size)
        np.savez(path, **arrays)
    return root / "train"


def _head_far_aside(arrays: Dict[str, np.ndarray], size: Tuple[int, int]) -> None:
    pose = arrays["pose"].astype(np.float64).reshape(1, 6)
    pose[0, 3] += 100.0  # a hundred world units to the side of every camera
    arrays["pose"] = pose


def _crop_beside_image(arrays: Dict[str, np.ndarray], size: Tuple[int, int]) -> None:
    width, height = size
    arrays["crop_affine"] = np.array([[1.0 / width, 0.0, -3.0], [0.0, 1.0 / height, 0.0]])  # x from 3 to 4 widths


def _empty_split(root: Path) -> Path:
    for path in (root / "train").iterdir():
        path.unlink()
    return root / "train"


def _empty_folder(root: Path) -> Path:
    shutil.rmtree(root)
    root.mkdir()
    return root


DATASET_BREAKERS: Dict[str, Callable[[Path], Path]] = {
    "empty dataset folder": _empty_folder,
    "missing dataset folder": lambda root: (shutil.rmtree(root), root)[1],
    "eval split missing": lambda root: (shutil.rmtree(root / "eval"), root / "eval")[1],
    "empty train split": _empty_split,
    "zero-byte image": lambda root: (_frame(root, "img").write_bytes(b""), _frame(root, "img"))[1],
    "text file as image": lambda root: (_frame(root, "img").write_text("not an image"), _frame(root, "img"))[1],
    "truncated image header": lambda root: _truncate(_frame(root, "img"), 0.02),
    "truncated image pixels": lambda root: _truncate(_frame(root, "img"), 0.6),
    "image of another size": lambda root: _replace_image(_frame(root, "img"), Image.new("RGB", (48, 40))),
    "grey image among RGB frames": lambda root: _replace_image(_frame(root, "img"),
                                                               Image.new("L", _frame_size(root), 128)),
    "16-bit image": lambda root: _replace_image(_frame(root, "img"), Image.new("I;16", _frame_size(root), 300)),
    "missing mask": lambda root: _remove(_frame(root, "mask")),
    "zero-byte mask": lambda root: (_frame(root, "mask").write_bytes(b""), _frame(root, "mask"))[1],
    "mask of another size": lambda root: _replace_image(_frame(root, "mask"), Image.new("L", (16, 16), 255)),
    "every mask empty": lambda root: _every_mask(root, np.zeros_like),
    "masks saved as 0/1": lambda root: _every_mask(root, lambda matte: matte >= 128),
    "missing params": lambda root: _remove(_frame(root, "params")),
    "params not an npz": lambda root: (_frame(root, "params").write_bytes(b"PK\x03\x04broken"),
                                       _frame(root, "params"))[1],
    "params without pose": lambda root: _params(root, scale=np.ones(1)),
    "params without scale": lambda root: _params(root, pose=np.zeros((1, 6))),
    "pose of wrong shape": lambda root: _params(root, pose=np.zeros((1, 5)), scale=np.ones(1)),
    "NaN pose": lambda root: _params(root, pose=np.full((1, 6), np.nan), scale=np.ones(1)),
    "infinite translation": lambda root: _params(root, pose=np.array([[0, 0, 0, 0, 0, np.inf]]), scale=np.ones(1)),
    "zero scale": lambda root: _params(root, pose=np.zeros((1, 6)), scale=np.zeros(1)),
    "negative scale": lambda root: _params(root, pose=np.zeros((1, 6)), scale=-np.ones(1)),
    "text in pose": lambda root: _params(root, pose=np.array([["yaw", "pitch", "roll", "x", "y", "z"]]),
                                         scale=np.ones(1)),
    "head outside every frame": lambda root: _every_params(root, _head_far_aside),
    "face crop outside every frame": lambda root: _every_params(root, _crop_beside_image),
    "malformed camera.json": lambda root: ((root / "camera.json").write_text("{\"fx\": "), root / "camera.json")[1],
    "camera.json with NaN focal": lambda root: ((root / "camera.json").write_text(
        '{"width": 64, "height": 64, "fx": NaN, "fy": 100, "cx": 32, "cy": 32}'), root / "camera.json")[1],
}


def broken_dataset(base: Path, into: Path, breaker: str) -> Path:
    """A copy of ``base`` at ``into`` damaged by ``DATASET_BREAKERS[breaker]``; the path to name."""
    shutil.copytree(base, into)
    return DATASET_BREAKERS[breaker](into)


# ----------------------------------------------------------------------------------------------
# The cases


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _train_case(breaker: str) -> Callable[[Path, Fixtures], Invocation]:
    def build(work: Path, fx: Fixtures) -> Invocation:
        data = work / "data"
        named = broken_dataset(fx.dataset, data, breaker)
        out = work / "runs"
        argv = [_script("ns-train"), "latentavatar-tiny", "--data", str(data), "--output-dir", str(out),
                "--vis", "tensorboard", "--machine.device-type", "cpu", "--max-num-iterations", "2"]
        return Invocation(argv, str(named), outputs=[out], inputs=[data] if data.exists() else [])
    return build


def _avatar_copy(work: Path, fx: Fixtures, checkpoints: bool) -> Path:
    """A run folder whose config.yml points at itself; with or without the avatar's checkpoints."""
    import yaml

    assert fx.avatar_config is not None
    config = yaml.load(fx.avatar_config.read_text(), Loader=yaml.Loader)
    run = work / "avatar" / "x" / config.method_name / "run"
    config.output_dir, config.experiment_name, config.timestamp = work / "avatar", "x", "run"
    (run / config.relative_model_dir).mkdir(parents=True)
    if checkpoints:
        for ckpt in (fx.avatar_config.parent / config.relative_model_dir).glob("step-*.ckpt"):
            shutil.copy(ckpt, run / config.relative_model_dir / ckpt.name)
    (run / "config.yml").write_text(yaml.dump(config))
    return run / "config.yml"


def _reenact(config: Path, out: Path, *extra: str) -> List[str]:
    return [_script("ns-latentavatar-reenact"), "--load-config", str(config), "--output-path", str(out), *extra]


def _reenact_no_checkpoint(work: Path, fx: Fixtures) -> Invocation:
    config = _avatar_copy(work, fx, checkpoints=False)
    out = work / "out.mp4"
    return Invocation(_reenact(config, out, "--self"), str(config), outputs=[out], inputs=[config.parent])


def _reenact_damaged_checkpoint(work: Path, fx: Fixtures) -> Invocation:
    config = _avatar_copy(work, fx, checkpoints=True)
    ckpts = sorted((config.parent / "nerfstudio_models").glob("*.ckpt"))
    for ckpt in ckpts:
        _truncate(ckpt, 0.3)
    out = work / "out.mp4"
    return Invocation(_reenact(config, out, "--self"), str(ckpts[-1].parent), outputs=[out], inputs=[config.parent])


def _reenact_config_not_yaml(work: Path, fx: Fixtures) -> Invocation:
    config = work / "config.yml"
    config.write_text("{{{ this is not yaml")
    out = work / "out.mp4"
    return Invocation(_reenact(config, out, "--self"), str(config), outputs=[out], inputs=[config])


def _reenact_driving(make: Callable[[Path], Path]) -> Callable[[Path, Fixtures], Invocation]:
    def build(work: Path, fx: Fixtures) -> Invocation:
        assert fx.avatar_config is not None
        driving = make(work)
        out = work / "out.mp4"
        return Invocation(_reenact(fx.avatar_config, out, "--driving", str(driving), "--self"),
                          str(driving), outputs=[out], inputs=[driving])
    return build


def _empty_dataset(work: Path) -> Path:
    for split in ("train", "eval"):
        (work / "driving" / split).mkdir(parents=True)
    return work / "driving"


def _bytes_file(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(work: Path) -> Path:
        path = work / name
        path.write_bytes(data)
        return path
    return make


def _bytes_file_at(name: str, data: bytes) -> Callable[[Path, Fixtures], Path]:
    make = _bytes_file(name, data)
    return lambda work, fx: make(work)


def _reenact_existing_output(work: Path, fx: Fixtures) -> Invocation:
    assert fx.avatar_config is not None
    out = work / "mine.mp4"
    out.write_bytes(b"a video the user made")
    return Invocation(_reenact(fx.avatar_config, out, "--self"), str(out), inputs=[out])


def _reenact_output_in_input(work: Path, fx: Fixtures) -> Invocation:
    data = work / "driving"
    shutil.copytree(fx.dataset, data)
    assert fx.avatar_config is not None
    out = data / "train" / "out.mp4"
    return Invocation(_reenact(fx.avatar_config, out, "--driving", str(data), "--self"), str(out),
                      outputs=[out], inputs=[data])


def _ynet(config: Path, actor: Path, out: Path, *extra: str) -> List[str]:
    return [_script("ns-latentavatar-ynet"), "--load-config", str(config), "--actor-data", str(actor),
            "--output-dir", str(out), "--steps", "2", "--device", "cpu", *extra]


def _ynet_no_checkpoint(work: Path, fx: Fixtures) -> Invocation:
    config = _avatar_copy(work, fx, checkpoints=False)
    out = work / "ynet"
    return Invocation(_ynet(config, fx.dataset, out), str(config), outputs=[out], inputs=[config.parent])


def _ynet_empty_actor(work: Path, fx: Fixtures) -> Invocation:
    assert fx.avatar_config is not None
    actor = _empty_dataset(work)
    out = work / "ynet"
    return Invocation(_ynet(fx.avatar_config, actor, out), str(actor / "train"), outputs=[out], inputs=[actor])


def _ynet_broken_actor(breaker: str) -> Callable[[Path, Fixtures], Invocation]:
    def build(work: Path, fx: Fixtures) -> Invocation:
        assert fx.avatar_config is not None
        actor = work / "actor"
        named = broken_dataset(fx.dataset, actor, breaker)
        out = work / "ynet"
        return Invocation(_ynet(fx.avatar_config, actor, out), str(named), outputs=[out], inputs=[actor])
    return build


def _ynet_output_not_empty(work: Path, fx: Fixtures) -> Invocation:
    assert fx.avatar_config is not None
    out = work / "ynet"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    return Invocation(_ynet(fx.avatar_config, fx.dataset, out), str(out), inputs=[out])


def _ynet_output_in_input(work: Path, fx: Fixtures) -> Invocation:
    assert fx.avatar_config is not None
    actor = work / "actor"
    shutil.copytree(fx.dataset, actor)
    out = actor / "ynet"
    return Invocation(_ynet(fx.avatar_config, actor, out), str(out), outputs=[out], inputs=[actor])


def _train_existing_run(work: Path, fx: Fixtures) -> Invocation:
    out = work / "runs"
    models = out / "x" / "latentavatar-tiny" / "old" / "nerfstudio_models"
    models.mkdir(parents=True)
    (models / "step-000001000.ckpt").write_bytes(b"hours of training")
    argv = [_script("ns-train"), "latentavatar-tiny", "--data", str(fx.dataset), "--output-dir", str(out),
            "--experiment-name", "x", "--timestamp", "old", "--vis", "tensorboard", "--machine.device-type", "cpu",
            "--max-num-iterations", "2"]
    return Invocation(argv, str(models.parent), inputs=[out])


def _train_output_in_input(work: Path, fx: Fixtures) -> Invocation:
    data = work / "data"
    shutil.copytree(fx.dataset, data)
    out = data / "runs"
    argv = [_script("ns-train"), "latentavatar-tiny", "--data", str(data), "--output-dir", str(out),
            "--vis", "tensorboard", "--machine.device-type", "cpu", "--max-num-iterations", "2"]
    return Invocation(argv, str(data), outputs=[out], inputs=[data])


def _train_damaged_load_dir(work: Path, fx: Fixtures) -> Invocation:
    models = work / "old" / "nerfstudio_models"
    models.mkdir(parents=True)
    (models / "step-000000100.ckpt").write_bytes(b"PK\x03\x04 cut short")
    out = work / "runs"
    argv = [_script("ns-train"), "latentavatar-tiny", "--data", str(fx.dataset), "--output-dir", str(out),
            "--vis", "tensorboard", "--machine.device-type", "cpu", "--max-num-iterations", "2",
            "--load-dir", str(models)]
    return Invocation(argv, str(models), outputs=[out], inputs=[models])


def _synth_output_not_empty(work: Path, fx: Fixtures) -> Invocation:
    out = work / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = [_script("ns-latentavatar-synth"), "--output-dir", str(out), "--num-frames", "2", "--resolution", "32"]
    return Invocation(argv, str(out), inputs=[out])


def _process(make: Callable[[Path, Fixtures], Path], expect: Expect = "error", names: Optional[str] = None,
             frames: Tuple[str, ...] = ("--max-frames", "12")) -> Callable[[Path, Fixtures], Invocation]:
    def build(work: Path, fx: Fixtures) -> Invocation:
        source = make(work, fx)
        out = work / "processed"
        argv = [_script("ns-latentavatar-process"), "--input", str(source), "--output-dir", str(out),
                "--resolution", "64", *frames]
        return Invocation(argv, names or str(source), expect=expect, outputs=[out] if expect == "error" else [],
                          inputs=[source])
    return build


def _video_of(frames: np.ndarray, path: Path) -> Path:
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(path), frames.shape[2:0:-1], fps=10, quality=8, macro_block_size=1)
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def _faceless_video(work: Path, fx: Fixtures) -> Path:
    rng = np.random.default_rng(0)
    frames = np.linspace(40, 200, 10)[:, None, None, None] * np.ones((10, 96, 128, 3))
    frames = (frames + rng.normal(0, 10, frames.shape)).clip(0, 255).astype(np.uint8)
    return _video_of(frames, work / "wall.mp4")


def _image_folder(kind: str) -> Callable[[Path, Fixtures], Path]:
    def make(work: Path, fx: Fixtures) -> Path:
        folder = work / "photos"
        folder.mkdir()
        if kind == "zero-byte":
            (folder / "000.jpg").write_bytes(b"")
        return folder
    return make


def _copy_of(attr: str) -> Callable[[Path, Fixtures], Path]:
    def make(work: Path, fx: Fixtures) -> Path:
        source = getattr(fx, attr)
        return Path(shutil.copy(source, work / Path(source).name))
    return make


def _process_output_exists(work: Path, fx: Fixtures) -> Invocation:
    assert fx.face_video is not None
    source = Path(shutil.copy(fx.face_video, work / "clip.mp4"))
    out = work / "processed"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = [_script("ns-latentavatar-process"), "--input", str(source), "--output-dir", str(out),
            "--resolution", "64", "--max-frames", "4"]
    return Invocation(argv, str(out), inputs=[source, out])


def _process_output_in_input(work: Path, fx: Fixtures) -> Invocation:
    assert fx.face_image is not None
    folder = work / "photos"
    folder.mkdir()
    for i in range(3):
        shutil.copy(fx.face_image, folder / f"{i:03d}.jpg")
    out = folder / "processed"
    argv = [_script("ns-latentavatar-process"), "--input", str(folder), "--output-dir", str(out),
            "--resolution", "64", "--max-frames", "4"]
    return Invocation(argv, str(out), outputs=[out], inputs=[folder])


def _process_overwrite_input(work: Path, fx: Fixtures) -> Invocation:
    assert fx.face_video is not None
    out = work / "project"
    out.mkdir()
    source = Path(shutil.copy(fx.face_video, out / "clip.mp4"))
    argv = [_script("ns-latentavatar-process"), "--input", str(source), "--output-dir", str(out),
            "--resolution", "64", "--max-frames", "4", "--overwrite"]
    return Invocation(argv, str(out), inputs=[out])


def all_cases() -> List[Case]:
    """Every malformed input, grouped by the command that must refuse it."""
    cases = [Case(f"ns-train: {name}", "ns-train", _train_case(name)) for name in DATASET_BREAKERS]
    cases += [
        Case("ns-train: run folder already holds checkpoints", "ns-train", _train_existing_run),
        Case("ns-train: --load-dir with only a damaged checkpoint", "ns-train", _train_damaged_load_dir),
        Case("ns-train: output inside the dataset", "ns-train", _train_output_in_input),
        Case("reenact: config points at missing checkpoints", "ns-latentavatar-reenact", _reenact_no_checkpoint,
             ("avatar_config",)),
        Case("reenact: every checkpoint damaged", "ns-latentavatar-reenact", _reenact_damaged_checkpoint,
             ("avatar_config",)),
        Case("reenact: config is not YAML", "ns-latentavatar-reenact", _reenact_config_not_yaml),
        Case("reenact: empty driving dataset", "ns-latentavatar-reenact", _reenact_driving(_empty_dataset),
             ("avatar_config",)),
        Case("reenact: zero-byte driving video", "ns-latentavatar-reenact",
             _reenact_driving(_bytes_file("drive.mp4", b"")), ("avatar_config",)),
        Case("reenact: driving video with no decodable frame", "ns-latentavatar-reenact",
             _reenact_driving(_bytes_file("drive.mp4", bytes(range(256)) * 64)), ("avatar_config",)),
        Case("reenact: output file exists", "ns-latentavatar-reenact", _reenact_existing_output, ("avatar_config",)),
        Case("reenact: output inside the driving dataset", "ns-latentavatar-reenact", _reenact_output_in_input,
             ("avatar_config",)),
        Case("ynet: config points at missing checkpoints", "ns-latentavatar-ynet", _ynet_no_checkpoint,
             ("avatar_config",)),
        Case("ynet: empty actor dataset", "ns-latentavatar-ynet", _ynet_empty_actor, ("avatar_config",)),
        Case("ynet: actor frame truncated", "ns-latentavatar-ynet", _ynet_broken_actor("truncated image pixels"),
             ("avatar_config",)),
        Case("ynet: actor params with NaN pose", "ns-latentavatar-ynet", _ynet_broken_actor("NaN pose"),
             ("avatar_config",)),
        Case("ynet: output folder not empty", "ns-latentavatar-ynet", _ynet_output_not_empty, ("avatar_config",)),
        Case("ynet: output inside the actor dataset", "ns-latentavatar-ynet", _ynet_output_in_input,
             ("avatar_config",)),
        Case("synth: output folder not empty", "ns-latentavatar-synth", _synth_output_not_empty),
        Case("process: zero-byte video", "ns-latentavatar-process", _process(_bytes_file_at("clip.mp4", b""))),
        Case("process: video with no decodable frame", "ns-latentavatar-process",
             _process(_bytes_file_at("clip.mp4", bytes(range(256)) * 64))),
        Case("process: video without a face", "ns-latentavatar-process", _process(_faceless_video)),
        Case("process: empty image folder", "ns-latentavatar-process", _process(_image_folder("empty"))),
        Case("process: image folder with only a zero-byte image", "ns-latentavatar-process",
             _process(_image_folder("zero-byte"))),
        Case("process: video alternating face and no face", "ns-latentavatar-process",
             _process(_copy_of("face_noface_video"), expect="skip", frames=("--stride", "8")),
             ("face_noface_video",)),
        Case("process: output folder not empty", "ns-latentavatar-process", _process_output_exists, ("face_video",)),
        Case("process: output inside the input folder", "ns-latentavatar-process", _process_output_in_input,
             ("face_image",)),
        Case("process: --overwrite of the folder that holds the input", "ns-latentavatar-process",
             _process_overwrite_input, ("face_video",)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Running


def _snapshot(paths: List[Path]) -> List[Tuple[str, int, int]]:
    rows = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        rows += [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return rows


def _has_files(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(p.is_file() for p in path.rglob("*")))


def classify(returncode: Optional[int], stdout: str, stderr: str, names: str) -> Tuple[str, str]:
    """How a run ended, and the line that says so."""
    if returncode is None:
        return "timeout", ""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if "Traceback (most recent call last)" in stderr:
        return "traceback", last
    if returncode != 0:
        clear = last.startswith("error: ") and names in last
        return ("error" if clear else "unclear-error"), last
    report = [line for line in (stdout + stderr).splitlines() if "skipped" in line.lower()]
    return ("skip", report[-1].strip()) if report else ("accepted", "")


def run_case(case: Case, work: Path, fixtures: Fixtures, timeout: float = 300.0) -> Outcome:
    """Build the case's bad input under ``work``, run its command, and judge the ending."""
    work.mkdir(parents=True, exist_ok=True)
    inv = case.build(work, fixtures)
    before = _snapshot(inv.inputs)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    began = time.time()
    try:
        proc = subprocess.run(inv.argv, capture_output=True, text=True, timeout=timeout, cwd=work, env=env)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired:
        code, out, err = None, "", ""
    ended, message = classify(code, out, err, inv.names)
    return Outcome(case.name, case.command, inv.expect, ended, message,
                   partial_output=inv.expect == "error" and any(_has_files(p) for p in inv.outputs),
                   input_changed=_snapshot(inv.inputs) != before, seconds=round(time.time() - began, 2))


def available(case: Case, fixtures: Fixtures) -> bool:
    """Whether the case's command is installed and its fixtures were given."""
    return Path(_script(case.command)).exists() and all(getattr(fixtures, name) is not None for name in case.needs)
