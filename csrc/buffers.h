// Checked access to NumPy buffers: contiguous, the right dtype and length, or a
// ValueError that names the argument.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace metarl {
namespace py = pybind11;

template <typename T>
T* buffer(py::array& a, const char* name, py::ssize_t n0, py::ssize_t n1 = -1) {
  if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().is(py::dtype::of<T>())) {
    throw py::value_error(std::string(name) + ": expected dtype " + std::string(py::str(py::dtype::of<T>())) +
                          ", got " + std::string(py::str(a.dtype())));
  }
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
  if (!a.writeable()) throw py::value_error(std::string(name) + ": must be writeable");
  py::ssize_t ndim = n1 < 0 ? 1 : 2;
  if (a.ndim() != ndim || a.shape(0) != n0 || (ndim == 2 && a.shape(1) != n1)) {
    throw py::value_error(std::string(name) + ": wrong shape");
  }
  return static_cast<T*>(a.mutable_data());
}

// A NumPy bool array as bytes (0/1): gcc vectorizes uint8_t loads and stores, not bool ones.
inline uint8_t* bool_buffer(py::array& a, const char* name, py::ssize_t n0) {
  return reinterpret_cast<uint8_t*>(buffer<bool>(a, name, n0));
}

}  // namespace metarl
