"""Starting the processes of a multi-GPU, multi-machine or multi-process CPU run.

``ns-train latentavatar --machine.num-devices N`` (with ``--machine.num-machines``,
``--machine.machine-rank`` and ``--machine.dist-url`` for several machines) trains one avatar in
N processes per machine: NCCL between GPUs, gloo between CPU processes (``--machine.device-type cpu``).
nerfstudio's own launcher asserts CUDA in every process, and reports a failed process with a
traceback of the launcher; so when the run has more than one process, this project's trainer
config points ``ns-train`` at :func:`launch` instead (:func:`use_project_launcher`, called just before
nerfstudio launches). A one-process run goes through nerfstudio's launcher unchanged.

What the processes exchange while they train is in ``utils/distributed.py``, and who does what is
said where it happens: the datamanager shards each epoch, the pipeline wraps the model in DDP and
shares stored codes and sampler state, the trainer skips a bad step on every rank and keeps
checkpoints, eval and the viewer on rank 0.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Optional, Tuple
from urllib.parse import urlparse

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from nerfstudio.configs.base_config import MachineConfig
from nerfstudio.utils import comms
from nerfstudio.utils.rich_utils import CONSOLE

from latentavatar_ns.utils.checkpoints import TrainingError
from latentavatar_ns.utils.distributed import check_ranks_agree, fingerprint
from latentavatar_ns.utils.errors import LatentAvatarError


@dataclass
class DistributedConfig:
    """How the processes of a multi-process run wait for each other (used only with more than one)."""

    timeout_s: float = 1800.0
    """Longest a rank waits for the others at a collective before the run ends with an error. Rank 0 alone
    evaluates and saves while the others wait at the next step, so it must exceed the longest eval."""
    connect_timeout_s: float = 120.0
    """Longest a machine of rank > 0 tries to reach ``--machine.dist-url`` before giving up: the machines
    may be started a little apart, but a wrong address must not hang."""


def check_machine_flags(machine: MachineConfig, connect_timeout_s: float) -> None:
    """One clear error, before anything is written, for flags that cannot start the run."""
    if machine.num_devices < 1 or machine.num_machines < 1:
        raise TrainingError(f"--machine.num-devices {machine.num_devices} --machine.num-machines "
                            f"{machine.num_machines}: each must be at least 1")
    if not 0 <= machine.machine_rank < machine.num_machines:
        raise TrainingError(f"--machine.machine-rank {machine.machine_rank}: must be in [0, "
                            f"{machine.num_machines - 1}] for --machine.num-machines {machine.num_machines}")
    if machine.device_type == "cuda":
        have = torch.cuda.device_count()
        if machine.num_devices > have:
            raise TrainingError(f"--machine.num-devices {machine.num_devices}: this machine has {have} CUDA GPU(s)")
    elif machine.device_type != "cpu" and machine.num_devices * machine.num_machines > 1:
        raise TrainingError(f"--machine.device-type {machine.device_type}: several processes need cuda or cpu")
    if machine.num_devices * machine.num_machines == 1:
        return
    if machine.dist_url == "auto":
        if machine.num_machines > 1:
            raise TrainingError("--machine.dist-url auto works on one machine only; give every machine "
                                "tcp://<address of machine 0>:<free port>")
        return
    host, port = _tcp_address(machine.dist_url)
    if machine.machine_rank == 0:
        _check_can_listen(machine.dist_url, host, port)
    else:
        _wait_until_reachable(machine.dist_url, host, port, connect_timeout_s)


def _tcp_address(url: str) -> Tuple[str, int]:
    parsed = urlparse(url)
    if parsed.scheme != "tcp" or not parsed.hostname or not parsed.port:
        raise TrainingError(f"--machine.dist-url {url}: expected tcp://<host>:<port> (or auto on one machine)")
    return parsed.hostname, parsed.port


def _check_can_listen(url: str, host: str, port: int) -> None:
    """Machine 0 serves the rendezvous: the address must be its own and the port free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise TrainingError(f"--machine.dist-url {url}: machine 0 cannot listen there ({err.strerror}); "
                                "give an address of this machine and a free port") from None


def _wait_until_reachable(url: str, host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, max(timeout_s, 0.1))):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise TrainingError(f"--machine.dist-url {url}: not reachable within {timeout_s:g} s "
                                    f"({err.strerror or err}); is machine 0 started, and is the address right?") \
                    from None
            time.sleep(1.0)


def config_fingerprint(config: Any) -> str:
    """What every machine's config must agree on: all but where it runs and writes."""
    keep = {name: getattr(config, name) for name in ("pipeline", "optimizers", "max_num_iterations",
                                                     "mixed_precision", "steps_per_save")}
    pipeline = keep["pipeline"]
    data = pipeline.datamanager.data, pipeline.datamanager.dataparser.data
    pipeline.datamanager.data = pipeline.datamanager.dataparser.data = None  # a machine may keep it elsewhere
    try:
        return fingerprint(keep)
    finally:
        pipeline.datamanager.data, pipeline.datamanager.dataparser.data = data


