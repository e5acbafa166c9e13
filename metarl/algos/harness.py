"""The run harness: one loop that every learner's ``train`` runs through.

A learner is an object with

- ``kind`` (str): its name (``"rl2"``, ``"maml"``, ...), written into checkpoints;
- ``data_parallel`` (bool, optional): True when it shares its work among ``torchrun``'s ranks
  (:mod:`metarl.distributed`); a learner without it is refused in a run of several processes;
- ``config``: its :class:`metarl.config.Config` (saved as ``config.json``, checked on resume);
- ``iterations`` (int): how many :meth:`step` calls make the whole run;
- ``step() -> dict``: one iteration (collect, update); returns the values logged as a row of
  ``progress.csv`` (numbers);
- ``env_steps`` (int, optional): the env steps taken so far (all env copies, over resumes); when
  present, the log gets ``env_steps`` and ``env_steps_per_s`` columns;
- ``state_dict()`` / ``load_state_dict(sd)``: everything needed to continue bit for bit (weights,
  optimizers, env state, random generators, running statistics);
- ``report(num_tasks=None) -> dict``: the evaluation (``{"eval": ...}``) on held-out tasks (``num_tasks``
  of them, or episodes, where the learner counts those; None: the config's number), run once the last
  iteration is done and by ``metarl eval``.

:func:`run` owns the rest: the run directory (refusing to overwrite a run unless told), ``config.json``,
resume, ``progress.csv`` (one row per iteration, flushed; on resume the rows after the checkpoint are
dropped by an atomic rewrite), TensorBoard events when ``tensorboard`` is installed, the progress bar
(a periodic one-line status when stderr is not a terminal), periodic checkpoints, a checkpoint on
Ctrl-C or SIGTERM, and ``summary.json``. Checkpoints are written atomically
(:mod:`metarl.checkpoint`), so a ``kill -9`` at any point leaves the last checkpoint and the rows up to
it: resuming gives the rows and weights of an uninterrupted run.

Launched by ``torchrun`` (:mod:`metarl.distributed`), the same loop runs on every rank: rank 0 alone
prepares the run directory and writes ``config.json``, the log, TensorBoard events, the progress bar,
checkpoints and ``summary.json``; the logged numbers are averaged over ranks; a checkpoint holds every
rank's learner state (gathered to rank 0) and the world size, and a resume needs the same world size
(each rank loads its own state); a stop request (Ctrl-C, SIGTERM, the time budget) on any rank stops
all of them after the same iteration, as does the decision to checkpoint.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from metarl import checkpoint, distributed

CHECKPOINT = "checkpoint.pt"
LOG_CSV = "progress.csv"
CONFIG_JSON = "config.json"
SUMMARY_JSON = "summary.json"
TB_PREFIX = "events.out.tfevents."
RUN_FILES = (CHECKPOINT, LOG_CSV, CONFIG_JSON, SUMMARY_JSON)
STATUS_SECONDS = float(os.environ.get("METARL_STATUS_SECONDS", "30"))
"""Seconds between the one-line status prints when progress is shown as lines."""


# ----------------------------------------------------------------------------- files
def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory, fsync and rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_orphans(run_dir: Path) -> list[Path]:
    """Delete the temporary files a kill during a save left behind (``.checkpoint.pt.*.tmp``, ...)."""
    removed = []
    for name in RUN_FILES:
        for p in run_dir.glob(f".{name}.*.tmp"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def prepare_run_dir(run_dir, *, resume: bool, overwrite: bool) -> Path:
    """Create ``run_dir`` or check it can be used: a fresh run refuses a directory that holds a run
    unless ``overwrite`` (which deletes that run's files); a resumed one needs its checkpoint."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} is a file, not a directory")
    if resume:
        if not (run_dir / CHECKPOINT).is_file():
            raise ValueError(f"{run_dir}: nothing to resume (no {CHECKPOINT})")
        remove_orphans(run_dir)
        return run_dir
    existing = [p for p in [*(run_dir / n for n in RUN_FILES)] if p.exists()] if run_dir.is_dir() else []
    existing += sorted(run_dir.glob(TB_PREFIX + "*")) if run_dir.is_dir() else []
    if existing and not overwrite:
        raise ValueError(f"{run_dir} already holds a run ({', '.join(p.name for p in existing)}); continue it with "
                         f"--resume {run_dir} (resume=True), or start over with --overwrite (overwrite=True), "
                         f"which deletes it")
    for p in existing:
        p.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_orphans(run_dir)
    return run_dir


def load_checkpoint(run_dir, kind: str | None = None) -> dict:
    """The checkpoint of ``run_dir``: ``{"kind", "config", "iteration", "learner", ...}``. ``kind``
    given: a checkpoint of another learner is refused with a message naming both."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"{run_dir}: no {CHECKPOINT} (not a metarl run directory?)")
    found = checkpoint.read_kind(path)
    if kind is not None and found != kind:
        raise ValueError(f"{run_dir} is a {found!r} run, not {kind!r}; use  metarl train {found} --resume {run_dir}")
    ck = checkpoint.load(path, kind=found)
    if not isinstance(ck, dict) or not {"config", "iteration", "learner"} <= set(ck):
        raise ValueError(f"{path}: not a checkpoint of this metarl version (written before the run harness?)")
    return ck


class ProgressLog:
    """``run_dir/progress.csv``: a header, then one row per iteration, flushed as written.

    A fresh log writes its header with the first row. ``keep_through``: resuming from that iteration,
    the rows up to it are kept and later ones (written after the checkpoint, or cut by a kill) are
    dropped — by writing a temporary file and renaming it, so a kill during the rewrite leaves the old
    file. ``run_dir`` None: a log that writes nothing."""

    def __init__(self, run_dir: Path | None, keep_through: int | None = None):
        self.path = None if run_dir is None else Path(run_dir) / LOG_CSV
        self.header: list[str] | None = None
        self._file = None
        if self.path is None or keep_through is None or not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        self.header = rows[0]
        kept = [r for r in rows[1:] if len(r) == len(self.header) and _int_or_none(r[0]) is not None
                and _int_or_none(r[0]) <= keep_through]
        atomic_write_text(self.path, _csv_text([self.header, *kept]))
        self._open()

    def _open(self):
        self._file = open(self.path, "a", newline="")
        self._writer = csv.writer(self._file)

    def write(self, row: dict) -> None:
        if self.path is None:
            return
        if self.header is None:
            self.header = list(row)
            atomic_write_text(self.path, _csv_text([self.header]))
            self._open()
        if list(row) != self.header:
            raise ValueError(f"{self.path}: row columns {list(row)} differ from the log's {self.header}")
        self._writer.writerow([_cell(v) for v in row.values()])
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _cell(v):
    return repr(v) if isinstance(v, float) else v


def _csv_text(rows: list[list]) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


# ----------------------------------------------------------------------------- logging and progress
_warned_tensorboard = False


def tensorboard_writer(run_dir: Path | None):
    """A TensorBoard ``SummaryWriter`` on ``run_dir``, or None (no run dir; ``tensorboard`` not
    installed: warned once per process)."""
    global _warned_tensorboard
    if run_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _warned_tensorboard:
            warnings.warn("tensorboard is not installed: the run logs to progress.csv only "
                          "(pip install tensorboard, or metarl[tensorboard])", stacklevel=3)
            _warned_tensorboard = True
        return None
    return SummaryWriter(str(run_dir))


def progress_mode(enabled: bool) -> str:
    """How progress is shown: ``"bar"`` (tqdm, stderr a terminal), ``"lines"`` (a one-line status
    every :data:`STATUS_SECONDS`, for logs, CI and notebooks) or ``"off"``. The environment variable
    ``METARL_PROGRESS`` (``bar``, ``lines`` or ``off``; ``1`` = bar) overrides the choice."""
    if not enabled:
        return "off"
    forced = os.environ.get("METARL_PROGRESS", "").strip().lower()
    if forced in ("bar", "1", "true"):
        return "bar"
    if forced in ("lines", "off"):
        return forced
    if forced in ("0", "false"):
        return "off"
    return "bar" if sys.stderr.isatty() else "lines"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """The progress bar or the periodic status line of a run (see :func:`progress_mode`)."""

    def __init__(self, mode: str, kind: str, total: int, initial: int, keys: tuple[str, ...]):
        self.mode, self.kind, self.total, self.keys = mode, kind, total, keys
        self.done0, self.start, self.last_print = initial, time.perf_counter(), time.perf_counter()
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, desc=kind)

    def update(self, it: int, row: dict) -> None:
        shown = {k: _fmt(row[k]) for k in self.keys if k in row}
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(shown, refresh=False)
        elif self.mode == "lines":
            now = time.perf_counter()
            if now - self.last_print >= STATUS_SECONDS or it == self.total:
                self.last_print = now
                rate = (it - self.done0) / max(now - self.start, 1e-9)
                eta = (self.total - it) / rate if rate > 0 else float("inf")
                fields = " ".join(f"{k}={v}" for k, v in shown.items())
                print(f"[{self.kind}] iteration {it}/{self.total} ({it / self.total:.0%}) {fields} "
                      f"elapsed {_duration(now - self.start)} eta {_duration(eta) if math.isfinite(eta) else '?'}",
                      file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- stopping
class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM during a run: the first one lets the iteration in progress finish,
    then the run saves its checkpoint and stops (a consistent state to resume from); a second Ctrl-C
    stops at once without saving (the previous checkpoint stays). Handlers are installed only in the
    main thread (signals are delivered there) and restored afterwards."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def _handler(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this iteration and saving a checkpoint "
              "(Ctrl-C again to stop now without saving)", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


# ----------------------------------------------------------------------------- the loop
def run(learner, run_dir=None, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
        max_iterations: int | None = None, max_seconds: float | None = None, checkpoint_minutes: float | None = None,
        progress_keys: tuple[str, ...] | None = None) -> dict:
    """Train ``learner`` (see the module docstring) for its ``iterations``; returns the summary:
    ``iterations``, ``env_steps`` (when the learner counts them), ``train_seconds``,
    ``env_steps_per_s``, ``interrupted``, ``history`` (the rows logged by this call), and the learner's
    ``report()`` entries when the run reached its last iteration.

    ``run_dir`` None: nothing is written (and nothing can be resumed). ``resume``: continue from
    ``run_dir``'s checkpoint (its config must equal the learner's). ``overwrite``: start over in a
    directory that holds a run. ``max_iterations`` / ``max_seconds`` stop early (the run can be
    resumed). ``checkpoint_minutes``: default the config's ``checkpoint_minutes``.
    """
    cfg = learner.config
    if run_dir is None and resume:
        raise ValueError("resume=True needs the run_dir to resume from")
    if max_iterations is not None and (isinstance(max_iterations, bool) or not isinstance(max_iterations, int)
                                       or max_iterations < 0):
        raise ValueError(f"max_iterations must be an int >= 0 or None, got {max_iterations!r}")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds >= 0):
        raise ValueError(f"max_seconds must be a number >= 0 or None, got {max_seconds!r}")
    minutes = checkpoint_minutes if checkpoint_minutes is not None else getattr(cfg, "checkpoint_minutes", 5.0)
    main, ranks = distributed.is_main(), distributed.world()
    if ranks > 1 and not getattr(learner, "data_parallel", False):
        raise ValueError(f"{learner.kind} does not train data-parallel yet: run it in one process, not under "
                         f"torchrun with {ranks} processes (data-parallel learners: rl2, maml)")
    run_dir = None if run_dir is None else \
        distributed.on_main(lambda: prepare_run_dir(run_dir, resume=resume, overwrite=overwrite))
    it = 0
    if resume:
        ck = load_checkpoint(run_dir, learner.kind)
        if ck.get("world_size", 1) != ranks:
            raise ValueError(f"{run_dir} was written by {ck.get('world_size', 1)} process(es); resume it with the "
                             f"same number (torchrun --nproc-per-node ... x --nnodes ...), not {ranks}")
        if ck["config"] != cfg.to_dict():
            diff = sorted(k for k in set(ck["config"]) | set(cfg.to_dict())
                          if ck["config"].get(k) != cfg.to_dict().get(k))
            raise ValueError(f"{run_dir}: the checkpoint's config differs from this one in {diff}; resume with its "
                             f"config (metarl train {learner.kind} --resume {run_dir})")
        learner.load_state_dict(ck["learner"] if distributed.rank() == 0 else ck["other_ranks"][distributed.rank() - 1])
        it = int(ck["iteration"])
    files = run_dir if main else None     # the directory this rank writes to
    if files is not None:
        atomic_write_text(run_dir / CONFIG_JSON, json.dumps(cfg.to_dict(), indent=1))
    total = learner.iterations
    stop_at = total if max_iterations is None else min(total, max_iterations)
    log = ProgressLog(files, keep_through=it if resume else None)
    writer = tensorboard_writer(files)
    bar = Progress(progress_mode(progress and main), learner.kind, total, it, progress_keys or ())

    def save():     # on every rank (it gathers their states), written by rank 0
        states = distributed.gather_objects(learner.state_dict())
        if main:
            ck = {"kind": learner.kind, "config": cfg.to_dict(), "iteration": it, "learner": states[0],
                  "world_size": ranks}
            if ranks > 1:
                ck["other_ranks"] = states[1:]
            checkpoint.save(run_dir / CHECKPOINT, ck, kind=learner.kind)

    history: list[dict] = []
    counts_steps = hasattr(learner, "env_steps")
    steps_start = learner.env_steps if counts_steps else 0
    start = last_ckpt = time.perf_counter()
    interrupted = consistent = False     # consistent: the loop ended between iterations (safe to save)
    try:
        with StopRequest() as stop:
            stopping = distributed.any_true(stop.signal is not None)[0]
            while it < stop_at and not stopping:
                values = distributed.mean_values(learner.step())
                it += 1
                now = time.perf_counter()
                row = {"iteration": it}
                if counts_steps:
                    row["env_steps"] = learner.env_steps
                row.update(values)
                if counts_steps:
                    row["env_steps_per_s"] = (learner.env_steps - steps_start) / max(now - start, 1e-9)
                row["seconds"] = now - start
                history.append(row)
                log.write(row)
                if writer is not None:
                    x = row.get("env_steps", it)
                    for name, v in row.items():
                        if name not in ("iteration", "env_steps") and isinstance(v, (int, float)):
                            writer.add_scalar(name, v, x)
                bar.update(it, row)
                # decided together: every rank stops, or saves, after the same iteration
                stopping, due, out_of_time = distributed.any_true(
                    stop.signal is not None, run_dir is not None and now - last_ckpt > 60 * minutes,
                    max_seconds is not None and now - start > max_seconds)
                if due:
                    save()
                    last_ckpt = time.perf_counter()
                if out_of_time:
                    break
            interrupted, consistent = stopping, True
    except KeyboardInterrupt:           # a second Ctrl-C: the learner may be mid-update, so no save
        interrupted = True
    finally:
        if run_dir is not None and consistent:
            save()
        bar.close()
        log.close()
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    summary = {"iterations": it, "train_seconds": seconds, "interrupted": interrupted, "history": history}
    if counts_steps:
        summary["env_steps"] = learner.env_steps
        summary["env_steps_per_s"] = (learner.env_steps - steps_start) / max(seconds, 1e-9)
    if not interrupted and it >= total and main:
        summary.update(learner.report())
    if files is not None:
        atomic_write_text(run_dir / SUMMARY_JSON,
                          json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1, default=str))
    return summary
