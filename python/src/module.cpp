// kvscope._core: the compiled half of the Python module (python/kvscope/__init__.py is the
// other). Errors cross into Python as the exception a Python user expects, carrying the
// one-line message the command line prints.
#include <filesystem>
#include <new>
#include <system_error>

#include "bindings.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/interrupt.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "kvscope's C++ library (the kvscope package wraps it; see docs/python.md)";
  m.attr("version") = KVSCOPE_VERSION;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const kvscope::Interrupted&) {
      PyErr_SetNone(PyExc_KeyboardInterrupt);
    } catch (const kvscope::NotFoundError& e) {
      PyErr_SetString(PyExc_FileNotFoundError, e.what());
    } catch (const kvscope::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::filesystem::filesystem_error& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const std::system_error& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    }
  });
  kvscope::python::bind_model(m);
  kvscope::python::bind_policy(m);
  kvscope::python::bind_run(m);
}
