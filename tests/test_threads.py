"""metarl.threads.limit_threads: every pool (torch, Numba, the OpenMP runtimes, BLAS) takes the limit;
None changes nothing; bad values are refused before anything changes.

The pools are set in a subprocess (the limits would otherwise stay on this test process), started
with 3 threads everywhere so that a pool the call forgot still reports 3, whatever the machine's cores.
"""
import json
import os
import subprocess
import sys

import numba
import pytest
import torch

from metarl.threads import limit_threads

PROBE = """
import json
import numba
import numpy
import scipy.linalg.cython_blas
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from metarl.threads import limit_threads

try:
    from metarl import _C
except ImportError:
    _C = None


def pools():
    numba.get_num_threads()   # loads Numba's threading layer (its OpenMP runtime) so threadpoolctl sees it
    libs = [(d["user_api"], d["filepath"], d["num_threads"]) for d in threadpool_info()]
    return {"torch": torch.get_num_threads(), "numba": numba.get_num_threads(), "libs": libs,
            "cpp": _C.openmp_threads() if _C is not None else None}


# start from 3 threads in every pool, whatever the machine (torch and OpenBLAS cap their defaults at the cores)
numba.get_num_threads()
torch.set_num_threads(3)
threadpool_limits(3)
out = {"start": pools()}
for arg in (1, None, 2):
    limit_threads(arg)
    out[str(arg)] = pools()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe():
    env = dict(os.environ, NUMBA_NUM_THREADS="3")     # the size of Numba's pool (the most it can run)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


FRESH = """
import json
import numba
import numpy
import torch
from numba import njit, prange

from metarl.threads import limit_threads


@njit(parallel=True)
def thread_ids(out):
    for i in prange(out.shape[0]):
        out[i] = numba.get_thread_id()


limit_threads(1)                   # before Numba's pool has started
ids = numpy.full(10000, -1)
thread_ids(ids)                    # starts it
print(json.dumps({"torch": torch.get_num_threads(), "numba_ids": sorted(set(ids.tolist()))}))
"""


def test_limit_holds_after_numba_starts_its_pool():
    # Numba's pool starting (its first parallel kernel) reset torch's OpenMP thread count to the cores
    out = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, NUMBA_NUM_THREADS="3", OMP_NUM_THREADS="3"))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.splitlines()[-1])
    assert got == {"torch": 1, "numba_ids": [0]}


def _counts(state):
    libs = {api: [n for a, _, n in state["libs"] if a == api] for api in ("openmp", "blas")}
    return state["torch"], state["numba"], state["cpp"], libs


@pytest.mark.parametrize("arg, expected", [("1", 1), ("None", 1), ("2", 2)])
def test_every_pool_takes_the_limit(probe, arg, expected):
    # "None" comes after limit_threads(1) in the probe: it must leave every pool at 1
    torch_n, numba_n, cpp_n, libs = _counts(probe[arg])
    assert torch_n == expected
    assert numba_n == expected
    if cpp_n is not None:
        assert cpp_n == expected          # metarl._C's OpenMP teams
    assert libs["openmp"] and libs["blas"], probe[arg]["libs"]   # torch's and Numba's libgomp, OpenBLAS
    assert libs["openmp"] == [expected] * len(libs["openmp"]), probe[arg]["libs"]
    assert libs["blas"] == [expected] * len(libs["blas"]), probe[arg]["libs"]


def test_pools_start_unlimited(probe):
    # the probe's starting point: every pool at 3 threads, so a pool limit_threads missed would show
    torch_n, numba_n, cpp_n, libs = _counts(probe["start"])
    assert (torch_n, numba_n) == (3, 3)
    assert all(n == 3 for n in libs["openmp"] + libs["blas"])


@pytest.mark.parametrize("bad, error", [
    (0, ValueError),
    (-2, ValueError),
    (1.5, TypeError),
    (2.0, TypeError),
    ("2", TypeError),
    (True, TypeError),
    ([1], TypeError),
])
def test_bad_values_refused_and_nothing_changes(bad, error):
    before = (torch.get_num_threads(), numba.get_num_threads())
    with pytest.raises(error, match="num_threads"):
        limit_threads(bad)
    assert (torch.get_num_threads(), numba.get_num_threads()) == before


PHASES = """
import json
import numba
import torch

import metarl
from metarl.algos import rl2
from metarl.threads import torch_threads_for

torch.set_num_threads(3)
numba.set_num_threads(min(3, numba.config.NUMBA_NUM_THREADS))
seen = {}
with torch_threads_for(10, 100):
    seen["small"] = torch.get_num_threads()
with torch_threads_for(100, 100):
    seen["large"] = torch.get_num_threads()
try:
    with torch_threads_for(10, 100):
        raise KeyError
except KeyError:
    pass
seen["after_error"] = torch.get_num_threads()
# a small RL^2 iteration (fused Numba rollout below its work threshold, PPO update below its own):
# every pool is back at its count afterwards
learner = rl2.RL2Learner(rl2.RL2Config(num_envs=16, hidden_size=8, epochs=1))
learner.step()
seen["torch_after_step"] = torch.get_num_threads()
seen["numba_after_step"] = numba.get_num_threads()
seen["numba_max"] = numba.config.NUMBA_NUM_THREADS
print(json.dumps(seen))
"""


def test_small_phases_run_on_one_thread_and_restore_the_counts():
    env = dict(os.environ, NUMBA_NUM_THREADS="3", OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", PHASES], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["small"] == 1
    assert seen["large"] == 3
    assert seen["after_error"] == 3
    assert seen["torch_after_step"] == 3
    assert seen["numba_after_step"] == min(3, seen["numba_max"])
