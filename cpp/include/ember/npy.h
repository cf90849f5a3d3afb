// NumPy .npy files (format versions 1.0, 2.0 and 3.0): read into owned host tensors and written
// from tensor views, so that tools without Python (ember-run) exchange arrays with numpy.
//
// Supported: little-endian (or byte-order-free) C-order arrays of float16/32/64, int8/16/32/64,
// uint8/16/32/64 and bool. Fortran-order, big-endian, structured and object arrays are refused.
// Errors are InvalidArgument (NotFound for a file that cannot be opened) and start with the
// file's name, followed by what is wrong with it.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include "ember/status.h"
#include "ember/tensor.h"

namespace ember::npy {

// What a .npy header declares (Fortran order is refused while parsing).
struct Header {
  DLDataType dtype{};
  std::vector<int64_t> shape;
};

// Parses the header dictionary of a .npy file, e.g.
// "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }". Keys may come in any order,
// with any spacing and an optional trailing comma. `source` names the file in error messages.
Result<Header> ParseHeader(const std::string& text, const std::string& source);

// The descr numpy writes for `dtype` ("<f4", "|b1", ...); an error for a dtype that .npy cannot
// hold (bfloat16).
Result<std::string> DescrOf(DLDataType dtype);

// Reads a whole .npy stream (magic, version, header, data) into a 64-byte-aligned tensor. The data
// must be exactly as long as the header's shape and dtype say.
Result<HostTensor> Read(std::istream& in, const std::string& source);
Result<HostTensor> ReadFile(const std::string& path);

// The bytes numpy's np.save writes for `tensor`: version 1.0 (2.0 when the header needs it), the
// header padded with spaces so the data starts at a multiple of 64 bytes.
Result<std::string> Serialize(const TensorView& tensor);
// Writes `tensor` to `path` as .npy, replacing the file.
Status WriteFile(const std::string& path, const TensorView& tensor);

}  // namespace ember::npy
