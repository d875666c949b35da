// What the binding files of the Python module (kvscope._core) share: how a long C++ call
// runs (GIL released, Ctrl-C honoured) and the functions that bind each part.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <utility>

#include "kvscope/io/interrupt.hpp"

namespace kvscope::python {

namespace py = pybind11;

// Runs fn() with the GIL released, so other Python threads run meanwhile; Ctrl-C then sets
// a flag that the next forward pass turns into kvscope::Interrupted (KeyboardInterrupt in
// Python) instead of being lost until the call returns. Arguments must already be C++
// values: nothing inside fn may touch a Python object without py::gil_scoped_acquire.
template <class F>
decltype(auto) long_call(F&& fn) {
  InterruptScope scope;
  py::gil_scoped_release release;
  return std::forward<F>(fn)();
}

void bind_model(py::module_& m);
void bind_policy(py::module_& m);
void bind_run(py::module_& m);

}  // namespace kvscope::python
