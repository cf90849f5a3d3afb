#include "ember/batch_policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace ember::engine {
namespace {

using Ids = std::vector<uint64_t>;

BatchPolicy Policy(int64_t max_batch_size, int64_t delay_us, std::vector<int64_t> preferred = {}) {
  auto policy = BatchPolicy::Create({max_batch_size, delay_us, std::move(preferred)});
  EXPECT_TRUE(policy.ok()) << policy.status().message();
  return std::move(policy).value();
}

PendingRequest Req(uint64_t id, int64_t rows, int64_t arrival_us, int priority = 0,
                   int64_t deadline_us = kNoDeadline) {
  return PendingRequest{id, rows, priority, arrival_us, deadline_us};
}

// A simulated queue: requests arrive at given times; at each step the policy decides and a
// closed batch leaves the queue.
std::vector<PendingRequest> Ordered(std::vector<PendingRequest> queue) {
  std::sort(queue.begin(), queue.end(), RunsBefore);
  return queue;
}

TEST(BatchPolicy, WaitsForTheOldestRequestsDelayThenRunsWhatIsThere) {
  const BatchPolicy policy = Policy(8, 1000);
  const auto queue = Ordered({Req(1, 1, 0), Req(2, 2, 400)});
  BatchDecision early = policy.Next(queue, 500, false);
  EXPECT_TRUE(early.batch.empty());
  EXPECT_EQ(early.wake_at_us, 1000);  // the oldest arrived at 0
  BatchDecision due = policy.Next(queue, 1000, false);
  EXPECT_EQ(due.batch, (Ids{1, 2}));
}

TEST(BatchPolicy, ClosesAtMaxBatchSizeRowsNotRequests) {
  const BatchPolicy policy = Policy(4, 1000000);
  const auto queue = Ordered({Req(1, 3, 0), Req(2, 1, 1), Req(3, 1, 2)});
  EXPECT_EQ(policy.Next(queue, 5, false).batch, (Ids{1, 2}));  // 3 + 1 rows = full
}

TEST(BatchPolicy, ANextRequestThatDoesNotFitClosesTheBatch) {
  const BatchPolicy policy = Policy(4, 1000000);
  const auto queue = Ordered({Req(1, 3, 0), Req(2, 2, 1)});
  EXPECT_EQ(policy.Next(queue, 5, false).batch, (Ids{1}));
}

TEST(BatchPolicy, AnOversizedRequestRunsAlone) {
  const BatchPolicy policy = Policy(4, 1000000);
  const auto queue = Ordered({Req(1, 10, 0), Req(2, 1, 1)});
  EXPECT_EQ(policy.Next(queue, 5, false).batch, (Ids{1}));
}

TEST(BatchPolicy, PreferredSizesCloseWithoutWaiting) {
  const BatchPolicy policy = Policy(16, 1000000, {4, 8});
  // 4 rows queued: a preferred size nothing queued can grow, so it runs at once.
  EXPECT_EQ(policy.Next(Ordered({Req(1, 2, 0), Req(2, 2, 1)}), 10, false).batch, (Ids{1, 2}));
  // 5 rows: the longest preferred prefix (4) runs; the fifth row waits for company.
  EXPECT_EQ(policy.Next(Ordered({Req(1, 2, 0), Req(2, 2, 1), Req(3, 1, 2)}), 10, false).batch,
            (Ids{1, 2}));
  // 3 rows: no preferred prefix, so it waits.
  BatchDecision wait = policy.Next(Ordered({Req(1, 2, 0), Req(2, 1, 1)}), 10, false);
  EXPECT_TRUE(wait.batch.empty());
  EXPECT_EQ(wait.wake_at_us, 1000000);
}

TEST(BatchPolicy, HigherPriorityRunsFirst) {
  const BatchPolicy policy = Policy(2, 0);
  const auto queue = Ordered({Req(1, 1, 0), Req(2, 1, 5, /*priority=*/3), Req(3, 1, 9, 1)});
  EXPECT_EQ(policy.Next(queue, 10, false).batch, (Ids{2, 3}));
}

TEST(BatchPolicy, ExpiredRequestsAreReportedAndNeverRun) {
  const BatchPolicy policy = Policy(8, 0);
  const auto queue = Ordered({Req(1, 1, 0, 0, /*deadline_us=*/50), Req(2, 1, 1), Req(3, 1, 2, 0, 60)});
  BatchDecision d = policy.Next(queue, 55, false);
  EXPECT_EQ(d.expired, (Ids{1}));
  EXPECT_EQ(d.batch, (Ids{2, 3}));
}

TEST(BatchPolicy, WakesForTheEarliestDeadlineBeforeTheDelay) {
  const BatchPolicy policy = Policy(8, 1000);
  const auto queue = Ordered({Req(1, 1, 0), Req(2, 1, 10, 0, /*deadline_us=*/300)});
  EXPECT_EQ(policy.Next(queue, 20, false).wake_at_us, 300);
}

TEST(BatchPolicy, DrainingRunsEverythingNow) {
  const BatchPolicy policy = Policy(8, 1000000);
  EXPECT_EQ(policy.Next(Ordered({Req(1, 1, 0)}), 1, /*draining=*/true).batch, (Ids{1}));
}

TEST(BatchPolicy, EmptyQueueRunsNothingAndNeedsNoWakeUp) {
  const BatchDecision d = Policy(8, 1000).Next({}, 5, false);
  EXPECT_TRUE(d.batch.empty());
  EXPECT_EQ(d.wake_at_us, kNoDeadline);
}

TEST(BatchPolicy, RejectsBadOptions) {
  EXPECT_FALSE(BatchPolicy::Create({0, 1000, {}}).ok());
  EXPECT_FALSE(BatchPolicy::Create({8, -1, {}}).ok());
  EXPECT_FALSE(BatchPolicy::Create({8, 1000, {16}}).ok());
  EXPECT_EQ(BatchPolicy::Create({8, 1000, {0}}).status().code(), StatusCode::kInvalidArgument);
}

// A simulated run: requests arrive on a fixed schedule, the policy is asked at every arrival and
// at every wake-up it requests. No request waits longer than the delay, every request runs once,
// and no batch exceeds the limit.
TEST(BatchPolicy, SimulatedClockServesEveryRequestWithinTheDelay) {
  const int64_t delay_us = 500;
  const BatchPolicy policy = Policy(8, delay_us, {8});
  std::vector<PendingRequest> arrivals;
  for (uint64_t i = 0; i < 200; ++i) {
    arrivals.push_back(Req(i, 1 + static_cast<int64_t>(i % 3), static_cast<int64_t>(i * 137 % 5000 + i * 50)));
  }
  std::sort(arrivals.begin(), arrivals.end(),
            [](const PendingRequest& a, const PendingRequest& b) { return a.arrival_us < b.arrival_us; });
  std::vector<PendingRequest> queue;
  std::vector<int> runs(arrivals.size(), 0);
  size_t next = 0;
  int64_t now = 0;
  while (next < arrivals.size() || !queue.empty()) {
    while (next < arrivals.size() && arrivals[next].arrival_us <= now) queue.push_back(arrivals[next++]);
    std::sort(queue.begin(), queue.end(), RunsBefore);
    const BatchDecision d = policy.Next(queue, now, false);
    ASSERT_TRUE(d.expired.empty());
    if (!d.batch.empty()) {
      int64_t rows = 0;
      for (uint64_t id : d.batch) {
        auto it = std::find_if(queue.begin(), queue.end(), [id](const auto& r) { return r.id == id; });
        ASSERT_NE(it, queue.end());
        EXPECT_LE(now - it->arrival_us, delay_us) << "request " << id << " waited too long";
        rows += it->rows;
        ++runs[id];
        queue.erase(it);
      }
      EXPECT_LE(rows, 8);
      continue;  // decide again at the same instant: more may be ready
    }
    const int64_t next_arrival = next < arrivals.size() ? arrivals[next].arrival_us : kNoDeadline;
    now = std::min(d.wake_at_us, next_arrival);
    ASSERT_LT(now, kNoDeadline);
  }
  for (int count : runs) EXPECT_EQ(count, 1);
}

}  // namespace
}  // namespace ember::engine
