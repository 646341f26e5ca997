"""nerfstudio's trainer with crash-safe checkpoints, resume and a guard against non-finite steps.

People train avatars for hours: a ``kill -9`` at any moment must leave a checkpoint to resume
from (same step, optimiser state and stored frame codes), a diverging step must not poison the
weights, and a second run must not silently write over the first.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Type

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import TRAIN_INTERATION_OUTPUT, Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from latentavatar_ns.data.format import DatasetError
from latentavatar_ns.method.launch import DistributedConfig, check_machine_flags, use_project_launcher
from latentavatar_ns.method.schedulers import LateCosineDecaySchedulerConfig
from latentavatar_ns.utils.checkpoints import NonFiniteGuard, TrainingError, checkpoints_in, load_newest, prune
from latentavatar_ns.utils.cpu_memory import keep_freed_memory
from latentavatar_ns.utils.distributed import all_true, broadcast_state, check_ranks_agree, rank
from latentavatar_ns.utils.io import atomic_write

CKPT_SUFFIX = ".ckpt"


@dataclass
class LatentAvatarTrainerConfig(TrainerConfig):
    """``TrainerConfig`` plus the options that keep a long run safe."""

    _target: Type = field(default_factory=lambda: LatentAvatarTrainer)
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep; each is written to a temporary file and renamed into place."""
    max_nonfinite_steps: int = 25
    """Stop (saving the last good state) after this many steps in a row with a non-finite loss or gradient;
    fewer are skipped with a warning."""
    resume: bool = False
    """Continue the newest earlier run of this experiment from its newest readable checkpoint (no --load-dir
    needed); the continued run is written to a new timestamped folder."""
    overwrite: bool = False
    """Allow training into a run folder that already holds checkpoints (an explicit, reused --timestamp)."""
    cpu_heap_threshold_mib: int = 256
    """On the CPU, serve allocations below this many MiB from glibc's heap and keep as much freed memory for
    reuse, instead of mapping and unmapping each large tensor every step (see ``utils/cpu_memory.py``): steps and
    renders at the paper's size get faster for somewhat more peak memory (README, "Speed and memory").
    0 leaves glibc's defaults. Process-wide; Linux with glibc only."""
    fit_blendshape_mapping: bool = True
    """At the end of training, when every training frame stores its ARKit blendshapes (datasets made by
    ns-latentavatar-process or -synth), fit the mapping from them to the avatar's codes (blendshape_mapping.pt
    beside config.yml), so that any face video or Live Link Face recording drives the avatar at once
    (ns-latentavatar-reenact --via blendshapes). It takes seconds; ns-latentavatar-blendshapes fit does the same."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Time limits of a run in several processes (``--machine.num-devices``, ``--machine.num-machines``)."""
    lr_final_factor: float = 1.0
    """Every parameter group's learning rate at the last step (--max-num-iterations), as a fraction of its own.
    Below 1 the rates hold until ``lr_decay_start`` of the run and then fall along a half cosine, so that the
    last steps settle into detail instead of hopping around it. 1 keeps them constant (the paper's Adam).
    A group given its own scheduler in ``optimizers`` keeps that one. Steps count from the run's first step, so a
    run continued with --load-dir (nerfstudio trains --max-num-iterations more steps) keeps the final rate."""
    lr_decay_start: float = 0.5
    """Fraction of the run after which the learning rates fall, when ``lr_final_factor`` is below 1."""

    def find_resume_dir(self) -> Path:
        """The checkpoint folder of this experiment's run with the newest checkpoint."""
        self.set_experiment_name()
        runs = Path(self.output_dir) / str(self.experiment_name) / str(self.method_name)
        newest = []
        for run in runs.glob("*"):
            found = checkpoints_in(run / self.relative_model_dir, CKPT_SUFFIX)
            if found:
                newest.append((found[-1].stat().st_mtime, run / self.relative_model_dir))
        if not newest:
            raise TrainingError(f"{runs}: nothing to resume (no run with checkpoints); drop --resume True to start")
        return max(newest)[1]

    def save_config(self) -> None:
        """Check the machine flags, resolve --resume and refuse to reuse a run folder with checkpoints, before
        anything is written; a run of several processes is then started by this project's launcher."""
        check_machine_flags(self.machine, self.distributed.connect_timeout_s)
        if self.resume and self.load_dir is None and self.load_checkpoint is None:
            self.load_dir = self.find_resume_dir()
            CONSOLE.print(f"Resuming from {self.load_dir}")
        data = getattr(self.pipeline.datamanager, "data", None)
        base = self.get_base_dir().resolve()
        if data is not None and Path(data).is_dir() and Path(data).resolve() in base.parents:
            raise TrainingError(f"{base}: the run would be written inside the dataset ({data}); "
                                "pass an --output-dir outside it")
        ckpt_dir = self.get_checkpoint_dir()
        continuing = self.load_dir is not None and Path(self.load_dir).resolve() == ckpt_dir.resolve()
        if checkpoints_in(ckpt_dir, CKPT_SUFFIX) and not (continuing or self.overwrite):
            raise TrainingError(f"{self.get_base_dir()} already holds checkpoints; pass --load-dir {ckpt_dir} to "
                                "continue that run, --overwrite True to train into it anyway, or another --timestamp")
        super().save_config()
        if self.machine.num_devices * self.machine.num_machines > 1:
            use_project_launcher()


