"""Dataset items: the frame composited onto the background, its matte, and the encoder's face crop."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Literal

import numpy as np
import torch
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from PIL import Image

from latentavatar_ns.data.face_crop import extract_crop
from latentavatar_ns.data.format import DatasetError
from latentavatar_ns.data.regions import face_square_regions


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]; truncated or corrupt files are a one-line error."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except Exception as err:
        raise DatasetError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from None


def read_matte(path: Path) -> np.ndarray:
    """(H, W, 1) float32 in [0, 1] from a grey, RGB or RGBA mask file."""
    try:
        with Image.open(path) as img:
            img = img.getchannel("A") if img.mode in ("RGBA", "LA") else img.convert("L")
            return np.asarray(img, dtype=np.float32)[..., None] / 255.0
    except Exception as err:
        raise DatasetError(f"{path}: cannot decode mask ({type(err).__name__}: {err})") from None


class LatentAvatarDataset(InputDataset):
    """Adds ``mask`` (soft matte), ``encoder_crop`` (3, S, S), ``region_boxes`` (3, 4) and ``code_idx`` to each item.

    The image is composited onto the background colour through its matte, so the renderer's
    background and the ground truth agree. The crop is cut from the original frame, or, in a
    multi-view capture, from the moment's encoder-view frame: every view of a moment gets the same
    crop and the same ``code_idx``.
    """

    exclude_batch_keys_from_device = ["encoder_crop"]

    def __init__(self, dataparser_outputs: DataparserOutputs, scale_factor: float = 1.0, crop_size: int = 128):
        super().__init__(dataparser_outputs, scale_factor)
        self.crop_size = crop_size
        self.background = np.asarray(self.metadata["background_color"], dtype=np.float32)
        self.crop_affines = self.metadata["crop_affines"].numpy()
        self.code_idx = self.cameras.metadata["code_idx"][:, 0]  # type: ignore[index]  # the dataparser sets it
        self.encoder_image_filenames = self.metadata.get("encoder_image_filenames",
                                                         self._dataparser_outputs.image_filenames)

    def get_data(self, image_idx: int, image_type: Literal["uint8", "float32"] = "float32") -> Dict:
        image_path = self._dataparser_outputs.image_filenames[image_idx]
        mask_path = self._dataparser_outputs.mask_filenames[image_idx]  # type: ignore[index]  # always set here
        rgb = read_rgb(image_path)
        matte = read_matte(mask_path)
        if matte.shape[:2] != rgb.shape[:2]:
            raise DatasetError(f"{mask_path}: mask size {matte.shape[1]}x{matte.shape[0]} differs from its image")
        composite = rgb * matte + self.background * (1.0 - matte)
        encoder_path = self.encoder_image_filenames[image_idx]
        encoder_rgb = rgb if encoder_path == image_path else read_rgb(encoder_path)
        crop = extract_crop(encoder_rgb, self.crop_affines[image_idx], self.crop_size)
        image = torch.from_numpy(composite)
        if image_type == "uint8":
            image = (image * 255.0).round().to(torch.uint8)
        return {
            "image_idx": image_idx,
            "image": image,
            "mask": torch.from_numpy(matte),
            "encoder_crop": torch.from_numpy(crop).permute(2, 0, 1).contiguous(),
            "region_boxes": torch.from_numpy(
                face_square_regions(self.crop_affines[image_idx], rgb.shape[1], rgb.shape[0])
            ),
            "code_idx": int(self.code_idx[image_idx]),
        }
