// SHA-256 (FIPS 180-4), used to verify artifact files before any of their code is loaded.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "ember/status.h"

namespace ember {

// Incremental hasher. Not thread-safe; one instance per computation.
class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t nbytes);
  // Finishes the computation and returns the lowercase hex digest; the object is then spent.
  std::string HexDigest();

 private:
  void Compress(const uint8_t* block);

  std::array<uint32_t, 8> state_{};
  std::array<uint8_t, 64> block_{};
  size_t block_used_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string Sha256Hex(const std::string& data);
Result<std::string> Sha256File(const std::string& path);

}  // namespace ember
