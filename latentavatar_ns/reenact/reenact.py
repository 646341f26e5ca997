"""``ns-latentavatar-reenact``: render an avatar making a driver's expressions (and head motion).

    ns-latentavatar-reenact --load-config RUN/config.yml --ynet ynet/anna-bob --driving data/bob --output-path out.mp4

For every driving frame: face crop -> Y-network shared encoder -> mapping -> the avatar's theta
-> ``model.planes_from_theta`` -> ``model.render(planes, camera, theta=theta)``. ``--self`` uses the avatar's
own encoder and mapping instead (self-reenactment on its held-out frames by default; with
``--driving`` another person, the no-Y-network baseline).

``--via blendshapes`` drives through the frames' ARKit blendshapes instead (stored by
ns-latentavatar-process) and the avatar's blendshape mapping (``ns-latentavatar-blendshapes fit``): no
Y-network. ``--driving-blendshapes take.csv`` reads them, with the head's rotation, from a Live Link
Face recording.

Head pose: ``follow`` (default) moves the avatar's head as the driver moves: each frame's rotation
and translation relative to the driver's mean (over its train frames), applied to the avatar's
mean pose, with the driver's head size normalised to the avatar's. The camera is the avatar's
(camera.json and image size), so the video looks like the avatar's footage. ``fixed`` keeps the
head frontal; ``--camera-path`` renders along a camera path exported by the viewer's render panel.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Literal, Optional, Sequence, Tuple

import numpy as np
import tyro
from typing_extensions import Annotated

from latentavatar_ns.reenact.inputs import (
    ReenactError,
    check_dataset_dir,
    check_file,
    check_new_file,
    check_outside,
)

if TYPE_CHECKING:
    import torch
    from nerfstudio.cameras.cameras import Cameras

    from latentavatar_ns.data.dataparser import LatentAvatarDataParser
    from latentavatar_ns.data.dataset import LatentAvatarDataset
    from latentavatar_ns.data.format import CameraSpec, FrameParams
    from latentavatar_ns.blendshapes.video import VideoTrack
    from latentavatar_ns.reenact.avatar import Avatar


@dataclass
class ReenactConfig:
    """Drive a trained avatar with another person's face (or its own held-out frames with --self) and write a video."""

    load_config: Path
    """The avatar: config.yml of an ns-train latentavatar run."""
    output_path: Path
    """The video to write (mp4)."""
    ynet: Optional[Path] = None
    """Y-network trained for this avatar and the driver (ns-latentavatar-ynet's output folder or a checkpoint)."""
    driving: Optional[Path] = None
    """The driver's dataset folder (made from a video by ns-latentavatar-process); with --self: the avatar's own.
    With --via blendshapes also a video file or a folder of images, read frame by frame (no dataset written)."""
    self_reenact: Annotated[bool, tyro.conf.arg(name="self")] = False
    """Drive through the avatar's own encoder and mapping, no Y-network (self-reenactment)."""
    via: Literal["image", "blendshapes"] = "image"
    """image: each driving frame's face crop (through --ynet, or the avatar's encoder with --self); blendshapes:
    each frame's stored ARKit blendshapes through the avatar's blendshape mapping (no Y-network needed)."""
    driving_blendshapes: Optional[Path] = None
    """A Live Link Face CSV (blendshapes and head rotation per frame) to drive with, through the blendshape mapping."""
    mapping: Optional[Path] = None
    """The avatar's blendshape mapping (default: blendshape_mapping.pt beside --load-config)."""
    split: Optional[Literal["train", "eval", "all"]] = None
    """Driving frames: train, eval or all (train then eval). Default: all, or eval (held-out frames) with --self
    on the avatar's own dataset."""
    pose: Literal["follow", "fixed"] = "follow"
    """follow: the avatar's head moves as the driver's (relative to the driver's mean pose); fixed: frontal."""
    camera_path: Optional[Path] = None
    """A camera path JSON from the viewer's render panel, spread over the driving frames (novel views)."""
    side_by_side: bool = False
    """Put the driving frame left of the avatar."""
    smooth: int = 1
    """Temporal smoothing window (frames) for the expression codes and head poses; 1 = none."""
    frames_dir: Optional[Path] = None
    """Also write every output frame as a PNG here (frame_00000.png, ...)."""
    fps: float = 25.0
    """Frame rate of the video."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Rendering device (auto: cuda when available)."""
    overwrite: bool = False
    """Replace an existing output video (and PNG frames)."""


