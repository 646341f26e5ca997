"""One avatar trained in several processes: gloo on the CPU, through the same code paths as NCCL on GPUs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from clitools import BIN, free_port, run_cli
from distributed_runs import run
from trainers import tiny_trainer_config

from nerfstudio.configs.base_config import MachineConfig

from latentavatar_ns.method.launch import check_machine_flags, config_fingerprint
from latentavatar_ns.utils.checkpoints import TrainingError
from latentavatar_ns.synthetic import make_dataset

pytestmark = pytest.mark.slow


def _config(data: Path, out: Path, steps: int, batch: int = 2, **model_options):
    config = tiny_trainer_config(data, out, **model_options)
    config.max_num_iterations, config.steps_per_save = steps, steps
    config.pipeline.datamanager.images_per_batch = batch
    config.pipeline.datamanager.cache_images = "cpu"
    return config


def _assert_same_state(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], num_train: int = 0) -> None:
    """Equal tensors; with ``num_train``, of the code table only the training rows (loading a checkpoint
    encodes the held-out frames afresh)."""
    assert a.keys() == b.keys()
    rows = slice(0, num_train or None)
    differ = [key for key in a if not torch.equal(a[key][rows] if key == "frame_codes" else a[key],
                                                  b[key][rows] if key == "frame_codes" else b[key])]
    assert not differ, f"states differ in {differ[:5]}"


def test_two_processes_keep_one_model_and_one_code_table(synthetic_dataset: Path, tmp_path: Path) -> None:
    """Two gloo ranks: the same weights, sampler grid, code normalisation and code table at the end; disjoint
    frames per epoch; every training frame's row holds its last encoding, whichever rank made it."""
    config = _config(synthetic_dataset, tmp_path, steps=30, sampler="occupancy", occupancy_warmup_steps=4,
                     occupancy_update_every=4, code_normalisation="frames")
    ranks = run(config, processes=2)
    _assert_same_state(ranks[0]["final"], ranks[1]["final"])  # parameters and every buffer, grid included
    assert torch.isfinite(ranks[0]["final"]["renderer.sampler.density"]).all()  # the grid was really updated
    assert int(ranks[0]["final"]["encoder.frame_norm.num_batches"]) == 30  # the estimates were really updated

    first_epoch = [{int(row) for step in r["encoded"][:10] for row in step["rows"]} for r in ranks]
    assert len(first_epoch[0]) == len(first_epoch[1]) == 20 and not first_epoch[0] & first_epoch[1]

    table = ranks[0]["final"]["frame_codes"]
    last: Dict[int, torch.Tensor] = {}
    for step in sorted((s for r in ranks for s in r["encoded"]), key=lambda s: (s["step"], s["rank"])):
        for row, code in zip(step["rows"].tolist(), step["codes"]):
            last[row] = code
    num_train = ranks[0]["num_train_frames"]
    assert sorted(last) == list(range(num_train))  # two epochs in 30 steps: every frame encoded
    for row, code in last.items():
        assert torch.equal(table[row], code), f"row {row} is not its last encoding"

    checkpoints = sorted((config.get_checkpoint_dir()).glob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["step-000000029.ckpt"]
    saved = torch.load(checkpoints[0], weights_only=True)["pipeline"]
    assert not any(".module." in key for key in saved)  # plain keys: resumable by any number of processes
    assert torch.equal(saved["_model.frame_codes"], table)


def test_two_processes_follow_the_loss_curve_of_one_with_twice_the_batch(synthetic_dataset: Path,
                                                                        tmp_path: Path) -> None:
    steps = 60
    two = run(_config(synthetic_dataset, tmp_path / "two", steps, batch=1), processes=2)[0]["losses"]
    one = run(_config(synthetic_dataset, tmp_path / "one", steps, batch=2), processes=1)[0]["losses"]

    def windows(losses: List[float]) -> torch.Tensor:
        return torch.tensor(losses).reshape(-1, 15).mean(dim=1)

    w_two, w_one = windows(two), windows(one)
    assert w_one[-1] < 0.7 * w_one[0] and w_two[-1] < 0.7 * w_two[0]  # both learn
    assert torch.allclose(w_two, w_one, rtol=0.15), (w_two, w_one)


def test_resume_from_two_processes_in_one_and_back(synthetic_dataset: Path, tmp_path: Path) -> None:
    """Checkpoints do not depend on the number of processes; the baked proposal grid is the same on all ranks."""
    options = dict(sampler="proposal", proposal_bake_resolution=16)
    first = _config(synthetic_dataset, tmp_path, 10, **options)
    run(first, processes=2)

    second = _config(synthetic_dataset, tmp_path, 10, **options)
    second.load_dir = first.get_checkpoint_dir()
    second.set_timestamp()
    second.timestamp += "-one"
    (one,) = run(second, processes=1)
    saved = torch.load(first.get_checkpoint_dir() / "step-000000009.ckpt", weights_only=True)["pipeline"]
    assert one["start_step"] == 10
    num_train = one["num_train_frames"]
    _assert_same_state(one["loaded"], {k.replace("_model.", "", 1): v for k, v in saved.items()
                                       if k.startswith("_model.")}, num_train)

    third = _config(synthetic_dataset, tmp_path, 10, **options)
    third.load_dir = second.get_checkpoint_dir()
    third.set_timestamp()
    third.timestamp += "-two"
    ranks = run(third, processes=2)
    assert ranks[0]["start_step"] == ranks[1]["start_step"] == 20
    _assert_same_state(ranks[0]["loaded"], one["final"], num_train)
    _assert_same_state(ranks[0]["final"], ranks[1]["final"])
    assert ranks[0]["baked"] is not None and torch.equal(ranks[0]["baked"], ranks[1]["baked"])


def _train_args(data: Path, out: Path, *extra: str) -> List[str]:
    return ["ns-train", "latentavatar-tiny", "--data", str(data), "--output-dir", str(out), "--experiment-name",
            "d", "--vis", "tensorboard", "--machine.device-type", "cpu",
            "--pipeline.datamanager.cache-images", "cpu", *extra]


def _children(pid: int) -> List[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(proc.name))
    return sorted(found)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the training processes through /proc")
def test_a_killed_rank_ends_the_run_with_one_error(synthetic_dataset: Path, tmp_path: Path) -> None:
    args = _train_args(synthetic_dataset, tmp_path, "--machine.num-devices", "2", "--max-num-iterations",
                       "100000", "--steps-per-save", "5")
    proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob("d/*/*/nerfstudio_models/*.ckpt")):  # training is under way
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.5)
        workers = _children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert stderr.strip().splitlines()[-1].startswith("error: rank 1 was killed by SIGKILL")


