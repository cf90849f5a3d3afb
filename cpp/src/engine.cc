#include "ember/engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include <omp.h>

#include "ember/cpu_relax.h"
#include "ember/model.h"
#include "ember/thread_name.h"

namespace ember::engine {
namespace {

using runtime::Executor;
using runtime::OutputBuffer;

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

size_t AlignUp(size_t n) {
  constexpr size_t kAlign = memory::MemoryPool::kAlignmentBytes;
  return (n + kAlign - 1) / kAlign * kAlign;
}

// Byte offsets of each tensor packed into one block, each 64-byte aligned; returns the total.
size_t PackOffsets(const std::vector<TensorSpec>& specs, int64_t rows, std::vector<size_t>* offsets) {
  size_t total = 0;
  offsets->clear();
  for (const TensorSpec& spec : specs) {
    offsets->push_back(total);
    total += AlignUp(static_cast<size_t>(NumElements(spec.ShapeWithBatch(rows))) * DTypeBytes(spec.dtype));
  }
  return total;
}

// A queued request: its inputs copied into one pooled block, and whom to tell when it is done.
struct Request {
  int64_t rows = 0;  // on the batch axis; 0 without one
  int64_t arrival_us = 0;
  memory::Block inputs;
  std::vector<TensorView> views;  // into `inputs`, in spec order
  Completion done;
};

// Completions are user code: one that throws must not take a lane down.
void Complete(Request& request, Status status, std::vector<OutputTensor> outputs) noexcept {
  // Moved out so that its captures die with this call, not later with the batch.
  const Completion done = std::move(request.done);
  try {
    done(std::move(status), std::move(outputs));
  } catch (...) {  // NOLINT(bugprone-empty-catch): nowhere to report it; documented contract
  }
}

}  // namespace

struct Engine::Impl {
  Impl(ModelSpec spec_in, EngineOptions options_in, BatchPolicy policy_in)
      : spec(std::move(spec_in)), options(std::move(options_in)), policy(std::move(policy_in)) {}

  const ModelSpec spec;
  const EngineOptions options;
  const BatchPolicy policy;
  std::shared_ptr<runtime::Model> model;  // null when serving a bare ExecutorFactory
  std::vector<std::unique_ptr<Executor>> executors;  // one per lane; after `model` (destroyed first)
  std::shared_ptr<memory::MemoryPool> pool;
  Metrics metrics;

  mutable std::mutex mutex;  // guards everything below
  std::condition_variable work;
  std::vector<PendingRequest> pending;  // RunsBefore order
  std::vector<Request> payloads;        // payloads[i] belongs to pending[i]
  uint64_t next_id = 1;
  bool closing = false;
  std::atomic<uint64_t> arrivals{0};            // bumped by every accepted request; lanes poll it
  std::atomic<int64_t> recent_compute_us{0};    // moving average over batches

  std::mutex close_mutex;  // serializes Close(); held while joining
  std::vector<std::thread> lanes;

