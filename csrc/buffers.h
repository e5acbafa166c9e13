// Checked access to NumPy buffers: contiguous, the right dtype and shape, or a
// ValueError that names the argument.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace metarl {
namespace py = pybind11;

// The shape (n0[, n1[, n2]]) as "(a, b)" for error messages.
inline std::string shape_str(py::ssize_t ndim, const py::ssize_t* shape) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (ndim == 1 ? ",)" : ")");
}

// a as a T* of shape (n0[, n1[, n2]]); a dimension given as -1 is absent. Inputs the
// kernel only reads may pass writeable = false (read-only views are then accepted).
template <typename T>
T* buffer(py::array& a, const char* name, py::ssize_t n0, py::ssize_t n1 = -1, py::ssize_t n2 = -1,
          bool writeable = true) {
  if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().is(py::dtype::of<T>())) {
    throw py::value_error(std::string(name) + ": expected dtype " + std::string(py::str(py::dtype::of<T>())) +
                          ", got " + std::string(py::str(a.dtype())));
  }
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
  if (writeable && !a.writeable()) throw py::value_error(std::string(name) + ": must be writeable");
  const py::ssize_t want[3] = {n0, n1, n2};
  const py::ssize_t ndim = n1 < 0 ? 1 : (n2 < 0 ? 2 : 3);
  bool ok = a.ndim() == ndim;
  for (py::ssize_t i = 0; ok && i < ndim; ++i) ok = a.shape(i) == want[i];
  if (!ok) {
    throw py::value_error(std::string(name) + ": expected shape " + shape_str(ndim, want) + ", got " +
                          shape_str(a.ndim(), a.shape()));
  }
  return static_cast<T*>(a.mutable_data());
}

// A NumPy bool array as bytes (0/1): gcc vectorizes uint8_t loads and stores, not bool ones.
inline uint8_t* bool_buffer(py::array& a, const char* name, py::ssize_t n0) {
  return reinterpret_cast<uint8_t*>(buffer<bool>(a, name, n0));
}

}  // namespace metarl
