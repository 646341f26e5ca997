"""The expression panel of the viser viewer: which stored expression a viewer render shows.

A camera alone says nothing about the face's expression. In ``ns-render``, eval and training the
expression comes from the frame (its image or its camera's frame index). In the viewer, the user
picks it here: a training frame (slider, or a click on a training camera), a held-out frame, a
blend of two frames' codes, or a played sequence. While the render panel previews a camera path,
the path's per-keyframe time chooses the frame instead, as ``ns-render camera-path`` will.

nerfstudio installs every ``ViewerElement`` found on the pipeline's modules as a GUI element, and
calls ``_setup(viewer)`` on every ``ViewerControl``; only then does this panel take part in renders.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Literal, Optional

import numpy as np
import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.viewer.viewer_elements import (
    ViewerCheckbox,
    ViewerControl,
    ViewerDropdown,
    ViewerNumber,
    ViewerSlider,
)
from torch import Tensor, nn

from latentavatar_ns.model.code_table import FrameCodeTable

NO_HELDOUT = "none"
INITIAL_FOV_DEG = 30.0
"""Vertical field of view of the viewer's first view (the datasets' cameras are nearly orthographic)."""
HEAD_RADIUS = 2.0
"""Canonical units around the origin the first view keeps in frame (the canonical box is about ±1.8)."""


def heldout_label(i: int) -> str:
    return f"held-out {i}"


class ExpressionPanel(nn.Module, ViewerControl):
    """GUI state the model asks for the expression code of a viewer render.

    An ``nn.Module`` without parameters only so that nerfstudio's viewer finds its elements
    (it searches the pipeline's module tree); nothing of it is saved in checkpoints.
    """

    def __init__(self, num_train: int, num_eval: int) -> None:
        nn.Module.__init__(self)
        self.num_train, self.num_eval = max(int(num_train), 1), int(num_eval)
        self.source: Literal["train", "eval"] = "train"
        self._viewer: Any = None  # the nerfstudio Viewer, once _setup has run
        self.viser_server = None  # type: ignore[assignment]  # set by the viewer (ViewerControl._setup)
        self._last_cam_idx = 0
        self._greeted: set = set()
        self._player: Optional[threading.Thread] = None
        # Attribute names sort in display order (the viewer lists elements alphabetically).
        self.choose_frame = ViewerSlider("Training frame", 0, 0, max(self.num_train - 1, 1), 1,
                                         cb_hook=self._on_frame, hint="Render the expression of this training frame")
        self.choose_heldout = ViewerDropdown("Held-out frame", NO_HELDOUT,
                                             [NO_HELDOUT] + [heldout_label(i) for i in range(self.num_eval)],
                                             cb_hook=self._on_heldout, hint="Render the expression of a held-out frame")
        self.mix_other = ViewerNumber("Blend with frame", 0,
                                      hint=f"Frame whose code is mixed in: 0-{self.num_train - 1} training, "
                                           f"{self.num_train}-{self.num_train + self.num_eval - 1} held-out")
        self.mix_weight = ViewerSlider("Blend", 0.0, 0.0, 1.0, 0.01,
                                       hint="0: the chosen frame; 1: the 'blend with' frame; between: a mix of codes")
        self.play = ViewerCheckbox("Play", False, cb_hook=self._on_play, hint="Animate through the training frames")
        self.play_fps = ViewerSlider("Frames per second", 8, 1, 30, 1, hint="Playback speed")

    # ------------------------------------------------------------------------------------------
    # What a viewer render shows

    @property
    def active(self) -> bool:
        """True once a viewer has installed the panel (never in ns-render, ns-eval or plain training)."""
        return self._viewer is not None

    def chosen_index(self) -> int:
        """Index into the model's code table of the frame chosen by the slider or the dropdown."""
        if self.source == "eval" and self.choose_heldout.value != NO_HELDOUT:
            return self.num_train + int(str(self.choose_heldout.value).rsplit(" ", 1)[-1])
        return int(round(float(self.choose_frame.value)))

    def code_for(self, cameras: Cameras, table: FrameCodeTable) -> Optional[Float[Tensor, "B D"]]:
        """The code a viewer render shows, or None when the camera is not the viewer's.

        Cameras that name their frame (``code_idx``: dataset cameras) keep it. During a render-panel
        preview the camera path's time picks the training frame.
        """
        meta = cameras.metadata or {}
        if not self.active or "code_idx" in meta:
            return None
        b = cameras.shape[0]
        codes = table.codes
        if self._previewing_path() and cameras.times is not None:
            return codes[table.at_times(cameras.times, b)]
        self._follow_clicked_camera(meta, table)
        last = codes.shape[0] - 1
        code = codes[min(max(self.chosen_index(), 0), last)][None]
        weight = float(self.mix_weight.value)
        if weight > 0:
            other = codes[min(max(int(self.mix_other.value), 0), last)][None]
            code = normalise_code((1.0 - weight) * code + weight * other)
        return code.expand(b, -1)

    def _previewing_path(self) -> bool:
        state = getattr(self._viewer, "render_tab_state", None)
        return bool(state is not None and state.preview_render)

    def _follow_clicked_camera(self, meta: Dict, table: FrameCodeTable) -> None:
        """A click on a training camera's frustum shows that frame's (moment's) expression."""
        if "cam_idx" not in meta:
            return
        idx = int(torch.as_tensor(meta["cam_idx"]).reshape(-1)[0])
        if idx != self._last_cam_idx:
            self._last_cam_idx = idx
            if 0 <= idx < len(table.image_codes):
                self.source = "train"
                self.choose_frame.value = int(table.image_codes[idx])

    # ------------------------------------------------------------------------------------------
    # GUI callbacks (each change also makes the viewer re-render)

    def _on_frame(self, _) -> None:
        self.source = "train"
        if self.choose_heldout.value != NO_HELDOUT:
            self.choose_heldout.value = NO_HELDOUT

    def _on_heldout(self, _) -> None:
        self.source = "eval" if self.choose_heldout.value != NO_HELDOUT else "train"

    def _on_play(self, _) -> None:
        if self.play.value and (self._player is None or not self._player.is_alive()):
            self._player = threading.Thread(target=self._play, name="expression-player", daemon=True)
            self._player.start()

    def _play(self) -> None:
        """Advance the training-frame slider; each step re-renders through the slider's callback."""
        while self.play.value:
            self.choose_frame.value = (int(round(float(self.choose_frame.value))) + 1) % self.num_train
            time.sleep(1.0 / max(float(self.play_fps.value), 1e-3))

    # ------------------------------------------------------------------------------------------
    # Viewer set-up

    def _setup(self, viewer) -> None:
        """Called by the viewer once its GUI exists: settle defaults that suit an avatar."""
        super()._setup(viewer)
        self._viewer = viewer
        panel = viewer.control_panel
        # The panel replaces the control tab's time slider (the render panel keeps per-keyframe time).
        if hasattr(panel, "_time"):
            panel._time_enabled = False
            panel._time.set_hidden(True)
        train = viewer.pipeline.datamanager.train_dataset
        if train is not None and len(train) > 0 and hasattr(panel, "_max_res"):
            # No detail exists beyond the training frames' size; larger renders only cost time.
            panel._max_res.value = int(min(panel._max_res.value, int(train.cameras.height.max())))
        viewer.viser_server.on_client_connect(self._greet)

    def _greet(self, client) -> None:
        """A new browser tab starts facing the head, not inside it."""

        @client.camera.on_update
        def _(_camera) -> None:
            if client.client_id in self._greeted:
                return
            self._greeted.add(client.client_id)
            pose = first_view(self._viewer.pipeline.datamanager.train_dataset.cameras)
            from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO as scale

            with client.atomic():
                client.camera.up_direction = pose["up"]
                client.camera.position = pose["position"] * scale
                client.camera.look_at = np.zeros(3)
                client.camera.fov = np.radians(INITIAL_FOV_DEG)


def first_view(cameras: Cameras) -> Dict[str, np.ndarray]:
    """Position and up direction looking at the head from the first training camera's side."""
    c2w = cameras.camera_to_worlds[0].double().cpu().numpy()
    direction = c2w[:, 3] / max(np.linalg.norm(c2w[:, 3]), 1e-9)
    distance = HEAD_RADIUS / np.tan(np.radians(INITIAL_FOV_DEG) / 2.0)
    return {"position": direction * distance, "up": c2w[:, 1]}


def normalise_code(code: Float[Tensor, "B D"]) -> Float[Tensor, "B D"]:
    """The encoder's per-sample normalisation: a mix of two codes stays on the codes' scale."""
    return (code - code.mean(dim=1, keepdim=True)) / (code.std(dim=1, keepdim=True) + 1e-6)
