"""Build metarl: the Python package, ``kernels/`` installed as ``metarl.kernels``, and
the pybind11 extension ``metarl._C`` from ``csrc/`` (OpenMP on)."""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup


def get_extensions():
    # -ffp-contract=off keeps a*b+c unfused so the C++ matches the float32 reference.
    return [
        Pybind11Extension(
            "metarl._C",
            sources=["csrc/bindings.cpp", "csrc/cartpole.cpp"],
            include_dirs=["csrc"],
            extra_compile_args=["-O3", "-fopenmp", "-ffp-contract=off"],
            extra_link_args=["-fopenmp"],
            cxx_std=17,
        )
    ]


setup(
    packages=["metarl", "metarl.envs", "metarl.kernels", "metarl.kernels.envs"],
    package_dir={"metarl": "metarl", "metarl.kernels": "kernels"},
    ext_modules=get_extensions(),
    cmdclass={"build_ext": build_ext},
)
