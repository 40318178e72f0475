"""Parallel workers: several processes run one study's trials from a shared Optuna storage.

Each worker is a separate process (``spawn``: no forked torch or CUDA state) that loads the study
from the storage (SQLite on one machine, PostgreSQL across machines) and runs Optuna's
``study.optimize`` with the study's :class:`~trainengine.tune.TrialObjective`. Optuna hands every
trial a unique number inside a storage transaction, so two workers never run the same trial.

The trial budget (``n_trials``: the study's total, trials of earlier runs included) is shared:
a worker creates its next trial only while it holds a lock the command's workers share and the
study has fewer than ``n_trials`` trials that used budget (finished, running or waiting), so the
total comes out exact. Workers started by *other* commands (other machines on one PostgreSQL
study) check the same count, without the lock: each may overshoot by at most its own number of
workers.

Killing the command (Ctrl-C, SIGTERM) stops the workers: their running trials end as FAILED (the
Trainer's interrupt handling runs first, so a configured emergency checkpoint is written), and
running the command again continues the study where it stopped. A worker killed outright (kill
-9, a lost machine) leaves its trial RUNNING; the storage's heartbeat marks it FAILED once it has
been silent for the grace period (:func:`~trainengine.tune._study.open_storage`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import platform
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainengine.errors import ConfigError, TrainEngineError
from trainengine.tune._study import (
    _TRIAL_ERRORS,
    PrunerName,
    SamplerName,
    StudySetup,
    TrialObjective,
    open_storage,
    open_study,
)

if TYPE_CHECKING:
    import optuna

    from trainengine.config import TrainingConfig
    from trainengine.tune._report import TuneResult
    from trainengine.tune._space import SearchSpace

__all__ = ["run_workers", "tune_parallel", "used_budget", "watch_trials", "worker_seed"]

# How long a stopping worker may take to finish its interrupt handling before it is killed.
_STOP_GRACE_S = 30.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The budget lock is held only to count the trials and create one: seconds at most.
_LOCK_TIMEOUT_S = 120.0

logger = logging.getLogger("trainengine")


def _budget_states() -> tuple[Any, ...]:
    from optuna.trial import TrialState

    # Finished trials used their budget; running and waiting ones are about to.
    return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)


def used_budget(study: optuna.Study) -> int:
    """Trials that count against the study's ``n_trials``: finished, running or waiting."""
    return len(study.get_trials(deepcopy=False, states=_budget_states()))


def worker_seed(seed: int | None, worker: int, start_trials: int) -> int | None:
    """The sampler seed of one worker: distinct per worker and per continuation of the study.

    Two workers with the same seed would draw the same random (startup) parameters, and a
    continued study would redraw its first run's; mixing in the worker index and the number of
    trials already in the study avoids both while keeping a run reproducible.

    Example:
        >>> worker_seed(0, 0, 0) != worker_seed(0, 1, 0) != worker_seed(0, 0, 5)
        True
        >>> worker_seed(None, 3, 7) is None
        True
    """
    if seed is None:
        return None
    import numpy as np

    return int(np.random.SeedSequence([seed, worker, start_trials]).generate_state(1)[0])


class _Budget:
    """The shared trial budget: the lock is held from "count the trials" until the new trial exists."""

    def __init__(self, n_trials: int, lock: Any, stopper: _Stopper | None = None) -> None:
        self.n_trials = n_trials
        self.lock = lock
        self.stopper = stopper
        self.held = False

    def acquire(self, study: optuna.Study) -> bool:
        """Take the lock when there is budget left (keep it until :meth:`release`), else return False.

        A worker killed while holding the lock (kill -9) never releases it: after a long wait the
        others go on without it (the count alone: at worst a trial over the budget per worker).
        """
        self.held = bool(self.lock.acquire(timeout=_LOCK_TIMEOUT_S))
        if not self.held:
            logger.warning(
                "the tuning workers' budget lock was not released for %.0f s; going on without it", _LOCK_TIMEOUT_S
            )
        if used_budget(study) >= self.n_trials:
            self.release()
            return False
        return True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.lock.release()

    def after_trial(self, study: optuna.Study, _trial: Any) -> None:
        """An Optuna callback: reserve the next trial, or stop this worker's ``optimize``."""
        if (self.stopper is not None and self.stopper.requested) or not self.acquire(study):
            study.stop()


class _Stopper:
    """SIGTERM in a worker: a running trial ends as FAILED; between trials the worker just stops.

    Raising ``KeyboardInterrupt`` anywhere else in Optuna's loop (after a trial is created and
    before its objective runs, or while it is told its result) would leave that trial RUNNING;
    there the handler only asks ``optimize`` to stop, and the objective refuses to start.
    """

    def __init__(self) -> None:
        self.study: Any = None
        self.in_trial = False
        self.requested = False

    def handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self.in_trial or self.study is None:
            raise KeyboardInterrupt(f"signal {signum}")
        try:
            self.study.stop()
        except RuntimeError:  # not inside optimize yet (Optuna refuses stop() there): nothing is half done
            raise KeyboardInterrupt(f"signal {signum}") from None


