// DeviceTransfer: tensors on a TVM device and copies between them and host memory, through the
// TVM runtime's own functions (runtime.TVMTensorAllocWithScope, runtime.TVMTensorCopyFromBytes,
// runtime.TVMTensorCopyToBytes), so that the core needs no CUDA headers or libraries. Each copy
// returns once the data has arrived (the runtime synchronizes the device's stream). Works for any
// device whose TVM runtime is loaded; kDLCPU included, which is how the tests exercise it.
#pragma once

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/function.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "ember/status.h"

namespace ember::runtime {

class DeviceTransfer {
 public:
  // Looks up the runtime functions; Internal error when the TVM runtime lacks them.
  static Result<DeviceTransfer> Create(DLDevice device);

  const DLDevice& device() const { return device_; }
  // A new contiguous tensor on the device (contents undefined).
  Result<tvm::ffi::Tensor> Empty(const std::vector<int64_t>& shape, DLDataType dtype) const;
  // Copies `nbytes` of host memory into `dst`, which must be contiguous and hold exactly that many.
  Status CopyIn(const void* host, size_t nbytes, const tvm::ffi::Tensor& dst) const;
  // Copies all of contiguous `src` (on this device) into `nbytes` of host memory.
  Status CopyOut(const tvm::ffi::Tensor& src, void* host, size_t nbytes) const;

 private:
  DeviceTransfer(DLDevice device, tvm::ffi::Function alloc, tvm::ffi::Function copy_in,
                 tvm::ffi::Function copy_out)
      : device_(device), alloc_(std::move(alloc)), copy_in_(std::move(copy_in)),
        copy_out_(std::move(copy_out)) {}

  DLDevice device_;
  tvm::ffi::Function alloc_;
  tvm::ffi::Function copy_in_;
  tvm::ffi::Function copy_out_;
};

}  // namespace ember::runtime