# ----------------------------------------------------------------------------------------------
# Head poses


@dataclass
class HeadPoses:
    """Per-frame head rotations (N, 3, 3), translations (N, 3) and scales (N,)."""

    rotations: np.ndarray
    translations: np.ndarray
    scales: np.ndarray

    @classmethod
    def from_params(cls, params: Sequence["FrameParams"]) -> "HeadPoses":
        from latentavatar_ns.data.poses import axis_angle_to_matrix

        return cls(np.stack([axis_angle_to_matrix(p.pose[:3]) for p in params]),
                   np.stack([p.pose[3:6] for p in params]), np.array([p.scale for p in params], dtype=np.float64))

    def __len__(self) -> int:
        return len(self.scales)

    def mean(self) -> Tuple[np.ndarray, np.ndarray, float]:
        """Mean rotation (the chordal mean, projected back onto rotations), translation and scale."""
        return project_rotations(self.rotations.mean(axis=0)[None])[0], self.translations.mean(axis=0), \
            float(self.scales.mean())

    def smoothed(self, window: int) -> "HeadPoses":
        flat = moving_average(self.rotations.reshape(len(self), 9), window).reshape(-1, 3, 3)
        return HeadPoses(project_rotations(flat), moving_average(self.translations, window),
                         moving_average(self.scales[:, None], window)[:, 0])

    def pose_vectors(self) -> np.ndarray:
        """(N, 6) axis-angle + translation, as in params files."""
        from latentavatar_ns.data.poses import matrix_to_axis_angle

        return np.concatenate([np.stack([matrix_to_axis_angle(r) for r in self.rotations]), self.translations], 1)


def follow_poses(driver: HeadPoses, driver_mean: Tuple, avatar_mean: Tuple) -> HeadPoses:
    """The driver's motion relative to its own mean pose, applied to the avatar's mean pose.

    Rotation ``R_i R_drv^T R_ava``; translation ``t_ava + (t_i - t_drv) s_ava / s_drv``; scale
    ``s_i s_ava / s_drv``: the driver's head size is normalised to the avatar's.
    """
    (r_drv, t_drv, s_drv), (r_ava, t_ava, s_ava) = driver_mean, avatar_mean
    ratio = s_ava / s_drv
    return HeadPoses(driver.rotations @ (r_drv.T @ r_ava), t_ava + (driver.translations - t_drv) * ratio,
                     driver.scales * ratio)


