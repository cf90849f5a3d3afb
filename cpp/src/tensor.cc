#include "ember/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

namespace ember {
namespace {

struct DTypeEntry {
  const char* name;
  DLDataType dtype;
};

constexpr DTypeEntry kDTypes[] = {
    {"float32", {kDLFloat, 32, 1}}, {"float64", {kDLFloat, 64, 1}},
    {"float16", {kDLFloat, 16, 1}}, {"bfloat16", {kDLBfloat, 16, 1}},
    {"int8", {kDLInt, 8, 1}},       {"int16", {kDLInt, 16, 1}},
    {"int32", {kDLInt, 32, 1}},     {"int64", {kDLInt, 64, 1}},
    {"uint8", {kDLUInt, 8, 1}},     {"uint16", {kDLUInt, 16, 1}},
    {"uint32", {kDLUInt, 32, 1}},   {"uint64", {kDLUInt, 64, 1}},
    {"bool", {kDLBool, 8, 1}},
};

}  // namespace

Result<DLDataType> ParseDType(const std::string& name) {
  for (const auto& entry : kDTypes) {
    if (name == entry.name) return entry.dtype;
  }
  return Status::InvalidArgument("unsupported dtype '" + name + "'");
}

bool SameDType(DLDataType a, DLDataType b) {
  return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes;
}

std::string DTypeName(DLDataType dtype) {
  for (const auto& entry : kDTypes) {
    if (SameDType(entry.dtype, dtype)) return entry.name;
  }
  std::ostringstream os;
  os << "dtype(code=" << static_cast<int>(dtype.code) << ", bits=" << static_cast<int>(dtype.bits)
     << ", lanes=" << dtype.lanes << ")";
  return os.str();
}

size_t DTypeBytes(DLDataType dtype) {
  return (static_cast<size_t>(dtype.bits) * dtype.lanes + 7) / 8;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) os << ", ";
    if (shape[i] < 0) {
      os << "batch";
    } else {
      os << shape[i];
    }
  }
  if (shape.size() == 1) os << ",";
  os << ")";
  return os.str();
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<int64_t> TensorSpec::ShapeWithBatch(int64_t batch) const {
  std::vector<int64_t> out = shape;
  if (has_batch_axis()) out[static_cast<size_t>(batch_axis)] = batch;
  return out;
}

std::string TensorSpec::ToString() const {
  return name + ": " + DTypeName(dtype) + ShapeToString(shape);
}

void AlignedFree::operator()(void* ptr) const noexcept { std::free(ptr); }

Result<AlignedBuffer> AllocateAligned(size_t nbytes) {
  size_t rounded = (nbytes + kTensorAlignmentBytes - 1) / kTensorAlignmentBytes * kTensorAlignmentBytes;
  if (rounded == 0) rounded = kTensorAlignmentBytes;
  void* ptr = std::aligned_alloc(kTensorAlignmentBytes, rounded);
  if (ptr == nullptr) {
    return Status::RuntimeError("out of memory allocating " + std::to_string(rounded) + " bytes");
  }
  std::memset(ptr, 0, rounded);
  return AlignedBuffer(ptr);
}

Result<HostTensor> HostTensor::Allocate(DLDataType dtype, std::vector<int64_t> shape) {
  for (int64_t d : shape) {
    if (d < 0) return Status::InvalidArgument("negative dimension in shape " + ShapeToString(shape));
  }
  size_t nbytes = static_cast<size_t>(NumElements(shape)) * DTypeBytes(dtype);
  EMBER_ASSIGN_OR_RETURN(AlignedBuffer buffer, AllocateAligned(nbytes));
  return HostTensor(std::move(buffer), dtype, std::move(shape));
}

namespace {

// A C-contiguous tensor seen as [outer, rows along axis, inner bytes].
struct RowLayout {
  int64_t outer = 1;
  int64_t rows = 0;
  size_t row_bytes = 0;
};

RowLayout LayoutAlong(DLDataType dtype, const std::vector<int64_t>& shape, int axis) {
  RowLayout layout;
  for (int i = 0; i < axis; ++i) layout.outer *= shape[static_cast<size_t>(i)];
  int64_t inner = 1;
  for (size_t i = static_cast<size_t>(axis) + 1; i < shape.size(); ++i) inner *= shape[i];
  layout.rows = shape[static_cast<size_t>(axis)];
  layout.row_bytes = static_cast<size_t>(inner) * DTypeBytes(dtype);
  return layout;
}

}  // namespace

void CopyRows(const TensorView& src, int axis, int64_t src_row, void* dst,
              const std::vector<int64_t>& dst_shape, int64_t dst_row, int64_t rows) {
  const RowLayout from = LayoutAlong(src.dtype, src.shape, axis);
  const RowLayout to = LayoutAlong(src.dtype, dst_shape, axis);
  const auto* src_bytes = static_cast<const char*>(src.data);
  auto* dst_bytes = static_cast<char*>(dst);
  for (int64_t o = 0; o < from.outer; ++o) {
    std::memcpy(dst_bytes + static_cast<size_t>(o * to.rows + dst_row) * to.row_bytes,
                src_bytes + static_cast<size_t>(o * from.rows + src_row) * from.row_bytes,
                static_cast<size_t>(rows) * from.row_bytes);
  }
}

void ZeroRows(void* dst, DLDataType dtype, const std::vector<int64_t>& shape, int axis, int64_t row,
              int64_t rows) {
  const RowLayout layout = LayoutAlong(dtype, shape, axis);
  auto* bytes = static_cast<char*>(dst);
  for (int64_t o = 0; o < layout.outer; ++o) {
    std::memset(bytes + static_cast<size_t>(o * layout.rows + row) * layout.row_bytes, 0,
                static_cast<size_t>(rows) * layout.row_bytes);
  }
}

}  // namespace ember
