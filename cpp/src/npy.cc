#include "ember/npy.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ember's .npy support assumes a little-endian host"
#endif

namespace ember::npy {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicBytes = 6;
// np.save pads the header so the data starts at a multiple of this.
constexpr size_t kHeaderAlignment = 64;
// np.save leaves room after the header for the first dimension to grow to this many digits.
constexpr size_t kGrowthAxisMaxDigits = 21;

// One supported .npy element type: descr kind character, item size and the core's dtype.
struct DescrEntry {
  char kind;
  size_t bytes;
  DLDataType dtype;
};

constexpr DescrEntry kDescrs[] = {
    {'f', 2, {kDLFloat, 16, 1}}, {'f', 4, {kDLFloat, 32, 1}}, {'f', 8, {kDLFloat, 64, 1}},
    {'i', 1, {kDLInt, 8, 1}},    {'i', 2, {kDLInt, 16, 1}},   {'i', 4, {kDLInt, 32, 1}},
    {'i', 8, {kDLInt, 64, 1}},   {'u', 1, {kDLUInt, 8, 1}},   {'u', 2, {kDLUInt, 16, 1}},
    {'u', 4, {kDLUInt, 32, 1}},  {'u', 8, {kDLUInt, 64, 1}},  {'b', 1, {kDLBool, 8, 1}},
};

constexpr const char* kSupportedDTypes =
    "float16, float32, float64, int8, int16, int32, int64, uint8, uint16, uint32, uint64, bool";

std::string Quote(const std::string& text) { return "'" + text + "'"; }

// Text taken from a file, quoted for a message: bytes outside printable ASCII shown as \xNN.
std::string QuoteBytes(const std::string& text) {
  std::string out = "'";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f) {
      out += c;
    } else {
      char escaped[5];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", byte);
      out += escaped;
    }
  }
  return out + "'";
}

Status Invalid(const std::string& source, const std::string& what) {
  return Status::InvalidArgument(Quote(source) + ": " + what);
}

// The dtype of a descr such as "<f4", "|u1" or "f8" (no byte-order mark: native, little-endian).
Result<DLDataType> DTypeOfDescr(const std::string& descr, const std::string& source) {
  const auto unsupported = [&] {
    return Invalid(source, "unsupported dtype " + QuoteBytes(descr) + " (supported: " +
                               kSupportedDTypes + ")");
  };
  std::string rest = descr;
  char order = '=';
  if (!rest.empty() && (rest[0] == '<' || rest[0] == '>' || rest[0] == '|' || rest[0] == '=')) {
    order = rest[0];
    rest.erase(0, 1);
  }
  if (rest.size() < 2 || rest.size() > 3) return unsupported();
  const char kind = rest[0];
  size_t bytes = 0;
  for (size_t i = 1; i < rest.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(rest[i]))) return unsupported();
    bytes = bytes * 10 + static_cast<size_t>(rest[i] - '0');
  }
  for (const DescrEntry& entry : kDescrs) {
    if (entry.kind != kind || entry.bytes != bytes) continue;
    if (order == '>' && bytes > 1) {
      return Invalid(source, "big-endian data (dtype " + QuoteBytes(descr) +
                                 ") is not supported; save the array as little-endian, e.g. "
                                 "a.astype(a.dtype.newbyteorder('<'))");
    }
    return entry.dtype;
  }
  return unsupported();
}

