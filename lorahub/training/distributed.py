"""Data-parallel training over processes, with Accelerate: who this process is, and gradients averaged.

A run is data parallel when it runs under ``accelerate launch`` / ``torchrun`` (``WORLD_SIZE`` > 1 in the
environment), or when ``processes`` > 1 asks lorahub to start the other processes itself (:func:`spawned`: this
process is rank 0 and the others run the command given, the SDK's worker). Accelerate's ``PartialState`` joins the
process group (gloo on CPU, NCCL on CUDA) and picks each process's device.

Every process draws the same random numbers for the whole global batch and keeps its own slice (see
``Trainer``), so N processes with batch b take the very steps of one process with batch N·b, up to the order of
float additions in the gradient average.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from lorahub import errors

TIMEOUT = timedelta(minutes=30)
"""How long a collective waits for a process that died or hangs before the run fails."""
_LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: str | None = None
    """The device Accelerate assigned to this process (``cuda:LOCAL_RANK``, ``cpu``); None when not distributed."""
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def card_dict(self, batch: int, grad_accum: int) -> dict[str, Any]:
        return {
            "world_size": self.size,
            "backend": self.backend,
            "batch_per_process": batch,
            "effective_batch": batch * grad_accum * self.size,
        }


def launched_size() -> int:
    """The world size a launcher (``accelerate launch``, ``torchrun``) put in the environment; 1 without one."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def join(device: str | None = None) -> World:
    """This process's place in the launched world (a single process when nothing launched several). Without a
    GPU, or with ``device`` ``cpu``, the processes meet on CPU (gloo)."""
    size = launched_size()
    if size == 1:
        return World()
    torch = importlib.import_module("torch")
    cpu = device == "cpu" or not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU") == "true"
    state = importlib.import_module("accelerate").PartialState(cpu=cpu, timeout=TIMEOUT)
    if state.num_processes != size:
        raise errors.TrainingError(
            f"the launcher started {size} processes but Accelerate joined {state.num_processes}",
            hint="Start the run with accelerate launch or torchrun, or with --processes N alone.",
        )
    return World(state.process_index, state.num_processes, str(state.device), state.backend)


def leave(world: World, *, ok: bool) -> None:
    """Wait for every process (after a success: a failed one may never come), then leave the process group (a
    spawned run's rank 0 goes on living)."""
    if world.size == 1:
        return
    torch = importlib.import_module("torch")
    if ok:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    importlib.import_module("accelerate.state").PartialState._reset_state()


def barrier(world: World) -> None:
    if world.size > 1:
        importlib.import_module("torch").distributed.barrier()


def average_gradients(torch: Any, params: Sequence[Any], world: World) -> None:
    """All-reduce the gradients (one flat buffer, one collective) and divide by the world size: the gradient of
    the mean loss over the global batch, as DDP computes it."""
    if world.size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world.size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def mean(torch: Any, value: float, world: World) -> float:
    """The mean of a number over the processes (the loss a step reports)."""
    if world.size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return float(tensor[0]) / world.size


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def spawned(processes: int, command: Sequence[str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ranks 1…N-1 running ``command`` and make this process rank 0 (the
    launcher's environment variables, set for the duration). On leaving, the workers are waited for, and a
    worker that failed fails the run."""
    if launched_size() > 1:
        raise errors.TrainingError(
            "processes > 1 under a launcher that already started several processes",
            hint="Under accelerate launch or torchrun, leave --processes out: the launcher's world size is used.",
        )
    saved = {name: os.environ.get(name) for name in _LAUNCH_VARIABLES}
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(processes)}
    common["LOCAL_WORLD_SIZE"] = str(processes)
    workers = []
    try:
        for rank in range(1, processes):
            env = os.environ | common | {"RANK": str(rank), "LOCAL_RANK": str(rank)}
            workers.append(subprocess.Popen(list(command), env=env))
        os.environ.update(common | {"RANK": "0", "LOCAL_RANK": "0"})
        yield workers
        failed = [w for w in workers if w.wait() != 0]
        if failed:
            raise errors.TrainingError(f"{len(failed)} training process(es) failed (their errors are above)")
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
