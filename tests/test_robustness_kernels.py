"""Regression tests for the kernel defects of issue 18: the C++ kNN under OpenMP granting fewer
threads than asked (a segfault), inputs the kernels accepted or mishandled (non-finite kNN keys,
tensors that require grad, ±inf in GAE, out-of-range CartPole actions on a direct ``_C`` call),
and the named arguments of the ``metarl._C`` bindings.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from metarl.backend import cpp_available
from metarl.kernels import returns
from metarl.kernels.knn import batched_knn, knn

HAS_CPP = cpp_available()
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="metarl._C not built")
KNN_BACKENDS = ["torch", pytest.param("cpp", marks=needs_cpp)]


# ----------------------------------------------------------------------------- kNN under fewer threads
# Each case is (Q, M, d, k): above the size where the C++ search goes parallel, on the direct path
# (Q <= 8) and on the GEMM path split over keys (Q > 8), and batched with B smaller than the threads.
_FEWER_THREADS_SCRIPT = textwrap.dedent("""
    import torch
    from metarl.kernels.knn import batched_knn, knn

    g = torch.Generator().manual_seed(0)
    for nq, m, d, k in [(4, 20000, 64, 5), (40, 20000, 64, 7), (1, 70000, 17, 3)]:
        # integer coordinates: exact float32 distances, so the backends must agree exactly
        q = torch.randint(-3, 4, (nq, d), generator=g).float()
        x = torch.randint(-3, 4, (m, d), generator=g).float()
        got, want = knn(q, x, k, backend="cpp"), knn(q, x, k, backend="torch")
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (nq, m, d, k)
        got = batched_knn(q[None], x[None], k, backend="cpp")
        assert torch.equal(got[0][0], want[0]) and torch.equal(got[1][0], want[1]), (nq, m, d, k)
    print("ok")
