#include "errors.h"

#include <string>

namespace py = pybind11;

namespace ember::bindings {
namespace {

// Python exception classes per StatusCode, resolved from ember.errors at import time. Kept alive
// for the life of the interpreter (module objects are never unloaded).
py::object& ExceptionFor(StatusCode code) {
  static py::object classes[kNumStatusCodes];
  return classes[static_cast<int>(code)];
}

}  // namespace

void BindErrors(py::module_& m) {
  py::module_ errors = py::module_::import("ember.errors");
  const std::pair<StatusCode, const char*> table[] = {
      {StatusCode::kInvalidArgument, "InvalidInputError"},
      {StatusCode::kNotFound, "ArtifactNotFoundError"},
      {StatusCode::kIntegrityError, "IntegrityError"},
      {StatusCode::kIncompatible, "IncompatibleArtifactError"},
      {StatusCode::kRuntimeError, "ExecutionError"},
      {StatusCode::kInternal, "InternalError"},
      {StatusCode::kDeadlineExceeded, "TimeoutError"},
      {StatusCode::kQueueFull, "QueueFullError"},
      {StatusCode::kClosed, "EngineClosedError"},
  };
  for (const auto& [code, name] : table) ExceptionFor(code) = errors.attr(name);
  m.def("_status_code_name", [](int code) {
    return std::string(StatusCodeName(static_cast<StatusCode>(code)));
  });
  // Lets tests check the translation of every code without provoking each failure.
  m.def("_raise_status", [](int code, const std::string& message) {
    ThrowIfError(Status(static_cast<StatusCode>(code), message));
  });
}

py::object MakeException(const Status& status) {
  py::object cls = ExceptionFor(status.code());
  if (!cls) cls = ExceptionFor(StatusCode::kInternal);
  py::object exc = cls(status.message());
  exc.attr("code") = StatusCodeName(status.code());
  return exc;
}

void ThrowIfError(const Status& status) {
  if (status.ok()) return;
  py::object exc = MakeException(status);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  throw py::error_already_set();
}

}  // namespace ember::bindings
