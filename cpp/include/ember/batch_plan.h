// Batch planning: how a request of n rows runs on an artifact's batch buckets, serially or split
// across parallel lanes (one VM and one thread each).
#pragma once

#include <cstdint>
#include <vector>

namespace ember::runtime {

// Rows [offset, offset + rows) of a request, run on the function compiled for `bucket` rows
// (zero-padded when rows < bucket).
struct Chunk {
  int64_t offset = 0;
  int64_t rows = 0;
  int64_t bucket = 0;
  bool operator==(const Chunk& other) const {
    return offset == other.offset && rows == other.rows && bucket == other.bucket;
  }
};

// Chunks for rows [offset, offset + rows), run one after another: pieces of the largest bucket,
// the remainder on the smallest bucket that holds it. `buckets` is sorted ascending, non-empty.
std::vector<Chunk> SerialChunks(int64_t offset, int64_t rows, const std::vector<int64_t>& buckets);

// Splits a request across up to `max_lanes` lanes (contiguous, near-equal row ranges, each
// chunked by SerialChunks) when that does no more padded work than running it serially: the
// busiest lane's padded rows times the lane count must not exceed the serial plan's padded rows.
// Otherwise returns one lane holding the serial plan. E.g. 32 rows with buckets {1, 8, 16, 32}
// and 2 lanes: two lanes of 16; with buckets {1, 8, 32}: one lane (16 rows would pad to 32).
// Pure function of its arguments; thread-safe.
std::vector<std::vector<Chunk>> PlanLanes(int64_t rows, const std::vector<int64_t>& buckets,
                                          int max_lanes);

}  // namespace ember::runtime
