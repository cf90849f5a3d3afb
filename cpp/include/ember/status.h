// Status / Result<T>: the only error vocabulary of the ember core.
// Worker threads never throw across the core's API; every fallible call returns one of these.
#pragma once

#include <cassert>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>

namespace ember {

// Each code maps to exactly one Python exception class (see bindings/errors.cc).
enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // bad input from the caller: unknown name, wrong shape/dtype
  kNotFound = 2,         // missing file, function or input
  kIntegrityError = 3,   // checksum mismatch: artifact modified after build
  kIncompatible = 4,     // artifact built for another CPU/arch/runtime
  kRuntimeError = 5,     // failure inside the TVM runtime or a kernel
  kInternal = 6,         // a bug in ember
  kDeadlineExceeded = 7,  // a request's deadline passed before it started running
  kQueueFull = 8,         // the engine's queue is at max_queue_size: rejected at once
  kClosed = 9,            // the engine is closed (or closing without drain)
};
constexpr size_t kNumStatusCodes = 10;  // one past the last StatusCode

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status IntegrityError(std::string m) { return {StatusCode::kIntegrityError, std::move(m)}; }
  static Status Incompatible(std::string m) { return {StatusCode::kIncompatible, std::move(m)}; }
  static Status RuntimeError(std::string m) { return {StatusCode::kRuntimeError, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  static Status DeadlineExceeded(std::string m) { return {StatusCode::kDeadlineExceeded, std::move(m)}; }
  static Status QueueFull(std::string m) { return {StatusCode::kQueueFull, std::move(m)}; }
  static Status Closed(std::string m) { return {StatusCode::kClosed, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "InvalidArgument: <message>", for logs and the standalone runner.
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Either a value or a non-ok Status. Accessing value() of an error is a programming bug.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!status_.ok() && "Result constructed from an ok Status without a value");
    if (status_.ok()) status_ = Status::Internal("Result constructed from an ok Status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace ember

#define EMBER_CONCAT_INNER_(a, b) a##b
#define EMBER_CONCAT_(a, b) EMBER_CONCAT_INNER_(a, b)

#define EMBER_RETURN_IF_ERROR(expr)            \
  do {                                         \
    ::ember::Status ember_status_ = (expr);    \
    if (!ember_status_.ok()) return ember_status_; \
  } while (0)

#define EMBER_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

#define EMBER_ASSIGN_OR_RETURN(lhs, expr) \
  EMBER_ASSIGN_OR_RETURN_IMPL_(EMBER_CONCAT_(ember_result_, __LINE__), lhs, expr)
