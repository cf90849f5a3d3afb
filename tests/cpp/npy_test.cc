#include "ember/npy.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace ember::npy {
namespace {

using ::ember::testing::IsError;
using ::ember::testing::TempDir;

// Files written by numpy 2.4 (np.save, or np.lib.format.write_array for versions 2.0 and 3.0),
// dumped once as string literals. The (2, 3) arrays hold [[-3, -1, 0], [1, 2, 7]] (signed and
// floating point) or [[0, 1, 2], [3, 250, 255]] (unsigned).
constexpr char kFloat16[] =
    "\223NUMPY\001\000v\000{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\000\302\000\274\000\000"
    "\000<\000@\000G";
constexpr char kFloat32[] =
    "\223NUMPY\001\000v\000{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\000\000@\300\000\000\200"
    "\277\000\000\000\000\000\000\200?\000\000\000@\000\000\340@";
constexpr char kFloat64[] =
    "\223NUMPY\001\000v\000{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\000\000\000\000\000\000"
    "\010\300\000\000\000\000\000\000\360\277\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\360?\000\000\000\000\000\000\000@\000\000\000\000\000\000\034@";
constexpr char kInt8[] =
    "\223NUMPY\001\000v\000{'descr': '|i1', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\375\377\000\001\002\007";
constexpr char kInt16[] =
    "\223NUMPY\001\000v\000{'descr': '<i2', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\375\377\377\377\000\000"
    "\001\000\002\000\007\000";
constexpr char kInt32[] =
    "\223NUMPY\001\000v\000{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\375\377\377\377\377\377"
    "\377\377\000\000\000\000\001\000\000\000\002\000\000\000\007\000\000\000";
constexpr char kInt64[] =
    "\223NUMPY\001\000v\000{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\375\377\377\377\377\377"
    "\377\377\377\377\377\377\377\377\377\377\000\000\000\000\000\000\000\000\001\000\000"
    "\000\000\000\000\000\002\000\000\000\000\000\000\000\007\000\000\000\000\000\000\000";
constexpr char kUint8[] =
    "\223NUMPY\001\000v\000{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\000\001\002\003\372\377";
constexpr char kUint16[] =
    "\223NUMPY\001\000v\000{'descr': '<u2', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\000\000\001\000\002\000"
    "\003\000\372\000\377\000";
constexpr char kUint32[] =
    "\223NUMPY\001\000v\000{'descr': '<u4', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\000\000\000\000\001\000"
    "\000\000\002\000\000\000\003\000\000\000\372\000\000\000\377\000\000\000";
constexpr char kUint64[] =
    "\223NUMPY\001\000v\000{'descr': '<u8', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\000\000\000\000\000\000"
    "\000\000\001\000\000\000\000\000\000\000\002\000\000\000\000\000\000\000\003\000\000"
    "\000\000\000\000\000\372\000\000\000\000\000\000\000\377\000\000\000\000\000\000\000";
constexpr char kBool[] =
    "\223NUMPY\001\000v\000{'descr': '|b1', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\001\000\001\000\000\001";
constexpr char kFloat32Version2[] =
    "\223NUMPY\002\000t\000\000\000{'descr': '<f4', 'fortran_order': False, 'shape': (2, "
    "3), }                                                        \012\000\000@\300\000"
    "\000\200\277\000\000\000\000\000\000\200?\000\000\000@\000\000\340@";
constexpr char kFloat32Version3[] =
    "\223NUMPY\003\000t\000\000\000{'descr': '<f4', 'fortran_order': False, 'shape': (2, "
    "3), }                                                        \012\000\000@\300\000"
    "\000\200\277\000\000\000\000\000\000\200?\000\000\000@\000\000\340@";
constexpr char kScalarFloat64[] =
    "\223NUMPY\001\000v\000{'descr': '<f8', 'fortran_order': False, 'shape': (), }       "
    "                                                       \012\000\000\000\000\000\000"
    "\004@";
constexpr char kEmptyInt32[] =
    "\223NUMPY\001\000v\000{'descr': '<i4', 'fortran_order': False, 'shape': (0, 3), }   "
    "                                                       \012";
constexpr char kFortranOrder[] =
    "\223NUMPY\001\000v\000{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }    "
    "                                                       \012\000\000\000\000\003\000"
    "\000\000\001\000\000\000\004\000\000\000\002\000\000\000\005\000\000\000";
constexpr char kBigEndian[] =
    "\223NUMPY\001\000v\000{'descr': '>i4', 'fortran_order': False, 'shape': (3,), }     "
    "                                                       \012\000\000\000\000\000\000"
    "\000\001\000\000\000\002";
constexpr char kComplex64[] =
    "\223NUMPY\001\000v\000{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }     "
    "                                                       \012\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000";
constexpr char kStructured[] =
    "\223NUMPY\001\000v\000{'descr': [('a', '<i4'), ('b', '<f4')], 'fortran_order': False"
    ", 'shape': (2,), }                                     \012\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000";

template <size_t N>
std::string Bytes(const char (&literal)[N]) {
  return std::string(literal, N - 1);  // the literal's own terminating NUL is not file content
}

Result<HostTensor> Parse(const std::string& bytes, const std::string& source = "in.npy") {
  std::istringstream in(bytes);
  return Read(in, source);
}

// A .npy file with a hand-written header dictionary (padded to 64 bytes like numpy's).
std::string MakeNpy(const std::string& dict, const std::string& data, int major = 1) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  for (size_t i = 0; i < prefix - 8; ++i) {
    out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  }
  return out + header + data;
}

