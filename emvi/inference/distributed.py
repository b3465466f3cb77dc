"""Fitting on several processes with ``torch.distributed``: the process group torchrun describes, sharding, and the
collectives the SVI runner and EM use.

emvi never starts processes or rendezvous of its own: ``torchrun`` (its elastic agent) starts one process per
device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_from_environment` joins that group (gloo for CPU tensors, NCCL for CUDA tensors). Without torchrun, or
with one process, nothing distributed is initialised and every helper here is the identity.

What the fits do with several processes W (rank r):

* **SVI** (:func:`emvi.inference.runner.train`): the permutation of epoch e comes from ``(seed, e)`` as in one
  process; each global batch of ``batch_size`` items is cut into W contiguous slices and rank r reads slice r. Each
  rank's loss is weighted by its share of the batch and the flat gradients (with the loss) are summed by one
  all-reduce, so every rank takes the step one process would take on the whole batch.
* **EM** (:func:`emvi.inference.em.fit_em`): rank r holds items ``[r N / W, (r + 1) N / W)``; the additive expected
  sufficient statistics and the log-likelihood are summed by one all-reduce per iteration, and every rank applies
  the same closed-form M-step.

A failed or timed-out collective (another rank died) raises :class:`emvi.errors.DistributedError` with one line;
the timeout is ``$EMVI_DIST_TIMEOUT`` seconds (default 300).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from ..errors import DistributedError, EmviError

TIMEOUT_ENV = "EMVI_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0

_suspended = 0


def _group_active() -> bool:
    return not _suspended and dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the fit (1 without a process group, or inside :func:`single_process`)."""
    return dist.get_world_size() if _group_active() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if _group_active() else 0


def is_distributed() -> bool:
    """Whether a process group of more than one process is active."""
    return world_size() > 1


def is_main_process() -> bool:
    """Rank 0: the one process that writes run directories and prints."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether the environment describes a group of more than one process (torchrun's ``WORLD_SIZE``)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def timeout_seconds() -> float:
    value = os.environ.get(TIMEOUT_ENV)
    if value is None:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        raise EmviError(f"${TIMEOUT_ENV} must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise EmviError(f"${TIMEOUT_ENV} must be > 0 seconds, got {value!r}")
    return seconds


def init_from_environment() -> bool:
    """Join the process group torchrun describes, once; returns whether one is active.

    Backend: gloo for CPU tensors and, where CUDA is available, NCCL for CUDA tensors (each process then uses the
    GPU ``LOCAL_RANK``). Collectives time out after :func:`timeout_seconds`, so a dead peer ends the others.
    """
    if dist.is_available() and dist.is_initialized():
        return True
    if not launched_by_torchrun():
        return False
    if not dist.is_available():
        raise EmviError("this torch build has no torch.distributed; run in one process")
    check_launch_environment()
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
    except (RuntimeError, ValueError) as exc:  # a rendezvous that cannot start: one line, not torch's report
        first = " ".join(str(exc).split())[:200]
        raise DistributedError(f"cannot join the process group WORLD_SIZE={os.environ.get('WORLD_SIZE')} describes "
                               f"({first}); launch with torchrun or 'emvi ... --nproc N', or unset WORLD_SIZE") from None
    return True


LAUNCH_ENV = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""What torchrun sets beside WORLD_SIZE for every process it starts."""


