"""Batched MuJoCo stepping for the physics families (``metarl.envs.mujoco``): MuJoCo's own
thread pool (``mjBatch``, MuJoCo >= 4.0) running one compiled step function per env.

Each env's physics state is one float64 row of ``rows [N, S]`` (memory metarl owns)::

    [time, qpos (nq), qvel (nv), act, history, qacc_warmstart (nv), ctrl (nu)]   (mj_getState, STATE_SPEC)
    [xy of the tracked body (2), cfrc_ext (nbody * 6)]                           (extras, when asked for)

``step`` runs, on the batch's ``nthread`` threads and per env ``i`` (one ``mjData`` per thread):

    mj_setState(m_i, d, rows[i], STATE_SPEC)
    mj_step(m_i, d) x frame_skip                      (gymnasium's MujocoEnv.do_simulation)
    mj_rnePostConstraint(m_i, d)                      (when cfrc_ext is kept: Ant-v5's contact forces)
    mj_getState(m_i, d, rows[i], STATE_SPEC); extras <- d.xpos[body, :2], d.cfrc_ext

``m_i`` is the batch's model with env ``i``'s values of the expanded fields (per-task physics).
The state spec holds the solver warm start, so a step equals gymnasium's persistent ``MjData``
bit for bit (``step_reference`` below is that loop in plain Python, the oracle of the tests).

Why not ``mujoco.rollout`` or ``mujoco.batch.Batch`` from Python: rollout does not return the
warm start (steps then drift from gymnasium's by the solver tolerance), and neither can run
``mj_rnePostConstraint`` after the step, whose ``cfrc_ext`` Ant-v5 observes. The per-env function
is a Numba ``cfunc`` handed to ``mjb_apply`` through ctypes, so no C++ build depends on MuJoCo.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import glob
import os

import numpy as np
import torch
from numba import carray, cfunc, types
from numba.core import cgutils
from numba.extending import intrinsic

EXTRA_HINT = 'pip install -e ".[mujoco]"'
MIN_VERSION = (4, 0)  # mjBatch (mjb_* in the C API) first shipped in MuJoCo 4.0
# TIME | QPOS | QVEL | ACT | HISTORY | WARMSTART | CTRL: what mj_step reads that changes between steps
# (the rest of mjSTATE_INTEGRATION -- applied forces, mocap, eq_active, userdata -- stays at its default)
STATE_SPEC = 127
ARG_LEN = 10  # int64 words of the argument block read by the step function


def require_mujoco():
    """The ``mujoco`` module (>= 4.0), or ``ImportError`` naming the extra that installs it."""
    try:
        import mujoco
    except ImportError as e:
        raise ImportError(f"the MuJoCo families need the optional extra 'mujoco': {EXTRA_HINT}") from e
    version = tuple(int(p) for p in mujoco.__version__.split(".")[:2])
    if version < MIN_VERSION:
        raise ImportError(f"the MuJoCo families need mujoco>=4.0 (found {mujoco.__version__}): {EXTRA_HINT}")
    return mujoco


# ----------------------------------------------------------------------------- the C library
class _Config(ctypes.Structure):
    _fields_ = [("nthread", ctypes.c_int), ("persistent", ctypes.c_ubyte)]


@functools.cache
def _lib():
    """libmujoco, the one the ``mujoco`` package loaded, with the prototypes used here."""
    mujoco = require_mujoco()
    paths = sorted(glob.glob(os.path.join(os.path.dirname(mujoco.__file__), "libmujoco.so*"))
                   + glob.glob(os.path.join(os.path.dirname(mujoco.__file__), "libmujoco*.dylib"))
                   + glob.glob(os.path.join(os.path.dirname(mujoco.__file__), "mujoco*.dll")))
    if not paths:
        raise ImportError(f"the mujoco package has no libmujoco next to it; reinstall it: {EXTRA_HINT}")
    lib = ctypes.CDLL(paths[-1])
    p, i = ctypes.c_void_p, ctypes.c_int
    protos = {
        "mjb_makeBatch": (p, [p, i, ctypes.POINTER(_Config), ctypes.c_char_p, i]),
        "mjb_deleteBatch": (None, [p]),
        "mjb_reset": (i, [p, p, i, p, i]),
        "mjb_apply": (i, [p, p, i, p, p, i]),
        "mjb_expand": (p, [p, ctypes.c_char_p, ctypes.POINTER(i), ctypes.POINTER(i)]),
        "mjb_status": (ctypes.POINTER(i), [p]),
        "mjb_error": (ctypes.c_char_p, [p, i]),
        "mj_step": (None, [p, p]),
        "mj_rnePostConstraint": (None, [p, p]),
        "mj_setState": (None, [p, p, p, i]),
        "mj_getState": (None, [p, p, p, i]),
        "mju_copy": (None, [p, p, i]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


@intrinsic
def _voidptr(typingctx, address):
    """An integer address as a ``void*`` (for the ctypes calls and ``carray``)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(types.int64), codegen


