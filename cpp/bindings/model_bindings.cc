// Bindings for ember::runtime::Model: numpy in (zero-copy when C-contiguous), numpy out (owning
// the core's aligned buffer through a capsule), the GIL released around loading and running.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "bindings.h"
#include "ember/model.h"
#include "errors.h"

namespace py = pybind11;

namespace ember::bindings {
namespace {

using runtime::Model;

Result<DLDataType> DTypeOfArray(const py::array& array) {
  const py::dtype dtype = array.dtype();
  const auto bits = static_cast<uint8_t>(dtype.itemsize() * 8);
  switch (dtype.kind()) {
    case 'f': return DLDataType{kDLFloat, bits, 1};
    case 'i': return DLDataType{kDLInt, bits, 1};
    case 'u': return DLDataType{kDLUInt, bits, 1};
    case 'b': return DLDataType{kDLBool, 8, 1};
    default:
      return Status::InvalidArgument("unsupported numpy dtype '" +
                                     py::str(dtype).cast<std::string>() + "'");
  }
}

// Whether an array of this dtype stores its values in this host's byte order.
bool HasNativeByteOrder(const py::dtype& dtype) {
  const uint16_t probe = 1;
  const bool little = *reinterpret_cast<const uint8_t*>(&probe) == 1;
  const char order = dtype.byteorder();  // '=' native, '|' not applicable, '<' / '>' explicit
  return order == '=' || order == '|' || order == (little ? '<' : '>');
}

}  // namespace

py::dtype NumpyDType(DLDataType dtype) {
  return py::dtype(DTypeName(dtype) == "bool" ? std::string("bool") : DTypeName(dtype));
}

namespace {

py::object SpecToPython(const TensorSpec& spec) {
  py::list shape;
  for (size_t d = 0; d < spec.shape.size(); ++d) {
    if (static_cast<int>(d) == spec.batch_axis) {
      shape.append(py::none());
    } else {
      shape.append(spec.shape[d]);
    }
  }
  py::object batch_axis = spec.has_batch_axis() ? py::object(py::int_(spec.batch_axis)) : py::none();
  return py::module_::import("ember.artifact")
      .attr("TensorSpec")(spec.name, DTypeName(spec.dtype), py::tuple(shape), batch_axis);
}

py::array ToNumpy(HostTensor tensor) {
  auto owned = std::make_unique<HostTensor>(std::move(tensor));
  const std::vector<py::ssize_t> shape(owned->shape().begin(), owned->shape().end());
  void* data = owned->data();
  const py::dtype dtype = NumpyDType(owned->dtype());
  py::capsule keep_alive(owned.get(), [](void* p) { delete static_cast<HostTensor*>(p); });
  owned.release();  // now owned by the capsule
  return py::array(dtype, shape, data, keep_alive);
}

}  // namespace

runtime::NamedTensorViews ConvertInputs(const py::dict& inputs, std::vector<py::array>* keep) {
  runtime::NamedTensorViews views;
  keep->reserve(inputs.size());
  views.reserve(inputs.size());
  for (const auto& item : inputs) {
    if (!py::isinstance<py::str>(item.first)) {
      ThrowIfError(Status::InvalidArgument("input names must be strings"));
    }
    const std::string name = item.first.cast<std::string>();
    if (!py::isinstance<py::array>(item.second)) {
      ThrowIfError(Status::InvalidArgument("input '" + name + "' must be a numpy array, got " +
                                           py::str(py::type::of(item.second)).cast<std::string>()));
    }
    // Non-C-contiguous arrays are copied once into a contiguous buffer (documented behaviour),
    // as are arrays in the other byte order (read as they are, they would be garbage);
    // contiguous native ones are used as they are, without numpy's conversion machinery.
    py::array array = py::reinterpret_borrow<py::array>(item.second);
    if (!HasNativeByteOrder(array.dtype())) {
      array = array.attr("astype")(array.dtype().attr("newbyteorder")("="), "C");  // C order too
    } else if ((array.flags() & py::array::c_style) == 0) {
      array = py::array::ensure(item.second, py::array::c_style);
    }
    const DLDataType dtype = ValueOrThrow(DTypeOfArray(array));
    std::vector<int64_t> shape(array.shape(), array.shape() + array.ndim());
    views.emplace_back(name, TensorView{array.data(), dtype, std::move(shape)});
    keep->push_back(std::move(array));
  }
  return views;
}

namespace {

py::dict Run(Model& model, const py::dict& inputs) {
  // Holding the GIL: convert arguments. `keep` holds any contiguous copies for the call.
  std::vector<py::array> keep;
  const runtime::NamedTensorViews views = ConvertInputs(inputs, &keep);
  Result<std::vector<HostTensor>> result = [&] {
    py::gil_scoped_release release;
    return model.Run(views);
  }();
  std::vector<HostTensor> outputs = ValueOrThrow(std::move(result));
  py::dict out;
  const auto& specs = model.manifest().outputs;
  for (size_t i = 0; i < outputs.size(); ++i) out[py::str(specs[i].name)] = ToNumpy(std::move(outputs[i]));
  return out;
}

}  // namespace

void BindModel(py::module_& m) {
  py::class_<Model, std::shared_ptr<Model>>(m, "Model",
                                            "A verified artifact loaded into the C++ runtime.")
      .def(py::init([](const std::string& artifact_dir) {
             Result<std::unique_ptr<Model>> loaded = [&] {
               py::gil_scoped_release release;  // checksums + dlopen can take a while
               return Model::Load(artifact_dir);
             }();
             return std::shared_ptr<Model>(ValueOrThrow(std::move(loaded)));
           }),
           py::arg("artifact_dir"))
      .def("run", &Run, py::arg("inputs"),
           "Run on a dict of numpy arrays; returns a dict of numpy arrays (GIL released).")
      .def_property_readonly("inputs",
                             [](const Model& self) {
                               py::list specs;
                               for (const auto& s : self.manifest().inputs) specs.append(SpecToPython(s));
                               return specs;
                             })
      .def_property_readonly("outputs",
                             [](const Model& self) {
                               py::list specs;
                               for (const auto& s : self.manifest().outputs) specs.append(SpecToPython(s));
                               return specs;
                             })
      .def_property_readonly("batch_sizes",
                             [](const Model& self) { return self.manifest().batch_sizes; })
      .def_property_readonly("model_name", [](const Model& self) { return self.manifest().model_name; })
      .def_property_readonly("artifact_dir", &Model::artifact_dir);
}

}  // namespace ember::bindings