def _worker(local_rank: int, main_func: Callable, world_size: int, num_devices_per_machine: int,
            machine_rank: int, dist_url: str, config: Any, timeout: timedelta, device_type: str) -> None:
    """One process: join the process group, check that the ranks agree on the config, train."""
    global_rank = machine_rank * num_devices_per_machine + local_rank
    if global_rank != 0:  # one copy of the progress and messages; errors are raised, not printed
        CONSOLE.quiet = True
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    else:  # the machine's cores shared out, instead of every process starting one thread per core
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_devices_per_machine))
    try:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", init_method=dist_url,
                                world_size=world_size, rank=global_rank, timeout=timeout)
    except (RuntimeError, ValueError, dist.DistStoreError) as err:
        raise TrainingError(f"--machine.dist-url {dist_url}: rank {global_rank} could not join the run "
                            f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    num_machines = world_size // num_devices_per_machine
    for machine in range(num_machines):  # nerfstudio's per-machine group (comms.get_local_rank)
        group = dist.new_group(list(range(machine * num_devices_per_machine, (machine + 1) * num_devices_per_machine)))
        if machine == machine_rank:
            comms.LOCAL_PROCESS_GROUP = group  # type: ignore[assignment]
    try:
        check_ranks_agree("config", config_fingerprint(config))
        main_func(local_rank, world_size, config, global_rank)
        comms.synchronize()
    finally:
        dist.destroy_process_group()


def seeded_trainer(local_rank: int, world: int, config: Any, global_rank: int = 0) -> Any:
    """A set-up trainer seeded for its rank, as nerfstudio's ``train_loop`` makes it, for launched functions
    that train in their own way (tests, benchmarks)."""
    seed = config.machine.seed + global_rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    trainer = config.setup(local_rank=local_rank, world_size=world)
    trainer.setup()
    return trainer


def launch(main_func: Callable, num_devices_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = "auto", config: Optional[Any] = None, timeout: Optional[timedelta] = None,
           device_type: str = "cuda") -> None:
    """nerfstudio's ``launch`` (same arguments) for a run of several processes, on CUDA or the CPU. The
    collectives' ``timeout`` is the config's ``--distributed.timeout-s`` (nerfstudio passes its fixed 30 min).

    A process that raises or dies stops the others and ends the run with one ``TrainingError`` line
    naming its rank (a bug's traceback is printed above it).
    """
    world_size = num_machines * num_devices_per_machine
    distributed = getattr(config, "distributed", DistributedConfig())
    timeout = timedelta(seconds=distributed.timeout_s)
    if dist_url == "auto":
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            dist_url = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    CONSOLE.print(f"Training in {num_devices_per_machine} {device_type} process(es) on this machine "
                  f"(machine {machine_rank} of {num_machines}, {world_size} in all, {dist_url})")
    context = mp.start_processes(
        _worker, nprocs=num_devices_per_machine, join=False, start_method="spawn",
        args=(main_func, world_size, num_devices_per_machine, machine_rank, dist_url, config, timeout, device_type))
    assert context is not None
    first_rank = machine_rank * num_devices_per_machine
    try:
        while not context.join(grace_period=5.0):
            pass
    except KeyboardInterrupt:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
            process.join()
    except mp.ProcessRaisedException as err:
        raise TrainingError(_raised_line(first_rank + err.error_index, err.msg)) from None
    except mp.ProcessExitedException as err:
        how = f"was killed by {err.signal_name}" if err.signal_name else f"exited with status {err.exit_code}"
        raise TrainingError(f"rank {first_rank + err.error_index} {how}; the other processes were stopped "
                            "(continue from the newest checkpoint with --resume True)") from None


def _raised_line(rank: int, trace: str) -> str:
    """``rank R: <message>`` for the user's errors; a bug's traceback goes to stderr first."""
    last = trace.strip().splitlines()[-1] if trace.strip() else "unknown error"
    kind, _, message = last.partition(": ")
    module, _, name = kind.rpartition(".")
    error_class = getattr(sys.modules.get(module), name, None)
    if isinstance(error_class, type) and issubclass(error_class, LatentAvatarError):
        return f"rank {rank}: {message}"
    print(trace.strip().split("terminated with the following error:", 1)[-1], file=sys.stderr)
    return f"rank {rank} raised {last}; the other processes were stopped"


def use_project_launcher() -> None:
    """Point ``ns-train`` (the running train script) at :func:`launch`; called only for a multi-process run."""
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "") in ("nerfstudio.scripts.train", "__main__") \
                and callable(getattr(module, "train_loop", None)) and callable(getattr(module, "launch", None)):
            module.launch = launch  # type: ignore[attr-defined]