template <typename T>
std::vector<T> Values(const HostTensor& tensor) {
  std::vector<T> out(tensor.nbytes() / sizeof(T));
  std::memcpy(out.data(), tensor.data(), tensor.nbytes());
  return out;
}

template <typename T>
void ExpectFixture(const std::string& bytes, const char* dtype, const std::vector<T>& expected) {
  SCOPED_TRACE(dtype);
  EMBER_ASSERT_OK_AND_ASSIGN(const HostTensor tensor, Parse(bytes));
  EXPECT_EQ(DTypeName(tensor.dtype()), dtype);
  EXPECT_EQ(tensor.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(Values<T>(tensor), expected);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(tensor.data()) % kTensorAlignmentBytes, 0u);
  // Written back, the bytes are exactly numpy's.
  EMBER_ASSERT_OK_AND_ASSIGN(const std::string written, Serialize(tensor.view()));
  EXPECT_EQ(written, bytes);
}

TEST(NpyTest, ReadsEveryDTypeWrittenByNumpyAndWritesTheSameBytes) {
  const std::vector<double> floats = {-3, -1, 0, 1, 2, 7};
  ExpectFixture<float>(Bytes(kFloat32), "float32", {-3, -1, 0, 1, 2, 7});
  ExpectFixture<double>(Bytes(kFloat64), "float64", floats);
  // float16 bit patterns of -3, -1, 0, 1, 2, 7.
  ExpectFixture<uint16_t>(Bytes(kFloat16), "float16",
                          {0xC200, 0xBC00, 0x0000, 0x3C00, 0x4000, 0x4700});
  ExpectFixture<int8_t>(Bytes(kInt8), "int8", {-3, -1, 0, 1, 2, 7});
  ExpectFixture<int16_t>(Bytes(kInt16), "int16", {-3, -1, 0, 1, 2, 7});
  ExpectFixture<int32_t>(Bytes(kInt32), "int32", {-3, -1, 0, 1, 2, 7});
  ExpectFixture<int64_t>(Bytes(kInt64), "int64", {-3, -1, 0, 1, 2, 7});
  ExpectFixture<uint8_t>(Bytes(kUint8), "uint8", {0, 1, 2, 3, 250, 255});
  ExpectFixture<uint16_t>(Bytes(kUint16), "uint16", {0, 1, 2, 3, 250, 255});
  ExpectFixture<uint32_t>(Bytes(kUint32), "uint32", {0, 1, 2, 3, 250, 255});
  ExpectFixture<uint64_t>(Bytes(kUint64), "uint64", {0, 1, 2, 3, 250, 255});
  ExpectFixture<uint8_t>(Bytes(kBool), "bool", {1, 0, 1, 0, 0, 1});
}

