"""Build metarl: the Python package, ``kernels/`` installed as ``metarl.kernels``, and
the pybind11 extension ``metarl._C`` from ``csrc/`` (OpenMP on)."""
import os
import platform

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup


def get_extensions():
    if os.environ.get("METARL_NO_CPP"):   # no C++ toolchain: the Numba / Triton / torch backends only
        return []
    # -ffp-contract=off keeps a*b+c unfused so the C++ matches the float32 reference;
    # -fno-trapping-math (results unchanged) lets gcc if-convert selects and vectorize.
    # -march=native lets `#pragma omp simd` loops use the build machine's widest
    # vectors; set METARL_PORTABLE=1 when building a wheel for other machines.
    arch = [] if os.environ.get("METARL_PORTABLE") or platform.machine() not in ("x86_64", "AMD64") \
        else ["-march=native"]
    return [
        Pybind11Extension(
            "metarl._C",
            sources=["csrc/bindings.cpp", "csrc/cartpole.cpp", "csrc/knn.cpp"],
            include_dirs=["csrc"],
            extra_compile_args=["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", *arch],
            extra_link_args=["-fopenmp"],
            cxx_std=17,
        )
    ]


setup(
    packages=["metarl", "metarl.envs", "metarl.nn", "metarl.memory", "metarl.algos", "metarl.baselines",
              "metarl.envs.mujoco", "metarl.kernels", "metarl.kernels.envs"],
    package_dir={"metarl": "metarl", "metarl.kernels": "kernels"},
    ext_modules=get_extensions(),
    cmdclass={"build_ext": build_ext},
)