  bool has_batch_axis() const { return !spec.buckets.empty(); }
  // The engine's clock: arrivals, deadlines and the queue delay (see EngineOptions::clock_us).
  int64_t Now() const { return options.clock_us ? options.clock_us() : NowUs(); }
  void LaneMain(size_t lane);
  void WaitForWork(std::unique_lock<std::mutex>& lock, int64_t until_us);
  void RunBatch(Executor& executor, std::vector<Request>& batch);
  void Deliver(std::vector<Request>& batch, std::shared_ptr<const memory::Block> block,
               const std::vector<size_t>& offsets, int64_t run_rows, int64_t start_us,
               int64_t end_us);
  void Fail(std::vector<Request>& requests, const Status& status);
};

namespace {

Status ResolveOptions(const ModelSpec& spec, EngineOptions* o) {
  if (o->cores <= 0) o->cores = omp_get_max_threads();
  if (o->lanes < 1) {
    return Status::InvalidArgument("lanes must be >= 1 (or 0: chosen at warm-up), got " +
                                   std::to_string(o->lanes));
  }
  if (o->threads_per_lane < 0) {
    return Status::InvalidArgument("threads_per_lane must be >= 1 (or 0 for cores / lanes), got " +
                                   std::to_string(o->threads_per_lane));
  }
  if (o->threads_per_lane == 0) o->threads_per_lane = std::max(1, o->cores / o->lanes);
  if (o->lanes * o->threads_per_lane > o->cores) {
    return Status::InvalidArgument(
        "lanes x threads_per_lane = " + std::to_string(o->lanes) + " x " +
        std::to_string(o->threads_per_lane) + " exceeds the " + std::to_string(o->cores) +
        " cores ember runs on (EMBER_NUM_THREADS); oversubscribing cores only adds contention");
  }
  if (o->max_batch_size < 0) {
    return Status::InvalidArgument("max_batch_size must be >= 1 (or 0 for the largest bucket), got " +
                                   std::to_string(o->max_batch_size));
  }
  if (spec.buckets.empty()) {
    if (o->max_batch_size > 1) {
      return Status::InvalidArgument("the model has no batch axis, so max_batch_size must be 1, got " +
                                     std::to_string(o->max_batch_size));
    }
    o->max_batch_size = 1;
  } else if (o->max_batch_size == 0) {
    o->max_batch_size = spec.buckets.back();
  }
  if (o->preferred_batch_sizes.empty()) {
    for (int64_t bucket : spec.buckets) {
      if (bucket <= o->max_batch_size) o->preferred_batch_sizes.push_back(bucket);
    }
    if (spec.buckets.empty()) o->preferred_batch_sizes.push_back(1);
  }
  if (o->max_queue_size < 1) {
    return Status::InvalidArgument("max_queue_size must be >= 1, got " + std::to_string(o->max_queue_size));
  }
  if (o->idle_spin_us < 0) {
    return Status::InvalidArgument("idle_spin_us must be >= 0, got " + std::to_string(o->idle_spin_us));
  }
  if (o->default_timeout_us < 0) {
    return Status::InvalidArgument("default_timeout_us must be >= 0 (0: no deadline), got " +
                                   std::to_string(o->default_timeout_us));
  }
  return Status::Ok();
}

// Runs the largest bucket on zeros with `threads` OpenMP threads (warming the model up) and
// returns how many microseconds a warm run takes (see below for when one thread's time counts).
Result<int64_t> TimeFullBatch(Executor& executor, const ModelSpec& spec, int threads) {
  const int64_t rows = spec.buckets.empty() ? 0 : spec.buckets.back();
  std::vector<AlignedBuffer> buffers;
  std::vector<TensorView> inputs;
  std::vector<OutputBuffer> outputs;
  for (const TensorSpec& input : spec.inputs) {
    TensorView view{nullptr, input.dtype, input.ShapeWithBatch(rows)};
    EMBER_ASSIGN_OR_RETURN(AlignedBuffer buffer, AllocateAligned(std::max<size_t>(view.nbytes(), 1)));
    view.data = buffer.get();
    inputs.push_back(std::move(view));
    buffers.push_back(std::move(buffer));
  }
  for (const TensorSpec& output : spec.outputs) {
    OutputBuffer out{nullptr, output.ShapeWithBatch(rows)};
    EMBER_ASSIGN_OR_RETURN(AlignedBuffer buffer,
                           AllocateAligned(std::max<size_t>(static_cast<size_t>(NumElements(out.shape)) *
                                                                DTypeBytes(output.dtype), 1)));
    out.data = buffer.get();
    outputs.push_back(std::move(out));
    buffers.push_back(std::move(buffer));
  }
  const int previous = omp_get_max_threads();  // the caller's setting, restored below
  // The first run is the warm-up: it pays one-time costs (oneDNN primitives and weight packing,
  // per thread count: 31 ms for the digits MLP, whose batch then takes 30 us), so it decides only
  // when clearly long. A second run is timed. Between 1 and 10 ms it may still be a small batch
  // slowed by a cold or contended OpenMP team (idle vCPUs of a VM waking up): then the batch is
  // also warmed up and timed on one thread, and the faster time decides.
  auto timed_run = [&](int team) -> Result<int64_t> {
    omp_set_num_threads(team);
    const int64_t start = NowUs();
    Status status = executor.Run(inputs, rows, outputs);
    omp_set_num_threads(previous);
    if (!status.ok()) return status;
    return NowUs() - start;
  };
  EMBER_ASSIGN_OR_RETURN(int64_t elapsed, timed_run(threads));
  if (elapsed >= 100 * kSmallBatchUs) return elapsed;
  EMBER_ASSIGN_OR_RETURN(elapsed, timed_run(threads));
  if (elapsed < kSmallBatchUs || elapsed >= 10 * kSmallBatchUs || threads == 1) return elapsed;
  EMBER_RETURN_IF_ERROR(timed_run(1).status());
  EMBER_ASSIGN_OR_RETURN(const int64_t single, timed_run(1));
  return std::min(elapsed, single);
}

}  // namespace

Result<std::unique_ptr<Engine>> Engine::Create(std::shared_ptr<runtime::Model> model,
                                               EngineOptions options) {
  if (!model) return Status::InvalidArgument("Engine needs a loaded model");
  const Manifest& m = model->manifest();
  ModelSpec spec{m.inputs, m.outputs, m.has_batch_axis() ? m.batch_sizes : std::vector<int64_t>{}};
  runtime::Model* raw = model.get();
  options.warm_up = true;
  // Automatic lanes spread fast models over CPU cores; a GPU model's lanes would share one device
  // and stream (MobileNetV2 on an H200 served no more with 8 callers than with 1), so one lane.
  if (options.lanes == 0 && m.target_kind != "llvm") options.lanes = 1;
  auto engine = Create(std::move(spec), [raw] { return raw->NewExecutor(); }, std::move(options));
  if (engine.ok()) engine.value()->impl_->model = std::move(model);
  return engine;
}

Result<std::unique_ptr<Engine>> Engine::Create(ModelSpec spec, const ExecutorFactory& factory,
                                               EngineOptions options) {
  if (!std::is_sorted(spec.buckets.begin(), spec.buckets.end())) {
    return Status::InvalidArgument("buckets must be ascending");
  }
  const bool auto_threads = options.threads_per_lane == 0;
  const bool auto_lanes = options.lanes == 0;
  if (auto_lanes) options.lanes = 1;  // timed on one lane, then widened below
  EMBER_RETURN_IF_ERROR(ResolveOptions(spec, &options));
  EMBER_ASSIGN_OR_RETURN(BatchPolicy policy, BatchPolicy::Create(BatchPolicyOptions{
                                                 options.max_batch_size, options.max_queue_delay_us,
                                                 options.preferred_batch_sizes}));
  std::vector<std::unique_ptr<Executor>> executors;
  auto add_lanes = [&]() -> Status {
    while (static_cast<int>(executors.size()) < options.lanes) {
      EMBER_ASSIGN_OR_RETURN(std::unique_ptr<Executor> executor, factory());
      if (!executor) return Status::Internal("the executor factory returned nothing");
      executors.push_back(std::move(executor));
    }
    return Status::Ok();
  };
  EMBER_RETURN_IF_ERROR(add_lanes());
  if (options.warm_up) {
    EMBER_ASSIGN_OR_RETURN(const int64_t batch_us,
                           TimeFullBatch(*executors.front(), spec, options.threads_per_lane));
    if (batch_us < kSmallBatchUs) {
      if (auto_threads) options.threads_per_lane = 1;
      // Small batches gain nothing from more threads, but many cores can run several at once
      // (16 cores, 8 callers of 32 rows: 8 lanes served 7x what one did).
      if (auto_lanes) options.lanes = std::max(1, options.cores / 2 / options.threads_per_lane);
      EMBER_RETURN_IF_ERROR(add_lanes());
    }
  }
  auto impl = std::make_unique<Impl>(std::move(spec), options, std::move(policy));
  impl->pool = memory::MemoryPool::Create(options.pool_max_cached_bytes);
  impl->executors = std::move(executors);
  std::unique_ptr<Engine> engine(new Engine(std::move(impl)));
  Impl* raw = engine->impl_.get();
  for (size_t lane = 0; lane < raw->executors.size(); ++lane) {
    raw->lanes.emplace_back([raw, lane] { raw->LaneMain(lane); });
    NameThread(raw->lanes.back(), "ember-lane-" + std::to_string(lane));
  }
  return engine;
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() { Close(/*drain=*/false); }

Status Engine::Submit(const runtime::NamedTensorViews& inputs, const SubmitOptions& options,
                      Completion done) {
  Impl& s = *impl_;
  auto reject = [&s](Status status) {
    s.metrics.RecordRejected();
    return status;
  };
  if (!done) return reject(Status::InvalidArgument("Submit needs a completion callback"));
  if (options.timeout_us < -1) {
    return reject(Status::InvalidArgument("timeout_us must be >= 0 (0: no deadline), got " +
                                          std::to_string(options.timeout_us)));
  }
  auto validated = runtime::ValidateInputs(s.spec.inputs, inputs);
  if (!validated.ok()) return reject(validated.status());
  Request request;
  request.rows = validated.value().second;
  const std::vector<TensorView>& views = validated.value().first;

  // Copy the inputs into pooled memory now: the caller's buffers are free once we return.
  std::vector<size_t> offsets;
  const size_t total = PackOffsets(s.spec.inputs, request.rows, &offsets);
  auto block = s.pool->Allocate(std::max<size_t>(total, 1));
  if (!block.ok()) return reject(block.status());
  request.inputs = std::move(block).value();
  request.views.reserve(views.size());
  for (size_t i = 0; i < views.size(); ++i) {
    void* dst = static_cast<char*>(request.inputs.data()) + offsets[i];
    if (views[i].nbytes() > 0) std::memcpy(dst, views[i].data, views[i].nbytes());
    request.views.push_back(TensorView{dst, views[i].dtype, views[i].shape});
  }
  request.done = std::move(done);
  request.arrival_us = s.Now();
  const int64_t timeout_us = options.timeout_us < 0 ? s.options.default_timeout_us : options.timeout_us;
  PendingRequest meta;
  meta.rows = std::max<int64_t>(request.rows, 1);
  meta.priority = options.priority;
  meta.arrival_us = request.arrival_us;
  meta.deadline_us = timeout_us > 0 ? request.arrival_us + timeout_us : kNoDeadline;
  const int64_t rows = request.rows;
  {
    const auto lock = SpinLocked(s.mutex);  // the lane holds it for microseconds at most
    if (s.closing) return reject(Status::Closed("the engine is closed; no new requests are accepted"));
    if (static_cast<int64_t>(s.pending.size()) >= s.options.max_queue_size) {
      return reject(Status::QueueFull("the engine's queue is full (max_queue_size=" +
                                      std::to_string(s.options.max_queue_size) +
                                      " requests waiting); retry later or raise max_queue_size"));
    }
    meta.id = s.next_id++;
    const auto at = std::upper_bound(s.pending.begin(), s.pending.end(), meta, RunsBefore);
    const auto index = at - s.pending.begin();
    s.pending.insert(at, meta);
    s.payloads.insert(s.payloads.begin() + index, std::move(request));
    s.arrivals.fetch_add(1, std::memory_order_release);
  }
  s.metrics.RecordSubmitted(rows);
  s.work.notify_one();
  return Status::Ok();
}

void Engine::Impl::LaneMain(size_t lane) {
  omp_set_num_threads(options.threads_per_lane);  // this lane's kernels size themselves for this
  Executor& executor = *executors[lane];
  std::vector<Request> batch, expired;
  std::unique_lock<std::mutex> lock(mutex);
  for (;;) {
    if (pending.empty()) {
      if (closing) return;
      WaitForWork(lock, kNoDeadline);
      continue;
    }
    const BatchDecision decision = policy.Next(pending, Now(), /*draining=*/closing);
    if (decision.batch.empty() && decision.expired.empty()) {
      WaitForWork(lock, decision.wake_at_us);
      continue;
    }
    // Both id lists are subsequences of `pending` in queue order: split it in one pass.
    size_t next_batch = 0, next_expired = 0, kept = 0;
    for (size_t i = 0; i < pending.size(); ++i) {
      const uint64_t id = pending[i].id;
      if (next_batch < decision.batch.size() && id == decision.batch[next_batch]) {
        batch.push_back(std::move(payloads[i]));
        ++next_batch;
      } else if (next_expired < decision.expired.size() && id == decision.expired[next_expired]) {
        expired.push_back(std::move(payloads[i]));
        ++next_expired;
      } else {
        if (kept != i) {
          pending[kept] = pending[i];
          payloads[kept] = std::move(payloads[i]);
        }
        ++kept;
      }
    }
    pending.resize(kept);
    payloads.resize(kept);
    const bool more = !pending.empty();
    lock.unlock();
    if (more) work.notify_one();  // another lane may take or time the rest
    if (!expired.empty()) {
      Fail(expired, Status::DeadlineExceeded("the request's deadline passed while it was queued; "
                                             "it was not run"));
      expired.clear();
    }
    if (!batch.empty()) {
      RunBatch(executor, batch);
      batch.clear();
    }
    LockSpinning(lock);
  }
}

// Returns when a request may have arrived, when `until_us` has come, or on a spurious wake-up:
// the caller decides again. Polls `arrivals` for up to idle_spin_us first (lock released), then
// sleeps on the condition variable (which Submit and Close notify).
void Engine::Impl::WaitForWork(std::unique_lock<std::mutex>& lock, int64_t until_us) {
  if (options.idle_spin_us > 0) {
    const uint64_t seen = arrivals.load(std::memory_order_acquire);
    const int64_t spin_until = NowUs() + options.idle_spin_us;  // a budget of real time
    lock.unlock();
    bool arrived = false;
    while (!(arrived = arrivals.load(std::memory_order_acquire) != seen) && NowUs() < spin_until &&
           Now() < until_us) {
      for (int i = 0; i < 16; ++i) CpuRelax();
    }
    LockSpinning(lock);
    if (arrived || closing || Now() >= until_us) return;
    if (arrivals.load(std::memory_order_acquire) != seen) return;
  }
  if (until_us == kNoDeadline) {
    work.wait(lock);
  } else if (options.clock_us) {
    work.wait_for(lock, std::chrono::milliseconds(1));  // simulated time: look again soon
  } else {
    work.wait_until(lock, std::chrono::steady_clock::time_point(std::chrono::microseconds(until_us)));
  }
}

void Engine::Impl::Fail(std::vector<Request>& requests, const Status& status) {
  for (Request& request : requests) {
    metrics.RecordFailure(status.code());
    request.inputs = memory::Block();
    Complete(request, status, {});
  }
}

void Engine::Impl::RunBatch(Executor& executor, std::vector<Request>& batch) {
  const int64_t start_us = Now();        // the engine's clock: queue times
  const int64_t run_start_us = NowUs();  // real time: compute times
  int64_t rows = 0;
  for (const Request& request : batch) rows += request.rows;
  metrics.RecordBatch(has_batch_axis() ? rows : 1);
  // Run the bucket that holds the rows, so the executor gets whole buckets without copying; more
  // rows than the largest bucket (one large request) run as they are and the executor splits them.
  int64_t run_rows = rows;
  if (has_batch_axis() && rows > 0 && rows <= spec.buckets.back()) {
    run_rows = *std::lower_bound(spec.buckets.begin(), spec.buckets.end(), rows);
  }

  std::vector<TensorView> views;
  memory::Block assembled;
  std::vector<size_t> offsets;
  if (batch.size() == 1 && batch[0].rows == run_rows) {
    views = batch[0].views;
  } else {
    const size_t total = PackOffsets(spec.inputs, run_rows, &offsets);
    auto block = pool->Allocate(std::max<size_t>(total, 1));
    if (!block.ok()) return Fail(batch, block.status());
    assembled = std::move(block).value();
    for (size_t i = 0; i < spec.inputs.size(); ++i) {
      const TensorSpec& input = spec.inputs[i];
      std::vector<int64_t> shape = input.ShapeWithBatch(run_rows);
      void* dst = static_cast<char*>(assembled.data()) + offsets[i];
      int64_t row = 0;
      for (const Request& request : batch) {
        CopyRows(request.views[i], input.batch_axis, 0, dst, shape, row, request.rows);
        row += request.rows;
      }
      ZeroRows(dst, input.dtype, shape, input.batch_axis, row, run_rows - row);
      views.push_back(TensorView{dst, input.dtype, std::move(shape)});
    }
  }

  const size_t out_total = PackOffsets(spec.outputs, run_rows, &offsets);
  auto out_block = pool->Allocate(std::max<size_t>(out_total, 1));
  if (!out_block.ok()) return Fail(batch, out_block.status());
  memory::Block out = std::move(out_block).value();
  std::vector<OutputBuffer> buffers;
  for (size_t i = 0; i < spec.outputs.size(); ++i) {
    buffers.push_back(OutputBuffer{static_cast<char*>(out.data()) + offsets[i],
                                   spec.outputs[i].ShapeWithBatch(run_rows)});
  }
  const bool nothing_to_run = has_batch_axis() && rows == 0;
  Status status = nothing_to_run ? Status::Ok() : executor.Run(views, run_rows, buffers);
  assembled = memory::Block();  // back to the pool before completions run
  if (!status.ok()) return Fail(batch, status);
  const int64_t compute_us = NowUs() - run_start_us;
  const int64_t average = recent_compute_us.load(std::memory_order_relaxed);
  recent_compute_us.store(average == 0 ? compute_us : (7 * average + compute_us) / 8,
                          std::memory_order_relaxed);
  auto shared = std::make_shared<const memory::Block>(std::move(out));
  Deliver(batch, std::move(shared), offsets, run_rows, start_us, start_us + compute_us);
}

// Hands each request its rows of the batch's outputs: a view into the shared block when its rows
// are contiguous there (batch axis 0, or all the rows run), else a copy into a block of its own.
void Engine::Impl::Deliver(std::vector<Request>& batch, std::shared_ptr<const memory::Block> block,
                           const std::vector<size_t>& offsets, int64_t run_rows, int64_t start_us,
                           int64_t end_us) {
  int64_t row = 0;
  for (Request& request : batch) {
    std::vector<OutputTensor> outputs;
    outputs.reserve(spec.outputs.size());
    Status status;
    for (size_t i = 0; i < spec.outputs.size(); ++i) {
      const TensorSpec& output = spec.outputs[i];
      OutputTensor tensor;
      tensor.dtype = output.dtype;
      tensor.shape = output.ShapeWithBatch(request.rows);
      const size_t row_bytes = output.has_batch_axis()
                                   ? static_cast<size_t>(NumElements(output.ShapeWithBatch(1))) * DTypeBytes(output.dtype)
                                   : 0;
      if (!output.has_batch_axis() || output.batch_axis == 0 || request.rows == run_rows) {
        tensor.block = block;
        tensor.byte_offset = offsets[i] + (output.batch_axis == 0 ? static_cast<size_t>(row) * row_bytes : 0);
      } else {
        auto own = pool->Allocate(std::max<size_t>(tensor.nbytes(), 1));
        if (!own.ok()) {
          status = own.status();
          break;
        }
        const TensorView src{static_cast<const char*>(block->data()) + offsets[i], output.dtype,
                             output.ShapeWithBatch(run_rows)};
        CopyRows(src, output.batch_axis, row, own.value().data(), tensor.shape, 0, request.rows);
        tensor.block = std::make_shared<const memory::Block>(std::move(own).value());
      }
      outputs.push_back(std::move(tensor));
    }
    row += request.rows;
    // After the last request took its views, only its callers hold the batch's block: it goes
    // back to the pool as soon as they drop their outputs.
    if (&request == &batch.back()) block.reset();
    if (!status.ok()) {
      metrics.RecordFailure(status.code());
      Complete(request, status, {});
      continue;
    }
    const auto queue_us = static_cast<uint64_t>(std::max<int64_t>(start_us - request.arrival_us, 0));
    const auto total_us = static_cast<uint64_t>(std::max<int64_t>(end_us - request.arrival_us, 0));
    metrics.RecordSuccess(queue_us, static_cast<uint64_t>(end_us - start_us), total_us);
    request.inputs = memory::Block();
    Complete(request, Status::Ok(), std::move(outputs));
  }
}

void Engine::Close(bool drain) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> close_lock(s.close_mutex);
  std::vector<Request> dropped;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.closing = true;
    if (!drain) {
      dropped = std::move(s.payloads);
      s.payloads.clear();
      s.pending.clear();
    }
  }
  s.work.notify_all();
  s.Fail(dropped, Status::Closed("the engine was closed before this request ran"));
  for (std::thread& lane : s.lanes) {
    if (lane.joinable()) lane.join();
  }
}

bool Engine::closed() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->closing;
}

MetricsSnapshot Engine::metrics() const { return impl_->metrics.Snapshot(); }
memory::PoolStats Engine::pool_stats() const { return impl_->pool->stats(); }
const EngineOptions& Engine::options() const { return impl_->options; }
const ModelSpec& Engine::spec() const { return impl_->spec; }

int64_t Engine::recent_compute_us() const {
  return impl_->recent_compute_us.load(std::memory_order_relaxed);
}

size_t Engine::queue_size() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->pending.size();
}

}  // namespace ember::engine
