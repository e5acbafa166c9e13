"""Batched physics for the Meta-World families (``metarl.envs.metaworld``): MuJoCo's ``mjBatch``
thread pool stepping every env copy's own ``MjModel``/``MjData`` in one call.

Meta-World's Sawyer envs write per-task model fields at every reset (the goal site's and the
objects' ``body_pos``/``site_pos``), so copies of one task family cannot share one model, and
their rewards and observations are per-env Python that reads the live ``MjData``. So the
batch runs nothing of its own: its threads run, for each selected copy ``i``, exactly the
physics of ``SawyerXYZEnv.step`` on that copy's model and data (addresses given per copy)::

    mj_step(m_i, d_i) x frame_skip          (MujocoEnv.do_simulation)
    mj_rnePostConstraint(m_i, d_i)          (MujocoEnv._step_mujoco_simulation)
    mj_forward(m_i, d_i)                    (SawyerXYZEnv.step, before the observation)

The ``site_xpos`` write Meta-World makes between the last two is overwritten by ``mj_forward``,
so leaving it out changes nothing. ``step_reference`` is the same sequence through MuJoCo's
Python bindings, one copy after another (the oracle of the tests). The per-copy function is a
Numba ``cfunc`` handed to ``mjb_apply`` through ctypes (as in :mod:`.mujoco_batch`), which
releases the GIL while MuJoCo's threads run.
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np
from numba import carray, cfunc, types

from metarl.kernels.envs.mujoco_batch import BatchConfig, apply_batch, libmujoco, require_mujoco, voidptr

# a one-body model: the batch's own model and data are never stepped (each copy brings its own)
_DUMMY_XML = "<mujoco><worldbody><body><freejoint/><geom size='1'/></body></worldbody></mujoco>"


@functools.cache
def _step_func():
    """``void(const mjModel*, mjData*, int sim, void* arg)`` run by ``mjb_apply``; ``arg`` is an int64
    block ``[frame_skip, address of models[N], address of datas[N]]`` (int64 addresses)."""
    lib = libmujoco()
    lib.mj_forward.restype, lib.mj_forward.argtypes = None, [ctypes.c_void_p, ctypes.c_void_p]
    mj_step, mj_rne, mj_forward = lib.mj_step, lib.mj_rnePostConstraint, lib.mj_forward

    @cfunc(types.void(types.voidptr, types.voidptr, types.int32, types.voidptr), nopython=True)
    def step_one(m_unused, d_unused, sim, arg):
        a = carray(arg, (3,), np.int64)
        m = carray(voidptr(a[1] + np.int64(sim) * 8), (1,), np.int64)[0]
        d = carray(voidptr(a[2] + np.int64(sim) * 8), (1,), np.int64)[0]
        for _ in range(a[0]):
            mj_step(voidptr(m), voidptr(d))
        mj_rne(voidptr(m), voidptr(d))
        mj_forward(voidptr(m), voidptr(d))

    return step_one


class MetaWorldBatch:
    """Steps ``nsim`` (model, data) pairs owned by the caller on MuJoCo's thread pool.

    Args:
        nsim: number of env copies.
        frame_skip: ``mj_step`` calls per env step (5 in every Meta-World env).
        nthread: threads including the caller's.

    Call :meth:`bind` with a copy's ``mujoco.MjModel`` and ``MjData`` before stepping it (and again
    whenever the copy changes env object); the objects must stay alive while bound.
    """

    def __init__(self, nsim: int, frame_skip: int, nthread: int):
        if not isinstance(nthread, int) or isinstance(nthread, bool) or nthread < 1:
            raise ValueError(f"nthread must be a positive int, got {nthread!r}")
        mujoco = require_mujoco()
        lib = libmujoco()
        self._lib, self.nsim, self.nthread = lib, nsim, nthread
        self._model = mujoco.MjModel.from_xml_string(_DUMMY_XML)
        err = ctypes.create_string_buffer(1000)
        self._b = lib.mjb_makeBatch(self._model._address, nsim, ctypes.byref(BatchConfig(nthread, 0)), err, 1000)
        if not self._b:
            raise RuntimeError(f"mjb_makeBatch failed: {err.value.decode()}")
        self._models = np.zeros(nsim, dtype=np.int64)
        self._datas = np.zeros(nsim, dtype=np.int64)
        self._owners: list = [None] * nsim   # keeps each bound (model, data) alive
        self._arg = np.array([frame_skip, self._models.ctypes.data, self._datas.ctypes.data], dtype=np.int64)
        self._func = _step_func()

    def bind(self, sim: int, model, data) -> None:
        """Step copy ``sim`` on ``model``/``data`` from now on."""
        self._models[sim], self._datas[sim] = model._address, data._address
        self._owners[sim] = (model, data)

    def step(self, ids: np.ndarray | None = None) -> None:
        """Step every copy, or the sorted unique int32 ``ids``, once (``frame_skip`` substeps)."""
        if not self._b:
            raise RuntimeError("the batch is closed (env.close() was called)")
        sel = range(self.nsim) if ids is None else ids
        if any(self._owners[i] is None for i in sel):
            raise RuntimeError("step() of a copy that was never bound")
        apply_batch(self._lib, self._b, self.nsim, self._func, self._arg, ids, ("copy", "copies"))

    def close(self) -> None:
        if getattr(self, "_b", None):
            self._lib.mjb_deleteBatch(self._b)
            self._b = None
            self._owners = [None] * self.nsim

    def __del__(self):
        self.close()


def step_reference(models, datas, frame_skip: int, ids=None) -> None:
    """:meth:`MetaWorldBatch.step` as a plain loop of MuJoCo's Python bindings (``SawyerXYZEnv.step``'s
    physics, one copy after another)."""
    mujoco = require_mujoco()
    for i in (range(len(models)) if ids is None else ids):
        mujoco.mj_step(models[i], datas[i], nstep=frame_skip)
        mujoco.mj_rnePostConstraint(models[i], datas[i])
        mujoco.mj_forward(models[i], datas[i])
