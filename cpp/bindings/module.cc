#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "ember/artifact.h"
#include "ember/sha256.h"
#include "errors.h"

namespace py = pybind11;

namespace ember::bindings {

void BindHost(py::module_& m) {
  m.def("host_arch", [] { return CurrentHost().arch; }, "Machine architecture of this host.");
  m.def("host_cpu_features", [] { return CurrentHost().cpu_features; },
        "CPU feature flags of this host, as /proc/cpuinfo names them.");
  m.def("runtime_versions", [] {
    return py::dict(py::arg("tvm") = CurrentHost().tvm_version,
                    py::arg("tvm_ffi") = CurrentHost().tvm_ffi_version);
  }, "TVM and tvm-ffi versions this core was built against.");
  m.def("verify_artifact", [](const std::string& dir) {
    Result<Manifest> opened = [&] {
      py::gil_scoped_release release;
      return OpenArtifact(dir);
    }();
    ThrowIfError(opened.status());
  }, py::arg("artifact_dir"), "Check checksums and host compatibility without loading code.");
  m.def("sha256_file", [](const std::string& path) {
    Result<std::string> digest = [&] {
      py::gil_scoped_release release;
      return Sha256File(path);
    }();
    return ValueOrThrow(std::move(digest));
  }, py::arg("path"));
}

}  // namespace ember::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "ember's C++ core: artifact verification and the TVM-backed model runtime.";
  ember::bindings::BindErrors(m);
  ember::bindings::BindHost(m);
  ember::bindings::BindModel(m);
  ember::bindings::BindEngine(m);
}
