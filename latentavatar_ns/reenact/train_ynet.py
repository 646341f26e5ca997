"""``ns-latentavatar-ynet``: train the Y-network and the mapping to an avatar's theta.

    ns-latentavatar-ynet --load-config RUN/config.yml --actor-data data/bob --output-dir ynet/anna-bob

Each step takes a batch of avatar crops and a batch of actor crops:

- avatar pass: crop -> E_shared -> D_ava, image loss (1 - SSIM) + L1; code loss
  MSE(mapping(shared code), theta) against the frozen avatar's own theta = mapping(encoder(crop)),
  divided by theta's variance over the avatar's frames; cycle loss: D_act(shared code),
  re-encoded by E_shared, gives the same shared code;
- actor pass: crop -> E_shared -> D_act, image loss, and the cycle through D_ava.

The losses of both passes are summed into one Adam step. The crossed crop of the cycle is made
without gradient: when the crossing decoder may learn from the cycle, it hides the person in its
crop, and the shared codes of the two people stay apart; without that gradient they come together,
and the actor's thetas come closer to the avatar's.

The output folder holds ``checkpoints/step-*.pt`` (written atomically; the latest few are kept),
``tensorboard/`` logs and ``preview.png`` (rows of input | D_ava | D_act, avatar frames first).
Each checkpoint records the avatar's config path and fingerprint (network sizes and a hash of its
encoder and mapping weights), so ``ns-latentavatar-reenact`` refuses a Y-network of another avatar.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional

from latentavatar_ns.reenact.inputs import ReenactError, check_dataset_dir, check_file, check_outside
from latentavatar_ns.utils.checkpoints import NonFiniteGuard, TrainingError, checkpoints_in, load_newest, prune
from latentavatar_ns.utils.image import to_uint8
from latentavatar_ns.utils.io import atomic_write

CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
PREVIEW_FILE = "preview.png"
CHECKPOINT_FORMAT = "latentavatar-ynet"
_OWN_OUTPUTS = (CHECKPOINT_DIR, TENSORBOARD_DIR, PREVIEW_FILE)


@dataclass
class YNetTrainConfig:
    """Train the Y-network (shared encoder, avatar and actor decoders) and mapping MLP for one avatar and one actor."""

    load_config: Path
    """The avatar: config.yml of an ns-train latentavatar run (its encoder and mapping are the frozen teacher)."""
    actor_data: Path
    """The actor's dataset folder (train/ frames are used); make one from a video with ns-latentavatar-process."""
    output_dir: Path
    """Where checkpoints, tensorboard logs and the preview go (must be empty unless --resume or --overwrite)."""
    steps: int = 20000
    """Total training steps (with --resume: up to this many in all)."""
    batch_size: int = 16
    """Crops per domain per step."""
    learning_rate: float = 1e-4
    """Adam learning rate."""
    image_loss_weight: float = 1.0
    """Weight of (1 - SSIM) + L1 between each decoder's crop and its input."""
    code_loss_weight: float = 1.0
    """Weight of MSE(mapping(shared code), avatar theta) on avatar frames, divided by theta's variance over
    the avatar's frames (so 1 means no better than the mean theta, whatever theta's scale)."""
    cycle_loss_weight: float = 1.0
    """Weight of MSE(E_shared(D_other(code)), code): a crop drawn by the other person's decoder encodes back to
    the same shared code (the crossed crop carries no gradient, so only the encoder learns from it)."""
    input_noise_std: float = 0.05
    """Gaussian noise on the encoder's input crops in training (as the avatar's encoder)."""
    init_from_avatar: bool = False
    """Start the shared encoder and the mapping as copies of the avatar's own encoder and mapping, instead of
    from random weights (the paper). The Y-network then begins as the direct path (the actor's crops into the
    avatar's encoder) and the two-person training only has to close the gap between the people."""
    steps_per_log: int = 25
    """Tensorboard scalars every this many steps."""
    steps_per_save: int = 1000
    """Checkpoint and preview every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep (each written to a temporary file, then renamed)."""
    max_nonfinite_steps: int = 25
    """Stop (saving the last good state) after this many steps in a row with a non-finite loss or gradient;
    fewer are skipped with a warning."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Training device (auto: cuda when available)."""
    seed: int = 0
    """Seed of the initial weights, batch order and noise."""
    resume: bool = False
    """Continue from the latest checkpoint in the output folder."""
    overwrite: bool = False
    """Delete an earlier run's checkpoints, logs and preview in the output folder and start again."""


