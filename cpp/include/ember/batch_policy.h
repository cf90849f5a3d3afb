// BatchPolicy: the dynamic batcher's decision, as a pure function of the queue and the time, so
// that it can be tested with a simulated clock. The engine's scheduler thread calls Next() with
// the queue under its lock and either runs the returned batch or sleeps until `wake_at_us`.
#pragma once

#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "ember/status.h"

namespace ember::engine {

constexpr int64_t kNoDeadline = std::numeric_limits<int64_t>::max();

struct PendingRequest {
  uint64_t id = 0;
  int64_t rows = 1;         // a request may carry several rows; limits count rows
  int priority = 0;         // higher runs first
  int64_t arrival_us = 0;   // when it was queued
  int64_t deadline_us = kNoDeadline;  // it fails, never runs, if not started by then
};

struct BatchPolicyOptions {
  int64_t max_batch_size = 32;          // rows
  int64_t max_queue_delay_us = 1000;    // from the oldest request in the batch
  std::vector<int64_t> preferred_batch_sizes;  // rows; closing at one of these is worth no wait
};

struct BatchDecision {
  std::vector<uint64_t> batch;    // ids to run now, in queue order (empty: nothing to run yet)
  std::vector<uint64_t> expired;  // ids past their deadline: fail them, never run them
  int64_t wake_at_us = kNoDeadline;  // when batch is empty: decide again at this time at latest
};

// Thread-safety: immutable after construction; Next() is const and may run on any thread.
class BatchPolicy {
 public:
  static Result<BatchPolicy> Create(BatchPolicyOptions options);

  // Decides what to do at `now_us` with `queue`, which must be ordered by RunsBefore. Expired
  // requests (deadline <= now) are reported and skipped. Live requests are taken in order while
  // their rows fit max_batch_size (a first request larger than that runs alone: the model splits
  // it). The whole batch runs now when it is full, when the next live request does not fit, when
  // `draining`, or when its oldest request has waited max_queue_delay_us. Otherwise, with every
  // live request in it, the longest prefix whose rows are a preferred size runs now, if any.
  // Else nothing runs, and wake_at_us is when to decide again at the latest: the oldest
  // request's delay running out, or the earliest deadline.
  BatchDecision Next(const std::vector<PendingRequest>& queue, int64_t now_us, bool draining) const;

  const BatchPolicyOptions& options() const { return options_; }

 private:
  explicit BatchPolicy(BatchPolicyOptions options) : options_(std::move(options)) {}
  BatchPolicyOptions options_;
};

// The queue order Next() expects: priority descending, then arrival ascending, then id.
bool RunsBefore(const PendingRequest& a, const PendingRequest& b);

}  // namespace ember::engine
