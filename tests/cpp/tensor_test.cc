#include "ember/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "test_util.h"

namespace ember {
namespace {

using ::ember::testing::IsError;

struct DTypeCase {
  const char* name;
  DLDataTypeCode code;
  int bits;
  size_t bytes;
};

constexpr DTypeCase kAllDTypes[] = {
    {"float32", kDLFloat, 32, 4}, {"float64", kDLFloat, 64, 8}, {"float16", kDLFloat, 16, 2},
    {"bfloat16", kDLBfloat, 16, 2}, {"int8", kDLInt, 8, 1},       {"int16", kDLInt, 16, 2},
    {"int32", kDLInt, 32, 4},       {"int64", kDLInt, 64, 8},     {"uint8", kDLUInt, 8, 1},
    {"uint16", kDLUInt, 16, 2},     {"uint32", kDLUInt, 32, 4},   {"uint64", kDLUInt, 64, 8},
    {"bool", kDLBool, 8, 1},
};

TEST(DTypeTest, EveryDTypeRoundTrips) {
  for (const auto& c : kAllDTypes) {
    SCOPED_TRACE(c.name);
    EMBER_ASSERT_OK_AND_ASSIGN(const DLDataType dtype, ParseDType(c.name));
    EXPECT_EQ(dtype.code, static_cast<uint8_t>(c.code));
    EXPECT_EQ(dtype.bits, c.bits);
    EXPECT_EQ(dtype.lanes, 1);
    EXPECT_EQ(DTypeBytes(dtype), c.bytes);
    EXPECT_EQ(DTypeName(dtype), c.name);
  }
}

TEST(DTypeTest, UnknownNamesAreRejected) {
  for (const char* name : {"float8", "complex64", "Float32", "", "float32 ", "int"}) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(IsError(ParseDType(name).status(), StatusCode::kInvalidArgument,
                        "unsupported dtype '" + std::string(name) + "'"));
  }
}

TEST(DTypeTest, UnknownDTypeIsNamedByItsFields) {
  const DLDataType vector_float{kDLFloat, 32, 4};
  EXPECT_EQ(DTypeName(vector_float), "dtype(code=2, bits=32, lanes=4)");
  EXPECT_EQ(DTypeBytes(vector_float), 16u);
  const DLDataType int4{kDLInt, 4, 1};
  EXPECT_EQ(DTypeName(int4), "dtype(code=0, bits=4, lanes=1)");
  EXPECT_EQ(DTypeBytes(int4), 1u);  // rounded up to whole bytes
}

TEST(DTypeTest, SameDTypeComparesAllFields) {
  const DLDataType f32{kDLFloat, 32, 1};
  EXPECT_TRUE(SameDType(f32, DLDataType{kDLFloat, 32, 1}));
  EXPECT_FALSE(SameDType(f32, DLDataType{kDLInt, 32, 1}));
  EXPECT_FALSE(SameDType(f32, DLDataType{kDLFloat, 64, 1}));
  EXPECT_FALSE(SameDType(f32, DLDataType{kDLFloat, 32, 2}));
}

TEST(ShapeTest, ToStringAndNumElements) {
  EXPECT_EQ(ShapeToString({}), "()");
  EXPECT_EQ(ShapeToString({3}), "(3,)");
  EXPECT_EQ(ShapeToString({-1, 64}), "(batch, 64)");
  EXPECT_EQ(NumElements({}), 1);
  EXPECT_EQ(NumElements({2, 5, 3}), 30);
  EXPECT_EQ(NumElements({4, 0, 7}), 0);
}

TEST(TensorSpecTest, ShapeWithBatch) {
  TensorSpec spec;
  spec.name = "x";
  spec.dtype = DLDataType{kDLFloat, 32, 1};
  spec.shape = {3, -1, 64};
  spec.batch_axis = 1;
  EXPECT_TRUE(spec.has_batch_axis());
  EXPECT_EQ(spec.ShapeWithBatch(8), (std::vector<int64_t>{3, 8, 64}));
  EXPECT_EQ(spec.ShapeWithBatch(1), (std::vector<int64_t>{3, 1, 64}));
  EXPECT_EQ(spec.shape, (std::vector<int64_t>{3, -1, 64}));  // unchanged
  EXPECT_EQ(spec.ToString(), "x: float32(3, batch, 64)");

  TensorSpec fixed;
  fixed.name = "y";
  fixed.dtype = DLDataType{kDLInt, 64, 1};
  fixed.shape = {2, 2};
  EXPECT_FALSE(fixed.has_batch_axis());
  EXPECT_EQ(fixed.ShapeWithBatch(8), (std::vector<int64_t>{2, 2}));
}

TEST(HostTensorTest, AllocateIsAlignedAndZeroFilled) {
  const DLDataType f32{kDLFloat, 32, 1};
  // Several sizes, including ones that are not a multiple of the alignment and an empty tensor.
  const std::vector<std::vector<int64_t>> shapes = {{1}, {3, 5}, {2, 5, 3}, {17, 33}, {0, 4}, {}};
  for (const std::vector<int64_t>& shape : shapes) {
    SCOPED_TRACE(ShapeToString(shape));
    EMBER_ASSERT_OK_AND_ASSIGN(HostTensor tensor, HostTensor::Allocate(f32, shape));
    ASSERT_NE(tensor.data(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(tensor.data()) % kTensorAlignmentBytes, 0u);
    EXPECT_EQ(kTensorAlignmentBytes, 64u);
    EXPECT_EQ(tensor.shape(), shape);
    EXPECT_TRUE(SameDType(tensor.dtype(), f32));
    EXPECT_EQ(tensor.nbytes(), static_cast<size_t>(NumElements(shape)) * 4);
    const auto* bytes = static_cast<const unsigned char*>(tensor.data());
    for (size_t i = 0; i < tensor.nbytes(); ++i) ASSERT_EQ(bytes[i], 0) << "byte " << i;

    const TensorView view = tensor.view();
    EXPECT_EQ(view.data, tensor.data());
    EXPECT_EQ(view.shape, shape);
    EXPECT_EQ(view.nbytes(), tensor.nbytes());
  }
}

TEST(HostTensorTest, AllocateRejectsNegativeDimensions) {
  EXPECT_TRUE(IsError(HostTensor::Allocate(DLDataType{kDLFloat, 32, 1}, {2, -1}).status(),
                      StatusCode::kInvalidArgument, "negative dimension", "(2, batch)"));
}

TEST(HostTensorTest, MoveKeepsTheBuffer) {
  EMBER_ASSERT_OK_AND_ASSIGN(HostTensor a, HostTensor::Allocate(DLDataType{kDLInt, 32, 1}, {4}));
  static_cast<int32_t*>(a.data())[3] = 42;
  const void* data = a.data();
  HostTensor b = std::move(a);
  EXPECT_EQ(b.data(), data);
  EXPECT_EQ(static_cast<int32_t*>(b.data())[3], 42);
}

TEST(AllocateAlignedTest, RoundsUpAndZeroFills) {
  for (size_t nbytes : {size_t{0}, size_t{1}, size_t{63}, size_t{64}, size_t{65}, size_t{1000}}) {
    SCOPED_TRACE(nbytes);
    EMBER_ASSERT_OK_AND_ASSIGN(AlignedBuffer buffer, AllocateAligned(nbytes));
    ASSERT_NE(buffer.get(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer.get()) % kTensorAlignmentBytes, 0u);
    // The whole rounded-up block is addressable and zero (ASan checks the bound).
    const size_t rounded = nbytes == 0 ? 64 : (nbytes + 63) / 64 * 64;
    const auto* bytes = static_cast<const unsigned char*>(buffer.get());
    for (size_t i = 0; i < rounded; ++i) ASSERT_EQ(bytes[i], 0) << "byte " << i;
  }
}

// --- CopyRows / ZeroRows, against expectations written out by hand. ---

std::vector<int32_t> Iota(size_t n, int32_t start) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

constexpr DLDataType kInt32{kDLInt, 32, 1};

TEST(CopyRowsTest, AlongAxis0) {
  // src (3, 2) = [[1,2],[3,4],[5,6]]; copy rows 1..2 into rows 0..1 of a zeroed (4, 2).
  const std::vector<int32_t> src = Iota(6, 1);
  std::vector<int32_t> dst(8, 0);
  CopyRows(TensorView{src.data(), kInt32, {3, 2}}, 0, 1, dst.data(), {4, 2}, 2, 2);
  EXPECT_EQ(dst, (std::vector<int32_t>{0, 0, 0, 0, 3, 4, 5, 6}));
}

TEST(CopyRowsTest, AlongAMiddleAxis) {
  // src (2, 3, 3): value = 100*i + 10*j + k. Copy src rows j = 1..2 to dst rows 3..4 of a
  // (2, 5, 3) tensor filled with -1; the other rows must be untouched.
  std::vector<int32_t> src;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 3; ++k) src.push_back(100 * i + 10 * j + k);
  std::vector<int32_t> dst(2 * 5 * 3, -1);
  CopyRows(TensorView{src.data(), kInt32, {2, 3, 3}}, 1, 1, dst.data(), {2, 5, 3}, 3, 2);
  const std::vector<int32_t> expected = {
      -1, -1, -1,   -1, -1, -1,   -1, -1, -1,   10,  11,  12,  20,  21,  22,   // i = 0
      -1, -1, -1,   -1, -1, -1,   -1, -1, -1,   110, 111, 112, 120, 121, 122,  // i = 1
  };
  EXPECT_EQ(dst, expected);
}

TEST(CopyRowsTest, AlongTheLastAxisOfFloat64) {
  // src (2, 4) float64; copy column 2 into column 0 of a (2, 1) tensor.
  const std::vector<double> src = {0.5, 1.5, 2.5, 3.5, 10.5, 11.5, 12.5, 13.5};
  std::vector<double> dst(2, 0.0);
  CopyRows(TensorView{src.data(), DLDataType{kDLFloat, 64, 1}, {2, 4}}, 1, 2, dst.data(), {2, 1},
           0, 1);
  EXPECT_EQ(dst, (std::vector<double>{2.5, 12.5}));
}

TEST(CopyRowsTest, ZeroRowsIsANoOp) {
  const std::vector<int32_t> src = Iota(6, 1);
  std::vector<int32_t> dst(6, 9);
  CopyRows(TensorView{src.data(), kInt32, {3, 2}}, 0, 0, dst.data(), {3, 2}, 0, 0);
  EXPECT_EQ(dst, std::vector<int32_t>(6, 9));
}

TEST(ZeroRowsTest, AlongAxis0) {
  std::vector<int32_t> data = Iota(8, 1);  // (4, 2)
  ZeroRows(data.data(), kInt32, {4, 2}, 0, 1, 2);
  EXPECT_EQ(data, (std::vector<int32_t>{1, 2, 0, 0, 0, 0, 7, 8}));
}

TEST(ZeroRowsTest, AlongAMiddleAxis) {
  std::vector<int32_t> data = Iota(30, 1);  // (2, 5, 3), values 1..30
  ZeroRows(data.data(), kInt32, {2, 5, 3}, 1, 3, 2);
  const std::vector<int32_t> expected = {
      1,  2,  3,  4,  5,  6,  7,  8,  9,  0, 0, 0, 0, 0, 0,  // i = 0: rows 3, 4 zeroed
      16, 17, 18, 19, 20, 21, 22, 23, 24, 0, 0, 0, 0, 0, 0,  // i = 1
  };
  EXPECT_EQ(data, expected);
}

TEST(ZeroRowsTest, PadsABatchAfterCopy) {
  // What the batcher does: two requests of one row each into a bucket of 4, tail zeroed.
  const std::vector<float> first = {1, 2, 3};
  const std::vector<float> second = {4, 5, 6};
  const DLDataType f32{kDLFloat, 32, 1};
  EMBER_ASSERT_OK_AND_ASSIGN(HostTensor batch, HostTensor::Allocate(f32, {4, 3}));
  std::memset(batch.data(), 0xff, batch.nbytes());  // garbage, as a reused buffer would hold
  CopyRows(TensorView{first.data(), f32, {1, 3}}, 0, 0, batch.data(), batch.shape(), 0, 1);
  CopyRows(TensorView{second.data(), f32, {1, 3}}, 0, 0, batch.data(), batch.shape(), 1, 1);
  ZeroRows(batch.data(), f32, batch.shape(), 0, 2, 2);
  const auto* values = static_cast<const float*>(batch.data());
  EXPECT_EQ(std::vector<float>(values, values + 12),
            (std::vector<float>{1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0}));
}

}  // namespace
}  // namespace ember