class LatentAvatarTrainer(Trainer):
    """Atomic, pruned checkpoints; resume from the newest readable one; skip non-finite steps."""

    config: LatentAvatarTrainerConfig

    def __init__(self, config: LatentAvatarTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        if rank() != 0 and config.is_viewer_enabled():  # one viewer per run, not one per machine
            config.vis = "tensorboard"
        super().__init__(config, local_rank, world_size)
        self.nonfinite = NonFiniteGuard(config.max_nonfinite_steps)
        self.last_good_step: Optional[int] = None

    def setup(self, test_mode="val") -> None:
        try:
            if self.config.machine.device_type == "cpu":
                try:
                    keep_freed_memory(self.config.cpu_heap_threshold_mib)
                except ValueError as err:
                    raise TrainingError(f"--cpu-heap-threshold-mib: {err}") from None
            super().setup(test_mode)
            pipeline: Any = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
            check_ranks_agree("checkpoint step", str(self._start_step))
            if self.config.fit_blendshape_mapping and rank() == 0:
                self.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN],
                                                       self.fit_blendshape_mapping))
            if self._start_step == 0 and pipeline.model.config.encoder_warm_start_steps > 0:  # a new run, not a resume
                pipeline.warm_start_encoder()
                broadcast_state(pipeline.model)  # each rank fitted its own; all continue from rank 0's
        except (DatasetError, TrainingError):  # bad data, or no checkpoint to load
            self.remove_run_without_checkpoints()
            raise

    def setup_optimizers(self) -> Optimizers:
        """nerfstudio's optimizers; with ``lr_final_factor`` below 1, the groups without a scheduler get the
        late cosine fall."""
        cfg = self.config
        if not 0.0 < cfg.lr_final_factor <= 1.0 or not 0.0 <= cfg.lr_decay_start < 1.0:
            raise TrainingError(f"--lr-final-factor must be in (0, 1] and --lr-decay-start in [0, 1), "
                                f"got {cfg.lr_final_factor} and {cfg.lr_decay_start}")
        groups = {name: dict(group) for name, group in cfg.optimizers.items()}
        if cfg.lr_final_factor < 1.0:
            decay = LateCosineDecaySchedulerConfig(final_factor=cfg.lr_final_factor, decay_start=cfg.lr_decay_start,
                                                   max_steps=cfg.max_num_iterations)
            for group in groups.values():
                group["scheduler"] = group.get("scheduler") or decay
        pipeline: Any = self.pipeline
        return Optimizers(groups, pipeline.get_param_groups())

    def fit_blendshape_mapping(self, step: int) -> None:
        """Fit the blendshape mapping of the checkpoint just saved, if the training frames have blendshapes."""
        from latentavatar_ns.blendshapes.fit import fit_for_avatar
        from latentavatar_ns.blendshapes.frames import has_blendshapes
        from latentavatar_ns.blendshapes.mapping import MappingError

        datamanager: Any = self.pipeline.datamanager
        data = Path(datamanager.dataparser.config.data)
        if not has_blendshapes(data):
            return
        try:
            path, report = fit_for_avatar(self.base_dir / "config.yml", overwrite=True)
        except MappingError as err:  # the avatar is trained and saved; only the extra is missing
            CONSOLE.print(f"Blendshape mapping not fitted: {err}", style="bold yellow")
            return
        CONSOLE.print(f"Blendshape mapping saved to {path} (R² of the codes {report.val_r2:.2f} on held-out "
                      "frames): ns-latentavatar-reenact --via blendshapes drives the avatar with any face video")

    def train(self) -> None:
        """nerfstudio's loop; bad data found on the first decode leaves no half-made run folder behind."""
        try:
            super().train()
        except DatasetError:
            self.remove_run_without_checkpoints()
            raise

    def remove_run_without_checkpoints(self) -> None:
        """Delete this run's folder (config.yml, logs) when training stopped on bad data before any checkpoint."""
        base = self.base_dir
        if rank() != 0 or not base.is_dir() or checkpoints_in(self.checkpoint_dir, CKPT_SUFFIX):
            return
        shutil.rmtree(base)
        for parent in base.parents:  # the experiment and method folders, if this run was all they held
            if parent == Path(self.config.output_dir) or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()

    # ------------------------------------------------------------------------------------------
    # Checkpoints

    def checkpoint_state(self, step: int) -> Dict:
        """Everything to resume from; the model's keys without DDP's ``module.``, so that a run saved by
        several processes resumes in one and the other way round."""
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline  # type: ignore
        state = {key.replace("_model.module.", "_model.", 1): value
                 for key, value in pipeline.state_dict().items()}  # type: ignore[union-attr]
        return {
            "step": step,
            "pipeline": state,
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }

    def save_checkpoint(self, step: int) -> None:
        """Write ``step-XXXXXXXXX.ckpt`` atomically (temporary beside the folder), keep the newest few."""
        if rank() != 0:
            return
        path = self.checkpoint_dir / f"step-{step:09d}{CKPT_SUFFIX}"
        with atomic_write(path, tmp_dir=self.checkpoint_dir.parent) as tmp:
            torch.save(self.checkpoint_state(step), tmp)
        prune(self.checkpoint_dir, CKPT_SUFFIX, self.config.keep_checkpoints)

    def _load_checkpoint(self) -> None:
        """Like nerfstudio's, but a damaged newest checkpoint falls back to the one before it."""
        cfg = self.config
        if cfg.load_dir is not None:
            candidates = checkpoints_in(Path(cfg.load_dir), CKPT_SUFFIX)
            if cfg.load_step is not None:
                candidates = [p for p in candidates if p.name == f"step-{cfg.load_step:09d}{CKPT_SUFFIX}"]
            if not candidates:
                which = f"step {cfg.load_step}" if cfg.load_step is not None else "step-*.ckpt"
                raise TrainingError(f"{cfg.load_dir}: no checkpoint to load ({which} not found)")
        elif cfg.load_checkpoint is not None:
            if not Path(cfg.load_checkpoint).is_file():
                raise TrainingError(f"{cfg.load_checkpoint}: checkpoint not found")
            candidates = [Path(cfg.load_checkpoint)]
        else:
            CONSOLE.print("No checkpoint to load: training from scratch.")
            return
        path, state = load_newest(candidates, functools.partial(torch.load, map_location="cpu", weights_only=True))
        self._start_step = state["step"] + 1
        self.pipeline.load_pipeline(state["pipeline"], state["step"])
        self.optimizers.load_optimizers(state["optimizers"])
        if "schedulers" in state and cfg.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        self.last_good_step = state["step"]
        CONSOLE.print(f"Resuming at step {self._start_step} from {path}")

    def eval_iteration(self, step: int) -> None:
        """nerfstudio's evaluation, on rank 0 only: the others go on to the next step and wait for it there."""
        if rank() == 0:
            super().eval_iteration(step)

    # ------------------------------------------------------------------------------------------
    # One step

    def train_iteration(self, step: int) -> TRAIN_INTERATION_OUTPUT:
        """nerfstudio's step, except that a non-finite loss or gradient updates nothing."""
        groups = self.optimizers.parameters.keys()
        accumulate = self.gradient_accumulation_steps
        self.optimizers.zero_grad_some([g for g in groups if step % accumulate[g] == 0])
        model = self.pipeline.model
        codes_before = model.frame_codes.clone() if isinstance(getattr(model, "frame_codes", None), torch.Tensor) \
            else None
        device_type = "cpu" if self.device.split(":")[0] in ("cpu", "mps") else "cuda"
        with torch.autocast(device_type=device_type, enabled=self.mixed_precision):
            _, loss_dict, metrics_dict = self.pipeline.get_train_loss_dict(step=step)
            loss = functools.reduce(torch.add, loss_dict.values())
        ok = all_true(bool(torch.isfinite(loss).all()), loss.device)  # every rank skips, or none does
        if ok:
            self.grad_scaler.scale(loss).backward()  # type: ignore[union-attr]
            # With a grad scaler, inf gradients are expected now and then: the scaler skips those itself.
            if not self.grad_scaler.is_enabled():
                ok = NonFiniteGuard.finite(loss, self.pipeline.model.parameters())
        if not ok:
            self.optimizers.zero_grad_all()
            if codes_before is not None:
                model.frame_codes.copy_(codes_before)  # the codes this step stored came with a bad loss
            try:
                self.nonfinite.record(False, step)
            except TrainingError:
                if self.last_good_step is not None:
                    self.save_checkpoint(self.last_good_step)
                    CONSOLE.print(f"Saved the last good state (step {self.last_good_step}) to {self.checkpoint_dir}")
                raise
            return loss.detach(), loss_dict, metrics_dict  # type: ignore[return-value]
        self.nonfinite.record(True, step)
        self.optimizers.optimizer_scaler_step_some(
            self.grad_scaler, [g for g in groups if step % accumulate[g] == accumulate[g] - 1])
        scale = self.grad_scaler.get_scale()
        self.grad_scaler.update()
        if scale <= self.grad_scaler.get_scale():
            self.optimizers.scheduler_step_all(step)
        self.last_good_step = step
        return loss, loss_dict, metrics_dict  # type: ignore[return-value]

