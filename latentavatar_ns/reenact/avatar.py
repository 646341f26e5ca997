"""Loading a trained avatar for reenactment: its config, checkpoint, frozen encoder + mapping, and face crops.

The Y-network only needs the avatar's expression encoder and mapping (the teacher of theta), so
they are read straight from the nerfstudio checkpoint without building the whole model or
loading its frames. The full model (for rendering) is built from the same checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import numpy as np
import torch
import yaml

from latentavatar_ns.data.dataparser import (
    LatentAvatarDataParser,
    LatentAvatarDataParserConfig,
)
from latentavatar_ns.data.dataset import LatentAvatarDataset, read_rgb
from latentavatar_ns.data.face_crop import extract_crop
from latentavatar_ns.model.encoder import ExpressionEncoder, MappingMLP
from latentavatar_ns.model.latentavatar import LatentAvatarModelConfig
from latentavatar_ns.reenact.inputs import ReenactError
from latentavatar_ns.reenact.ynet import YNetSpec, state_fingerprint
from latentavatar_ns.utils.checkpoints import TrainingError, checkpoints_in, load_newest
from latentavatar_ns.utils.image import to_uint8

Split = Literal["train", "eval", "all"]


@dataclass
class Avatar:
    """A trained avatar's config and checkpoint, with its frozen encoder and mapping (the theta teacher)."""

    config_path: Path
    config: Any
    """The nerfstudio ``TrainerConfig`` the run was trained with."""
    checkpoint: Path
    state: Dict
    """The checkpoint's ``pipeline`` state dict."""
    step: int
    encoder: ExpressionEncoder
    mapping: MappingMLP

    @property
    def model_config(self) -> LatentAvatarModelConfig:
        return self.config.pipeline.model

    @property
    def parser_config(self) -> LatentAvatarDataParserConfig:
        return self.config.pipeline.datamanager.dataparser

    @property
    def data_dir(self) -> Path:
        dm = self.config.pipeline.datamanager
        return Path(dm.data if dm.data is not None else dm.dataparser.data)

    @property
    def spec(self) -> YNetSpec:
        cfg = self.model_config
        return YNetSpec(cfg.encoder_crop_size, tuple(cfg.encoder_channels), cfg.code_dim, cfg.theta_dim)

    def fingerprint(self) -> Dict:
        """What a Y-network must match: the network sizes and a hash of the teacher's weights."""
        return {**self.spec.to_dict(),
                "teacher_sha256": state_fingerprint({"encoder": self.encoder, "mapping": self.mapping})}

    @torch.no_grad()
    def theta(self, crops: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """The avatar's own theta = mapping(encoder(crop)) for (N, 3, S, S) crops in [0, 1], noise-free."""
        device = next(self.encoder.parameters()).device
        out = []
        for start in range(0, len(crops), batch_size):
            chunk = crops[start:start + batch_size].to(device)
            out.append(self.mapping(self.encoder(to_float(chunk))))
        return torch.cat(out)

    def to(self, device) -> "Avatar":
        self.encoder.to(device)
        self.mapping.to(device)
        return self


def load_avatar(config_path: Path) -> Avatar:
    """Read a LatentAvatar run (its ``config.yml``) and the teacher from its latest checkpoint."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise ReenactError(f"{config_path}: avatar config not found "
                           "(pass the config.yml of an ns-train latentavatar run)")
    try:
        config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    except Exception as err:
        detail = " ".join(str(err).split())  # YAML errors span lines and point with carets
        raise ReenactError(f"{config_path}: cannot read avatar config ({type(err).__name__}: {detail})") from None
    model_config = getattr(getattr(config, "pipeline", None), "model", None)
    if not isinstance(model_config, LatentAvatarModelConfig):
        raise ReenactError(f"{config_path}: not a LatentAvatar run (its model is {type(model_config).__name__})")
    try:  # a damaged newest checkpoint (a crash mid-save by another tool) falls back to the one before
        checkpoint, (state, step) = load_newest(checkpoints(config_path, config), _read_avatar_checkpoint)
    except TrainingError as err:
        raise ReenactError(f"cannot read the avatar's checkpoints: {err}") from None
    state = {key[len("module."):] if key.startswith("module.") else key: value for key, value in state.items()}
    encoder = ExpressionEncoder(model_config.encoder_crop_size, model_config.encoder_channels, model_config.code_dim,
                                model_config.code_normalisation)
    mapping = MappingMLP(model_config.code_dim, model_config.code_dim, model_config.theta_dim)
    for name, module in (("encoder", encoder), ("mapping", mapping)):
        prefix = f"_model.{name}."
        sub = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        try:
            module.load_state_dict(sub)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise ReenactError(f"{checkpoint}: the avatar's {name} weights do not fit its config ({first})") from None
        module.eval().requires_grad_(False)
    return Avatar(config_path, config, checkpoint, state, step, encoder, mapping)


def checkpoints(config_path: Path, config) -> List[Path]:
    """The ``step-*.ckpt`` files next to the config (a moved run) or where the config says it saved them."""
    candidates = [config_path.parent / config.relative_model_dir]
    try:
        candidates.append(config.get_checkpoint_dir())
    except Exception:  # an incomplete config has no recorded run directory
        pass
    for folder in candidates:
        found = checkpoints_in(Path(folder), ".ckpt")
        if found:
            return found
    raise ReenactError(f"{config_path}: no checkpoint found in {candidates[0]} (train the avatar first)")


def _read_avatar_checkpoint(path: Path) -> Tuple[Dict, int]:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    return loaded["pipeline"], int(loaded.get("step", 0))


def build_pipeline(avatar: Avatar, device: torch.device):
    """The avatar's full nerfstudio pipeline (model + datamanager without cached frames), weights loaded."""
    config = avatar.config
    pipeline = config.pipeline.setup(device=device, test_mode="inference")
    pipeline.load_pipeline(avatar.state, avatar.step)
    pipeline.eval()
    return pipeline


# ----------------------------------------------------------------------------------------------
# Frames and crops


def parser_for(parser_config: LatentAvatarDataParserConfig, data: Path) -> LatentAvatarDataParser:
    """A dataparser for another dataset with the avatar's crop geometry and background."""
    return dataclasses.replace(parser_config, data=Path(data)).setup()


def open_splits(parser: LatentAvatarDataParser, split: Split, crop_size: int) -> List[LatentAvatarDataset]:
    """The dataset's frames of one split, or of both in video order (train then eval)."""
    names = ["train", "test"] if split == "all" else ["train" if split == "train" else "test"]
    return [LatentAvatarDataset(parser.get_dataparser_outputs(split=name), crop_size=crop_size) for name in names]


def load_crops(datasets: List[LatentAvatarDataset], crop_size: int) -> torch.Tensor:
    """Every frame's encoder crop as a uint8 (N, 3, S, S) tensor (read once, kept in memory)."""
    crops = []
    for dataset in datasets:
        for i, path in enumerate(dataset.image_filenames):
            crop = extract_crop(read_rgb(path), dataset.crop_affines[i], crop_size)
            crops.append(to_uint8(crop).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(crops))


def to_float(crops: torch.Tensor) -> torch.Tensor:
    return crops.float() / 255.0 if crops.dtype == torch.uint8 else crops.float()


def fingerprint_mismatch(expected: Dict, found: Dict) -> Optional[Tuple[str, object, object]]:
    """The first differing fingerprint entry (name, avatar's value, Y-network's value), or None."""
    for key in expected:
        if expected[key] != found.get(key):
            return key, expected[key], found.get(key)
    return None