// A cursor over the header's Python-literal dictionary.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& source) : text_(text), source_(source) {}

  Result<Header> Parse() {
    std::optional<std::string> descr;
    std::optional<bool> fortran_order;
    std::optional<std::vector<int64_t>> shape;
    SkipSpace();
    if (!Consume('{')) return Error("the header is not a dictionary ('{' expected)");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      EMBER_ASSIGN_OR_RETURN(const std::string key, ParseString("a key"));
      SkipSpace();
      if (!Consume(':')) return Error("':' expected after key " + QuoteBytes(key));
      SkipSpace();
      if (key == "descr") {
        if (descr) return Error("key 'descr' appears twice");
        if (Peek() == '[') {
          return Error("structured dtypes (a list as 'descr') are not supported (supported: " +
                       std::string(kSupportedDTypes) + ")");
        }
        EMBER_ASSIGN_OR_RETURN(descr, ParseString("the value of 'descr'"));
      } else if (key == "fortran_order") {
        if (fortran_order) return Error("key 'fortran_order' appears twice");
        EMBER_ASSIGN_OR_RETURN(fortran_order, ParseBool("fortran_order"));
      } else if (key == "shape") {
        if (shape) return Error("key 'shape' appears twice");
        EMBER_ASSIGN_OR_RETURN(shape, ParseShape());
      } else {
        return Error("unexpected key " + QuoteBytes(key) +
                     " (a .npy header has 'descr', 'fortran_order' and 'shape')");
      }
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (Consume('}')) break;
      return Error("',' or '}' expected after the value of " + QuoteBytes(key));
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the header dictionary");
    if (!descr) return Error("the header has no 'descr'");
    if (!fortran_order) return Error("the header has no 'fortran_order'");
    if (!shape) return Error("the header has no 'shape'");

    Header header;
    EMBER_ASSIGN_OR_RETURN(header.dtype, DTypeOfDescr(*descr, source_));
    header.shape = std::move(*shape);
    if (*fortran_order) {
      // Column-major bytes equal row-major ones when at most one dimension exceeds 1.
      size_t long_dims = 0;
      for (int64_t d : header.shape) long_dims += d > 1 ? 1 : 0;
      if (long_dims > 1) {
        return Status::InvalidArgument(
            Quote(source_) + ": Fortran-order (column-major) arrays are not supported; save a "
                             "C-order copy, e.g. np.save(path, np.ascontiguousarray(a))");
      }
    }
    return header;
  }

 private:
  Status Error(const std::string& what) const {
    constexpr size_t kShownChars = 200;
    std::string shown = text_.substr(0, text_.find_last_not_of(" \n") + 1);
    if (shown.size() > kShownChars) shown = shown.substr(0, kShownChars) + "...";
    return Invalid(source_, "bad .npy header: " + what + " in " + QuoteBytes(shown));
  }

  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool Consume(char c) {
    if (Peek() != c || pos_ >= text_.size()) return false;
    ++pos_;
    return true;
  }
  void SkipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  bool ConsumeWord(const char* word) {
    const size_t n = std::strlen(word);
    if (text_.compare(pos_, n, word) != 0) return false;
    pos_ += n;
    return true;
  }

  Result<std::string> ParseString(const std::string& what) {
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return Error("a quoted string expected as " + what);
    const size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string::npos) return Error("unterminated string");
    std::string value = text_.substr(pos_ + 1, end - pos_ - 1);
    pos_ = end + 1;
    return value;
  }

  Result<bool> ParseBool(const std::string& key) {
    if (ConsumeWord("True")) return true;
    if (ConsumeWord("False")) return false;
    return Error("True or False expected as the value of " + QuoteBytes(key));
  }

  Result<int64_t> ParseDimension() {
    if (Peek() == '-') return Error("negative dimension in 'shape'");
    if (!std::isdigit(static_cast<unsigned char>(Peek()))) {
      return Error("a non-negative integer expected in 'shape'");
    }
    int64_t value = 0;
    while (std::isdigit(static_cast<unsigned char>(Peek()))) {
      const int digit = text_[pos_++] - '0';
      if (value > (std::numeric_limits<int64_t>::max() - digit) / 10) {
        return Error("dimension too large in 'shape'");
      }
      value = value * 10 + digit;
    }
    Consume('L');  // Python 2 wrote long integers as 3L
    return value;
  }

  // A tuple of dimensions: (), (3,), (2, 3), (2, 3,).
  Result<std::vector<int64_t>> ParseShape() {
    if (!Consume('(')) return Error("a tuple expected as the value of 'shape'");
    std::vector<int64_t> shape;
    while (true) {
      SkipSpace();
      if (Consume(')')) return shape;
      EMBER_ASSIGN_OR_RETURN(const int64_t dim, ParseDimension());
      shape.push_back(dim);
      SkipSpace();
      if (Consume(',')) continue;
      if (Consume(')')) return shape;
      return Error("',' or ')' expected in 'shape'");
    }
  }

  const std::string& text_;
  const std::string& source_;
  size_t pos_ = 0;
};

