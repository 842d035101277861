"""Fitting many runs: those asked to train together as stacked networks (together.py), one group per
model and hyperparameters in this process, the rest side by side in worker processes (fit.py each).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from synthmix.config.compute import Compute
from synthmix.config.hparams import Hyperparameters
from synthmix.config.params import TrainConfig
from synthmix.core.processes import die_with_parent
from synthmix.data.images import LabelledImages
from synthmix.train.fit import FitResult, fit
from synthmix.train.together import TogetherRun, fit_together

T = TypeVar("T")
MAX_TOGETHER = 32  # runs in one stacked network: its training images all sit on the device at once


@dataclass(frozen=True)
class FitJob:
    """One run to fit, known to the caller by `key` (the train stage's RunSpec)."""

    key: Hashable
    model: str
    train: LabelledImages
    seed: int
    hp: Hyperparameters
    max_steps: int | None = None
    augment: bool = False  # every batch augmented afresh by train.augment (+aug mixes)
    together: bool = False  # trained with the other together-jobs of its model and hyperparameters


@dataclass(frozen=True)
class Shared:
    """What every job of a stage shares."""

    test: LabelledImages
    num_classes: int
    cfg: TrainConfig
    compute: Compute


@dataclass(frozen=True)
class ProcessShare:
    """This process's part of a stage launched as several processes (`accelerate launch --num_processes
    N -m synthmix train`: one a GPU, each pinned to its own): every N-th run from its index on, on its
    own device; `wait` returns when every process has finished its part. One process: all of it."""

    index: int = 0
    count: int = 1
    device: torch.device | None = None  # the process's GPU as accelerate assigns it (None: one process)
    wait: Callable[[], None] = field(default=lambda: None, compare=False)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def mine(self, items: Sequence[T]) -> list[T]:
        return list(items[self.index :: self.count])


def process_share() -> ProcessShare:
    """This process's share, from accelerate's launcher (its WORLD_SIZE and ranks); all of it alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ProcessShare()
    from accelerate import PartialState  # the launcher's process group: gloo on CPUs, NCCL on GPUs

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU processes: gloo (tests, CPU machines)
    device = state.device if state.device.type == "cuda" else None
    return ProcessShare(state.process_index, state.num_processes, device, state.wait_for_everyone)


def fit_all(jobs: Sequence[FitJob], shared: Shared, workers: int) -> Iterator[tuple[Hashable, FitResult]]:
    """Fit every job, yielding (key, result) as each finishes: first the groups trained together
    (each group's results when the group ends), then the rest (`fit_alone`)."""
    for group in together_groups(jobs):
        runs = [TogetherRun(j.train, j.seed, j.max_steps) for j in group]
        first = group[0]
        results = fit_together(
            first.model, runs, shared.test, first.hp,
            num_classes=shared.num_classes, train_cfg=shared.cfg, compute=shared.compute,
        )  # fmt: skip
        yield from ((job.key, result) for job, result in zip(group, results, strict=True))
    yield from fit_alone([j for j in jobs if not j.together], shared, workers)


def together_groups(jobs: Sequence[FitJob]) -> list[list[FitJob]]:
    """The together-jobs by model and hyperparameters, in their order, at most MAX_TOGETHER a group."""
    groups: dict[tuple[str, Hyperparameters], list[FitJob]] = {}
    for job in jobs:
        if job.together:
            groups.setdefault((job.model, job.hp), []).append(job)
    return [g[i : i + MAX_TOGETHER] for g in groups.values() for i in range(0, len(g), MAX_TOGETHER)]


def _fit_job(job: FitJob, shared: Shared) -> tuple[Hashable, FitResult]:
    result = fit(
        job.model,
        job.train,
        shared.test,
        job.hp,
        seed=job.seed,
        num_classes=shared.num_classes,
        train_cfg=shared.cfg,
        augment=shared.cfg.augment if job.augment else None,
        max_steps=job.max_steps,
        compute=shared.compute,
    )
    return job.key, result


def fit_alone(jobs: Sequence[FitJob], shared: Shared, workers: int) -> Iterator[tuple[Hashable, FitResult]]:
    """Fit every job on its own, yielding each result as it finishes.

    Each run is single-threaded (fit.single_thread), so runs go side by side in worker processes, one
    per core by default: on 2 cores the study's 30 small runs take about half the time. Results do not
    depend on the worker count: every run is seeded on its own and computes the same ops. Workers are
    spawned, not forked, since forking a process that already used torch's thread pool can deadlock.

    No worker outlives the stage: interrupted, failed or closed, this kills them mid-fit (their runs stay
    unfinished, redone next time); killed outright, the stage takes them along (`die_with_parent`).
    """
    count = min(workers or os.cpu_count() or 1, len(jobs))
    if count <= 1:
        for job in jobs:
            yield _fit_job(job, shared)
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(count, context, initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        # workers start (in submit) with Ctrl-C blocked, so one pressed as they import cannot kill them
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if os.name == "posix" else None
        try:
            futures = [pool.submit(_fit_job, job, shared) for job in jobs]
        finally:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a Ctrl-C meanwhile is delivered now
        for future in as_completed(futures):
            yield future.result()
    except BaseException:  # KeyboardInterrupt, a run's error, or GeneratorExit from close()
        for process in list((pool._processes or {}).values()):  # no public way to stop a running call
            process.kill()
            process.join()
        raise
    finally:
        pool.shutdown(cancel_futures=True)
