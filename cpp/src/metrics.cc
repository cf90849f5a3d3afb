#include "ember/metrics.h"

#include <algorithm>
#include <cmath>

namespace ember::engine {

size_t Histogram::BucketOf(uint64_t value) noexcept {
  if (value < kSubBuckets) return static_cast<size_t>(value);
  const int msb = 63 - __builtin_clzll(value);  // value >= kSubBuckets > 0
  const int shift = msb - kSubBucketBits;  // >= 0
  const uint64_t sub = (value >> shift) - kSubBuckets;  // in [0, kSubBuckets)
  return static_cast<size_t>((static_cast<uint64_t>(shift) + 1) * kSubBuckets + sub);
}

uint64_t Histogram::UpperEdge(size_t bucket) noexcept {
  if (bucket < kSubBuckets) return bucket;
  const uint64_t shift = bucket / kSubBuckets - 1;
  const uint64_t sub = bucket % kSubBuckets;
  const uint64_t lower = (kSubBuckets + sub) << shift;
  return lower + ((uint64_t{1} << shift) - 1);
}

void Histogram::Record(uint64_t value) noexcept {
  buckets_[BucketOf(value)].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
  uint64_t seen = max_.load(std::memory_order_relaxed);
  while (value > seen && !max_.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
  }
}

HistogramSnapshot Histogram::Snapshot() const {
  HistogramSnapshot snap;
  snap.count = count_.load(std::memory_order_relaxed);
  snap.sum = sum_.load(std::memory_order_relaxed);
  snap.max = max_.load(std::memory_order_relaxed);
  snap.buckets.resize(kNumBuckets);
  for (size_t i = 0; i < kNumBuckets; ++i) {
    snap.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
  }
  return snap;
}

uint64_t HistogramSnapshot::Percentile(double p) const {
  uint64_t total = 0;
  for (uint64_t n : buckets) total += n;
  if (total == 0) return 0;
  const double clamped = std::clamp(p, 0.0, 100.0);
  // The rank of the p-th percentile value, 1-based (nearest-rank method).
  const auto rank = std::max<uint64_t>(
      1, static_cast<uint64_t>(std::ceil(clamped / 100.0 * static_cast<double>(total))));
  uint64_t seen = 0;
  for (size_t i = 0; i < buckets.size(); ++i) {
    seen += buckets[i];
    if (seen >= rank) return std::min(Histogram::UpperEdge(i), max);
  }
  return max;
}

void Metrics::RecordSubmitted(int64_t rows) noexcept {
  requests_.fetch_add(1, std::memory_order_relaxed);
  rows_.fetch_add(static_cast<uint64_t>(std::max<int64_t>(rows, 0)), std::memory_order_relaxed);
}

void Metrics::RecordRejected() noexcept { rejections_.fetch_add(1, std::memory_order_relaxed); }

void Metrics::RecordSuccess(uint64_t queue_us, uint64_t compute_us, uint64_t total_us) noexcept {
  successes_.fetch_add(1, std::memory_order_relaxed);
  queue_us_.Record(queue_us);
  compute_us_.Record(compute_us);
  total_us_.Record(total_us);
}

void Metrics::RecordFailure(StatusCode code) noexcept {
  const auto index = static_cast<size_t>(code);
  if (index < kNumStatusCodes) failures_[index].fetch_add(1, std::memory_order_relaxed);
}

void Metrics::RecordBatch(int64_t rows) noexcept {
  batch_rows_.Record(static_cast<uint64_t>(std::max<int64_t>(rows, 0)));
}

MetricsSnapshot Metrics::Snapshot() const {
  MetricsSnapshot snap;
  snap.requests = requests_.load(std::memory_order_relaxed);
  snap.rows = rows_.load(std::memory_order_relaxed);
  snap.successes = successes_.load(std::memory_order_relaxed);
  snap.rejections = rejections_.load(std::memory_order_relaxed);
  for (size_t i = 0; i < kNumStatusCodes; ++i) {
    snap.failures_by_code[i] = failures_[i].load(std::memory_order_relaxed);
  }
  snap.queue_us = queue_us_.Snapshot();
  snap.compute_us = compute_us_.Snapshot();
  snap.total_us = total_us_.Snapshot();
  snap.batch_rows = batch_rows_.Snapshot();
  return snap;
}

}  // namespace ember::engine