TEST(NpyTest, ReadsFormatVersions2And3) {
  for (const std::string& bytes : {Bytes(kFloat32Version2), Bytes(kFloat32Version3)}) {
    EMBER_ASSERT_OK_AND_ASSIGN(const HostTensor tensor, Parse(bytes));
    EXPECT_EQ(DTypeName(tensor.dtype()), "float32");
    EXPECT_EQ(tensor.shape(), (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(Values<float>(tensor), (std::vector<float>{-3, -1, 0, 1, 2, 7}));
  }
}

TEST(NpyTest, ReadsScalarsAndEmptyArraysWrittenByNumpy) {
  EMBER_ASSERT_OK_AND_ASSIGN(const HostTensor scalar, Parse(Bytes(kScalarFloat64)));
  EXPECT_TRUE(scalar.shape().empty());
  EXPECT_EQ(Values<double>(scalar), std::vector<double>{2.5});
  EMBER_ASSERT_OK_AND_ASSIGN(const std::string scalar_bytes, Serialize(scalar.view()));
  EXPECT_EQ(scalar_bytes, Bytes(kScalarFloat64));

  EMBER_ASSERT_OK_AND_ASSIGN(const HostTensor empty, Parse(Bytes(kEmptyInt32)));
  EXPECT_EQ(empty.shape(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(empty.nbytes(), 0u);
  EMBER_ASSERT_OK_AND_ASSIGN(const std::string empty_bytes, Serialize(empty.view()));
  EXPECT_EQ(empty_bytes, Bytes(kEmptyInt32));
}

TEST(NpyTest, FileRoundTripPreservesDTypeShapeAndValues) {
  TempDir dir;
  const std::vector<std::vector<int64_t>> shapes = {{}, {1}, {4}, {2, 3, 5}, {0, 7}, {1, 1, 1, 1}};
  for (const char* name : {"float32", "float64", "float16", "int8", "int16", "int32", "int64",
                           "uint8", "uint16", "uint32", "uint64", "bool"}) {
    for (const auto& shape : shapes) {
      SCOPED_TRACE(std::string(name) + ShapeToString(shape));
      EMBER_ASSERT_OK_AND_ASSIGN(const DLDataType dtype, ParseDType(name));
      EMBER_ASSERT_OK_AND_ASSIGN(HostTensor original, HostTensor::Allocate(dtype, shape));
      auto* bytes = static_cast<unsigned char*>(original.data());
      for (size_t i = 0; i < original.nbytes(); ++i) {
        const bool is_bool = DTypeName(dtype) == "bool";
        bytes[i] = static_cast<unsigned char>(is_bool ? i % 3 == 0 : i * 37 + 11);
      }
      const std::string path = dir.File("a.npy");
      EMBER_EXPECT_OK(npy::WriteFile(path, original.view()));
      EMBER_ASSERT_OK_AND_ASSIGN(const HostTensor back, npy::ReadFile(path));
      EXPECT_TRUE(SameDType(back.dtype(), dtype));
      EXPECT_EQ(back.shape(), shape);
      ASSERT_EQ(back.nbytes(), original.nbytes());
      EXPECT_EQ(std::memcmp(back.data(), original.data(), original.nbytes()), 0);
      // The header is padded so the data starts 64-byte aligned, as numpy does.
      EXPECT_EQ((::ember::testing::ReadFile(path).size() - original.nbytes()) % 64, 0u);
    }
  }
}

TEST(NpyTest, HeaderParsingToleratesSpacingKeyOrderQuotesAndTrailingCommas) {
  const std::string data(2 * 3 * 4, '\0');
  for (const std::string& dict : {
           std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"),
           std::string("{'shape':(2,3),'descr':'<f4','fortran_order':False}"),
           std::string("{ \"fortran_order\" : False ,\t\"shape\" : ( 2 , 3 , ) ,"
                       " \"descr\" : \"<f4\" }"),
           std::string("{'descr': 'f4', 'fortran_order': False, 'shape': (2L, 3L)}"),
           std::string("{'descr': '=f4', 'fortran_order': False, 'shape': (2, 3),}"),
       }) {
    SCOPED_TRACE(dict);
    EMBER_ASSERT_OK_AND_ASSIGN(const HostTensor tensor, Parse(MakeNpy(dict, data)));
    EXPECT_EQ(DTypeName(tensor.dtype()), "float32");
    EXPECT_EQ(tensor.shape(), (std::vector<int64_t>{2, 3}));
  }
  EMBER_ASSERT_OK_AND_ASSIGN(
      const Header one_dim,
      ParseHeader("{'descr': '|u1', 'fortran_order': False, 'shape': (5,)}", "x"));
  EXPECT_EQ(one_dim.shape, std::vector<int64_t>{5});
  EXPECT_EQ(DTypeName(one_dim.dtype), "uint8");
}

TEST(NpyTest, FortranOrderIsAcceptedOnlyWhereItEqualsCOrder) {
  EXPECT_TRUE(IsError(Parse(Bytes(kFortranOrder), "f.npy").status(), StatusCode::kInvalidArgument,
                      "'f.npy'", "Fortran-order", "np.ascontiguousarray"));
  // With at most one dimension longer than 1 the bytes are the same in both orders.
  EMBER_ASSERT_OK_AND_ASSIGN(
      const HostTensor column,
      Parse(MakeNpy("{'descr': '<i4', 'fortran_order': True, 'shape': (3, 1)}",
                    std::string(12, '\1'))));
  EXPECT_EQ(column.shape(), (std::vector<int64_t>{3, 1}));
}

TEST(NpyTest, RefusesBigEndianDataButAcceptsSingleByteTypesOfAnyOrder) {
  EXPECT_TRUE(IsError(Parse(Bytes(kBigEndian), "be.npy").status(), StatusCode::kInvalidArgument,
                      "'be.npy'", "big-endian", "'>i4'"));
  EMBER_ASSERT_OK_AND_ASSIGN(
      const HostTensor bytes,
      Parse(MakeNpy("{'descr': '>u1', 'fortran_order': False, 'shape': (2,)}", "\x01\x02")));
  EXPECT_EQ(Values<uint8_t>(bytes), (std::vector<uint8_t>{1, 2}));
}

TEST(NpyTest, RefusesUnsupportedDTypesNamingThem) {
  EXPECT_TRUE(IsError(Parse(Bytes(kComplex64), "c.npy").status(), StatusCode::kInvalidArgument,
                      "'c.npy'", "unsupported dtype '<c8'", "float32"));
  EXPECT_TRUE(IsError(Parse(Bytes(kStructured), "s.npy").status(), StatusCode::kInvalidArgument,
                      "'s.npy'", "structured dtypes"));
  for (const char* descr : {"|O", "<U3", "<f16", "<M8[ns]", "<i3", ""}) {
    SCOPED_TRACE(descr);
    const std::string dict =
        std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (1,)}";
    EXPECT_TRUE(IsError(Parse(MakeNpy(dict, std::string(8, '\0'))).status(),
                        StatusCode::kInvalidArgument, "unsupported dtype '" + std::string(descr)));
  }
  // Bytes from the file that are not printable ASCII are escaped in the message.
  const std::string binary = "{'descr': '<\xf4\n', 'fortran_order': False, 'shape': (1,)}";
  EXPECT_TRUE(IsError(Parse(MakeNpy(binary, "")).status(), StatusCode::kInvalidArgument,
                      "unsupported dtype '<\\xf4\\x0a'"));
  EXPECT_TRUE(IsError(DescrOf(DLDataType{kDLBfloat, 16, 1}).status(), StatusCode::kInvalidArgument,
                      "bfloat16", "cannot be stored"));
}

TEST(NpyTest, RefusesBadMagicAndVersions) {
  std::string bytes = Bytes(kFloat32);
  EXPECT_TRUE(IsError(Parse("PK\x03\x04 a zip file, maybe an .npz", "z.npy").status(),
                      StatusCode::kInvalidArgument, "'z.npy'", "bad magic"));
  bytes[6] = 4;
  EXPECT_TRUE(IsError(Parse(bytes, "v.npy").status(), StatusCode::kInvalidArgument, "'v.npy'",
                      "format version 4.0"));
  bytes[6] = 1;
  bytes[7] = 1;
  EXPECT_TRUE(IsError(Parse(bytes).status(), StatusCode::kInvalidArgument, "format version 1.1"));
}

TEST(NpyTest, RefusesTruncatedFilesAtEveryPoint) {
  const std::string bytes = Bytes(kFloat32);  // 128 header bytes + 24 data bytes
  for (const size_t length : {0, 3, 7, 9, 60, 128, 151}) {
    SCOPED_TRACE(length);
    EXPECT_TRUE(IsError(Parse(bytes.substr(0, length), "t.npy").status(),
                        StatusCode::kInvalidArgument, "'t.npy'", "truncated"));
  }
  EXPECT_TRUE(IsError(Parse(bytes.substr(0, 140), "t.npy").status(), StatusCode::kInvalidArgument,
                      "float32(2, 3) needs 24 data bytes, the file has 12"));
}

TEST(NpyTest, RefusesExtraDataAsASizeMismatch) {
  EXPECT_TRUE(IsError(Parse(Bytes(kFloat32) + "xyzw", "m.npy").status(),
                      StatusCode::kInvalidArgument, "'m.npy'", "size mismatch",
                      "needs 24 data bytes, the file has 28"));
}

TEST(NpyTest, RefusesMalformedHeadersWithTheReason) {
  const std::pair<const char*, const char*> cases[] = {
      {"['descr', '<f4']", "not a dictionary"},
      {"{'descr': '<f4', 'fortran_order': False}", "no 'shape'"},
      {"{'descr': '<f4', 'shape': (1,)}", "no 'fortran_order'"},
      {"{'fortran_order': False, 'shape': (1,)}", "no 'descr'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
       "unexpected key 'extra'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
       "'descr' appears twice"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "True or False expected"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", "a tuple expected"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", "negative dimension"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1 2)}", "',' or ')' expected"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "too large"},
      {"{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}", "',' or '}' expected"},
      {"{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}", "':' expected after key 'descr'"},
      {"{'descr': <f4, 'fortran_order': False, 'shape': (1,)}", "quoted string expected"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "',' or '}' expected"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", "unexpected text"},
  };
  for (const auto& [dict, reason] : cases) {
    SCOPED_TRACE(dict);
    EXPECT_TRUE(IsError(Parse(MakeNpy(dict, std::string(4, '\0')), "h.npy").status(),
                        StatusCode::kInvalidArgument, "'h.npy'", reason));
  }
}

TEST(NpyTest, RefusesAShapeTooLargeToAllocateBeforeAllocating) {
  const std::string dict =
      "{'descr': '<f8', 'fortran_order': False, 'shape': (4000000000, 4000000000, 4000000000)}";
  EXPECT_TRUE(
      IsError(Parse(MakeNpy(dict, "")).status(), StatusCode::kInvalidArgument, "too large"));
  const std::string big = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,)}";
  EXPECT_TRUE(IsError(Parse(MakeNpy(big, "12345678")).status(), StatusCode::kInvalidArgument,
                      "truncated", "the file has 8"));
}

TEST(NpyTest, FileErrorsNameThePath) {
  TempDir dir;
  EXPECT_TRUE(IsError(npy::ReadFile(dir.File("missing.npy")).status(), StatusCode::kNotFound,
                      "missing.npy", "cannot open"));
  EXPECT_TRUE(IsError(npy::ReadFile(dir.path()).status(), StatusCode::kInvalidArgument,
                      "is a directory"));
  const float value = 1.0f;
  const TensorView scalar{&value, {kDLFloat, 32, 1}, {}};
  EXPECT_TRUE(IsError(npy::WriteFile(dir.File("no/such/dir/out.npy"), scalar),
                      StatusCode::kRuntimeError, "out.npy", "cannot create"));
}

}  // namespace
}  // namespace ember::npy
