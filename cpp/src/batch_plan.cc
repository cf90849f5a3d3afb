#include "ember/batch_plan.h"

#include <algorithm>

namespace ember::runtime {
namespace {

int64_t PaddedRows(const std::vector<Chunk>& chunks) {
  int64_t total = 0;
  for (const Chunk& chunk : chunks) total += chunk.bucket;
  return total;
}

}  // namespace

std::vector<Chunk> SerialChunks(int64_t offset, int64_t rows, const std::vector<int64_t>& buckets) {
  std::vector<Chunk> chunks;
  const int64_t largest = buckets.back();
  for (int64_t done = 0; done < rows;) {
    const int64_t take = std::min(largest, rows - done);
    const int64_t bucket = *std::lower_bound(buckets.begin(), buckets.end(), take);
    chunks.push_back(Chunk{offset + done, take, bucket});
    done += take;
  }
  return chunks;
}

std::vector<std::vector<Chunk>> PlanLanes(int64_t rows, const std::vector<int64_t>& buckets,
                                          int max_lanes) {
  std::vector<std::vector<Chunk>> serial{SerialChunks(0, rows, buckets)};
  const int64_t lanes = std::min<int64_t>(max_lanes, rows);
  if (lanes < 2) return serial;
  std::vector<std::vector<Chunk>> split;
  int64_t busiest = 0;
  for (int64_t lane = 0, offset = 0; lane < lanes; ++lane) {
    const int64_t share = rows / lanes + (lane < rows % lanes ? 1 : 0);
    split.push_back(SerialChunks(offset, share, buckets));
    busiest = std::max(busiest, PaddedRows(split.back()));
    offset += share;
  }
  return busiest * lanes <= PaddedRows(serial.front()) ? split : serial;
}

}  // namespace ember::runtime
