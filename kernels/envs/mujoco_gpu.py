"""MuJoCo Warp stepping for the physics families on a GPU: all worlds in one launch per substep.

:class:`WarpBatch` has :class:`~metarl.kernels.envs.mujoco_batch.MujocoBatch`'s interface over
torch rows (same layout, see ``mujoco_batch``) on the env's device: per step it copies the rows'
time, qpos, qvel, warm start and controls into MuJoCo Warp's ``Data`` (torch views of Warp's
arrays, zero-copy), runs ``mujoco_warp.step`` x frame_skip (and ``rne_postconstraint`` where the
Ant's contact forces are kept) -- on a GPU as one captured CUDA graph -- and copies the state, the
tracked body's ``xpos`` and ``cfrc_ext`` back. Per-env model fields are Warp's batched model fields
(``put_model(batch_sizes=...)``).

MuJoCo Warp computes in float32 with its own solver, so it matches the CPU path to float32
tolerance on smooth motion and drifts apart through contacts (as any two solvers do); the tests
compare one step at a time from shared states. Warp also runs on the CPU (its ``"cpu"`` device:
``backend="warp"`` with ``device="cpu"``), slowly, for development and tests. Its kernels compile
on the first step of a model (about a minute on the CPU) and are cached on disk.
"""
from __future__ import annotations

import functools

import torch

from metarl.kernels.envs.mujoco_batch import Layout

EXTRA_HINT = 'pip install -e ".[mujoco-warp]"'


@functools.cache
def require_mujoco_warp():
    """``(warp, mujoco_warp)``, or ``ImportError`` naming the extra that installs them."""
    try:
        import mujoco_warp
        import warp
    except ImportError as e:
        raise ImportError(f"backend='warp' needs MuJoCo Warp, the optional extra 'mujoco-warp': {EXTRA_HINT}") from e
    warp.config.quiet = True
    warp.init()
    return warp, mujoco_warp


class WarpBatch:
    """``nsim`` worlds of ``model`` in MuJoCo Warp over caller-owned torch ``rows [nsim, layout.width]``.

    Args:
        model: the ``mujoco.MjModel``.
        rows: float64 torch tensor on the device the worlds run on (CUDA, or the CPU for tests).
        layout: from ``mujoco_batch.make_layout``.
        frame_skip: ``mj_step`` calls per env step.
        batch_fields: model fields given per-world values (by :meth:`expand`).
    """

    def __init__(self, model, rows: torch.Tensor, layout: Layout, frame_skip: int, batch_fields=()):
        wp, mjw = require_mujoco_warp()
        self._wp, self._mjw = wp, mjw
        self.rows, self.layout, self.frame_skip, self.nsim = rows, layout, frame_skip, rows.shape[0]
        dev = rows.device
        self._wp_device = f"cuda:{dev.index or 0}" if dev.type == "cuda" else "cpu"
        with wp.ScopedDevice(self._wp_device):
            self.m = mjw.put_model(model, batch_sizes={name: self.nsim for name in batch_fields})
            self.d = mjw.make_data(model, nworld=self.nsim)
        view = wp.to_torch
        self._state = [(layout.time, view(self.d.time)[:, None]), (layout.qpos, view(self.d.qpos)),
                       (layout.qvel, view(self.d.qvel)), (layout.warmstart, view(self.d.qacc_warmstart)),
                       (layout.ctrl, view(self.d.ctrl))]
        self._xpos, self._cfrc = view(self.d.xpos), view(self.d.cfrc_ext)
        self._graph = None  # the CUDA graph of one env step (False: capture failed, plain launches)

    def _substeps(self) -> None:
        for _ in range(self.frame_skip):
            self._mjw.step(self.m, self.d)
        if self.layout.ncfrc:
            self._mjw.rne_postconstraint(self.m, self.d)

    def _advance(self) -> None:
        """The physics of one env step. On a GPU: Warp's own stream, after torch's writes and before
        its reads (host syncs, cheap next to a step of many worlds), as one CUDA graph from the second
        call on (the first compiles and loads the kernels; a graph that cannot be captured falls back
        to plain launches)."""
        wp = self._wp
        if self.rows.device.type != "cuda":
            with wp.ScopedDevice(self._wp_device):
                self._substeps()
            return
        torch.cuda.current_stream(self.rows.device).synchronize()
        with wp.ScopedDevice(self._wp_device):
            if self._graph is not None:
                wp.capture_launch(self._graph)
            else:
                self._substeps()
                if self._graph is None:
                    try:
                        with wp.ScopedCapture() as capture:
                            self._substeps()
                        self._graph = capture.graph
                    except Exception:  # any capture failure: keep plain launches
                        self._graph = False
            wp.synchronize_device(self._wp_device)

    def step(self, ids=None) -> None:
        """Step every world once (``frame_skip`` substeps). ``ids`` is accepted for the CPU batch's
        interface and ignored: all worlds step at once (the autoreset drops the rest)."""
        rows, lay = self.rows, self.layout
        for col, v in self._state:
            v.copy_(rows[:, col:col + v.shape[1]])
        self._advance()
        for col, v in self._state:
            rows[:, col:col + v.shape[1]] = v
        if lay.body >= 0:
            rows[:, lay.extras:lay.extras + 2] = self._xpos[:, lay.body, :2]
        if lay.ncfrc:
            rows[:, lay.extras + 2:lay.extras + 2 + lay.ncfrc] = self._cfrc.reshape(self.nsim, -1)

    def expand(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Per-world values ``[nsim, *shape]`` (float32) of a field named in ``batch_fields`` (a live view)."""
        return self._wp.to_torch(getattr(self.m, name)).view(self.nsim, *shape)

    def close(self) -> None:
        pass