def check_launch_environment() -> None:
    """Refuse in one line a WORLD_SIZE > 1 that no launcher set up: torchrun's variables missing or out of range
    (a stray WORLD_SIZE would otherwise wait for peers that never come, or end in torch's multi-line report)."""
    missing = [name for name in LAUNCH_ENV if not os.environ.get(name)]
    if missing:
        raise DistributedError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} is set but not {', '.join(missing)}: "
                               "launch with torchrun (or 'emvi ... --nproc N'), or unset WORLD_SIZE")
    try:
        world, rank, port = (int(os.environ[name]) for name in ("WORLD_SIZE", "RANK", "MASTER_PORT"))
    except ValueError:
        raise DistributedError("WORLD_SIZE, RANK and MASTER_PORT must be whole numbers; launch with torchrun or "
                               "'emvi ... --nproc N'") from None
    if not 0 <= rank < world or not 0 < port < 65536:
        raise DistributedError(f"RANK={rank} must lie in 0..{world - 1} and MASTER_PORT={port} in 1..65535; launch "
                               "with torchrun or 'emvi ... --nproc N'")


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def abandon(code: int) -> NoReturn:
    """End this process at once with exit status ``code`` after a failed collective (a peer died): flush stdout and
    stderr, then ``os._exit``. A process group whose peer is gone cannot be left cleanly: gloo's teardown (in
    ``destroy_process_group`` or at interpreter exit) sometimes aborts the process ("terminate called without an
    active exception", status -6), which would hide the one-line error's exit status. Checkpoints are already on disk
    (written atomically), so nothing is lost."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


@contextlib.contextmanager
def single_process():
    """Inside this block every helper behaves as in one process (for work only rank 0 does, e.g. NUTS)."""
    global _suspended
    _suspended += 1
    try:
        yield
    finally:
        _suspended -= 1


def _failed(exc: BaseException, what: str) -> DistributedError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = first if len(first) <= 160 else first[:157] + "..."
    return DistributedError(
        f"rank {dist.get_rank()} of {dist.get_world_size()}: {what} failed ({first}); another process of the fit "
        "probably died or hung (torchrun's log names it); rerun with --resume to continue from the last checkpoint")


@contextlib.contextmanager
def _collective(what: str):
    try:
        yield
    except DistributedError:
        raise
    except (RuntimeError, OSError) as exc:  # DistBackendError, DistNetworkError and gloo's errors are RuntimeErrors
        raise _failed(exc, what) from None


# -- sharding ---------------------------------------------------------------------------------------------------------


def shard_bounds(num_items: int, *, part: int | None = None, parts: int | None = None) -> tuple[int, int]:
    """``[start, stop)`` of part ``part`` (default: this rank) of ``num_items`` cut into ``parts`` (default: the
    world size) contiguous pieces whose sizes differ by at most one."""
    part = rank() if part is None else part
    parts = world_size() if parts is None else parts
    return num_items * part // parts, num_items * (part + 1) // parts


def shard(*tensors: torch.Tensor, what: str = "items") -> tuple[torch.Tensor, ...]:
    """This rank's contiguous part of tensors sharing dim 0 (all of them in one process)."""
    if not is_distributed():
        return tensors
    n = int(tensors[0].shape[0])
    if n < world_size():
        raise EmviError(f"cannot share {n} {what} among {world_size()} processes; run on at most {n} processes")
    start, stop = shard_bounds(n)
    return tuple(t[start:stop] for t in tensors)


# -- collectives ------------------------------------------------------------------------------------------------------


def all_reduce_sum_(tensors: Sequence[torch.Tensor], *, what: str = "all-reduce") -> None:
    """Sum each tensor over the ranks, in place; one collective per (dtype, device) with all of them flattened."""
    if not is_distributed() or not tensors:
        return
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    with _collective(what):
        for group in groups.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)
            offset = 0
            for t in group:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()


def broadcast_(tensors: Iterable[torch.Tensor], *, src: int = 0, what: str = "broadcast") -> None:
    """Overwrite ``tensors`` on every rank with rank ``src``'s values."""
    tensors = list(tensors)
    if not is_distributed() or not tensors:
        return
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    with _collective(what), torch.no_grad():
        for group in groups.values():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            dist.broadcast(flat, src)
            offset = 0
            for t in group:
                t.detach().copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()


def broadcast_module_(*modules) -> None:
    """Give every rank rank 0's parameters and floating buffers of ``modules`` (non-modules are skipped)."""
    tensors = []
    for module in modules:
        if isinstance(module, torch.nn.Module):
            tensors.extend(module.parameters())
            tensors.extend(b for b in module.buffers() if b.is_floating_point())
    broadcast_(tensors, what="broadcast of the parameters")


def broadcast_object(value: Any = None, *, src: int = 0, what: str = "broadcast") -> Any:
    """Rank ``src``'s ``value`` (any picklable object) on every rank."""
    if not is_distributed():
        return value
    box = [value]
    with _collective(what):
        dist.broadcast_object_list(box, src)
    return box[0]


def all_gather_object(value: Any, *, what: str = "all-gather") -> list:
    """``[value of rank 0, value of rank 1, ...]`` on every rank."""
    if not is_distributed():
        return [value]
    out = [None] * world_size()
    with _collective(what):
        dist.all_gather_object(out, value)
    return out


def barrier(*, what: str = "barrier") -> None:
    if is_distributed():
        with _collective(what):
            dist.barrier()


def on_main_process(fn: Callable[[], Any]) -> Any:
    """Call ``fn`` on rank 0 and give its result to every rank; an :class:`EmviError` it raises is raised on every
    rank (so a check that reads the run directory fails everywhere, not only where the files are)."""
    if not is_distributed():
        return fn()
    outcome = None
    if is_main_process():
        try:
            outcome = ("ok", fn())
        except EmviError as exc:
            outcome = ("error", type(exc), str(exc))
    outcome = broadcast_object(outcome, what="sharing rank 0's result")
    if outcome[0] == "error":
        raise outcome[1](outcome[2])
    return outcome[1]


__all__ = [
    "abandon", "init_from_environment", "shutdown", "world_size", "rank", "is_distributed", "is_main_process",
    "launched_by_torchrun", "single_process", "shard", "shard_bounds", "all_reduce_sum_", "broadcast_",
    "broadcast_module_", "broadcast_object", "all_gather_object", "barrier", "on_main_process", "timeout_seconds",
]
