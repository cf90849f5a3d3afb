// Tensor vocabulary of the core: dtypes, specs from the manifest, non-owning views over caller
// memory and owned, 64-byte-aligned host tensors for outputs.
#pragma once

#include <dlpack/dlpack.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ember/status.h"

namespace ember {

constexpr size_t kTensorAlignmentBytes = 64;

// Parses "float32", "int64", "bool", ... into a DLDataType.
Result<DLDataType> ParseDType(const std::string& name);
std::string DTypeName(DLDataType dtype);
size_t DTypeBytes(DLDataType dtype);
bool SameDType(DLDataType a, DLDataType b);
std::string ShapeToString(const std::vector<int64_t>& shape);
int64_t NumElements(const std::vector<int64_t>& shape);

// One model input or output as declared in the manifest. When batch_axis >= 0, shape[batch_axis]
// is -1 and the batch size comes from the request (rows) or from the bucket being run.
struct TensorSpec {
  std::string name;
  DLDataType dtype{};
  std::vector<int64_t> shape;
  int batch_axis = -1;

  bool has_batch_axis() const { return batch_axis >= 0; }
  // The declared shape with the batch axis set to `batch` (the shape itself when there is none).
  std::vector<int64_t> ShapeWithBatch(int64_t batch) const;
  // "x: float32[batch, 64]"
  std::string ToString() const;
};

// A non-owning view of a C-contiguous host tensor. The caller keeps the memory alive and unchanged
// for the duration of the call that receives the view.
struct TensorView {
  const void* data = nullptr;
  DLDataType dtype{};
  std::vector<int64_t> shape;

  size_t nbytes() const { return static_cast<size_t>(NumElements(shape)) * DTypeBytes(dtype); }
};

struct AlignedFree {
  void operator()(void* ptr) const noexcept;
};
using AlignedBuffer = std::unique_ptr<void, AlignedFree>;

// Allocates `nbytes` (rounded up to the alignment) aligned to kTensorAlignmentBytes, zero-filled.
Result<AlignedBuffer> AllocateAligned(size_t nbytes);

// An owned, C-contiguous, 64-byte-aligned host tensor. Movable, not copyable.
class HostTensor {
 public:
  static Result<HostTensor> Allocate(DLDataType dtype, std::vector<int64_t> shape);

  void* data() { return buffer_.get(); }
  const void* data() const { return buffer_.get(); }
  DLDataType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  size_t nbytes() const { return static_cast<size_t>(NumElements(shape_)) * DTypeBytes(dtype_); }
  TensorView view() const { return TensorView{buffer_.get(), dtype_, shape_}; }

 private:
  HostTensor(AlignedBuffer buffer, DLDataType dtype, std::vector<int64_t> shape)
      : buffer_(std::move(buffer)), dtype_(dtype), shape_(std::move(shape)) {}

  AlignedBuffer buffer_;
  DLDataType dtype_{};
  std::vector<int64_t> shape_;
};

// Copies rows [src_row, src_row + rows) along `axis` of the C-contiguous tensor `src` into rows
// [dst_row, dst_row + rows) of `dst` (same dtype, same shape except along `axis`).
void CopyRows(const TensorView& src, int axis, int64_t src_row, void* dst,
              const std::vector<int64_t>& dst_shape, int64_t dst_row, int64_t rows);

// Sets rows [row, row + rows) along `axis` of the C-contiguous tensor at `dst` to zero.
void ZeroRows(void* dst, DLDataType dtype, const std::vector<int64_t>& shape, int axis, int64_t row,
              int64_t rows);

}  // namespace ember
