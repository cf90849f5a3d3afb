#include "ember/status.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "test_util.h"

namespace ember {
namespace {

using ::ember::testing::IsError;

TEST(StatusTest, DefaultIsOk) {
  const Status status;
  EXPECT_TRUE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kOk);
  EXPECT_EQ(status.message(), "");
  EXPECT_EQ(status.ToString(), "Ok");
  EXPECT_TRUE(Status::Ok().ok());
}

TEST(StatusTest, EachFactoryGivesItsCodeAndKeepsTheWholeMessage) {
  // Longer than any fixed-size buffer a careless formatter might use.
  const std::string long_message(5000, 'x');
  const struct {
    Status status;
    StatusCode code;
    const char* name;
  } cases[] = {
      {Status::InvalidArgument(long_message), StatusCode::kInvalidArgument, "InvalidArgument"},
      {Status::NotFound(long_message), StatusCode::kNotFound, "NotFound"},
      {Status::IntegrityError(long_message), StatusCode::kIntegrityError, "IntegrityError"},
      {Status::Incompatible(long_message), StatusCode::kIncompatible, "Incompatible"},
      {Status::RuntimeError(long_message), StatusCode::kRuntimeError, "RuntimeError"},
      {Status::Internal(long_message), StatusCode::kInternal, "Internal"},
      {Status::DeadlineExceeded(long_message), StatusCode::kDeadlineExceeded, "DeadlineExceeded"},
      {Status::QueueFull(long_message), StatusCode::kQueueFull, "QueueFull"},
      {Status::Closed(long_message), StatusCode::kClosed, "Closed"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_FALSE(c.status.ok());
    EXPECT_EQ(c.status.code(), c.code);
    EXPECT_EQ(c.status.message(), long_message);
    EXPECT_STREQ(StatusCodeName(c.code), c.name);
    EXPECT_EQ(c.status.ToString(), std::string(c.name) + ": " + long_message);
  }
}

TEST(StatusTest, CodesAreStable) {
  // The bindings map these numbers to exception classes; renumbering would break them.
  EXPECT_EQ(static_cast<int>(StatusCode::kOk), 0);
  EXPECT_EQ(static_cast<int>(StatusCode::kInvalidArgument), 1);
  EXPECT_EQ(static_cast<int>(StatusCode::kNotFound), 2);
  EXPECT_EQ(static_cast<int>(StatusCode::kIntegrityError), 3);
  EXPECT_EQ(static_cast<int>(StatusCode::kIncompatible), 4);
  EXPECT_EQ(static_cast<int>(StatusCode::kRuntimeError), 5);
  EXPECT_EQ(static_cast<int>(StatusCode::kInternal), 6);
  EXPECT_EQ(static_cast<int>(StatusCode::kDeadlineExceeded), 7);
  EXPECT_EQ(static_cast<int>(StatusCode::kQueueFull), 8);
  EXPECT_EQ(static_cast<int>(StatusCode::kClosed), 9);
  EXPECT_EQ(kNumStatusCodes, 10u);
  EXPECT_STREQ(StatusCodeName(StatusCode::kOk), "Ok");
  EXPECT_STREQ(StatusCodeName(static_cast<StatusCode>(99)), "Unknown");
}

TEST(ResultTest, HoldsAValue) {
  Result<std::string> result(std::string("hello"));
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(result.status().ok());
  EXPECT_EQ(result.value(), "hello");
  result.value() += "!";
  EXPECT_EQ(result.value(), "hello!");
  const std::string moved = std::move(result).value();
  EXPECT_EQ(moved, "hello!");
}

TEST(ResultTest, HoldsAnError) {
  const Result<int> result(Status::NotFound("no such thing"));
  EXPECT_FALSE(result.ok());
  EXPECT_TRUE(IsError(result.status(), StatusCode::kNotFound, "no such thing"));
}

TEST(ResultTest, HoldsMoveOnlyValues) {
  Result<std::unique_ptr<int>> result(std::make_unique<int>(7));
  ASSERT_TRUE(result.ok());
  std::unique_ptr<int> owned = std::move(result).value();
  ASSERT_NE(owned, nullptr);
  EXPECT_EQ(*owned, 7);
}

#ifdef NDEBUG
TEST(ResultTest, OkStatusWithoutValueBecomesInternalInReleaseBuilds) {
  const Result<int> result(Status::Ok());
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kInternal);
}
#else
TEST(ResultDeathTest, OkStatusWithoutValueAssertsInDebugBuilds) {
  EXPECT_DEATH({ const Result<int> result(Status::Ok()); (void)result; }, "ok Status");
}
#endif

// --- Propagation macros. Each helper records how far it got, to prove early returns happen. ---

Result<int> ParsePositive(int x) {
  if (x <= 0) return Status::InvalidArgument("not positive: " + std::to_string(x));
  return x;
}

Status CheckEven(int x) {
  if (x % 2 != 0) return Status::InvalidArgument("odd: " + std::to_string(x));
  return Status::Ok();
}

// Uses EMBER_ASSIGN_OR_RETURN twice on one line each, declaring and assigning.
Result<int> SumOfPositives(int a, int b, std::vector<std::string>* trace) {
  EMBER_ASSIGN_OR_RETURN(int first, ParsePositive(a));
  trace->push_back("first");
  int second = 0;
  EMBER_ASSIGN_OR_RETURN(second, ParsePositive(b));
  trace->push_back("second");
  return first + second;
}

Status CheckBothEven(int a, int b, std::vector<std::string>* trace) {
  EMBER_RETURN_IF_ERROR(CheckEven(a));
  trace->push_back("a");
  EMBER_RETURN_IF_ERROR(CheckEven(b));
  trace->push_back("b");
  return Status::Ok();
}

// EMBER_ASSIGN_OR_RETURN inside a function that returns Status rather than Result.
Status StoreHalf(int x, int* out) {
  EMBER_ASSIGN_OR_RETURN(int positive, ParsePositive(x));
  EMBER_RETURN_IF_ERROR(CheckEven(positive));
  *out = positive / 2;
  return Status::Ok();
}

TEST(MacrosTest, AssignOrReturnAssignsOnSuccess) {
  std::vector<std::string> trace;
  const Result<int> sum = SumOfPositives(2, 3, &trace);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum.value(), 5);
  EXPECT_EQ(trace, (std::vector<std::string>{"first", "second"}));
}

