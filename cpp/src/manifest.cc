#include "ember/manifest.h"

#include <tvm/ffi/extra/json.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace ember {
namespace {

namespace json = tvm::ffi::json;
using tvm::ffi::Any;

Result<json::Object> AsObject(const Any& value, const std::string& where) {
  auto obj = value.try_cast<json::Object>();
  if (!obj.has_value()) return Status::InvalidArgument("manifest: '" + where + "' must be an object");
  return *obj;
}

Result<Any> Field(const json::Object& obj, const std::string& key, const std::string& where) {
  auto it = obj.find(Any(tvm::ffi::String(key)));
  if (it == obj.end()) {
    return Status::InvalidArgument("manifest: missing field '" + where + key + "'");
  }
  return (*it).second;
}

Result<std::string> StringField(const json::Object& obj, const std::string& key,
                                const std::string& where = "") {
  EMBER_ASSIGN_OR_RETURN(Any value, Field(obj, key, where));
  auto str = value.try_cast<tvm::ffi::String>();
  if (!str.has_value()) {
    return Status::InvalidArgument("manifest: field '" + where + key + "' must be a string");
  }
  return std::string(*str);
}

Result<int64_t> IntField(const json::Object& obj, const std::string& key,
                         const std::string& where = "") {
  EMBER_ASSIGN_OR_RETURN(Any value, Field(obj, key, where));
  if (value.type_index() != tvm::ffi::TypeIndex::kTVMFFIInt) {
    return Status::InvalidArgument("manifest: field '" + where + key + "' must be an integer");
  }
  return value.cast<int64_t>();
}

Result<json::Array> ArrayField(const json::Object& obj, const std::string& key,
                               const std::string& where = "") {
  EMBER_ASSIGN_OR_RETURN(Any value, Field(obj, key, where));
  auto arr = value.try_cast<json::Array>();
  if (!arr.has_value()) {
    return Status::InvalidArgument("manifest: field '" + where + key + "' must be a list");
  }
  return *arr;
}

Result<std::vector<int64_t>> IntList(const json::Array& arr, const std::string& where) {
  std::vector<int64_t> out;
  for (const Any& item : arr) {
    if (item.type_index() != tvm::ffi::TypeIndex::kTVMFFIInt) {
      return Status::InvalidArgument("manifest: '" + where + "' must hold integers");
    }
    out.push_back(item.cast<int64_t>());
  }
  return out;
}

Result<cuda::ComputeCapability> ArchField(const json::Object& obj, const std::string& key,
                                          const std::string& prefix) {
  EMBER_ASSIGN_OR_RETURN(std::string text, StringField(obj, key, "device."));
  auto arch = cuda::ParseArch(text, prefix);
  if (!arch.has_value()) {
    return Status::InvalidArgument("manifest: field 'device." + key + "' must look like '" + prefix +
                                   "80', got '" + text + "'");
  }
  return *arch;
}

// "device": {"kind": "cuda", "arch": "sm_80", "sass": ["sm_80", "sm_90"], "ptx": "compute_80",
// "cuda_version": "13.5"}, required for target kind "cuda" (see compiler/cuda.py).
Result<cuda::Requirements> ParseCudaDevice(const json::Object& root) {
  auto it = root.find(Any(tvm::ffi::String("device")));
  if (it == root.end()) {
    return Status::InvalidArgument("manifest: target kind 'cuda' needs a 'device' entry naming its GPU code");
  }
  EMBER_ASSIGN_OR_RETURN(json::Object device, AsObject((*it).second, "device"));
  EMBER_ASSIGN_OR_RETURN(std::string kind, StringField(device, "kind", "device."));
  if (kind != "cuda") {
    return Status::InvalidArgument("manifest: 'device.kind' must be 'cuda' for a cuda target, got '" +
                                   kind + "'");
  }
  cuda::Requirements req;
  EMBER_ASSIGN_OR_RETURN(req.arch, ArchField(device, "arch", "sm_"));
  EMBER_ASSIGN_OR_RETURN(json::Array sass, ArrayField(device, "sass", "device."));
  for (const Any& item : sass) {
    auto text = item.try_cast<tvm::ffi::String>();
    auto arch = text.has_value() ? cuda::ParseArch(std::string(*text), "sm_") : std::nullopt;
    if (!arch.has_value()) return Status::InvalidArgument("manifest: 'device.sass' must hold 'sm_XX' strings");
    req.sass.push_back(*arch);
  }
  EMBER_ASSIGN_OR_RETURN(Any ptx, Field(device, "ptx", "device."));
  if (ptx != nullptr) {
    EMBER_ASSIGN_OR_RETURN(req.ptx, ArchField(device, "ptx", "compute_"));
  }
  if (req.sass.empty() && !req.ptx.has_value()) {
    return Status::InvalidArgument("manifest: 'device' lists no cubin ('sass') and no 'ptx'");
  }
  EMBER_ASSIGN_OR_RETURN(std::string version, StringField(device, "cuda_version", "device."));
  auto parsed = cuda::ParseCudaVersion(version);
  if (!parsed.has_value()) {
    return Status::InvalidArgument("manifest: field 'device.cuda_version' must look like '13.5', got '" +
                                   version + "'");
  }
  req.cuda_version = *parsed;
  return req;
}

Result<std::vector<TensorSpec>> ParseSpecs(const json::Object& root, const std::string& key,
                                           bool batched) {
  EMBER_ASSIGN_OR_RETURN(json::Array arr, ArrayField(root, key));
  std::vector<TensorSpec> specs;
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string where = key + "[" + std::to_string(i) + "].";
    EMBER_ASSIGN_OR_RETURN(json::Object obj, AsObject(arr[i], key + "[" + std::to_string(i) + "]"));
    TensorSpec spec;
    EMBER_ASSIGN_OR_RETURN(spec.name, StringField(obj, "name", where));
    EMBER_ASSIGN_OR_RETURN(std::string dtype, StringField(obj, "dtype", where));
    Result<DLDataType> parsed_dtype = ParseDType(dtype);
    if (!parsed_dtype.ok()) {
      return Status::InvalidArgument("manifest: field '" + where + "dtype': " +
                                     parsed_dtype.status().message());
    }
    spec.dtype = parsed_dtype.value();
    EMBER_ASSIGN_OR_RETURN(json::Array shape, ArrayField(obj, "shape", where));
    EMBER_ASSIGN_OR_RETURN(spec.shape, IntList(shape, where + "shape"));
    EMBER_ASSIGN_OR_RETURN(int64_t batch_axis, IntField(obj, "batch_axis", where));
    const int rank = static_cast<int>(spec.shape.size());
    // Range-check the int64 before narrowing it, so that e.g. 2^32 cannot wrap around to 0.
    if (batch_axis >= rank || batch_axis < -1 || (batch_axis >= 0 && !batched)) {
      return Status::InvalidArgument("manifest: " + where + "batch_axis " +
                                     std::to_string(batch_axis) + " is invalid for " +
                                     spec.ToString());
    }
    spec.batch_axis = static_cast<int>(batch_axis);
    for (int d = 0; d < rank; ++d) {
      const bool is_batch = d == spec.batch_axis;
      const int64_t dim = spec.shape[static_cast<size_t>(d)];
      if ((is_batch && dim != -1) || (!is_batch && dim < 0)) {
        return Status::InvalidArgument("manifest: " + where + "shape " +
                                       ShapeToString(spec.shape) +
                                       " must be static except -1 at the batch axis");
      }
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

}  // namespace

std::string Manifest::FunctionName(int64_t batch) const {
  if (!has_batch_axis()) return "main";
  return "main_b" + std::to_string(batch);
}

Result<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open '" + path + "'");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

Result<Manifest> ParseManifest(const std::string& json_text) {
  tvm::ffi::String error;
  json::Value parsed = json::Parse(json_text, &error);
  if (!error.empty()) return Status::InvalidArgument("manifest: invalid JSON: " + std::string(error));
  EMBER_ASSIGN_OR_RETURN(json::Object root, AsObject(parsed, "<root>"));

  Manifest m;
  EMBER_ASSIGN_OR_RETURN(int64_t format_version, IntField(root, "format_version"));
  // Compared before narrowing to int, so that e.g. 2^32 + 1 cannot pass as version 1.
  if (format_version != kManifestFormatVersion) {
    return Status::Incompatible("artifact format version " + std::to_string(format_version) +
                                " is not supported by this runtime (expects " +
                                std::to_string(kManifestFormatVersion) + ")");
  }
  m.format_version = static_cast<int>(format_version);
  EMBER_ASSIGN_OR_RETURN(m.model_name, StringField(root, "model_name"));
  EMBER_ASSIGN_OR_RETURN(m.library, StringField(root, "library"));

  EMBER_ASSIGN_OR_RETURN(Any buckets, Field(root, "batch_sizes", ""));
  if (buckets != nullptr) {
    auto arr = buckets.try_cast<json::Array>();
    if (!arr.has_value()) return Status::InvalidArgument("manifest: 'batch_sizes' must be a list or null");
    EMBER_ASSIGN_OR_RETURN(m.batch_sizes, IntList(*arr, "batch_sizes"));
    if (m.batch_sizes.empty() || !std::is_sorted(m.batch_sizes.begin(), m.batch_sizes.end()) ||
        m.batch_sizes.front() < 1 ||
        std::adjacent_find(m.batch_sizes.begin(), m.batch_sizes.end()) != m.batch_sizes.end()) {
      return Status::InvalidArgument("manifest: 'batch_sizes' must be ascending, unique and >= 1");
    }
  }
  EMBER_ASSIGN_OR_RETURN(m.inputs, ParseSpecs(root, "inputs", m.has_batch_axis()));
  EMBER_ASSIGN_OR_RETURN(m.outputs, ParseSpecs(root, "outputs", m.has_batch_axis()));
  if (m.inputs.empty() || m.outputs.empty()) {
    return Status::InvalidArgument("manifest: a model needs at least one input and one output");
  }
  if (m.has_batch_axis() &&
      std::none_of(m.inputs.begin(), m.inputs.end(),
                   [](const TensorSpec& s) { return s.has_batch_axis(); })) {
    return Status::InvalidArgument("manifest: batch_sizes given but no input has a batch axis");
  }

  EMBER_ASSIGN_OR_RETURN(Any target_any, Field(root, "target", ""));
  EMBER_ASSIGN_OR_RETURN(json::Object target, AsObject(target_any, "target"));
  EMBER_ASSIGN_OR_RETURN(m.target_name, StringField(target, "name", "target."));
  EMBER_ASSIGN_OR_RETURN(m.target_kind, StringField(target, "kind", "target."));
  EMBER_ASSIGN_OR_RETURN(m.target_arch, StringField(target, "arch", "target."));
  EMBER_ASSIGN_OR_RETURN(json::Array features, ArrayField(target, "required_cpu_features", "target."));
  for (const Any& f : features) {
    auto s = f.try_cast<tvm::ffi::String>();
    if (!s.has_value()) {
      return Status::InvalidArgument("manifest: 'target.required_cpu_features' must hold strings");
    }
    m.required_cpu_features.emplace_back(*s);
  }
  if (m.target_kind == "cuda") {  // the GPU code a CUDA artifact holds
    EMBER_ASSIGN_OR_RETURN(m.cuda, ParseCudaDevice(root));
  }

  EMBER_ASSIGN_OR_RETURN(Any versions_any, Field(root, "versions", ""));
  EMBER_ASSIGN_OR_RETURN(json::Object versions, AsObject(versions_any, "versions"));
  EMBER_ASSIGN_OR_RETURN(m.ember_version, StringField(versions, "ember", "versions."));
  EMBER_ASSIGN_OR_RETURN(m.tvm_version, StringField(versions, "tvm", "versions."));
  EMBER_ASSIGN_OR_RETURN(m.tvm_ffi_version, StringField(versions, "tvm_ffi", "versions."));
  return m;
}

}  // namespace ember
