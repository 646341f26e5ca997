"""Full-image datamanager that serves batches of frames (the paper trains on 2 images a step).

In a multi-view capture a batch is made of moments: an image, then ``views_per_moment - 1``
other views of the same moment, all sharing the moment's code.

In a run of several processes each rank draws its own share of every epoch: the epoch's
permutation is the same on all ranks, and rank r takes every world-size-th frame from r.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Dict, List, Literal, Tuple, Type

import torch
import tyro
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import track

from latentavatar_ns.data.dataparser import LatentAvatarDataParserConfig
from latentavatar_ns.data.dataset import LatentAvatarDataset
from latentavatar_ns.data.rarity import draw_weights
from latentavatar_ns.utils.distributed import rank, world_size


@dataclass
class LatentAvatarDataManagerConfig(FullImageDatamanagerConfig):
    _target: Type = field(default_factory=lambda: LatentAvatarDataManager)
    dataparser: LatentAvatarDataParserConfig = field(default_factory=LatentAvatarDataParserConfig)
    images_per_batch: int = 2
    """Images per training step (each moment with its own expression code)."""
    views_per_moment: int = 1
    """Multi-view captures: views of one moment in a batch (1 draws every image independently, as for a video)."""
    encoder_crop_size: tyro.conf.Suppress[int] = 128
    """Side of the face crops the datasets cut; not a flag: the pipeline sets it from the model's
    ``encoder_crop_size``, the one place it is chosen."""
    cache_images: Literal["cpu", "gpu"] = "gpu"
    """Keep decoded frames on the training device ("gpu") or in host memory ("cpu")."""
    cache_images_type: Literal["uint8", "float32"] = "uint8"
    """uint8 keeps 4x more frames in memory; they are converted per batch."""
    rare_frame_sampling: float = 0.0
    """Draw frames with rare expressions more often: each frame's chance is 1 + this × its rarity, the
    distance of its face crop to its nearest neighbours' over the average of that (``data/rarity.py``).
    A video shows its common expressions most of the time, and the code learns what it sees often; this
    tilts the steps toward the open mouths and winks that few frames show. 0 draws every frame once per
    epoch."""


class LatentAvatarDataManager(FullImageDatamanager[LatentAvatarDataset]):
    config: LatentAvatarDataManagerConfig

    def create_train_dataset(self) -> LatentAvatarDataset:
        return LatentAvatarDataset(self.train_dataparser_outputs, crop_size=self.config.encoder_crop_size)

    def create_eval_dataset(self) -> LatentAvatarDataset:
        outputs = self.dataparser.get_dataparser_outputs(split=self.test_split)
        return LatentAvatarDataset(outputs, crop_size=self.config.encoder_crop_size)

    def _load_images(self, split: Literal["train", "eval"], cache_images_device: Literal["cpu", "gpu"]) -> List[Dict]:
        dataset = self.train_dataset if split == "train" else self.eval_dataset
        with ThreadPoolExecutor(max_workers=self.config.max_thread_workers or 4) as pool:
            loaded = pool.map(lambda i: dataset.get_data(i, self.config.cache_images_type), range(len(dataset)))
            items = list(track(loaded, total=len(dataset), description=f"Loading {split} frames", transient=True))
        CONSOLE.log(f"Loaded {len(items)} {split} frames")
        device = self.device if cache_images_device == "gpu" else "cpu"
        pin = cache_images_device == "cpu" and torch.cuda.is_available()
        for item in items:
            for key in ("image", "mask", "encoder_crop", "region_boxes"):
                item[key] = item[key].pin_memory() if pin else item[key].to(device)
        if split == "train":
            self.train_cameras = self.train_dataset.cameras.to(device)
        return items

    def sample_train_cameras(self) -> List[int]:
        """The next epoch's training images in a random order (with several processes, this rank's share).

        With ``rare_frame_sampling`` an epoch is as many draws, with replacement, weighted by rarity.
        """
        world = world_size()
        if world == 1 and self.config.rare_frame_sampling <= 0:
            return super().sample_train_cameras()
        # Seeded by the epoch, not drawn from a shared generator: ranks finish their shares at different
        # steps when other views of a moment come along, and must still cut the same draw.
        self._epoch = getattr(self, "_epoch", -1) + 1
        rng = random.Random(f"{self.config.train_cameras_sampling_seed}:{self._epoch}")
        frames = list(range(len(self.train_dataset)))
        if self.config.rare_frame_sampling > 0:
            order = rng.choices(frames, weights=self._draw_weights, k=len(frames))
        else:
            order = frames
            rng.shuffle(order)
        return order[rank()::world] or [order[rank() % len(order)]]  # fewer frames than ranks: one frame each

    @cached_property
    def _draw_weights(self) -> List[float]:
        """Each training image's relative chance of being drawn (``rare_frame_sampling``)."""
        weights = draw_weights(self._train_stack["encoder_crop"].cpu(), self.config.rare_frame_sampling)
        CONSOLE.log(f"Rare-frame sampling: the rarest frame is drawn {float(weights.max() / weights.min()):.1f}x "
                    "as often as the most common")
        return weights.tolist()

    @cached_property
    def _train_stack(self) -> Dict[str, torch.Tensor]:
        return {key: torch.stack([item[key] for item in self.cached_train])
                for key in ("image", "mask", "encoder_crop", "region_boxes")}

    @cached_property
    def _moment_images(self) -> Dict[int, List[int]]:
        """Training image indices of each moment (code index)."""
        moments: Dict[int, List[int]] = {}
        for image, code in enumerate(self.train_dataset.code_idx.tolist()):
            moments.setdefault(code, []).append(image)
        return moments

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        """``images_per_batch`` images, each seen once per epoch, as a batched camera and stacked tensors.

        With ``views_per_moment`` > 1 each drawn image brings other views of its moment along
        (unseen ones first), which then count as seen for this epoch.
        """
        indices: List[int] = []
        size = min(self.config.images_per_batch, len(self.train_dataset))
        while len(indices) < size:
            first = self.train_unseen_cameras.pop(0)
            indices.append(first)
            indices.extend(self._other_views(first, min(self.config.views_per_moment - 1, size - len(indices))))
            if not self.train_unseen_cameras:
                self.train_unseen_cameras = self.sample_train_cameras()
        idx = torch.tensor(indices, dtype=torch.long)
        stack = self._train_stack
        batch = {key: value[idx.to(value.device)].to(self.device) for key, value in stack.items()}
        batch["image_idx"] = idx.to(self.device)
        batch["code_idx"] = self.train_dataset.code_idx[idx].to(self.device)
        cameras = self.train_cameras[idx.to(self.train_cameras.device)].to(self.device)
        return cameras, batch

    def _other_views(self, image: int, count: int) -> List[int]:
        """Up to ``count`` other training images of ``image``'s moment, unseen ones first."""
        if count <= 0:
            return []
        others = [i for i in self._moment_images[int(self.train_dataset.code_idx[image])] if i != image]
        if not others:
            return []
        random.shuffle(others)
        unseen = set(self.train_unseen_cameras)
        picked = sorted(others, key=lambda i: i not in unseen)[:count]
        for i in picked:
            if i in unseen:
                self.train_unseen_cameras.remove(i)
        return picked

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict]:
        image_idx = random.choice(range(len(self.eval_dataset)))
        data = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v)
                for k, v in self.cached_eval[image_idx].items()}
        return self.eval_dataset.cameras[image_idx : image_idx + 1].to(self.device), data