""")


@needs_cpp
@pytest.mark.parametrize("omp_env", [
    {"OMP_NUM_THREADS": "2", "OMP_THREAD_LIMIT": "1"},   # asks for 2, the runtime grants 1 (was exit 139)
    {"OMP_NUM_THREADS": "4", "OMP_DYNAMIC": "true"},     # the runtime may grant fewer when busy
])
def test_cpp_knn_with_fewer_threads_than_asked(omp_env):
    env = {**os.environ, **omp_env}
    proc = subprocess.run([sys.executable, "-c", _FEWER_THREADS_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip() == "ok"


# ----------------------------------------------------------------------------- kNN inputs
@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_requires_grad_inputs_equal_detached(backend):
    g = torch.Generator().manual_seed(1)
    q, x = torch.randn(5, 8, generator=g), torch.randn(50, 8, generator=g)
    want = knn(q, x, 4, backend="torch")
    got = knn(q.requires_grad_(), x.requires_grad_(), 4, key_norms=(x * x).sum(1), backend=backend)
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    assert not got[0].requires_grad
    got_b = batched_knn(q[None], x[None], 4, backend=backend)
    assert torch.equal(got_b[1][0], want[1])


@pytest.mark.parametrize("backend", KNN_BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 3e19])   # 3e19: ||x||^2 overflows
def test_knn_refuses_non_finite_keys(backend, bad):
    x = torch.randn(30, 4)
    x[7, 2] = bad
    with pytest.raises(ValueError, match="keys must be finite"):
        knn(torch.randn(3, 4), x, 5, backend=backend)
    with pytest.raises(ValueError, match="keys must be finite"):
        batched_knn(torch.randn(2, 3, 4), torch.stack([torch.randn(30, 4), x]), 5, backend=backend)
    with pytest.raises(ValueError, match="key_norms must be finite"):     # norms given by the caller
        knn(torch.randn(3, 4), x, 5, key_norms=(x * x).sum(1), backend=backend)


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_refuses_queries_whose_norm_overflows(backend):
    q = torch.zeros(2, 4)
    q[1, 0] = 3e19     # finite, but ||q||^2 = 9e38 is inf in float32: every distance would be inf or NaN
    with pytest.raises(ValueError, match="queries must be finite"):
        knn(q, torch.randn(30, 4), 5, backend=backend)


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_ignores_non_finite_invalid_keys(backend):
    """A slot masked out by ``valid`` is not a key: whatever it holds, it is neither returned nor refused."""
    g = torch.Generator().manual_seed(2)
    q, x = torch.randn(3, 4, generator=g), torch.randn(30, 4, generator=g)
    valid = torch.ones(30, dtype=torch.bool)
    valid[[4, 9]] = False
    want = knn(q, x, 30, valid=valid, backend="torch")
    x[4], x[9] = float("nan"), float("inf")
    got = knn(q, x, 30, valid=valid, backend=backend)
    assert torch.equal(got[1], want[1])
    assert not bool(((got[1] == 4) | (got[1] == 9)).any())


# ----------------------------------------------------------------------------- returns
def _rollout(t=4, n=3):
    g = torch.Generator().manual_seed(3)
    return (torch.randn(t, n, generator=g), torch.randn(t, n, generator=g), torch.zeros(t, n, dtype=torch.bool),
            torch.randn(n, generator=g))


@pytest.mark.parametrize("fn", [returns.gae, returns.lambda_returns])
@pytest.mark.parametrize("name", ["rewards", "values", "last_value"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_returns_refuse_non_finite(fn, name, bad):
    r, v, d, lv = _rollout()
    args = dict(rewards=r, values=v, dones=d, last_value=lv)
    args[name] = args[name].clone()
    args[name].view(-1)[1] = bad
    with pytest.raises(ValueError, match=f"{name} must be finite"):
        fn(args["rewards"], args["values"], d, args["last_value"], 0.9, 0.95, backend="torch")


@pytest.mark.parametrize("name", ["gamma", "lam"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_returns_refuse_non_finite_coefficients(name, bad, as_tensor):
    r, v, d, lv = _rollout()
    coef = dict(gamma=0.9, lam=0.95)
    coef[name] = torch.tensor([0.5, bad, 0.5]) if as_tensor else bad
    with pytest.raises(ValueError, match=f"{name} must be in \\[0, 1\\]"):
        returns.gae(r, v, d, lv, coef["gamma"], coef["lam"], backend="torch")


# ----------------------------------------------------------------------------- metarl._C called directly
def _cartpole_args(n=5, mode=0):
    """Arguments of ``_C.cartpole_step`` by name (valid ones; tests spoil one)."""
    f32, i64 = np.float32, np.int64
    return dict(
        state=np.zeros((4, n), f32), elapsed=np.zeros(n, np.int32), needs_reset=np.zeros(n, bool),
        counter=np.zeros(n, i64), gravity=np.full(n, 9.8, f32), masscart=np.ones(n, f32),
        masspole=np.full(n, 0.1, f32), length=np.full(n, 0.5, f32), force_mag=np.full(n, 10.0, f32),
        tau=np.full(n, 0.02, f32), action=np.zeros(n, i64), key=np.arange(n, dtype=i64),
        obs=np.zeros((n, 4), f32), reward=np.zeros(n, f32), terminated=np.zeros(n, bool),
        truncated=np.zeros(n, bool), final_obs=np.zeros((n if mode == 1 else 0, 4), f32), max_steps=500, mode=mode)


@needs_cpp
@pytest.mark.parametrize("bad", [7, -1, 2])
def test_cpp_cartpole_refuses_bad_actions(bad):
    from metarl import _C

    args = _cartpole_args()
    args["action"][3] = bad
    before = {k: v.copy() for k, v in args.items() if isinstance(v, np.ndarray)}
    with pytest.raises(ValueError, match=f"action: .*got {bad}"):
        _C.cartpole_step(**args)
    for k, v in before.items():     # nothing was stepped
        np.testing.assert_array_equal(args[k], v)


@needs_cpp
@pytest.mark.parametrize("name, bad, match", [
    ("action", np.zeros(5, np.int32), "action: expected dtype int64"),
    ("gravity", np.zeros(4, np.float32), "gravity: expected shape"),
    ("final_obs", np.zeros((5, 4), np.float32), "final_obs: expected shape"),   # mode 0 takes no final_obs
    ("obs", np.zeros((5, 4), np.float32)[:, ::-1], "obs: must be C-contiguous"),
    ("mode", 3, "mode: expected"),
])
def test_cpp_cartpole_bad_buffers_raise_value_error(name, bad, match):
    from metarl import _C

    args = _cartpole_args()
    args[name] = bad
    with pytest.raises(ValueError, match=match):
        _C.cartpole_step(**args)


@needs_cpp
def test_cpp_cartpole_by_name_equals_positional():
    from metarl import _C

    a, b = _cartpole_args(mode=1), _cartpole_args(mode=1)
    a["action"][:] = b["action"][:] = [0, 1, 1, 0, 1]
    _C.cartpole_step(**a)
    _C.cartpole_step(*b.values())
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@needs_cpp
def test_cpp_bindings_name_their_arguments():
    """Every binding with arguments documents them by name (``py::arg``), as its signature shows."""
    from metarl import _C

    names = {
        "cartpole_step": list(_cartpole_args()),
        "cartpole_threads": ["n"],
        "uniform_into": ["key", "counter", "lane", "out"],
        "knn_l2": ["queries", "keys", "key_norms", "valid", "tiebreak", "k", "out_d", "out_p"],
        "batched_knn_l2": ["queries", "keys", "key_norms", "valid", "tiebreak", "k", "out_d", "out_p"],
    }
    functions = [n for n in dir(_C) if not n.startswith("_") and callable(getattr(_C, n))]
    assert set(functions) == set(names) | {"openmp_threads"}
    for fn, args in names.items():
        signature = getattr(_C, fn).__doc__.splitlines()[0]
        assert signature.startswith(f"{fn}(" + ", ".join(f"{a}: " for a in args[:1])), signature
        for a in args:
            assert f"{a}: " in signature, (fn, a, signature)


@needs_cpp
@pytest.mark.parametrize("lane", [-1, 2**32])
def test_cpp_uniform_refuses_bad_lane(lane):
    from metarl import _C

    key, counter, out = np.zeros(3, np.int64), np.zeros(3, np.int64), np.full(3, np.nan, np.float32)
    with pytest.raises(ValueError, match="lane: expected an integer in \\[0, 2\\*\\*32\\)"):
        _C.uniform_into(key=key, counter=counter, lane=lane, out=out)
    assert np.isnan(out).all()