def head_rotations(yaw_pitch_roll: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations in the camera's frame (OpenCV: x right, y down, z forward) from yaw (about the
    vertical axis), pitch (about the horizontal axis) and roll (about the viewing axis) in radians, as a
    recording of head rotation gives them; roll is applied first, then pitch, then yaw."""
    out = []
    for yaw, pitch, roll in np.asarray(yaw_pitch_roll, dtype=np.float64):
        cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
        r_yaw = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
        r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        r_roll = np.array([[cr, sr, 0], [-sr, cr, 0], [0, 0, 1]])
        out.append(r_yaw @ r_pitch @ r_roll)
    return np.stack(out) if out else np.zeros((0, 3, 3))


def blendshape_panel(weights: np.ndarray, height: int) -> np.ndarray:
    """(H, H/2, 3) bars of the scored blendshapes (jaw, smile, blinks, brows), for --side-by-side without images."""
    from latentavatar_ns.blendshapes.names import SCORED, index

    width = max(height // 2, 8)
    panel = np.full((height, width, 3), 0.15, dtype=np.float32)
    rows = len(SCORED)
    for row, names in enumerate(SCORED.values()):
        value = float(np.mean([weights[index(name)] for name in names]))
        y0, y1 = int(height * (row + 0.25) / rows), int(height * (row + 0.75) / rows)
        panel[y0:y1, 1:1 + int((width - 2) * np.clip(value, 0, 1))] = (0.95, 0.75, 0.2)
    return panel


def project_rotations(matrices: np.ndarray) -> np.ndarray:
    """Nearest rotation matrices (SVD) to (N, 3, 3) matrices."""
    u, _, vt = np.linalg.svd(matrices)
    det = np.sign(np.linalg.det(u @ vt))
    u[:, :, -1] *= det[:, None]
    return u @ vt


def moving_average(values, window: int):
    """Centred moving average over the first axis (numpy array or torch tensor); shorter at the ends."""
    n = len(values)
    if window <= 1 or n < 2:
        return values
    half = window // 2
    out = [values[max(0, i - half):min(n, i + window - half)].mean(0) for i in range(n)]
    if isinstance(values, np.ndarray):
        return np.stack(out)
    import torch

    return torch.stack(out)


def pose_cameras(camera: "CameraSpec", poses: HeadPoses) -> "Cameras":
    """nerfstudio cameras in canonical head space: the dataset camera with each head pose folded in."""
    import torch
    from nerfstudio.cameras.cameras import Cameras, CameraType

    from latentavatar_ns.data.poses import canonical_camera_to_world, opencv_to_opengl

    c2ws = [opencv_to_opengl(canonical_camera_to_world(camera.world_to_camera, pose, float(scale)))
            for pose, scale in zip(poses.pose_vectors(), poses.scales)]
    n = len(c2ws)
    full = lambda v: torch.full((n, 1), float(v))  # noqa: E731
    return Cameras(camera_to_worlds=torch.tensor(np.stack(c2ws), dtype=torch.float32), fx=full(camera.fx),
                   fy=full(camera.fy), cx=full(camera.cx), cy=full(camera.cy),
                   width=torch.full((n, 1), int(camera.width), dtype=torch.int64),
                   height=torch.full((n, 1), int(camera.height), dtype=torch.int64), camera_type=CameraType.PERSPECTIVE)


# ----------------------------------------------------------------------------------------------
# Driving frames


@dataclass
class Driver:
    """The driving frames: datasets (in order), their face crops, head poses and the driver's mean pose."""

    datasets: List["LatentAvatarDataset"]
    crops: "torch.Tensor"
    """(N, 3, S, S) uint8 encoder crops."""
    poses: HeadPoses
    mean: Tuple[np.ndarray, np.ndarray, float]
    """The driver's mean head pose over its train frames."""
    blendshapes: Optional[np.ndarray] = None
    """(N, 52) ARKit blendshapes stored with the frames, when every frame has them."""

    def __len__(self) -> int:
        return len(self.poses)

    def require_blendshapes(self, data: Path) -> np.ndarray:
        if self.blendshapes is None:
            raise ReenactError(f"{data}: its frames have no blendshapes; fill them in with "
                               f"ns-latentavatar-blendshapes fill --data {data}")
        return self.blendshapes

    def _locate(self, index: int) -> Tuple["LatentAvatarDataset", int]:
        for dataset in self.datasets:
            if index < len(dataset):
                return dataset, index
            index -= len(dataset)
        raise IndexError(index)

    def item(self, index: int) -> dict:
        """Frame ``index``: ``image`` (composited on the background), ``mask``, ``encoder_crop``."""
        dataset, i = self._locate(index)
        return dataset.get_data(i)

    def crop_affine(self, index: int) -> np.ndarray:
        dataset, i = self._locate(index)
        return dataset.crop_affines[i]


def load_driver(parser: "LatentAvatarDataParser", split: Literal["train", "eval", "all"], crop_size: int) -> Driver:
    from latentavatar_ns.reenact.avatar import load_crops, open_splits

    datasets = open_splits(parser, split, crop_size)
    names: List[Literal["train", "eval"]] = ["train", "eval"] if split == "all" else [split]
    from latentavatar_ns.blendshapes.frames import params_blendshapes

    splits = [parser.parse_split(name) for name in names]
    params = [p for split in splits for p in split.params]
    shapes = [params_blendshapes(p, frame.params) for split in splits for p, frame in zip(split.params, split.frames)]
    found = [b for b in shapes if b is not None]
    blendshapes = np.stack(found) if len(found) == len(shapes) else None
    return Driver(datasets, load_crops(datasets, crop_size), HeadPoses.from_params(params),
                  HeadPoses.from_params(parser.parse_split("train").params).mean(), blendshapes)


# ----------------------------------------------------------------------------------------------
# Rendering


