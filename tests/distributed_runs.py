"""Training runs in several CPU processes (gloo) that leave each rank's state behind for the tests to compare."""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.distributed as dist

from latentavatar_ns.method.launch import launch, seeded_trainer
from latentavatar_ns.method.trainer import LatentAvatarTrainerConfig
from latentavatar_ns.utils.distributed import world_size


def train_and_record(local_rank: int, world: int, config: LatentAvatarTrainerConfig, global_rank: int = 0) -> None:
    """nerfstudio's ``train_loop``, recording every step; each rank then saves ``rank<r>.pt`` in the run folder.

    Recorded: the rank-averaged loss of each step, each step's code rows and the codes stored in them,
    the state right after set-up (a resumed run's loaded weights) and at the end, and the first step.
    """
    trainer = seeded_trainer(local_rank, world, config, global_rank)
    pipeline = trainer.pipeline
    loaded = {k: v.clone() for k, v in pipeline.model.state_dict().items()}
    losses: List[float] = []
    encoded: List[Dict] = []
    train_loss_dict, train_iteration = pipeline.get_train_loss_dict, trainer.train_iteration

    def recorded_loss_dict(step: int):
        outputs, loss_dict, metrics = train_loss_dict(step)
        rows = pipeline.datamanager.last_code_idx  # type: ignore[attr-defined]
        encoded.append({"step": step, "rank": global_rank, "rows": rows.clone(),
                        "codes": pipeline.model.frame_codes[rows].clone()})
        return outputs, loss_dict, metrics

    def recorded_iteration(step: int):
        loss, loss_dict, metrics = train_iteration(step)
        mean = loss.detach().clone().reshape(1)
        if world_size() > 1:
            dist.all_reduce(mean)
        losses.append(float(mean) / world_size())
        return loss, loss_dict, metrics

    next_train = pipeline.datamanager.next_train

    def remembered_next_train(step: int):
        cameras, batch = next_train(step)
        pipeline.datamanager.last_code_idx = batch["code_idx"]  # type: ignore[attr-defined]
        return cameras, batch

    pipeline.datamanager.next_train = remembered_next_train  # type: ignore[method-assign]
    pipeline.get_train_loss_dict = recorded_loss_dict  # type: ignore[method-assign]
    trainer.train_iteration = recorded_iteration  # type: ignore[method-assign]
    trainer.train()
    sampler = pipeline.model.renderer.sampler
    torch.save({"start_step": trainer._start_step, "num_train_frames": pipeline.model.num_train_frames,
                "loaded": loaded, "final": pipeline.model.state_dict(), "losses": losses, "encoded": encoded,
                "baked": sampler.baked_density() if getattr(sampler, "bake_resolution", 0) else None},
               config.get_base_dir() / f"rank{global_rank}.pt")


def run(config: LatentAvatarTrainerConfig, processes: int) -> List[Dict]:
    """Train ``config`` in ``processes`` gloo processes on this machine; each rank's record, by rank."""
    config.machine.num_devices = processes
    config.machine.device_type = "cpu"
    config.save_config()
    if processes == 1:
        train_and_record(0, 1, config)
    else:
        launch(train_and_record, processes, config=config, device_type="cpu")
    return [torch.load(config.get_base_dir() / f"rank{r}.pt", weights_only=False) for r in range(processes)]
