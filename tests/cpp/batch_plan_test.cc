#include "ember/batch_plan.h"

#include <gtest/gtest.h>

#include <vector>

namespace ember::runtime {
namespace {

using Lanes = std::vector<std::vector<Chunk>>;

TEST(SerialChunks, PadsTheRemainderToTheSmallestBucketThatHoldsIt) {
  EXPECT_EQ(SerialChunks(0, 5, {1, 8, 32}), (std::vector<Chunk>{{0, 5, 8}}));
  EXPECT_EQ(SerialChunks(0, 8, {1, 8, 32}), (std::vector<Chunk>{{0, 8, 8}}));
  EXPECT_EQ(SerialChunks(3, 1, {1, 8, 32}), (std::vector<Chunk>{{3, 1, 1}}));
}

TEST(SerialChunks, SplitsRequestsLargerThanTheLargestBucket) {
  EXPECT_EQ(SerialChunks(0, 70, {1, 8, 32}),
            (std::vector<Chunk>{{0, 32, 32}, {32, 32, 32}, {64, 6, 8}}));
}

TEST(PlanLanes, SplitsWhenEachLaneHasAHalfSizedBucket) {
  EXPECT_EQ(PlanLanes(32, {1, 8, 16, 32}, 2),
            (Lanes{{{0, 16, 16}}, {{16, 16, 16}}}));
  EXPECT_EQ(PlanLanes(20, {8, 16, 32}, 2), (Lanes{{{0, 10, 16}}, {{10, 10, 16}}}));
}

TEST(PlanLanes, StaysSerialWhenSplittingWouldPadMore) {
  EXPECT_EQ(PlanLanes(32, {1, 8, 32}, 2), (Lanes{{{0, 32, 32}}}));
  EXPECT_EQ(PlanLanes(32, {32}, 2), (Lanes{{{0, 32, 32}}}));
}

TEST(PlanLanes, StaysSerialForOneRowOrOneLane) {
  EXPECT_EQ(PlanLanes(1, {1, 8, 32}, 2), (Lanes{{{0, 1, 1}}}));
  EXPECT_EQ(PlanLanes(32, {1, 8, 16, 32}, 1), (Lanes{{{0, 32, 32}}}));
}

TEST(PlanLanes, UnevenRowsGiveTheFirstLanesOneMore) {
  EXPECT_EQ(PlanLanes(9, {1, 4, 5, 16}, 2), (Lanes{{{0, 5, 5}}, {{5, 4, 4}}}));
  EXPECT_EQ(PlanLanes(6, {1, 2, 4, 8}, 3), (Lanes{{{0, 2, 2}}, {{2, 2, 2}}, {{4, 2, 2}}}));
  EXPECT_EQ(PlanLanes(7, {1, 2, 4, 8}, 3), (Lanes{{{0, 7, 8}}}));  // 3 rows would pad to 4
}

TEST(PlanLanes, LargeRequestsSpreadWholeBucketsAcrossLanes) {
  EXPECT_EQ(PlanLanes(64, {1, 8, 32}, 2), (Lanes{{{0, 32, 32}}, {{32, 32, 32}}}));
}

TEST(PlanLanes, EveryRowIsCoveredExactlyOnce) {
  const std::vector<int64_t> buckets{1, 4, 8, 16, 32};
  for (int64_t rows = 1; rows <= 100; ++rows) {
    for (int lanes = 1; lanes <= 4; ++lanes) {
      int64_t next = 0;
      for (const auto& lane : PlanLanes(rows, buckets, lanes)) {
        for (const Chunk& chunk : lane) {
          ASSERT_EQ(chunk.offset, next) << rows << " rows, " << lanes << " lanes";
          ASSERT_GE(chunk.bucket, chunk.rows);
          next += chunk.rows;
        }
      }
      ASSERT_EQ(next, rows);
    }
  }
}

}  // namespace
}  // namespace ember::runtime