class Reenactor:
    """A trained avatar ready to render from thetas and cameras."""

    def __init__(self, avatar: "Avatar", device: Optional[str] = None):
        import torch

        from latentavatar_ns.reenact.avatar import build_pipeline

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.avatar = avatar.to(self.device)
        self.pipeline = build_pipeline(avatar, self.device)
        self.model = self.pipeline.model
        self.parser = self.pipeline.datamanager.dataparser

    @property
    def crop_size(self) -> int:
        return self.model.config.encoder_crop_size

    def camera(self) -> "CameraSpec":
        """The avatar's dataset camera (camera.json, image size)."""
        return self.parser.parse_split("train").camera

    def avatar_mean(self) -> Tuple[np.ndarray, np.ndarray, float]:
        return HeadPoses.from_params(self.parser.parse_split("train").params).mean()

    def driver(self, data: Path, split: Literal["train", "eval", "all"]) -> Driver:
        """Another dataset's frames, cropped with the avatar's crop geometry."""
        from latentavatar_ns.reenact.avatar import parser_for

        return load_driver(parser_for(self.avatar.parser_config, data), split, self.crop_size)

    def own_thetas(self, crops) -> "torch.Tensor":
        """The avatar's own encoder and mapping (self-reenactment, or the no-Y-network baseline)."""
        return self.avatar.theta(crops)

    def ynet_thetas(self, ynet, crops, batch_size: int = 64) -> "torch.Tensor":
        """Shared encoder -> mapping: the avatar's theta for another person's crops."""
        import torch

        from latentavatar_ns.reenact.avatar import to_float

        ynet = ynet.to(self.device).eval()
        with torch.no_grad():
            return torch.cat([ynet.theta(to_float(crops[s:s + batch_size]).to(self.device))
                              for s in range(0, len(crops), batch_size)])

    def blendshape_thetas(self, mapping, weights: np.ndarray) -> "torch.Tensor":
        """ARKit blendshapes (N, 52) -> the avatar's code (blendshape mapping) -> its theta (the avatar's mapping)."""
        import torch

        with torch.no_grad():
            codes = mapping(torch.as_tensor(weights, dtype=torch.float32))
            return self.avatar.mapping(codes.to(next(self.avatar.mapping.parameters()).device))

    def track_video(self, path: Path, keep_frames_height: int = 0) -> "VideoTrack":
        """A driver's video (or image folder) read by the landmarker: blendshapes and head poses per frame."""
        from rich.progress import track

        from latentavatar_ns.assets.cache import asset_path
        from latentavatar_ns.blendshapes.video import track_video
        from latentavatar_ns.process.face import FaceLandmarker, load_template

        task = asset_path("face_landmarker.task")
        template = load_template(task)
        with FaceLandmarker(task) as landmarker:
            return track_video(path, landmarker.detect, template.vertices, template.rigid_ids,
                               keep_frames_height=keep_frames_height,
                               progress=lambda it, n: track(it, total=n or None, description="Reading the driver",
                                                            transient=True))

    def video_cameras(self, video: "VideoTrack", smooth: int = 1) -> "Cameras":
        """The driver's head motion relative to its mean pose, applied to the avatar's mean pose."""
        from latentavatar_ns.data.poses import axis_angle_to_matrix

        poses = HeadPoses(np.stack([axis_angle_to_matrix(p[:3]) for p in video.poses]), video.poses[:, 3:],
                          np.full(len(video), video.scale))
        return pose_cameras(self.camera(), follow_poses(poses, poses.mean(), self.avatar_mean()).smoothed(smooth))

    def recorded_cameras(self, yaw_pitch_roll: np.ndarray, smooth: int = 1) -> "Cameras":
        """The avatar's mean pose turned by a recording's head rotation, relative to the recording's mean."""
        rotations = head_rotations(yaw_pitch_roll - yaw_pitch_roll.mean(axis=0))
        r_ava, t_ava, s_ava = self.avatar_mean()
        n = len(rotations)
        poses = HeadPoses(rotations @ r_ava, np.repeat(t_ava[None], n, 0), np.full(n, s_ava))
        return pose_cameras(self.camera(), poses.smoothed(smooth))

    def follow_cameras(self, driver: Driver, smooth: int = 1) -> "Cameras":
        poses = follow_poses(driver.poses, driver.mean, self.avatar_mean())
        return pose_cameras(self.camera(), poses.smoothed(smooth))

    def fixed_cameras(self, count: int) -> "Cameras":
        from latentavatar_ns.utils.views import frontal_camera

        import torch

        return frontal_camera(self.parser)[torch.zeros(count, dtype=torch.long)]

    def render(self, theta: "torch.Tensor", camera: "Cameras") -> "torch.Tensor":
        """(H, W, 3) image in [0, 1] of one theta (T,) from one camera."""
        import torch

        with torch.no_grad():
            camera = camera.reshape((1,)) if camera.shape == () else camera[:1]
            theta = theta.reshape(1, -1).to(self.device)
            planes = self.model.planes_from_theta(theta)
            return self.model.render(planes, camera.to(self.device), theta=theta)["rgb"][0].clamp(0.0, 1.0)