TEST(MacrosTest, AssignOrReturnPropagatesTheFirstError) {
  std::vector<std::string> trace;
  EXPECT_TRUE(IsError(SumOfPositives(-1, -2, &trace).status(), StatusCode::kInvalidArgument,
                      "not positive: -1"));
  EXPECT_TRUE(trace.empty());

  trace.clear();
  EXPECT_TRUE(IsError(SumOfPositives(1, -2, &trace).status(), StatusCode::kInvalidArgument,
                      "not positive: -2"));
  EXPECT_EQ(trace, std::vector<std::string>{"first"});
}

TEST(MacrosTest, ReturnIfErrorStopsAtTheFirstError) {
  std::vector<std::string> trace;
  EXPECT_TRUE(CheckBothEven(2, 4, &trace).ok());
  EXPECT_EQ(trace, (std::vector<std::string>{"a", "b"}));

  trace.clear();
  EXPECT_TRUE(IsError(CheckBothEven(2, 5, &trace), StatusCode::kInvalidArgument, "odd: 5"));
  EXPECT_EQ(trace, std::vector<std::string>{"a"});

  trace.clear();
  EXPECT_TRUE(IsError(CheckBothEven(3, 5, &trace), StatusCode::kInvalidArgument, "odd: 3"));
  EXPECT_TRUE(trace.empty());
}

TEST(MacrosTest, AssignOrReturnWorksInAStatusFunction) {
  int half = -1;
  EXPECT_TRUE(StoreHalf(8, &half).ok());
  EXPECT_EQ(half, 4);

  half = -1;
  EXPECT_TRUE(IsError(StoreHalf(0, &half), StatusCode::kInvalidArgument, "not positive: 0"));
  EXPECT_TRUE(IsError(StoreHalf(3, &half), StatusCode::kInvalidArgument, "odd: 3"));
  EXPECT_EQ(half, -1);
}

}  // namespace
}  // namespace ember