// Bytes of an array of `shape` and `dtype`, or nullopt when that overflows.
std::optional<uint64_t> DataBytes(const std::vector<int64_t>& shape, DLDataType dtype) {
  uint64_t bytes = DTypeBytes(dtype);
  for (int64_t d : shape) {
    const auto dim = static_cast<uint64_t>(d);
    if (dim != 0 && bytes > std::numeric_limits<uint64_t>::max() / dim) return std::nullopt;
    bytes *= dim;
  }
  if (bytes > static_cast<uint64_t>(std::numeric_limits<std::streamsize>::max())) {
    return std::nullopt;
  }
  return bytes;
}

uint32_t LittleEndian(const unsigned char* bytes, size_t count) {
  uint32_t value = 0;
  for (size_t i = count; i-- > 0;) value = value << 8 | bytes[i];
  return value;
}

// Bytes left in `in` from its current position, when the stream can tell (files, strings).
std::optional<uint64_t> RemainingBytes(std::istream& in) {
  const std::istream::pos_type here = in.tellg();
  if (here == std::istream::pos_type(-1)) return std::nullopt;
  in.seekg(0, std::ios::end);
  const std::istream::pos_type end = in.tellg();
  in.seekg(here);
  if (end == std::istream::pos_type(-1) || !in) {
    in.clear();
    in.seekg(here);
    return std::nullopt;
  }
  return static_cast<uint64_t>(end - here);
}

std::string ShapeRepr(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + (shape.size() == 1 ? ",)" : ")");
}

// The full header (magic, version, length, padded dictionary) numpy writes for `tensor`.
Result<std::string> HeaderBytes(const TensorView& tensor) {
  EMBER_ASSIGN_OR_RETURN(const std::string descr, DescrOf(tensor.dtype));
  for (int64_t d : tensor.shape) {
    if (d < 0) {
      return Status::InvalidArgument("negative dimension in shape " + ShapeToString(tensor.shape));
    }
  }
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " +
                     ShapeRepr(tensor.shape) + ", }";
  if (!tensor.shape.empty()) {
    const size_t digits = std::to_string(tensor.shape[0]).size();
    if (digits < kGrowthAxisMaxDigits) dict.append(kGrowthAxisMaxDigits - digits, ' ');
  }
  // Version 1.0 stores the header length in 2 bytes, 2.0 in 4.
  for (const int major : {1, 2}) {
    const size_t prefix = kMagicBytes + 2 + (major == 1 ? 2 : 4);
    const size_t unpadded = prefix + dict.size() + 1;  // + the closing newline
    const size_t total = (unpadded + kHeaderAlignment - 1) / kHeaderAlignment * kHeaderAlignment;
    const size_t header_len = total - prefix;
    if (major == 1 && header_len > std::numeric_limits<uint16_t>::max()) continue;
    std::string out(kMagic, kMagicBytes);
    out.push_back(static_cast<char>(major));
    out.push_back('\0');
    for (size_t i = 0; i < prefix - kMagicBytes - 2; ++i) {
      out.push_back(static_cast<char>((header_len >> (8 * i)) & 0xff));
    }
    out += dict;
    out.append(total - unpadded, ' ');
    out.push_back('\n');
    return out;
  }
  return Status::InvalidArgument("a .npy header for shape " + ShapeToString(tensor.shape) +
                                 " would be too long");
}

}  // namespace

Result<Header> ParseHeader(const std::string& text, const std::string& source) {
  return HeaderParser(text, source).Parse();
}

Result<std::string> DescrOf(DLDataType dtype) {
  for (const DescrEntry& entry : kDescrs) {
    if (!SameDType(entry.dtype, dtype)) continue;
    const char order = entry.bytes == 1 ? '|' : '<';
    return std::string{order, entry.kind} + std::to_string(entry.bytes);
  }
  return Status::InvalidArgument("dtype " + DTypeName(dtype) + " cannot be stored in a .npy file " +
                                 "(supported: " + kSupportedDTypes + ")");
}