@functools.cache
def _step_func():
    """The per-env step, a C function ``void(const mjModel*, mjData*, int sim, void* arg)`` run by
    ``mjb_apply``. ``arg`` is an int64 block: rows address, row stride (doubles), extras offset,
    tracked body (-1: none), cfrc_ext size (0: not kept), the offsets of ``xpos``/``cfrc_ext`` in
    ``mjData``, frame_skip, state spec, unused."""
    lib = _lib()
    mj_step, mj_rne = lib.mj_step, lib.mj_rnePostConstraint
    mj_set, mj_get, mju_copy = lib.mj_setState, lib.mj_getState, lib.mju_copy

    @cfunc(types.void(types.voidptr, types.voidptr, types.int32, types.voidptr), nopython=True)
    def step_one(m, d, sim, arg):
        a = carray(arg, (ARG_LEN,), np.int64)
        row = a[0] + np.int64(sim) * a[1] * 8
        spec = np.int32(a[8])
        mj_set(m, d, _voidptr(row), spec)
        for _ in range(a[7]):
            mj_step(m, d)
        if a[4] > 0:
            mj_rne(m, d)
        mj_get(m, d, _voidptr(row), spec)
        if a[3] >= 0:  # the tracked body's x, y (mjData.xpos, as gymnasium reads it after the step)
            fields = carray(d, (a[5] // 8 + 1,), np.int64)
            mju_copy(_voidptr(row + a[2] * 8), _voidptr(fields[a[5] // 8] + a[3] * 24), np.int32(2))
        if a[4] > 0:
            fields = carray(d, (a[6] // 8 + 1,), np.int64)
            mju_copy(_voidptr(row + (a[2] + 2) * 8), _voidptr(fields[a[6] // 8]), np.int32(a[4]))

    return step_one


# public names for the other batch modules (kernels/envs/metaworld_batch.py)
BatchConfig, libmujoco, voidptr = _Config, _lib, _voidptr


def apply_batch(lib, b, nsim: int, func, arg: np.ndarray, ids: np.ndarray | None, unit: tuple[str, str]) -> None:
    """``mjb_apply`` of the cfunc ``func`` with its int64 argument block ``arg`` on every one of the batch
    ``b``'s ``nsim`` copies, or on the sorted unique ``ids``; a ``RuntimeError`` naming the failed copies
    (``unit``: their name, singular and plural) and MuJoCo's message when any raised."""
    if ids is None:
        nfail = lib.mjb_apply(b, None, 0, func.address, arg.ctypes.data, 0)
    else:
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        nfail = lib.mjb_apply(b, ids.ctypes.data, len(ids), func.address, arg.ctypes.data, 0)
    check_batch(lib, b, nsim, nfail, ids, unit)


def check_batch(lib, b, nsim: int, nfail: int, ids: np.ndarray | None, unit: tuple[str, str]) -> None:
    """Raise the ``RuntimeError`` of :func:`apply_batch` when a batch call reported ``nfail`` failed copies."""
    if not nfail:
        return
    status = np.ctypeslib.as_array(lib.mjb_status(b), (nsim,))
    sel = np.arange(nsim) if ids is None else ids
    failed = sel[status[sel] != 0]
    msg = lib.mjb_error(b, int(failed[0])).decode()
    raise RuntimeError(f"MuJoCo raised in {len(failed)} {unit[1]} ({failed[:5].tolist()}...); "
                       f"{unit[0]} {failed[0]}: {msg}")


@functools.cache
def _field_offset(name: str) -> int:
    """Byte offset of the pointer field ``name`` in ``struct mjData`` (found by its value in a live one,
    so no struct layout is hard-coded)."""
    mujoco = require_mujoco()
    data = mujoco.MjData(mujoco.MjModel.from_xml_string("<mujoco><worldbody><body><freejoint/><geom size='1'/>"
                                                        "</body></worldbody></mujoco>"))
    target = getattr(data, name).ctypes.data
    for k in range(1 << 20):  # pointer fields follow the fixed-size members; the scan stops at the field
        if ctypes.c_int64.from_address(data._address + 8 * k).value == target:
            return 8 * k
    raise RuntimeError(f"mjData.{name} not found")


# ----------------------------------------------------------------------------- layout
@dataclasses.dataclass(frozen=True)
class Layout:
    """Where things sit in a state row (column indices into ``rows [N, S]``)."""

    STATE_DIM: int
    """qpos + qvel: the width of ``get_state`` (gymnasium's ``state_vector()``)"""
    nq: int
    nv: int
    nu: int
    nbody: int
    time: int
    qpos: int
    qvel: int
    warmstart: int
    ctrl: int
    nstate: int
    """columns of ``mj_getState(STATE_SPEC)``"""
    extras: int
    """first extras column (== nstate)"""
    body: int
    """body whose xy is kept after each step (-1: none)"""
    ncfrc: int
    """cfrc_ext values kept (nbody * 6, or 0)"""
    width: int
    """S, the row width"""

    # an env's ``kernels`` attribute is a module for the kernel families; code that prints its name
    # (metarl.rollout: "no fused kernel for ...") reads this
    __name__ = "mujoco_batch"


def make_layout(model, body: int = -1, keep_cfrc: bool = False) -> Layout:
    mujoco = require_mujoco()

    def offset(bit):  # components are stored in bit order
        return mujoco.mj_stateSize(model, STATE_SPEC & (bit - 1))

    s = mujoco.mjtState
    nstate = mujoco.mj_stateSize(model, STATE_SPEC)
    ncfrc = model.nbody * 6 if keep_cfrc else 0
    extras = 2 if body >= 0 or keep_cfrc else 0
    return Layout(STATE_DIM=model.nq + model.nv, nq=model.nq, nv=model.nv, nu=model.nu, nbody=model.nbody,
                  time=offset(int(s.mjSTATE_TIME)), qpos=offset(int(s.mjSTATE_QPOS)),
                  qvel=offset(int(s.mjSTATE_QVEL)), warmstart=offset(int(s.mjSTATE_WARMSTART)),
                  ctrl=offset(int(s.mjSTATE_CTRL)), nstate=nstate, extras=nstate, body=body, ncfrc=ncfrc,
                  width=nstate + extras + ncfrc)


def default_row(model, layout: Layout) -> np.ndarray:
    """A row after ``mj_resetData``: time 0, qpos0, zero velocities, warm start and controls; extras
    hold the tracked body's xy at qpos0 (as ``mj_forward`` leaves ``xpos``) and zero contact forces."""
    mujoco = require_mujoco()
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    row = np.zeros(layout.width)
    mujoco.mj_getState(model, data, row[:layout.nstate], STATE_SPEC)
    if layout.body >= 0:
        row[layout.extras:layout.extras + 2] = data.xpos[layout.body, :2]
    return row


# ----------------------------------------------------------------------------- the batch
class MujocoBatch:
    """``nsim`` simulations of ``model`` stepped by MuJoCo's thread pool over caller-owned rows.

    Args:
        model: the ``mujoco.MjModel`` (copied by the batch).
        rows: float64 C-contiguous ``[nsim, layout.width]``, read and written in place by ``step``.
        layout: from :func:`make_layout` for this model.
        frame_skip: ``mj_step`` calls per env step.
        nthread: threads including the caller's (MuJoCo's pool).
    """

    def __init__(self, model, rows: np.ndarray, layout: Layout, frame_skip: int, nthread: int):
        if rows.dtype != np.float64 or not rows.flags.c_contiguous or rows.shape[1] != layout.width:
            raise ValueError(f"rows must be C-contiguous float64 [nsim, {layout.width}]")
        if not isinstance(nthread, int) or isinstance(nthread, bool) or nthread < 1:
            raise ValueError(f"nthread must be a positive int, got {nthread!r}")
        lib = _lib()
        self._lib, self.rows, self.nsim, self.nthread = lib, rows, rows.shape[0], nthread
        err = ctypes.create_string_buffer(1000)
        self._b = lib.mjb_makeBatch(model._address, self.nsim, ctypes.byref(_Config(nthread, 0)), err, 1000)
        if not self._b:
            raise RuntimeError(f"mjb_makeBatch failed: {err.value.decode()}")
        # the batch's own rows keep every state component this module does not set at its default
        check_batch(lib, self._b, self.nsim, lib.mjb_reset(self._b, None, 0, None, 0), None, ("env", "envs"))
        self._func = _step_func()
        self._arg = np.array([rows.ctypes.data, layout.width, layout.extras, layout.body, layout.ncfrc,
                              _field_offset("xpos"), _field_offset("cfrc_ext"), frame_skip, STATE_SPEC, 0],
                             dtype=np.int64)
        self._expanded: dict[str, torch.Tensor] = {}

    def step(self, ids: np.ndarray | None = None) -> None:
        """Step every env, or the sorted unique int32 ``ids``, once (``frame_skip`` substeps)."""
        if not self._b:
            raise RuntimeError("the batch is closed (env.close() was called)")
        apply_batch(self._lib, self._b, self.nsim, self._func, self._arg, ids, ("env", "envs"))

    def expand(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Per-env values ``[nsim, *shape]`` float64 of the model field ``name`` (a live view: write to change)."""
        if name not in self._expanded:
            size, elem = ctypes.c_int(), ctypes.c_int()
            ptr = self._lib.mjb_expand(self._b, name.encode(), ctypes.byref(size), ctypes.byref(elem))
            if not ptr or elem.value != 8 or size.value != int(np.prod(shape)):
                raise ValueError(f"model field {name!r} cannot be set per env as float64 {shape}")
            buf = (ctypes.c_double * (self.nsim * size.value)).from_address(ptr)
            self._expanded[name] = torch.from_numpy(np.frombuffer(buf, dtype=np.float64).reshape(self.nsim, *shape))
        return self._expanded[name]

    def close(self) -> None:
        if getattr(self, "_b", None):
            self._lib.mjb_deleteBatch(self._b)
            self._b = None

    def __del__(self):
        self.close()


# ----------------------------------------------------------------------------- reference
def step_reference(models, rows: np.ndarray, layout: Layout, frame_skip: int, ids=None) -> None:
    """:meth:`MujocoBatch.step` as a plain loop of MuJoCo's Python bindings (one ``MjData`` per env
    step, as gymnasium's ``MujocoEnv`` runs it). ``models``: one ``MjModel`` or one per env."""
    mujoco = require_mujoco()
    for i in (range(rows.shape[0]) if ids is None else ids):
        m = models if isinstance(models, mujoco.MjModel) else models[i]
        d = mujoco.MjData(m)
        row = rows[i]
        mujoco.mj_setState(m, d, row[:layout.nstate], STATE_SPEC)
        mujoco.mj_step(m, d, nstep=frame_skip)
        if layout.ncfrc:
            mujoco.mj_rnePostConstraint(m, d)
        mujoco.mj_getState(m, d, row[:layout.nstate], STATE_SPEC)
        if layout.body >= 0:
            row[layout.extras:layout.extras + 2] = d.xpos[layout.body, :2]
        if layout.ncfrc:
            row[layout.extras + 2:layout.extras + 2 + layout.ncfrc] = d.cfrc_ext.ravel()
