#include "ember/sha256.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <string>

#include "test_util.h"

namespace ember {
namespace {

using ::ember::testing::IsError;
using ::ember::testing::TempDir;
using ::ember::testing::WriteFile;

// FIPS 180-2, appendix B (and the empty message).
TEST(Sha256Test, FipsVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Lengths around the 64-byte block and the 56-byte padding boundary, where padding bugs live.
// Expected digests from Python's hashlib.sha256(b"a" * n).
TEST(Sha256Test, PaddingBoundaries) {
  const struct {
    size_t length;
    const char* digest;
  } cases[] = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.length);
    EXPECT_EQ(Sha256Hex(std::string(c.length, 'a')), c.digest);
  }
}

std::string PatternBytes(size_t n) {
  std::string data(n, '\0');
  for (size_t i = 0; i < n; ++i) data[i] = static_cast<char>((i * 131 + 7) % 256);
  return data;
}

TEST(Sha256Test, IncrementalUpdatesInOddChunksMatchOneShot) {
  const std::string data = PatternBytes(10007);
  const std::string expected = Sha256Hex(data);
  for (size_t chunk : {size_t{1}, size_t{3}, size_t{7}, size_t{55}, size_t{63}, size_t{65},
                       size_t{127}, size_t{4099}}) {
    SCOPED_TRACE(chunk);
    Sha256 hasher;
    for (size_t at = 0; at < data.size(); at += chunk) {
      hasher.Update(data.data() + at, std::min(chunk, data.size() - at));
    }
    EXPECT_EQ(hasher.HexDigest(), expected);
  }
  // Irregular chunk sizes, including empty updates.
  Sha256 hasher;
  size_t at = 0;
  for (size_t step = 0; at < data.size(); ++step) {
    const size_t take = std::min((step * 37) % 101, data.size() - at);
    hasher.Update(data.data() + at, take);
    at += take;
  }
  EXPECT_EQ(hasher.HexDigest(), expected);
}

TEST(Sha256Test, FileMatchesInMemoryDigest) {
  TempDir dir;
  // Larger than Sha256File's 1 MiB read chunk, and not a multiple of it or of 64.
  const std::string data = PatternBytes((size_t{1} << 20) + 12345);
  WriteFile(dir.File("blob.bin"), data);
  EMBER_ASSERT_OK_AND_ASSIGN(const std::string digest, Sha256File(dir.File("blob.bin")));
  EXPECT_EQ(digest, Sha256Hex(data));

  WriteFile(dir.File("abc.txt"), "abc");
  EMBER_ASSERT_OK_AND_ASSIGN(const std::string abc, Sha256File(dir.File("abc.txt")));
  EXPECT_EQ(abc, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  WriteFile(dir.File("empty"), "");
  EMBER_ASSERT_OK_AND_ASSIGN(const std::string empty, Sha256File(dir.File("empty")));
  EXPECT_EQ(empty, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256Test, MissingFileIsNotFound) {
  TempDir dir;
  const std::string path = dir.File("does-not-exist.bin");
  EXPECT_TRUE(IsError(Sha256File(path).status(), StatusCode::kNotFound, path));
}

TEST(Sha256Test, DirectoryIsAnError) {
  TempDir dir;
  const Result<std::string> digest = Sha256File(dir.path());
  EXPECT_FALSE(digest.ok()) << "hashed a directory as " << digest.value();
}

}  // namespace
}  // namespace ember