def test_bad_machine_flags_are_refused_before_anything_is_written(synthetic_dataset: Path, tmp_path: Path) -> None:
    cases = [
        (MachineConfig(device_type="cpu", num_devices=0), "--machine.num-devices 0"),
        (MachineConfig(device_type="cuda", num_devices=99), "CUDA GPU(s)"),
        (MachineConfig(device_type="cpu", num_devices=1, num_machines=2, machine_rank=1,
                       dist_url=f"tcp://127.0.0.1:{free_port()}"), "not reachable within 2 s"),
        (MachineConfig(device_type="cpu", num_devices=1, num_machines=2, dist_url="auto"), "one machine only"),
        (MachineConfig(device_type="cpu", num_devices=2, dist_url="tcp://192.0.2.1:29500"), "cannot listen there"),
        (MachineConfig(device_type="cpu", num_devices=2, dist_url="http://127.0.0.1:29500"), "expected tcp://"),
    ]
    for machine, message in cases:
        start = time.monotonic()
        with pytest.raises(TrainingError, match=re.escape(message)):
            check_machine_flags(machine, connect_timeout_s=2)
        assert time.monotonic() - start < 30

    # Through the real command: one line, and no run folder.
    result = run_cli(_train_args(synthetic_dataset, tmp_path, "--machine.num-devices", "0"), timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and lines[-1].startswith("error: --machine.num-devices 0"), result.stderr[-2000:]
    assert not (tmp_path / "d").exists()


def test_machines_that_disagree_on_the_dataset_stop_with_one_line(synthetic_dataset: Path, tmp_path: Path) -> None:
    other = make_dataset(tmp_path / "other", identity=1, num_frames=48, resolution=64, eval_fraction=0.125, seed=0)
    url = f"tcp://127.0.0.1:{free_port()}"
    procs = []
    for machine, data in ((0, synthetic_dataset), (1, other)):
        args = _train_args(data, tmp_path / f"m{machine}", "--machine.num-devices", "1", "--machine.num-machines",
                           "2", "--machine.machine-rank", str(machine), "--machine.dist-url", url,
                           "--max-num-iterations", "5")
        procs.append(subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
        time.sleep(3)  # machine 0 listens first
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode != 0
        assert "have another dataset than rank 0" in stderr.strip().splitlines()[-1], stderr[-2000:]


def test_config_fingerprint_ignores_where_a_machine_runs_and_writes(synthetic_dataset: Path, tmp_path: Path) -> None:
    a = _config(synthetic_dataset, tmp_path / "a", 10)
    b = _config(tmp_path / "elsewhere", tmp_path / "b", 10)
    b.machine.machine_rank, b.timestamp = 1, "other"
    assert config_fingerprint(a) == config_fingerprint(b)
    b.pipeline.model.code_dim = 32
    assert config_fingerprint(a) != config_fingerprint(b)