class _Gated:
    """The objective behind the budget: the trial now exists, so the next worker may count it.

    The trial records which worker ran it (``worker``: index, process id, host).
    """

    def __init__(self, objective: Callable[[Any], Any], budget: _Budget, worker: int, stopper: _Stopper) -> None:
        self.objective = objective
        self.budget = budget
        self.worker = {"index": worker, "pid": os.getpid(), "host": platform.node()}
        self.stopper = stopper

    def __call__(self, trial: Any) -> Any:
        self.budget.release()
        # ``in_trial`` first, then the check: a signal before this line only set ``requested`` (and
        # is seen below), one after it raises here; either way the trial ends FAILED at once instead
        # of training to its end while the command waits to stop it.
        self.stopper.in_trial = True
        try:
            if self.stopper.requested:
                raise KeyboardInterrupt("the worker is stopping")  # the trial is recorded FAILED
            trial.set_user_attr("worker", self.worker)
            return self.objective(trial)
        finally:
            self.stopper.in_trial = False


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the command's process dies, even by SIGKILL."""
    with contextlib.suppress(Exception):  # not Linux, or no libc: the parent's own cleanup still applies
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _worker_main(setup_data: Mapping[str, Any], options: Mapping[str, Any], index: int, lock: Any, errors: Any) -> None:
    """One worker process: load the study and run trials while the shared budget lasts."""
    # SIGTERM (the command stopping its workers, or its death) ends the running trial as FAILED
    # instead of killing the process under it; inside training the Trainer's own handler takes over.
    stopper = _Stopper()
    signal.signal(signal.SIGTERM, stopper.handle)
    _die_with_parent()
    try:
        import torch

        torch.set_num_threads(int(options["threads"]))
        setup = StudySetup.from_dict(setup_data)
        storage_study = _load(setup)
        seed = worker_seed(options["seed"], index, len(storage_study.get_trials(deepcopy=False)))
        study = open_study(setup, sampler=options["sampler"], pruner=options["pruner"], seed=seed)
        stopper.study = study
        budget = _Budget(int(options["n_trials"]), lock, stopper)
        if not budget.acquire(study):
            return
        try:
            study.optimize(
                _Gated(TrialObjective(setup), budget, index, stopper),
                timeout=options["timeout"],
                catch=_TRIAL_ERRORS,  # as in tune(): a failing trial is recorded FAILED and the study goes on
                callbacks=[budget.after_trial],
            )
        finally:
            budget.release()  # optimize stopped (timeout, a signal) right after reserving a trial
        if stopper.requested:
            raise KeyboardInterrupt("stopped by SIGTERM")
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:  # noqa: BLE001 - any error crosses to the parent, which raises it
        errors.put((index, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None


def _load(setup: StudySetup) -> optuna.Study:
    import optuna

    return optuna.load_study(study_name=setup.study_name, storage=open_storage(setup.storage))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM to the command stops it like Ctrl-C (so the workers are stopped too)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(procs: Sequence[Any]) -> None:
    """Ask every live worker to stop (SIGTERM: the Trainer ends its trial cleanly), then make sure."""
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def _context() -> Any:
    """Worker processes start fresh (no forked torch thread pools or CUDA state): on Linux they are
    forked from Python's fork server, a clean process that has imported torch and the trial code
    once (so N workers do not import them N times), elsewhere spawned."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "optuna", "trainengine.assembly", "trainengine.tune._workers"])
    return ctx


def run_workers(
    setup: StudySetup,
    n_trials: int,
    *,
    num_workers: int,
    sampler: SamplerName = "tpe",
    pruner: PrunerName | None = None,
    seed: int | None = 0,
    timeout: float | None = None,
    on_poll: Callable[[], None] | None = None,
    poll_interval_s: float = 1.0,
) -> None:
    """Run the study's trials in ``num_workers`` processes until ``n_trials`` trials used budget.

    The study must exist in ``setup.storage`` (:func:`~trainengine.tune._study.open_study`). Each
    process gets ``cpu_count // num_workers`` torch threads, so N workers do not oversubscribe
    the cores.

    Args:
        setup: the study (its ``parent_db_run_id`` set when trials are to be linked to a study run).
        n_trials: the study's total budget.
        num_workers: processes to start.
        sampler: each worker's sampler (seeded per worker: :func:`worker_seed`).
        pruner: each worker's pruner (None = median, or none for several objectives).
        seed: the base sampler seed.
        timeout: each worker starts no new trial after this many seconds.
        on_poll: called every ``poll_interval_s`` in this process while the workers run (a live
            table reading the storage).
        poll_interval_s: how often ``on_poll`` runs.

    Raises:
        ConfigError: ``num_workers`` below 1.
        TrainEngineError: a worker failed (its error, e.g. an unreachable storage).
        KeyboardInterrupt: Ctrl-C or SIGTERM: the workers were stopped first.
    """
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
        raise ConfigError(f"workers must be a whole number >= 1, got {num_workers!r}")
    ctx = _context()
    lock, errors = ctx.Lock(), ctx.Queue()
    options = {
        "n_trials": n_trials,
        "sampler": sampler,
        "pruner": pruner,
        "seed": seed,
        "timeout": timeout,
        "threads": max(1, (os.cpu_count() or 1) // num_workers),
    }
    data = setup.to_dict()
    procs = [
        ctx.Process(target=_worker_main, args=(data, options, i, lock, errors), name=f"trainengine-tune-{i}")
        for i in range(num_workers)
    ]
    with _sigterm_as_interrupt():
        try:
            for proc in procs:
                proc.start()
            while any(p.is_alive() for p in procs):
                if on_poll is not None:
                    on_poll()
                for proc in procs:
                    proc.join(poll_interval_s / len(procs))
        except BaseException:
            _stop(procs)
            raise
    if on_poll is not None:
        on_poll()
    failures = []
    while True:
        try:
            failures.append(errors.get(timeout=0.1))
        except queue.Empty:  # every message is read
            break
    failures += [(i, f"exit code {p.exitcode}") for i, p in enumerate(procs) if p.exitcode and p.exitcode != 1]
    if failures:
        detail = "; ".join(f"worker {i}: {message}" for i, message in sorted(failures))
        raise TrainEngineError(f"{len(failures)} of {num_workers} tuning workers failed — {detail}")


# ------------------------------------------------------------------------------------------- a live table
def _trials_table(study: optuna.Study, n_trials: int) -> Any:
    from rich.table import Table

    from trainengine.tune._study import trial_run_name

    trials = study.get_trials(deepcopy=False)
    names = [str(n) for n in (study.metric_names or ["value"])]
    table = Table(title=f"study {study.study_name}: {len(trials)} / {n_trials} trials")
    for column in ("trial", "state", *names, "steps", "params"):
        table.add_column(column)
    for t in trials:
        values = t.values or [None] * len(names)
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in t.params.items())
        table.add_row(
            trial_run_name(t.number),
            t.state.name.lower(),
            *(_short(v) for v in values),
            str(t.user_attrs.get("steps", "")),
            params,
        )
    return table


def _short(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def watch_trials(
    storage: str, study_name: str, n_trials: int, *, wait_for: Path | None = None, refresh_s: float = 1.0
) -> Iterator[None]:
    """Show a live table of the study's trials (rich) while the block runs, read from the storage.

    A background thread reads the storage every ``refresh_s``, so it works the same whether the
    trials run in this process or in worker processes (or on other machines). On a terminal the
    table updates in place; elsewhere it is printed once at the end.

    Args:
        storage: the study's Optuna storage URL.
        study_name: the study's name.
        n_trials: the budget (shown in the title).
        wait_for: a file that exists once the study does (the study run's ``run.json``): the
            storage is not opened before, so this reader never creates it or races its creation.
        refresh_s: seconds between reads.
    """
    import optuna
    from rich.console import Console
    from rich.live import Live

    stop = threading.Event()
    state: dict[str, Any] = {"study": None}

    def render() -> Any:
        if state["study"] is None and (wait_for is None or wait_for.exists()):
            with contextlib.suppress(KeyError):  # the study is created by the block: not there yet
                state["study"] = optuna.load_study(study_name=study_name, storage=open_storage(storage))
        return _trials_table(state["study"], n_trials) if state["study"] is not None else ""

    console = Console(soft_wrap=True)
    with Live("", console=console, auto_refresh=False) as live:

        def loop() -> None:
            while not stop.wait(refresh_s):
                with contextlib.suppress(Exception):  # a busy or not yet created storage: show it next time
                    live.update(render(), refresh=True)

        thread = threading.Thread(target=loop, name="trainengine-tune-table", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            with contextlib.suppress(Exception):
                live.update(render(), refresh=True)
    if not console.is_terminal:
        console.line()  # the table printed once ends without a newline


# ------------------------------------------------------------------------------------------- tune with workers
def tune_parallel(
    base_config: TrainingConfig,
    space: SearchSpace | Mapping[str, Any] | str | Path,
    n_trials: int,
    *,
    workers: int,
    **options: Any,
) -> TuneResult:
    """:func:`~trainengine.tune.tune` with ``workers`` processes: ``tune(..., workers=workers)``.

    The other keyword arguments are :func:`~trainengine.tune.tune`'s (``sampler`` and ``pruner``
    by name, no ``callbacks``). ``n_trials`` is the study's total, trials of earlier runs included.
    """
    from trainengine.tune._study import tune

    return tune(base_config, space, n_trials, workers=workers, **options)
