#include "ember/device_transfer.h"

#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/optional.h>
#include <tvm/ffi/string.h>

#include <string>

#include "ember/tensor.h"

namespace ember::runtime {
namespace {

namespace ffi = tvm::ffi;

Status FromTvmError(const std::string& what, const ffi::Error& err) {
  return Status::RuntimeError(what + ": " + err.kind() + ": " + err.message());
}

size_t TensorBytes(const ffi::Tensor& tensor) {
  const std::vector<int64_t> shape(tensor.shape().begin(), tensor.shape().end());
  return static_cast<size_t>(NumElements(shape)) * DTypeBytes(tensor.dtype());
}

std::string DeviceName(const DLDevice& device) {
  return (device.device_type == kDLCUDA ? std::string("cuda:")
                                        : "device type " + std::to_string(device.device_type) + ":") +
         std::to_string(device.device_id);
}

}  // namespace

Result<DeviceTransfer> DeviceTransfer::Create(DLDevice device) {
  auto alloc = ffi::Function::GetGlobal("runtime.TVMTensorAllocWithScope");
  auto copy_in = ffi::Function::GetGlobal("runtime.TVMTensorCopyFromBytes");
  auto copy_out = ffi::Function::GetGlobal("runtime.TVMTensorCopyToBytes");
  if (!alloc.has_value() || !copy_in.has_value() || !copy_out.has_value()) {
    return Status::Internal("the TVM runtime lacks its tensor allocation and copy functions");
  }
  return DeviceTransfer(device, *alloc, *copy_in, *copy_out);
}

Result<ffi::Tensor> DeviceTransfer::Empty(const std::vector<int64_t>& shape, DLDataType dtype) const {
  try {
    return alloc_(ffi::Shape(shape), dtype, device_, ffi::Optional<ffi::String>()).cast<ffi::Tensor>();
  } catch (const ffi::Error& err) {
    return FromTvmError("allocating " + DTypeName(dtype) + ShapeToString(shape) + " on " +
                            DeviceName(device_) + " failed",
                        err);
  }
}

Status DeviceTransfer::CopyIn(const void* host, size_t nbytes, const ffi::Tensor& dst) const {
  if (TensorBytes(dst) != nbytes || !dst.IsContiguous()) {
    return Status::Internal("CopyIn: " + std::to_string(nbytes) + " bytes into a tensor of " +
                            std::to_string(TensorBytes(dst)) + (dst.IsContiguous() ? "" : ", strided"));
  }
  try {
    copy_in_(dst, const_cast<void*>(host), static_cast<int64_t>(nbytes));  // the runtime only reads
  } catch (const ffi::Error& err) {
    return FromTvmError("copying an input to " + DeviceName(device_) + " failed", err);
  }
  return Status::Ok();
}

Status DeviceTransfer::CopyOut(const ffi::Tensor& src, void* host, size_t nbytes) const {
  if (TensorBytes(src) != nbytes || !src.IsContiguous()) {
    return Status::Internal("CopyOut: a tensor of " + std::to_string(TensorBytes(src)) +
                            " bytes into " + std::to_string(nbytes) +
                            (src.IsContiguous() ? "" : ", strided"));
  }
  try {
    copy_out_(src, host, static_cast<int64_t>(nbytes));
  } catch (const ffi::Error& err) {
    return FromTvmError("copying an output from " + DeviceName(device_) + " failed", err);
  }
  return Status::Ok();
}

}  // namespace ember::runtime
