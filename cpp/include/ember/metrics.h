// Request metrics for the engine: counters and log-linear histograms that are recorded lock-free
// on the request path and read as snapshots (with percentiles) from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ember/status.h"

namespace ember::engine {

// A copy of a histogram's state. Percentile(p) is the upper edge of the bucket holding the p-th
// value, capped at max: at most 1/kSubBuckets (6.25%) above the exact value, never below it.
struct HistogramSnapshot {
  uint64_t count = 0;
  uint64_t sum = 0;
  uint64_t max = 0;
  std::vector<uint64_t> buckets;

  double Mean() const {
    return count == 0 ? 0.0 : static_cast<double>(sum) / static_cast<double>(count);
  }
  uint64_t Percentile(double p) const;  // p in [0, 100]
};

// Values (e.g. microseconds, or rows) from 0 to 2^63: exact below kSubBuckets, then kSubBuckets
// linear buckets per power of two.
//
// Thread-safety: Record() is lock-free (relaxed atomics) and may run on any number of threads;
// Snapshot() may run concurrently and sees each counter at some recent value (a snapshot taken
// while recording may be off by the records in flight).
class Histogram {
 public:
  static constexpr int kSubBucketBits = 4;
  static constexpr uint64_t kSubBuckets = uint64_t{1} << kSubBucketBits;
  static constexpr size_t kNumBuckets = (64 - kSubBucketBits + 1) * kSubBuckets;

  void Record(uint64_t value) noexcept;
  HistogramSnapshot Snapshot() const;

  static size_t BucketOf(uint64_t value) noexcept;
  static uint64_t UpperEdge(size_t bucket) noexcept;  // the largest value in the bucket

 private:
  std::array<std::atomic<uint64_t>, kNumBuckets> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_{0};
  std::atomic<uint64_t> max_{0};
};

struct MetricsSnapshot {
  uint64_t requests = 0;    // submitted
  uint64_t rows = 0;        // rows submitted
  uint64_t successes = 0;
  uint64_t rejections = 0;  // refused at submit (queue full, engine closed, bad input)
  std::array<uint64_t, kNumStatusCodes> failures_by_code{};  // failed after being queued
  HistogramSnapshot queue_us, compute_us, total_us, batch_rows;
};

// The engine's counters and histograms. Thread-safety: as Histogram; every method is lock-free.
class Metrics {
 public:
  void RecordSubmitted(int64_t rows) noexcept;
  void RecordRejected() noexcept;
  void RecordSuccess(uint64_t queue_us, uint64_t compute_us, uint64_t total_us) noexcept;
  void RecordFailure(StatusCode code) noexcept;
  void RecordBatch(int64_t rows) noexcept;
  MetricsSnapshot Snapshot() const;

 private:
  std::atomic<uint64_t> requests_{0}, rows_{0}, successes_{0}, rejections_{0};
  std::array<std::atomic<uint64_t>, kNumStatusCodes> failures_{};
  Histogram queue_us_, compute_us_, total_us_, batch_rows_;
};

}  // namespace ember::engine
