#include "ember/batch_policy.h"

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>

namespace ember::engine {

bool RunsBefore(const PendingRequest& a, const PendingRequest& b) {
  if (a.priority != b.priority) return a.priority > b.priority;
  if (a.arrival_us != b.arrival_us) return a.arrival_us < b.arrival_us;
  return a.id < b.id;
}

Result<BatchPolicy> BatchPolicy::Create(BatchPolicyOptions options) {
  if (options.max_batch_size < 1) {
    return Status::InvalidArgument("max_batch_size must be >= 1, got " +
                                   std::to_string(options.max_batch_size));
  }
  if (options.max_queue_delay_us < 0) {
    return Status::InvalidArgument("max_queue_delay_us must be >= 0, got " +
                                   std::to_string(options.max_queue_delay_us));
  }
  for (int64_t size : options.preferred_batch_sizes) {
    if (size < 1 || size > options.max_batch_size) {
      return Status::InvalidArgument("preferred batch size " + std::to_string(size) +
                                     " is outside [1, max_batch_size=" +
                                     std::to_string(options.max_batch_size) + "]");
    }
  }
  std::sort(options.preferred_batch_sizes.begin(), options.preferred_batch_sizes.end());
  return BatchPolicy(std::move(options));
}

BatchDecision BatchPolicy::Next(const std::vector<PendingRequest>& queue, int64_t now_us,
                                bool draining) const {
  BatchDecision decision;
  std::vector<uint64_t> taken;
  std::vector<int64_t> prefix_rows;  // rows of taken[0..i]
  int64_t rows = 0;
  int64_t oldest_us = kNoDeadline;
  int64_t earliest_deadline_us = kNoDeadline;
  bool blocked = false;  // a live request did not fit: this batch cannot grow
  for (const PendingRequest& request : queue) {
    if (request.deadline_us <= now_us) {
      decision.expired.push_back(request.id);
      continue;
    }
    earliest_deadline_us = std::min(earliest_deadline_us, request.deadline_us);
    if (blocked) continue;  // keep scanning only to report expired requests
    if (!taken.empty() && rows + request.rows > options_.max_batch_size) {
      blocked = true;
      continue;
    }
    taken.push_back(request.id);
    rows += request.rows;
    prefix_rows.push_back(rows);
    oldest_us = std::min(oldest_us, request.arrival_us);
  }
  if (taken.empty()) return decision;

  size_t count = 0;  // how many of `taken` run now
  const bool full = rows >= options_.max_batch_size;
  const bool waited = now_us - oldest_us >= options_.max_queue_delay_us;
  if (full || blocked || draining || waited) {
    count = taken.size();
  } else {
    // Every live request is in the batch, so it cannot grow until more arrive: close at the
    // longest prefix whose rows are exactly a preferred size, if there is one.
    for (size_t i = taken.size(); i-- > 0;) {
      if (std::binary_search(options_.preferred_batch_sizes.begin(),
                             options_.preferred_batch_sizes.end(), prefix_rows[i])) {
        count = i + 1;
        break;
      }
    }
  }
  if (count == 0) {
    decision.wake_at_us = std::min(oldest_us + options_.max_queue_delay_us, earliest_deadline_us);
    return decision;
  }
  decision.batch.assign(taken.begin(), taken.begin() + static_cast<std::ptrdiff_t>(count));
  return decision;
}

}  // namespace ember::engine
