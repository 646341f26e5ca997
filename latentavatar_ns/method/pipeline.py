"""A pipeline that hands the model the frame (not only the camera) in training and in eval.

The expression code comes from the image, so held-out frames are encoded from their own face
crops; nerfstudio's stock pipeline would pass the camera alone.

In a run of several processes the model is wrapped in DDP (on the CPU too), without broadcasting
buffers: each rank stores the codes of its own frames, and shares them after every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from time import time
from typing import Any, Dict, List, Literal, Optional, Type, Union

import torch
import torchvision.utils as vutils
from torch.nn.parallel import DistributedDataParallel as DDP
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn, track

from latentavatar_ns.data.datamanager import LatentAvatarDataManagerConfig
from latentavatar_ns.data.dataset import LatentAvatarDataset
from latentavatar_ns.model.latentavatar import LatentAvatarModel, LatentAvatarModelConfig
from latentavatar_ns.model.warm_start import fit_crop_autoencoder
from latentavatar_ns.utils.distributed import (average_buffers, broadcast_state, check_ranks_agree, fingerprint,
                                               share_rows, world_size)
from latentavatar_ns.utils.ffmpeg import ensure_ffmpeg_on_path
from latentavatar_ns.method.viewer_panel import ExpressionPanel

# Imported through the entry point by every ns-* command: ns-render finds an ffmpeg for its videos.
ensure_ffmpeg_on_path()


@dataclass
class LatentAvatarPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: LatentAvatarPipeline)
    datamanager: LatentAvatarDataManagerConfig = field(default_factory=LatentAvatarDataManagerConfig)
    model: LatentAvatarModelConfig = field(default_factory=LatentAvatarModelConfig)


class LatentAvatarPipeline(VanillaPipeline):
    config: LatentAvatarPipelineConfig
    _model: LatentAvatarModel

    def __init__(self, config: LatentAvatarPipelineConfig, device: Union[str, torch.device],
                 test_mode: Literal["test", "val", "inference"] = "val", world_size: int = 1, local_rank: int = 0,
                 grad_scaler: Optional[torch.cuda.amp.GradScaler] = None):
        config.datamanager.encoder_crop_size = config.model.encoder_crop_size  # the datasets cut what the encoder sees
        # world_size 1: nerfstudio's DDP wrapper passes CUDA device ids, which a CPU model refuses.
        super().__init__(config, device, test_mode, world_size=1, local_rank=local_rank,  # type: ignore[arg-type]
                         grad_scaler=grad_scaler)
        self.world_size = world_size
        if world_size > 1:
            check_ranks_agree("dataset", self.dataset_fingerprint())
            self._model = DDP(self._model, device_ids=[local_rank] if self.model.device.type == "cuda" else None,
                              broadcast_buffers=False, find_unused_parameters=True)  # type: ignore[assignment]
        # Time is the expression: a camera path's per-keyframe time picks a training frame, so the
        # viewer's render panel offers time on its keyframes (nerfstudio shows it only for "timed" data).
        self.datamanager.includes_time = True
        # The viewer finds the panel's GUI elements on this module; the model asks it for viewer codes.
        self.expression = ExpressionPanel(self.model.num_train_frames,
                                          self.model.frame_codes.shape[0] - self.model.num_train_frames)
        self.model.set_code_source(self.expression)

    def get_train_loss_dict(self, step: int):
        cameras, batch = self.datamanager.next_train(step)
        outputs = self._model(cameras, batch)
        share_rows(self.model.frame_codes, batch["code_idx"])
        if self.model.encoder.frame_norm is not None:  # each rank's estimates moved by its own batch
            average_buffers(self.model.encoder.frame_norm)
        metrics = self.model.get_metrics_dict(outputs, batch)
        return outputs, self.model.get_loss_dict(outputs, batch, metrics), metrics

    def get_training_callbacks(self, attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """The datamanager's and model's callbacks; with several processes, the sampler's state (updated
        from randomly drawn codes and points on each rank) then goes from rank 0 to all."""
        callbacks = super().get_training_callbacks(attributes)
        every = self.model.renderer.sampler.update_every
        if world_size() > 1 and every > 0:
            callbacks.append(TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                                              lambda step: broadcast_state(self.model.renderer.sampler),
                                              update_every_num_iters=every))
        return callbacks

    def dataset_fingerprint(self) -> str:
        """What every rank's training data must agree on: frame names, cameras and codes (not where it lies)."""
        dataset: LatentAvatarDataset = self.datamanager.train_dataset  # type: ignore[assignment]
        names = [Path(name).name for name in dataset._dataparser_outputs.image_filenames]
        cameras = dataset.cameras
        return fingerprint(names,
                           (cameras.camera_to_worlds * 1e4).round(), (cameras.fx * 1e2).round(),
                           cameras.width, cameras.height, dataset.code_idx)

    def get_eval_loss_dict(self, step: int):
        self.eval()
        cameras, batch = self.datamanager.next_eval(step)
        with torch.no_grad():
            outputs = self.model(cameras, batch)
            metrics = self.model.get_metrics_dict(outputs, batch)
            losses = self.model.get_loss_dict(outputs, batch, metrics)
        self.train()
        return outputs, losses, metrics

    def get_eval_image_metrics_and_images(self, step: int):
        self.eval()
        camera, batch = self.datamanager.next_eval_image(step)
        outputs = self.model.get_outputs_for_camera(camera, batch=batch)
        metrics, images = self.model.get_image_metrics_and_images(outputs, batch)
        metrics["num_rays"] = int(camera.height * camera.width)
        self.train()
        return metrics, images

    def get_average_image_metrics(self, data_loader, image_prefix: str, step: Optional[int] = None,
                                  output_path: Optional[Path] = None, get_std: bool = False) -> Dict[str, float]:
        """Mean (and std) of the image metrics over frames, each encoded from its own crop."""
        self.eval()
        if output_path is not None:
            output_path.mkdir(parents=True, exist_ok=True)
        rows = []
        for idx, (camera, batch) in enumerate(track(data_loader, description="Evaluating frames", transient=True)):
            start = time()
            outputs = self.model.get_outputs_for_camera(camera, batch=batch)
            metrics, images = self.model.get_image_metrics_and_images(outputs, batch)
            metrics["fps"] = 1.0 / max(time() - start, 1e-9)
            rows.append(metrics)
            if output_path is not None:
                for key, image in images.items():
                    vutils.save_image(image.permute(2, 0, 1).cpu(), output_path / f"{image_prefix}_{key}_{idx:04d}.png")
        result: Dict[str, float] = {}
        for key in rows[0]:
            values = torch.tensor([row[key] for row in rows], dtype=torch.float64)
            result[key] = float(values.mean())
            if get_std:
                result[f"{key}_std"] = float(values.std()) if len(rows) > 1 else 0.0
        self.train()
        return result

    @torch.no_grad()
    def encode_frames(self, dataset: LatentAvatarDataset, batch_size: int = 32) -> None:
        """Encode every frame of a dataset into the model's code table (noise-free, eval mode).

        The views of a multi-view moment share one crop and one code, so each code is encoded
        once, from its first image.
        """
        was_training = self.model.training
        self.model.eval()
        images = _first_image_of_each_code(dataset)
        for start in range(0, len(images), batch_size):
            items = [dataset.get_data(i) for i in images[start:start + batch_size]]
            crops = torch.stack([item["encoder_crop"] for item in items]).to(self.device)
            self.model.code_table.encode(self.model.encode, crops, torch.tensor([item["code_idx"] for item in items]))
        self.model.train(was_training)

    def warm_start_encoder(self, max_frames: int = 1024) -> None:
        """Fit the encoder as a crop autoencoder on the training frames (``encoder_warm_start_steps``).

        One crop per moment (a multi-view moment shares its crop), at most ``max_frames`` of them,
        evenly spaced.
        """
        cfg = self.model.config
        dataset: LatentAvatarDataset = self.datamanager.train_dataset  # type: ignore[assignment]
        images = _first_image_of_each_code(dataset)
        images = [images[int(i)] for i in torch.linspace(0, len(images) - 1, min(max_frames, len(images))).round()]
        crops = torch.stack([dataset.get_data(i)["encoder_crop"] for i in images])
        weights = cfg.region_loss_weights
        steps = cfg.encoder_warm_start_steps
        with Progress(TextColumn("Encoder warm start"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.fields[loss]}"), console=CONSOLE, transient=True) as progress:
            task = progress.add_task("", total=steps, loss="")
            losses = fit_crop_autoencoder(
                self.model.encoder, cfg.code_dim, crops.to(self.device), steps, weights,
                noise_std=cfg.encoder_noise_std, decoder=self.model.crop_decoder,
                progress=lambda step, loss: progress.update(task, completed=step + 1, loss=f"loss {loss:.4f}"))
        CONSOLE.print(f"Encoder warm start: crop autoencoder on {len(images)} frames, loss {losses[0]:.4f} -> "
                      f"{losses[-1]:.4f} in {steps} steps")

    def load_pipeline(self, loaded_state: Dict[str, Any], step: int) -> None:
        """Load weights, then encode the held-out frames so camera-only renders show their expressions.

        A checkpoint trained with another sampler loads too: the sampler's own state (proposal
        network, occupancy grid) is kept from this config, and a fresh occupancy grid is filled
        from the stored codes.
        """
        loaded_state = {key.replace("_model.module.", "_model.", 1): value for key, value in loaded_state.items()}
        own_state = {f"_model.{key}": value for key, value in self.model.state_dict().items()}
        sampler_prefix = "_model.renderer.sampler."
        own = {k for k in own_state if k.startswith(sampler_prefix)}
        theirs = {k for k in loaded_state if k.startswith(sampler_prefix)}
        switched = own != theirs
        if switched:
            CONSOLE.print(f"Checkpoint was trained with another sampler than '{self.model.config.sampler}': "
                          "its sampler state is not loaded.", style="bold yellow")
            loaded_state = {k: v for k, v in loaded_state.items() if k not in theirs}
            loaded_state.update({k: v for k, v in own_state.items() if k in own})
        super().load_pipeline(loaded_state, step)
        if switched:
            for _ in range(self.model.renderer.sampler.refill_passes):
                self.model.update_sampler()
        if self.datamanager.eval_dataset is not None and len(self.datamanager.eval_dataset) > 0:
            self.encode_frames(self.datamanager.eval_dataset)  # type: ignore[arg-type]


def _first_image_of_each_code(dataset: LatentAvatarDataset) -> List[int]:
    """The first image of every code (moment) of a dataset: the views of a moment share one crop."""
    first_image: Dict[int, int] = {}
    for image, code in enumerate(dataset.code_idx.tolist()):
        first_image.setdefault(code, image)
    return list(first_image.values())