@dataclass
class YNetTrainResult:
    checkpoint: Path
    """The last checkpoint written."""
    history: List[Dict[str, float]]
    """Logged losses (one row per log step of this session)."""
    seconds: float


# ----------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_paths(folder: Path) -> List[Path]:
    return checkpoints_in(Path(folder) / CHECKPOINT_DIR, ".pt")


def save_checkpoint(folder: Path, step: int, payload: Dict, keep: int) -> Path:
    """Write ``checkpoints/step-XXXXXXXXX.pt`` atomically (temporary beside the folder); prune old ones."""
    import torch

    path = Path(folder) / CHECKPOINT_DIR / f"step-{step:09d}.pt"
    with atomic_write(path, tmp_dir=Path(folder)) as tmp:
        torch.save(payload, tmp)
    prune(Path(folder) / CHECKPOINT_DIR, ".pt", keep)
    return path


def _read_one(path: Path) -> Dict:
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ReenactError(f"{path}: cannot read Y-network checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ReenactError(f"{path}: not a Y-network checkpoint (written by ns-latentavatar-ynet)")
    data["path"] = str(path)
    return data


def read_checkpoint(path: Path) -> Dict:
    """A Y-network checkpoint: a file, or the newest readable one in a training output folder."""
    path = Path(path)
    if path.is_dir():
        found = checkpoint_paths(path)
        if not found:
            raise ReenactError(f"{path}: no Y-network checkpoint in {path / CHECKPOINT_DIR} "
                               "(train one with ns-latentavatar-ynet)")
        try:
            return load_newest(found, _read_one)[1]
        except TrainingError as err:
            raise ReenactError(str(err)) from None
    if not path.is_file():
        raise ReenactError(f"{path}: Y-network not found")
    return _read_one(path)


def load_ynet(path: Path):
    """The Y-network of a checkpoint (eval mode, on the CPU) and the checkpoint's contents."""
    from latentavatar_ns.reenact.ynet import YNetSpec, YNetwork

    data = read_checkpoint(path)
    ynet = YNetwork(YNetSpec.from_dict(data["spec"]))
    ynet.load_state_dict(data["ynet"])
    return ynet.eval().requires_grad_(False), data


def check_avatar_match(avatar_fingerprint: Dict, data: Dict, avatar_config: Path) -> None:
    """Refuse a Y-network whose teacher is not this avatar, naming the avatar it was trained for."""
    from latentavatar_ns.reenact.avatar import fingerprint_mismatch

    diff = fingerprint_mismatch(avatar_fingerprint, data["avatar"]["fingerprint"])
    if diff is not None:
        key, ours, theirs = diff
        detail = "its encoder/mapping weights differ" if key == "teacher_sha256" else f"{key} {theirs} vs {ours}"
        raise ReenactError(f"{data['path']}: Y-network was trained for another avatar "
                           f"({data['avatar']['config_path']}; {detail}), not {avatar_config}; "
                           "train one for this avatar with ns-latentavatar-ynet")


# ----------------------------------------------------------------------------------------------
# Training


def prepare_output(cfg: YNetTrainConfig) -> Optional[Path]:
    """Check the output folder against --resume / --overwrite; the folder to resume from, if any."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ReenactError(f"{out}: output folder is a file")
    if cfg.resume:
        found = checkpoint_paths(out)
        if not found:
            raise ReenactError(f"{out}: nothing to resume (no {CHECKPOINT_DIR}/step-*.pt); drop --resume to start")
        return out
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise ReenactError(f"{out} is not empty; pass --resume to continue its training or --overwrite to "
                               "start again")
        for name in _OWN_OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return None


class _Batches:
    """Random batches that show every frame once per epoch."""

    def __init__(self, count: int, batch_size: int, generator):
        self.count, self.batch_size, self.generator = count, min(batch_size, count), generator
        self.queue: List[int] = []

    def next(self):
        import torch

        while len(self.queue) < self.batch_size:
            self.queue += torch.randperm(self.count, generator=self.generator).tolist()
        out, self.queue = self.queue[:self.batch_size], self.queue[self.batch_size:]
        return torch.tensor(out)


def _pass_losses(ynet, crops, domain: str, cfg: YNetTrainConfig, theta=None, theta_var=None) -> Dict:
    """One domain's losses (unweighted): image, cycle and, with the avatar's theta, code."""
    import torch
    import torch.nn.functional as F

    from latentavatar_ns.reenact.ynet import ssim_l1_loss

    noisy = crops + torch.randn_like(crops) * cfg.input_noise_std if cfg.input_noise_std > 0 else crops
    code = ynet.encoder(noisy)
    losses = {"image": ssim_l1_loss(ynet.decoder(domain)(code), crops)}
    if cfg.cycle_loss_weight > 0:
        # Without gradient into the crossing decoder: trained to pass the cycle, a decoder learns to hide
        # the person in its crop and the encoder keeps the two people apart in code space.
        with torch.no_grad():
            crossed = ynet.decoder("actor" if domain == "avatar" else "avatar")(code)
        losses["cycle"] = F.mse_loss(ynet.encoder(crossed), code.detach())
    if theta is not None:
        losses["code"] = F.mse_loss(ynet.mapping(code), theta) / theta_var
    return losses


def _preview(ynet, avatar_crops, actor_crops):
    """(rows, 3 columns) sheet: input | D_ava | D_act, avatar rows then actor rows, as uint8 HxWx3."""
    import torch

    with torch.no_grad():
        rows = []
        for crops in (avatar_crops, actor_crops):
            code = ynet.encoder(crops)
            rows.append(torch.cat([crops, ynet.decoder_avatar(code), ynet.decoder_actor(code)], dim=3))
        sheet = torch.cat([torch.cat(list(r), dim=1) for r in rows], dim=1)
    return to_uint8(sheet.permute(1, 2, 0).cpu().numpy())


def _write_png(path: Path, image) -> None:
    from PIL import Image

    with atomic_write(path) as tmp:
        Image.fromarray(image).save(tmp)


def train_ynet(cfg: YNetTrainConfig) -> YNetTrainResult:
    """Train (or resume) a Y-network for ``cfg.load_config``'s avatar and ``cfg.actor_data``'s actor."""
    check_file(cfg.load_config, "avatar config")
    check_dataset_dir(cfg.actor_data, "actor dataset")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ReenactError(f"--steps and --batch-size must be positive (got {cfg.steps}, {cfg.batch_size})")
    check_outside(cfg.output_dir, {"actor dataset": cfg.actor_data})
    resume_from = prepare_output(cfg)

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from torch.utils.tensorboard import SummaryWriter

    from latentavatar_ns.reenact.avatar import load_avatar, load_crops, open_splits, parser_for, to_float
    from latentavatar_ns.reenact.ynet import YNetwork

    device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    torch.manual_seed(cfg.seed)
    avatar = load_avatar(cfg.load_config).to(device)
    fingerprint = avatar.fingerprint()
    spec = avatar.spec
    crop_size = spec.crop_size

    avatar_crops = load_crops(open_splits(parser_for(avatar.parser_config, avatar.data_dir), "train", crop_size),
                              crop_size)
    actor_crops = load_crops(open_splits(parser_for(avatar.parser_config, cfg.actor_data), "train", crop_size),
                             crop_size)
    avatar_theta = avatar.theta(avatar_crops).to(device)
    theta_var = avatar_theta.var(dim=0).mean().clamp_min(1e-12) if len(avatar_theta) > 1 else torch.ones(())

    ynet = YNetwork(spec).to(device)
    if cfg.init_from_avatar and resume_from is None:
        ynet.encoder.load_state_dict(avatar.encoder.state_dict())
        ynet.mapping.load_state_dict(avatar.mapping.state_dict())
    optimizer = torch.optim.Adam(ynet.parameters(), lr=cfg.learning_rate)
    start = 0
    if resume_from is not None:
        data = read_checkpoint(resume_from)
        check_avatar_match(fingerprint, data, cfg.load_config)
        ynet.load_state_dict(data["ynet"])
        optimizer.load_state_dict(data["optimizer"])
        start = int(data["step"]) + 1
        resume_from = Path(data["path"])
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + start)
    batches = {"avatar": _Batches(len(avatar_crops), cfg.batch_size, generator),
               "actor": _Batches(len(actor_crops), cfg.batch_size, generator)}
    preview_idx = {name: torch.linspace(0, len(c) - 1, min(4, len(c))).round().long()
                   for name, c in (("avatar", avatar_crops), ("actor", actor_crops))}

    out = Path(cfg.output_dir)
    writer = SummaryWriter(str(out / TENSORBOARD_DIR))
    meta = {
        "format": CHECKPOINT_FORMAT,
        "spec": spec.to_dict(),
        "avatar": {"config_path": str(cfg.load_config), "checkpoint": str(avatar.checkpoint),
                   "fingerprint": fingerprint},
        "actor_data": str(cfg.actor_data),
        "train_config": {key: str(value) for key, value in asdict(cfg).items()},
    }

    def save(step: int) -> Path:
        ynet.eval()
        sheet = _preview(ynet, to_float(avatar_crops[preview_idx["avatar"]]).to(device),
                         to_float(actor_crops[preview_idx["actor"]]).to(device))
        _write_png(out / PREVIEW_FILE, sheet)
        ynet.train()
        return save_checkpoint(out, step, {**meta, "step": step, "ynet": ynet.state_dict(),
                                           "optimizer": optimizer.state_dict()}, cfg.keep_checkpoints)

    history: List[Dict[str, float]] = []
    checkpoint = resume_from
    guard = NonFiniteGuard(cfg.max_nonfinite_steps)
    last_good: Optional[int] = None
    began = time.time()
    ynet.train()
    w = {"image": cfg.image_loss_weight, "code": cfg.code_loss_weight, "cycle": cfg.cycle_loss_weight}
    columns = (TextColumn("[bold]Y-network"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[losses]}"),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("train", total=cfg.steps, completed=start, losses="")
        for step in range(start, cfg.steps):
            idx_ava, idx_act = batches["avatar"].next(), batches["actor"].next()
            optimizer.zero_grad(set_to_none=True)
            ava = _pass_losses(ynet, to_float(avatar_crops[idx_ava]).to(device), "avatar", cfg,
                               avatar_theta[idx_ava.to(device)], theta_var)
            act = _pass_losses(ynet, to_float(actor_crops[idx_act]).to(device), "actor", cfg)
            total = sum(w[k] * v for k, v in ava.items()) + sum(w[k] * v for k, v in act.items())
            ok = NonFiniteGuard.finite(total)
            if ok:
                total.backward()
                ok = NonFiniteGuard.finite(total, ynet.parameters())
            try:
                guard.record(ok, step)
            except TrainingError:
                if last_good is not None:
                    save(last_good)  # the weights are still those of the last good step
                raise
            if not ok:
                optimizer.zero_grad(set_to_none=True)
                progress.update(task, advance=1)
                continue
            optimizer.step()
            last_good = step
            if step % cfg.steps_per_log == 0 or step == cfg.steps - 1:
                row = {"step": step, "total": float(total.detach()),
                       **{f"avatar/{k}": float(v.detach()) for k, v in ava.items()},
                       **{f"actor/{k}": float(v.detach()) for k, v in act.items()}}
                history.append(row)
                for key, value in row.items():
                    if key != "step":
                        writer.add_scalar(f"ynet/{key}", value, step)
                progress.update(task, losses=f"img {row['avatar/image']:.3f}/{row['actor/image']:.3f} "
                                             f"code {row['avatar/code']:.3f}")
            if (step + 1) % cfg.steps_per_save == 0 or step == cfg.steps - 1:
                checkpoint = save(step)
            progress.update(task, advance=1)
    writer.close()
    if checkpoint is None:  # resumed a run that had already finished
        checkpoint = resume_from
    assert checkpoint is not None
    return YNetTrainResult(Path(checkpoint), history, time.time() - began)

