"""Face landmarks from MediaPipe's FaceLandmarker, and the canonical face template it ships with.

The ``face_landmarker.task`` bundle holds, besides the networks, the metric canonical face mesh
(468 vertices, centimetres, x right, y up, z out of the face) and the weighted vertex set that
MediaPipe uses to fit head pose: the rigid part of the face. Reading both from the bundle keeps the
pose fit consistent with the landmarks the same model detects.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from jaxtyping import Float

from latentavatar_ns.utils.errors import LatentAvatarError

MEDIAPIPE_INSTALL = "pip install --no-deps mediapipe==1.2.2 'flatbuffers~=25.9' (or: make setup)"
_GEOMETRY_MEMBER = "geometry_pipeline_metadata_landmarks.binarypb"

# Landmark indices of MediaPipe's 478-point face mesh used for drawing and the encoder crop.
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 33, 263
"""Eye corners on the image's left and right of a frontal face (the subject's right and left)."""


class MissingDependencyError(LatentAvatarError, RuntimeError):
    """A package the preprocessing needs is not installed; the message says how to install it."""


def import_mediapipe():
    """mediapipe's Tasks API, or an error that says how to install it next to nerfstudio's cv2."""
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as err:
        raise MissingDependencyError(f"mediapipe is not installed ({err}); run: {MEDIAPIPE_INSTALL}") from None
    return mp, BaseOptions, vision


# ----------------------------------------------------------------------------------------------
# The canonical template


def _varint(buf: bytes, i: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(buf: bytes) -> List[Tuple[int, object]]:
    """(field number, value) pairs of one protobuf message (wire format; no schema needed)."""
    out: List[Tuple[int, object]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: object
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


@dataclass
class FaceTemplate:
    vertices: Float[np.ndarray, "468 3"]
    """MediaPipe's canonical face mesh in centimetres (x right, y up, z out of the face)."""
    rigid_ids: np.ndarray
    """Vertex indices MediaPipe fits head pose to (eyes' corners, nose bridge, forehead, cheekbones)."""
    rigid_weights: np.ndarray


def load_template(task_path: Path) -> FaceTemplate:
    """Parse the GeometryPipelineMetadata proto inside the .task bundle.

    Fields used: canonical_mesh (1) -> vertex_buffer (3, x y z u v per vertex), and
    procrustes_landmark_basis (2) -> (landmark_id (1), weight (2)).
    """
    try:
        with zipfile.ZipFile(task_path) as bundle:
            data = bundle.read(_GEOMETRY_MEMBER)
        top = _fields(data)
        mesh = next(v for n, v in top if n == 1)
        floats: List[float] = []
        for number, value in _fields(mesh):  # type: ignore[arg-type]
            if number == 3:
                if len(value) == 4:  # type: ignore[arg-type]
                    floats.append(struct.unpack("<f", value)[0])  # type: ignore[arg-type]
                else:  # packed encoding
                    floats.extend(np.frombuffer(value, dtype="<f4").tolist())  # type: ignore[call-overload]
        ids, weights = [], []
        for number, value in top:
            if number == 2:
                entry: Dict[int, object] = dict(_fields(value))  # type: ignore[arg-type]
                ids.append(int(entry.get(1, 0)))  # type: ignore[call-overload]
                weights.append(struct.unpack("<f", entry[2])[0] if 2 in entry else 0.0)  # type: ignore[arg-type]
    except (KeyError, StopIteration, ValueError, zipfile.BadZipFile, struct.error, IndexError) as err:
        raise ValueError(f"{task_path}: no canonical face mesh in the landmarker bundle ({err!r})") from None
    vertices = np.asarray(floats, dtype=np.float64).reshape(-1, 5)[:, :3]
    if vertices.shape[0] != 468 or len(ids) < 6:
        raise ValueError(f"{task_path}: canonical face mesh has {vertices.shape[0]} vertices and "
                         f"{len(ids)} pose landmarks; expected 468 and at least 6")
    return FaceTemplate(vertices, np.asarray(ids), np.asarray(weights))


# ----------------------------------------------------------------------------------------------
# Detection


@dataclass
class FaceDetection:
    landmarks: Float[np.ndarray, "478 2"]
    """Pixel coordinates in the source frame (continuous: the image spans [0, W] x [0, H])."""
    depth: Float[np.ndarray, "478"]
    """MediaPipe's relative landmark depth (same scale as x, normalised by the frame width)."""
    blendshapes: Float[np.ndarray, "52"]
    num_faces: int
    """Faces found in the frame (the largest is kept)."""


class FaceLandmarker:
    """MediaPipe's FaceLandmarker on single images, keeping the largest face."""

    def __init__(self, task_path: Path, max_faces: int = 4, min_confidence: float = 0.5):
        mp, BaseOptions, vision = import_mediapipe()
        self._mp = mp
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(task_path)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=max_faces,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
            output_face_blendshapes=True,
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(options)

    def detect(self, rgb: np.ndarray) -> Optional[FaceDetection]:
        h, w = rgb.shape[:2]
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._landmarker.detect(image)
        if not result.face_landmarks:
            return None
        faces = [np.array([[p.x * w, p.y * h, p.z * w] for p in lms]) for lms in result.face_landmarks]
        areas = [np.prod(f[:, :2].max(0) - f[:, :2].min(0)) for f in faces]
        best = int(np.argmax(areas))
        shapes = np.zeros(52)
        if result.face_blendshapes and len(result.face_blendshapes) > best:
            scores = [c.score for c in result.face_blendshapes[best]]
            shapes[: len(scores)] = scores[:52]
        return FaceDetection(faces[best][:, :2], faces[best][:, 2], shapes, len(faces))

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
