#include "ember/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

namespace ember::engine {
namespace {

uint64_t ExactPercentile(std::vector<uint64_t> values, double p) {
  std::sort(values.begin(), values.end());
  const auto rank = std::max<size_t>(1, static_cast<size_t>(std::ceil(p / 100.0 * values.size())));
  return values[rank - 1];
}

TEST(Histogram, BucketsCoverEveryValueWithBoundedWidth) {
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, uint64_t{15}, uint64_t{16}, uint64_t{17},
                     uint64_t{1000}, uint64_t{123456789}, uint64_t{1} << 62, UINT64_MAX}) {
    const size_t bucket = Histogram::BucketOf(v);
    ASSERT_LT(bucket, Histogram::kNumBuckets) << v;
    EXPECT_GE(Histogram::UpperEdge(bucket), v) << v;
    if (bucket > 0) {
      EXPECT_LT(Histogram::UpperEdge(bucket - 1), v) << v;  // v is in this bucket, not below
    }
  }
  for (uint64_t v = 0; v < Histogram::kSubBuckets; ++v) {
    EXPECT_EQ(Histogram::UpperEdge(Histogram::BucketOf(v)), v);  // exact below kSubBuckets
  }
}

TEST(Histogram, PercentilesAreWithinOneSubBucketOfExact) {
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> latency_us(6.0, 1.0);  // ~400 us median, long tail
  Histogram h;
  std::vector<uint64_t> values;
  for (int i = 0; i < 100000; ++i) {
    const auto v = static_cast<uint64_t>(latency_us(rng));
    values.push_back(v);
    h.Record(v);
  }
  const HistogramSnapshot snap = h.Snapshot();
  EXPECT_EQ(snap.count, values.size());
  EXPECT_EQ(snap.max, *std::max_element(values.begin(), values.end()));
  for (double p : {50.0, 90.0, 99.0, 99.9, 100.0}) {
    const double exact = static_cast<double>(ExactPercentile(values, p));
    const double got = static_cast<double>(snap.Percentile(p));
    EXPECT_GE(got, exact) << "p" << p;
    EXPECT_LE(got, exact * (1.0 + 1.0 / Histogram::kSubBuckets) + 1) << "p" << p;
  }
  double sum = 0;
  for (uint64_t v : values) sum += static_cast<double>(v);
  EXPECT_NEAR(snap.Mean(), sum / values.size(), 1e-6 * sum);
}

TEST(Histogram, EmptySnapshotIsZero) {
  const HistogramSnapshot snap = Histogram().Snapshot();
  EXPECT_EQ(snap.count, 0u);
  EXPECT_EQ(snap.Percentile(99), 0u);
  EXPECT_EQ(snap.Mean(), 0.0);
}

TEST(Histogram, ConcurrentRecordsAreAllCounted) {
  Histogram h;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < kPerThread; ++i) h.Record(static_cast<uint64_t>(i % 1000 + t));
    });
  }
  for (auto& thread : threads) thread.join();
  const HistogramSnapshot snap = h.Snapshot();
  EXPECT_EQ(snap.count, static_cast<uint64_t>(kThreads * kPerThread));
  uint64_t in_buckets = 0;
  for (uint64_t n : snap.buckets) in_buckets += n;
  EXPECT_EQ(in_buckets, snap.count);
  EXPECT_EQ(snap.max, 999u + kThreads - 1);
}

TEST(Metrics, CountsByOutcome) {
  Metrics m;
  m.RecordSubmitted(3);
  m.RecordSubmitted(5);
  m.RecordRejected();
  m.RecordSuccess(10, 200, 215);
  m.RecordFailure(StatusCode::kInvalidArgument);
  m.RecordBatch(8);
  const MetricsSnapshot s = m.Snapshot();
  EXPECT_EQ(s.requests, 2u);
  EXPECT_EQ(s.rows, 8u);
  EXPECT_EQ(s.rejections, 1u);
  EXPECT_EQ(s.successes, 1u);
  EXPECT_EQ(s.failures_by_code[static_cast<size_t>(StatusCode::kInvalidArgument)], 1u);
  EXPECT_EQ(s.total_us.Percentile(50), 215u);
  EXPECT_EQ(s.batch_rows.max, 8u);
}

}  // namespace
}  // namespace ember::engine
