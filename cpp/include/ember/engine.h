// Engine: serves concurrent requests by batching their rows dynamically onto lanes, each lane a
// thread with its own executor (VM). Pure C++: no Python, no GIL; the bindings add futures.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "ember/batch_policy.h"
#include "ember/executor.h"
#include "ember/memory_pool.h"
#include "ember/metrics.h"
#include "ember/status.h"
#include "ember/tensor.h"

namespace ember::runtime {
class Model;
}

namespace ember::engine {

struct EngineOptions {
  int lanes = 1;              // executor threads, each owning its own VM; 0: 1, or, when warm_up
                              // finds a full batch fast (kSmallBatchUs), cores / 2 lanes of one
                              // thread each (the other half of the cores left to the callers);
                              // a CUDA model's Engine keeps 1 (its lanes would share one GPU)
  int threads_per_lane = 0;   // OpenMP threads per lane; 0: cores / lanes, or 1 when warm_up
                              // finds a full batch that fast (see kSmallBatchUs)
  int cores = 0;              // lanes x threads_per_lane may not exceed this; 0: ember's threads
  int64_t max_batch_size = 0;       // rows; 0: the largest bucket (1 without a batch axis)
  int64_t max_queue_delay_us = 500; // a batch waits at most this long for its oldest request
  std::vector<int64_t> preferred_batch_sizes;  // empty: the buckets <= max_batch_size
  int64_t max_queue_size = 4096;    // waiting requests; one more is refused with QueueFull
  int64_t default_timeout_us = 0;   // a request's deadline when it names none; 0: no deadline
  size_t pool_max_cached_bytes = size_t{512} << 20;  // memory kept for reuse by the pool
  // An idle lane polls for new requests this long before it sleeps: waking a sleeping thread
  // costs ~50 us on a VM, more than a small model's whole batch. 0: sleep at once.
  int64_t idle_spin_us = 50;
  // Run the largest bucket on zeros before serving: prepacks weights and sizes the VM's memory,
  // so the first request is not slow, and times a batch (Create(model) turns this on).
  bool warm_up = false;
  // Tests only: a simulated clock (microseconds) for arrival times, deadlines and the queue
  // delay, so they can let time pass without sleeping. Empty: steady_clock. With it, a lane
  // waiting for a time re-reads the clock every millisecond; compute times stay real.
  std::function<int64_t()> clock_us;
};

// A full batch faster than this on one thread (timed at warm-up, after one untimed run) is
// overhead-bound: more threads per lane would only spin in OpenMP barriers and take cores from
// the callers that feed the engine.
constexpr int64_t kSmallBatchUs = 1000;

// One output of one request: its rows of a pooled batch buffer. The block goes back to the pool
// when the last OutputTensor (or copy of its shared_ptr) referencing it is destroyed.
struct OutputTensor {
  std::shared_ptr<const memory::Block> block;
  size_t byte_offset = 0;
  DLDataType dtype{};
  std::vector<int64_t> shape;

  const void* data() const { return static_cast<const char*>(block->data()) + byte_offset; }
  size_t nbytes() const { return static_cast<size_t>(NumElements(shape)) * DTypeBytes(dtype); }
};

struct SubmitOptions {
  int priority = 0;         // higher runs first
  int64_t timeout_us = -1;  // from submission until it must have started; -1: the engine default,
                            // 0: no deadline
};

// Called exactly once for every accepted request: on the lane that ran it, or in Close(). It
// must be quick and must not call back into the engine's Close().
using Completion = std::function<void(Status status, std::vector<OutputTensor> outputs)>;

// What an engine serves: the model's specs and buckets, and how to make one executor per lane.
struct ModelSpec {
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  std::vector<int64_t> buckets;  // ascending; empty for models without a batch axis
};
using ExecutorFactory = std::function<Result<std::unique_ptr<runtime::Executor>>()>;

// Thread-safety: every method may be called from any thread. Submit() holds the queue lock only
// to enqueue; inputs are copied into pooled memory before that, so the caller's buffers may be
// reused as soon as Submit() returns. Completions run without any engine lock held.
class Engine {
 public:
  // Serves `model` (kept alive by the engine) with options.lanes executors from NewExecutor().
  static Result<std::unique_ptr<Engine>> Create(std::shared_ptr<runtime::Model> model,
                                                EngineOptions options);
  // Serves any executor, e.g. a fake one in tests.
  static Result<std::unique_ptr<Engine>> Create(ModelSpec spec, const ExecutorFactory& factory,
                                                EngineOptions options);
  // Close(/*drain=*/false): pending requests fail with Closed; running batches finish.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request. Refused at once (never queued, `done` never called) with InvalidArgument
  // for inputs that do not match the model, QueueFull when max_queue_size requests wait, Closed
  // after Close(). Otherwise `done` is called exactly once: with the outputs (spec order, the
  // request's row count), DeadlineExceeded if the deadline passed before it started, Closed if
  // the engine closed without draining, or the executor's error.
  Status Submit(const runtime::NamedTensorViews& inputs, const SubmitOptions& options,
                Completion done);

  // Stops accepting requests. With drain, every queued request still runs (batches close at once,
  // without waiting for the delay); without, queued requests fail with Closed. Returns when the
  // lanes have stopped, so every completion has been called. Idempotent.
  void Close(bool drain);
  bool closed() const;

  MetricsSnapshot metrics() const;
  memory::PoolStats pool_stats() const;
  const EngineOptions& options() const;  // as resolved: defaults filled in
  const ModelSpec& spec() const;
  size_t queue_size() const;  // requests waiting to run
  // A moving average of recent batches' compute time: how long a caller can expect to wait.
  int64_t recent_compute_us() const;

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ember::engine