Result<HostTensor> Read(std::istream& in, const std::string& source) {
  unsigned char prefix[12];
  in.read(reinterpret_cast<char*>(prefix), kMagicBytes + 2);
  const auto got = static_cast<size_t>(in.gcount());
  if (got >= 1 && std::memcmp(prefix, kMagic, std::min(got, kMagicBytes)) != 0) {
    return Invalid(source, "not a .npy file (bad magic: it does not start with \\x93NUMPY)");
  }
  if (got < kMagicBytes + 2) {
    return Invalid(source, "truncated .npy file: " + std::to_string(got) +
                               " bytes, too short for the magic and version");
  }
  const int major = prefix[6], minor = prefix[7];
  if (major < 1 || major > 3 || minor != 0) {
    return Invalid(source, "unsupported .npy format version " + std::to_string(major) + "." +
                               std::to_string(minor) + " (supported: 1.0, 2.0, 3.0)");
  }
  const size_t length_bytes = major == 1 ? 2 : 4;
  in.read(reinterpret_cast<char*>(prefix + 8), static_cast<std::streamsize>(length_bytes));
  if (static_cast<size_t>(in.gcount()) != length_bytes) {
    return Invalid(source, "truncated .npy file: it ends inside the header length");
  }
  const uint32_t header_len = LittleEndian(prefix + 8, length_bytes);
  if (const auto left = RemainingBytes(in); left && *left < header_len) {
    return Invalid(source, "truncated .npy file: the header declares " +
                               std::to_string(header_len) + " bytes, only " +
                               std::to_string(*left) + " follow");
  }
  std::string text(header_len, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_len));
  if (static_cast<uint64_t>(in.gcount()) != header_len) {
    return Invalid(source, "truncated .npy file: the header declares " +
                               std::to_string(header_len) + " bytes, only " +
                               std::to_string(in.gcount()) + " follow");
  }
  EMBER_ASSIGN_OR_RETURN(const Header header, ParseHeader(text, source));

  const std::string what = DTypeName(header.dtype) + ShapeToString(header.shape);
  const std::optional<uint64_t> nbytes = DataBytes(header.shape, header.dtype);
  if (!nbytes) return Invalid(source, "the array " + what + " is too large");
  const auto size_error = [&](uint64_t have) {
    const bool truncated = have < *nbytes;
    return Invalid(source, std::string(truncated ? "truncated .npy file" : "size mismatch") +
                               ": " + what + " needs " + std::to_string(*nbytes) +
                               " data bytes, the file has " + std::to_string(have));
  };
  // Check before allocating, so that a corrupt shape cannot ask for terabytes.
  if (const auto left = RemainingBytes(in); left && *left != *nbytes) return size_error(*left);

  EMBER_ASSIGN_OR_RETURN(HostTensor tensor, HostTensor::Allocate(header.dtype, header.shape));
  in.read(static_cast<char*>(tensor.data()), static_cast<std::streamsize>(*nbytes));
  const auto read = static_cast<uint64_t>(in.gcount());
  if (read != *nbytes) return size_error(read);
  in.ignore(std::numeric_limits<std::streamsize>::max());
  if (in.gcount() > 0) return size_error(*nbytes + static_cast<uint64_t>(in.gcount()));
  return tensor;
}

Result<HostTensor> ReadFile(const std::string& path) {
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) {
    return Status::InvalidArgument(Quote(path) + ": is a directory, not a .npy file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::NotFound(Quote(path) + ": cannot open .npy file: " + std::strerror(errno));
  }
  return Read(in, path);
}

Result<std::string> Serialize(const TensorView& tensor) {
  EMBER_ASSIGN_OR_RETURN(std::string bytes, HeaderBytes(tensor));
  if (tensor.nbytes() > 0) bytes.append(static_cast<const char*>(tensor.data), tensor.nbytes());
  return bytes;
}

Status WriteFile(const std::string& path, const TensorView& tensor) {
  EMBER_ASSIGN_OR_RETURN(const std::string header, HeaderBytes(tensor));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return Status::RuntimeError(Quote(path) + ": cannot create .npy file: " + std::strerror(errno));
  }
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(tensor.data), static_cast<std::streamsize>(tensor.nbytes()));
  out.close();
  if (!out) return Status::RuntimeError(Quote(path) + ": writing the .npy file failed");
  return Status::Ok();
}

}  // namespace ember::npy
