// The metarl._C extension: CPU kernels over NumPy buffers (no torch ABI).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "buffers.h"
#include "rng.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace metarl {
void cartpole_step(py::array, py::array, py::array, py::array, py::array, py::array, py::array, py::array,
                   py::array, py::array, py::array, py::array, py::array, py::array, py::array, py::array,
                   py::array, int64_t, int64_t);
int64_t cartpole_threads(int64_t);
void knn_l2(py::array, py::array, py::array, py::array, py::array, int64_t, py::array, py::array);
void batched_knn_l2(py::array, py::array, py::array, py::array, py::array, int64_t, py::array, py::array);

// uniform(key[N] i64, counter[N] i64, lane) -> out[N] f32; the reference for csrc/rng.h.
void uniform_into(py::array key_a, py::array counter_a, int64_t lane, py::array out_a) {
  const py::ssize_t n = key_a.ndim() == 1 ? key_a.shape(0) : -1;
  if (n < 0) throw py::value_error("key: expected a 1-D array");
  if (lane < 0 || lane > int64_t{UINT32_MAX})
    throw py::value_error("lane: expected an integer in [0, 2**32), got " + std::to_string(lane));
  const int64_t* key = buffer<int64_t>(key_a, "key", n);
  const int64_t* counter = buffer<int64_t>(counter_a, "counter", n);
  float* out = buffer<float>(out_a, "out", n);
  for (py::ssize_t i = 0; i < n; ++i) out[i] = uniform(key[i], counter[i], static_cast<uint32_t>(lane));
}
}  // namespace metarl

PYBIND11_MODULE(_C, m) {
  m.doc() = "metarl CPU kernels (C++/OpenMP over NumPy buffers)";
  m.def("cartpole_step", &metarl::cartpole_step, py::arg("state"), py::arg("elapsed"), py::arg("needs_reset"),
        py::arg("counter"), py::arg("gravity"), py::arg("masscart"), py::arg("masspole"), py::arg("length"),
        py::arg("force_mag"), py::arg("tau"), py::arg("action"), py::arg("key"), py::arg("obs"), py::arg("reward"),
        py::arg("terminated"), py::arg("truncated"), py::arg("final_obs"), py::arg("max_steps"), py::arg("mode"),
        "CartPole-v1 batched step with autoreset (csrc/cartpole.cpp), in place: state f32[4,N], elapsed i32[N], "
        "needs_reset bool[N], counter i64[N], the task params f32[N] each, action i64[N] in {0, 1}, key i64[N] -> "
        "obs f32[N,4], reward f32[N], terminated, truncated bool[N], final_obs f32[N,4] (mode 1) or f32[0,4]; "
        "max_steps (<= 0: no truncation), mode 0 next_step / 1 same_step / 2 disabled. Argument order as "
        "kernels/envs/_launch.py");
  m.def("uniform_into", &metarl::uniform_into, py::arg("key"), py::arg("counter"), py::arg("lane"), py::arg("out"),
        "Counter-based uniforms in [0, 1) (csrc/rng.h), written into out");
  m.def("cartpole_threads", &metarl::cartpole_threads, py::arg("n"),
        "Threads cartpole_step runs N envs on: 1 below 8192 envs, else min(OpenMP max threads, chunks of 2048)");
  m.def("knn_l2", &metarl::knn_l2, py::arg("queries"), py::arg("keys"), py::arg("key_norms"), py::arg("valid"),
        py::arg("tiebreak"), py::arg("k"), py::arg("out_d"), py::arg("out_p"),
        "Exact k nearest keys by squared L2 (csrc/knn.cpp): queries f32[Q,d], keys f32[M,d], key_norms f32[M], "
        "valid u8[M], tiebreak i64[M] -> out_d f32[Q,k] ascending, out_p i64[Q,k] positions (+inf / -1 padding)");
  m.def("batched_knn_l2", &metarl::batched_knn_l2, py::arg("queries"), py::arg("keys"), py::arg("key_norms"),
        py::arg("valid"), py::arg("tiebreak"), py::arg("k"), py::arg("out_d"), py::arg("out_p"),
        "knn_l2 over B independent memories: a leading [B] on every array");
  m.def("openmp_threads", []() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  });
}
