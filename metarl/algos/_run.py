"""What every learner's ``train`` shares: config checks that name the field, the run directory's
``progress.csv`` (kept up to the checkpoint on resume) and the resume check."""
from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

from metarl import checkpoint

CHECKPOINT = "checkpoint.pt"
LOG_CSV = "progress.csv"
CONFIG_JSON = "config.json"


# ----------------------------------------------------------------------------- config checks
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_positive_ints(cfg, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not _is_int(v) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def check_nonnegative_ints(cfg, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not _is_int(v) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")


def check_positive(cfg, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")


def check_nonnegative(cfg, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be >= 0, got {v!r}")


def check_unit_interval(cfg, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            raise ValueError(f"{name} must lie in [0, 1], got {v!r}")


def check_choice(cfg, name: str, choices: tuple) -> None:
    v = getattr(cfg, name)
    if v not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {v!r}")


# ----------------------------------------------------------------------------- run directory
def load_for_resume(run_dir, kind: str, cfg) -> dict:
    """``run_dir``'s checkpoint of ``kind``, after checking it was written with this config."""
    if run_dir is None:
        raise ValueError("resume=True needs a run_dir")
    ck = checkpoint.load(Path(run_dir) / CHECKPOINT, kind=kind)
    if ck["config"] != dataclasses.asdict(cfg):
        raise ValueError(f"{run_dir}: the checkpoint's config differs from this one; resume with its config "
                         f"(metarl train {kind} --resume {run_dir})")
    return ck


class ProgressLog:
    """``run_dir/progress.csv``: ``header``, then one row per iteration (flushed as written).
    ``keep_through``: resuming from that iteration, the rows up to it are kept and later ones
    (written after the checkpoint) dropped. ``run_dir`` None: a log that writes nothing."""

    def __init__(self, run_dir, header: list[str], keep_through: int | None = None):
        self._file = None
        if run_dir is None:
            return
        path = Path(run_dir) / LOG_CSV
        rows = []
        if keep_through is not None and path.exists():
            with open(path, newline="") as f:
                rows = [r for r in list(csv.reader(f))[1:] if r and int(r[0]) <= keep_through]
        self._file = open(path, "w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerows([header, *rows])
        self._file.flush()

    def write(self, row) -> None:
        if self._file is not None:
            self._writer.writerow(list(row))
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