def camera_path_cameras(path: Path, count: int) -> "Cameras":
    """A viewer camera path, one camera per driving frame (the path is stretched over the frames)."""
    from nerfstudio.cameras.camera_paths import get_path_from_json

    try:
        cameras = get_path_from_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise ReenactError(f"{path}: cannot read camera path ({type(err).__name__}: {err}); export one from the "
                           "viewer's render panel") from None
    k = cameras.shape[0]
    if k == 0:
        raise ReenactError(f"{path}: camera path has no cameras")
    import torch

    return cameras[torch.linspace(0, k - 1, count).round().long()]


def side_by_side(driver_image: np.ndarray, render: np.ndarray) -> np.ndarray:
    import cv2

    h = render.shape[0]
    if driver_image.shape[0] != h:
        w = max(int(round(driver_image.shape[1] * h / driver_image.shape[0])), 1)
        driver_image = cv2.resize(driver_image, (w, h), interpolation=cv2.INTER_AREA)
    return np.concatenate([driver_image, render], axis=1)


@dataclass
class ReenactReport:
    """What a reenactment wrote, and how long each stage took."""

    output: Path
    frames: int
    seconds: float
    """Wall time from the first driving frame's code to the video's last frame."""
    codes_ms: float
    """Per frame: the driving frames' codes (encoder, Y-network or blendshape mapping) and thetas."""
    render_ms: float
    """Per frame: tri-plane, volume rendering and super-resolution (and writing the frame)."""
    landmarker_ms: float = 0.0
    """Per decoded frame of a driving video: MediaPipe's landmarker (0 for other drivers)."""

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def reenact(cfg: ReenactConfig) -> ReenactReport:
    """Write the reenactment video; returns what it wrote and the time each stage took."""
    output = check_new_file(cfg.output_path, cfg.overwrite)
    check_file(cfg.load_config, "avatar config")
    frames_dir = Path(cfg.frames_dir) if cfg.frames_dir is not None else None
    if frames_dir is not None and frames_dir.exists() and any(frames_dir.iterdir()) and not cfg.overwrite:
        raise ReenactError(f"{frames_dir} already holds files; pass --overwrite to replace them")
    by_blendshapes = cfg.via == "blendshapes" or cfg.driving_blendshapes is not None
    if cfg.driving_blendshapes is not None:
        check_file(cfg.driving_blendshapes, "blendshape CSV")
        if cfg.driving is not None or cfg.self_reenact or cfg.ynet is not None:
            raise ReenactError("--driving-blendshapes drives on its own: drop --driving, --self and --ynet")
    elif by_blendshapes:
        if cfg.ynet is not None:
            raise ReenactError("--via blendshapes needs no Y-network: drop --ynet")
        if cfg.driving is None and not cfg.self_reenact:
            raise ReenactError("--via blendshapes drives with --driving DIR (a dataset with blendshapes) or --self")
    if not by_blendshapes:
        if cfg.self_reenact and cfg.ynet is not None:
            raise ReenactError("pass either --ynet (cross-identity) or --self (the avatar's own encoder), not both")
        if not cfg.self_reenact and cfg.ynet is None:
            raise ReenactError("--ynet is required (a Y-network from ns-latentavatar-ynet), or pass --self, "
                               "--via blendshapes or --driving-blendshapes")
    if cfg.ynet is not None and not Path(cfg.ynet).exists():
        raise ReenactError(f"{cfg.ynet}: Y-network not found")
    driving_video = by_blendshapes and cfg.driving is not None and Path(cfg.driving).exists() \
        and not (Path(cfg.driving) / "train").is_dir()
    if driving_video and cfg.split is not None:
        raise ReenactError("--split picks frames of a driving dataset; a video is driven by all its frames")
    if not driving_video and (cfg.driving is not None or not (cfg.self_reenact or cfg.driving_blendshapes is not None)):
        check_dataset_dir(cfg.driving, "driving dataset")
    if cfg.camera_path is not None:
        check_file(cfg.camera_path, "camera path")
    for out_path in (output, frames_dir):
        if out_path is not None:
            check_outside(out_path, {"driving dataset": cfg.driving})
    if cfg.smooth < 1:
        raise ReenactError(f"--smooth must be at least 1 frame, got {cfg.smooth}")

    from rich.progress import track

    from latentavatar_ns.reenact.avatar import load_avatar
    from latentavatar_ns.reenact.train_ynet import check_avatar_match, load_ynet
    from latentavatar_ns.utils.image import to_uint8
    from latentavatar_ns.utils.video import write_video

    avatar = load_avatar(cfg.load_config)
    ynet = mapping = None
    if by_blendshapes:
        from latentavatar_ns.blendshapes.mapping import MAPPING_FILE, load_mapping

        mapping = load_mapping(cfg.mapping or Path(cfg.load_config).parent / MAPPING_FILE, avatar.fingerprint())
    elif not cfg.self_reenact:
        assert cfg.ynet is not None  # checked above: --ynet is required without --self
        ynet, data = load_ynet(cfg.ynet)
        check_avatar_match(avatar.fingerprint(), data, cfg.load_config)
    device = None if cfg.device == "auto" else cfg.device
    reenactor = Reenactor(avatar, device)
    driver: Optional[Driver] = None
    video: Optional["VideoTrack"] = None
    if cfg.driving_blendshapes is not None:
        from latentavatar_ns.blendshapes.livelink import read_livelink_csv

        recording = read_livelink_csv(cfg.driving_blendshapes)
        weights, n = recording.weights, len(recording)
        head = recording.head_yaw_pitch_roll
    elif driving_video:
        assert cfg.driving is not None
        video = reenactor.track_video(cfg.driving, keep_frames_height=reenactor.camera().height
                                      if cfg.side_by_side else 0)
        weights, n, head = video.weights, len(video), None
    else:
        if cfg.driving is None:  # --self on the avatar's own footage: its held-out frames by default
            driver = reenactor.driver(avatar.data_dir, cfg.split or "eval")
        else:
            driver = reenactor.driver(cfg.driving, cfg.split or "all")
        n, head = len(driver), None
        if by_blendshapes:
            weights = driver.require_blendshapes(cfg.driving or avatar.data_dir)

    start = time.perf_counter()
    if mapping is not None:
        thetas = reenactor.blendshape_thetas(mapping, weights)
    elif ynet is None:
        assert driver is not None
        thetas = reenactor.own_thetas(driver.crops)
    else:
        assert driver is not None
        thetas = reenactor.ynet_thetas(ynet, driver.crops)
    thetas = moving_average(thetas, cfg.smooth)
    codes_done = time.perf_counter()
    if cfg.camera_path is not None:
        cameras = camera_path_cameras(cfg.camera_path, n)
    elif cfg.pose == "fixed" or (driver is None and video is None and head is None):
        cameras = reenactor.fixed_cameras(n)
    elif video is not None:
        cameras = reenactor.video_cameras(video, cfg.smooth)
    elif driver is None:
        assert head is not None
        cameras = reenactor.recorded_cameras(head, cfg.smooth)
    else:
        cameras = reenactor.follow_cameras(driver, cfg.smooth)

    if frames_dir is not None:
        frames_dir.mkdir(parents=True, exist_ok=True)
        for old in frames_dir.glob("frame_*.png"):
            old.unlink()
    from PIL import Image

    def frames():  # streamed into the video one at a time: memory stays flat over long driving videos
        for i in track(range(n), description="Reenacting", transient=True):
            image = reenactor.render(thetas[i], cameras[i:i + 1]).cpu().numpy()
            if cfg.side_by_side:
                if driver is not None:
                    left = driver.item(i)["image"].numpy()
                elif video is not None:
                    left = video.frames[i].astype(np.float32) / 255.0
                else:
                    left = blendshape_panel(weights[i], image.shape[0])
                image = side_by_side(left, image)
            image = to_uint8(image)
            if frames_dir is not None:
                Image.fromarray(image).save(frames_dir / f"frame_{i:05d}.png")
            yield image

    write_video(output, frames(), fps=cfg.fps)
    end = time.perf_counter()
    return ReenactReport(output, n, end - start, 1000 * (codes_done - start) / max(n, 1),
                         1000 * (end - codes_done) / max(n, 1), video.landmarker_ms if video is not None else 0.0)

