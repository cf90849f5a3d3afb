// ember-run: runs a compiled ember artifact without Python. Loads the artifact through the core
// (checksums and CPU compatibility verified there), reads inputs from .npy files or makes
// deterministic random ones, runs warmup + timed iterations, prints latency statistics (a table,
// or one JSON object with --json) and optionally writes the last run's outputs as .npy files.
//
// Exit status: 0 success; 1 artifact or runtime error; 2 bad usage or bad inputs.

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "ember/model.h"
#include "ember/npy.h"
#include "ember/status.h"
#include "ember/tensor.h"

namespace ember::run {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;  // the artifact cannot be loaded or run
constexpr int kExitUsage = 2;  // bad command line or inputs

constexpr const char* kUsage =
    R"(usage: ember-run ARTIFACT [--input NAME=FILE.npy ...] [--random-inputs BATCH]
                 [--output-dir DIR] [--warmup N] [--iterations N] [--threads N] [--json]

Runs a compiled ember artifact without Python: verifies it (checksums, CPU compatibility), loads
it, runs it on the given inputs and prints latency statistics.

arguments:
  ARTIFACT               the artifact directory (manifest.json, model.so, checksums.json)
  --input NAME=FILE.npy  read the input NAME from a .npy file (repeat for each input)
  --random-inputs BATCH  fill every input with BATCH rows of deterministic random values
                         (floats in [-1, 1), integers in [0, 16), booleans 0/1)
  --output-dir DIR       write each output of the last run to DIR/<output name>.npy
                         (characters other than letters, digits, '.', '_', '-' become '_')
  --warmup N             untimed runs before timing (default 3)
  --iterations N         timed runs (default 20)
  --threads N            threads for OpenMP/oneDNN and TVM (default, as `import ember` sets it:
                         OMP_NUM_THREADS if set, else EMBER_NUM_THREADS, else the physical cores)
  --json                 print the results as one JSON object instead of a table
  -h, --help             show this help and exit

exit status: 0 success, 1 artifact or runtime error, 2 bad usage or bad inputs
)";

// A failure with the exit status it maps to.
struct Failure {
  int exit_code;
  std::string message;
  bool usage_hint = false;  // a command-line mistake: point at --help
};

// Bad inputs (the core's InvalidArgument, an unreadable .npy) exit 2; the rest exit 1.
Failure FromStatus(const Status& status) {
  const bool input_error = status.code() == StatusCode::kInvalidArgument;
  return {input_error ? kExitUsage : kExitError, status.ToString()};
}

int ReportFailure(const Failure& failure) {
  std::cerr << "ember-run: error: " << failure.message << "\n";
  if (failure.usage_hint) std::cerr << "run 'ember-run --help' for usage\n";
  return failure.exit_code;
}

struct InputFile {
  std::string name;
  std::string path;
};

struct Options {
  std::string artifact;
  std::vector<InputFile> inputs;
  std::optional<int64_t> random_batch;
  std::optional<std::string> output_dir;
  int64_t warmup = 3;
  int64_t iterations = 20;
  std::optional<int64_t> threads;
  bool json = false;
  bool help = false;
};

std::optional<int64_t> ParseInt(const std::string& text) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || text.empty()) return std::nullopt;
  return value;
}

// Parses the command line; --opt VALUE and --opt=VALUE are both accepted.
Result<Options> ParseArgs(const std::vector<std::string>& args) {
  Options options;
  const auto fail = [](const std::string& m) { return Status::InvalidArgument(m); };
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    std::optional<std::string> inline_value;
    if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos) {
      inline_value = arg.substr(arg.find('=') + 1);
      arg = arg.substr(0, arg.find('='));
    }
    const auto value = [&]() -> Result<std::string> {
      if (inline_value) return *inline_value;
      if (i + 1 >= args.size()) return fail("option " + arg + " needs a value");
      return args[++i];
    };
    const auto count = [&](int64_t minimum) -> Result<int64_t> {
      EMBER_ASSIGN_OR_RETURN(const std::string text, value());
      const std::optional<int64_t> n = ParseInt(text);
      if (!n || *n < minimum) {
        return fail("option " + arg + " needs an integer >= " + std::to_string(minimum) +
                    ", got '" + text + "'");
      }
      return *n;
    };
    if (arg == "-h" || arg == "--help") {
      options.help = true;
    } else if (arg == "--json" && !inline_value) {
      options.json = true;
    } else if (arg == "--input") {
      EMBER_ASSIGN_OR_RETURN(const std::string spec, value());
      const size_t eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
        return fail("--input needs NAME=FILE.npy, got '" + spec + "'");
      }
      options.inputs.push_back({spec.substr(0, eq), spec.substr(eq + 1)});
    } else if (arg == "--random-inputs") {
      EMBER_ASSIGN_OR_RETURN(options.random_batch, count(1));
    } else if (arg == "--output-dir") {
      EMBER_ASSIGN_OR_RETURN(options.output_dir, value());
    } else if (arg == "--warmup") {
      EMBER_ASSIGN_OR_RETURN(options.warmup, count(0));
    } else if (arg == "--iterations") {
      EMBER_ASSIGN_OR_RETURN(options.iterations, count(1));
    } else if (arg == "--threads") {
      EMBER_ASSIGN_OR_RETURN(options.threads, count(1));
    } else if (arg.size() > 1 && arg[0] == '-') {
      return fail("unknown option '" + args[i] + "'");
    } else if (options.artifact.empty()) {
      options.artifact = arg;
    } else {
      return fail("one ARTIFACT expected, got '" + options.artifact + "' and '" + arg + "'");
    }
  }
  if (options.help) return options;
  if (options.artifact.empty()) return fail("no ARTIFACT directory given");
  if (options.random_batch && !options.inputs.empty()) {
    return fail("give inputs either with --input or with --random-inputs, not both");
  }
  return options;
}

// --- Threads: the same count the Python package configures (python/ember/_threads.py). ---

// Physical cores among the CPUs this process may run on (hyperthread siblings count once).
int PhysicalCores() {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  if (sched_getaffinity(0, sizeof(cpus), &cpus) != 0) return std::max(1, omp_get_num_procs());
  std::set<std::pair<std::string, std::string>> cores;
  int allowed = 0;
  bool topology_known = true;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &cpus)) continue;
    ++allowed;
    const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream package_file(dir + "physical_package_id"), core_file(dir + "core_id");
    std::string package, core;
    if (!(package_file >> package) || !(core_file >> core)) topology_known = false;
    cores.emplace(package, core);
  }
  return std::max(1, topology_known ? static_cast<int>(cores.size()) : allowed);
}

std::optional<int64_t> PositiveEnv(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr) return std::nullopt;
  const std::optional<int64_t> n = ParseInt(text);
  return n && *n > 0 ? n : std::nullopt;
}

// Sizes OpenMP's pool (oneDNN and, through the core's shared pool, TVM's parallel loops) and
// TVM's own pool before the model loads. `requested` (--threads) overrides everything; otherwise,
// as in Python, EMBER_NUM_THREADS or the physical cores, unless OMP_NUM_THREADS/TVM_NUM_THREADS
// are set. Returns the thread count the core will use.
int ConfigureThreads(std::optional<int64_t> requested) {
  constexpr int64_t kMaxThreads = 4096;
  const int64_t wanted =
      requested.value_or(PositiveEnv("EMBER_NUM_THREADS").value_or(PhysicalCores()));
  const int threads = static_cast<int>(std::min(wanted, kMaxThreads));
  const bool user_omp = std::getenv("OMP_NUM_THREADS") != nullptr;  // libgomp read it at startup
  if (requested || !user_omp) omp_set_num_threads(threads);
  setenv("TVM_NUM_THREADS", std::to_string(threads).c_str(), requested ? 1 : 0);
  return omp_get_max_threads();
}

// --- Inputs. ---

struct Input {
  std::string name;
  std::string source;  // the .npy path, or "random"
  HostTensor tensor;
};

// Encodes k / 1024 for k in [-1024, 1024) as an IEEE half (exactly representable).
uint16_t HalfOfKth1024(int k) {
  if (k == 0) return 0;
  const uint16_t sign = k < 0 ? 0x8000 : 0;
  const auto magnitude = static_cast<uint32_t>(k < 0 ? -k : k);  // 1..1024
  int top = 31;
  while (!(magnitude >> top & 1u)) --top;  // value = 1.m * 2^(top - 10)
  const auto exponent = static_cast<uint16_t>(top - 10 + 15);
  const auto mantissa = static_cast<uint16_t>((magnitude << (10 - top)) & 0x3FF);
  return static_cast<uint16_t>(sign | exponent << 10 | mantissa);
}

template <typename T>
void FillEach(void* data, size_t count, std::mt19937_64& rng, T (*make)(uint64_t)) {
  auto* out = static_cast<T*>(data);
  for (size_t i = 0; i < count; ++i) out[i] = make(rng());
}

// Deterministic values (mt19937_64's output is fixed by the standard), seeded by the input's
// position: floats in [-1, 1), integers in [0, 16), booleans 0/1.
Status FillRandom(HostTensor& tensor, uint64_t seed) {
  std::mt19937_64 rng(0x656d626572ULL + seed);
  const size_t count = static_cast<size_t>(NumElements(tensor.shape()));
  void* data = tensor.data();
  const DLDataType dtype = tensor.dtype();
  const size_t bytes = DTypeBytes(dtype);
  if (dtype.code == kDLFloat && bytes == 4) {
    FillEach<float>(data, count, rng, [](uint64_t x) {
      return static_cast<float>(static_cast<double>(x >> 40) / 8388608.0 - 1.0);  // 2^24 steps
    });
  } else if (dtype.code == kDLFloat && bytes == 8) {
    FillEach<double>(data, count, rng, [](uint64_t x) {
      return static_cast<double>(x >> 11) / 4503599627370496.0 - 1.0;  // 2^53 steps
    });
  } else if (dtype.code == kDLFloat && bytes == 2) {
    FillEach<uint16_t>(data, count, rng,
                       [](uint64_t x) { return HalfOfKth1024(static_cast<int>(x >> 53) - 1024); });
  } else if (dtype.code == kDLInt || dtype.code == kDLUInt || dtype.code == kDLBool) {
    const uint64_t modulus = dtype.code == kDLBool ? 2 : 16;
    auto* out = static_cast<unsigned char*>(data);
    for (size_t i = 0; i < count; ++i) {
      const uint64_t value = rng() % modulus;  // little-endian: the low byte first, rest zero
      std::memcpy(out + i * bytes, &value, std::min<size_t>(bytes, sizeof(value)));
    }
  } else {
    return Status::InvalidArgument("--random-inputs cannot make values of dtype " +
                                   DTypeName(dtype));
  }
  return Status::Ok();
}

Result<std::vector<Input>> MakeInputs(const Options& options, const Manifest& manifest) {
  std::vector<Input> inputs;
  if (options.random_batch) {
    for (size_t i = 0; i < manifest.inputs.size(); ++i) {
      const TensorSpec& spec = manifest.inputs[i];
      const std::vector<int64_t> shape = spec.ShapeWithBatch(*options.random_batch);
      EMBER_ASSIGN_OR_RETURN(HostTensor tensor, HostTensor::Allocate(spec.dtype, shape));
      const Status filled = FillRandom(tensor, i);
      if (!filled.ok()) {
        return Status::InvalidArgument("input '" + spec.name + "': " + filled.message());
      }
      inputs.push_back({spec.name, "random", std::move(tensor)});
    }
    return inputs;
  }
  for (const InputFile& file : options.inputs) {
    Result<HostTensor> tensor = npy::ReadFile(file.path);
    if (!tensor.ok()) {
      // A missing or unreadable file is the caller's mistake: report it as a bad input.
      return Status::InvalidArgument("input '" + file.name + "': " + tensor.status().message());
    }
    inputs.push_back({file.name, file.path, std::move(tensor).value()});
  }
  return inputs;
}

// --- Outputs. ---

// A file name for an output: letters, digits, '.', '_' and '-' kept, anything else '_'; never
// hidden or empty; distinct, ignoring case (for case-insensitive file systems), from the names
// already `used` (kept lower-case).
std::string SafeFileName(const std::string& name, std::set<std::string>& used) {
  constexpr size_t kMaxChars = 200;
  std::string safe;
  for (const char c : name.substr(0, kMaxChars)) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    safe += ok ? c : '_';
  }
  if (safe.empty() || safe[0] == '.') safe.insert(0, "_");
  const auto lower = [](std::string text) {
    for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return text;
  };
  std::string candidate = safe;
  for (int n = 2; used.count(lower(candidate)) != 0; ++n) {
    candidate = safe + "_" + std::to_string(n);
  }
  used.insert(lower(candidate));
  return candidate + ".npy";
}

Result<std::vector<std::string>> WriteOutputs(const std::string& dir, const Manifest& manifest,
                                              const std::vector<HostTensor>& outputs) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return Status::RuntimeError("cannot create the output directory '" + dir +
                                "': " + error.message());
  }
  std::set<std::string> used;
  std::vector<std::string> paths;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const std::string file = SafeFileName(manifest.outputs[i].name, used);
    const std::string path = (std::filesystem::path(dir) / file).string();
    EMBER_RETURN_IF_ERROR(npy::WriteFile(path, outputs[i].view()));
    paths.push_back(path);
  }
  return paths;
}

// --- Statistics and reporting. ---

struct LatencyStats {
  double min = 0, p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
};

// Nearest-rank percentiles of `ms` (not empty).
LatencyStats Summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  const auto rank = [&](double p) {
    const auto k = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(ms.size())));
    return ms[std::min(ms.size() - 1, k == 0 ? 0 : k - 1)];
  };
  LatencyStats s;
  s.min = ms.front();
  s.max = ms.back();
  s.p50 = rank(50);
  s.p90 = rank(90);
  s.p99 = rank(99);
  double sum = 0;
  for (double v : ms) sum += v;
  s.mean = sum / static_cast<double>(ms.size());
  return s;
}

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned>(c));
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string JsonNumber(double value) {
  if (!std::isfinite(value)) return "null";
  char text[32];
  std::snprintf(text, sizeof(text), "%.9g", value);
  return text;
}

std::string JsonShape(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

struct Results {
  const Manifest* manifest = nullptr;
  std::string artifact;
  int threads = 0;
  int64_t rows = 0;
  int64_t warmup = 0;
  int64_t iterations = 0;
  LatencyStats latency;
  double rows_per_second = 0;
  const std::vector<Input>* inputs = nullptr;
  const std::vector<HostTensor>* outputs = nullptr;
  std::vector<std::string> output_files;  // empty without --output-dir
};

void PrintJson(const Results& r, std::ostream& os) {
  const Manifest& m = *r.manifest;
  os << "{\"model\": " << JsonString(m.model_name) << ", \"artifact\": " << JsonString(r.artifact)
     << ", \"target\": " << JsonString(m.target_name) << ", \"target_kind\": "
     << JsonString(m.target_kind) << ", \"target_arch\": " << JsonString(m.target_arch)
     << ", \"threads\": " << r.threads << ", \"batch_rows\": " << r.rows
     << ", \"warmup\": " << r.warmup << ", \"iterations\": " << r.iterations << ", \"inputs\": [";
  for (size_t i = 0; i < r.inputs->size(); ++i) {
    const Input& in = (*r.inputs)[i];
    os << (i ? ", " : "") << "{\"name\": " << JsonString(in.name)
       << ", \"dtype\": " << JsonString(DTypeName(in.tensor.dtype()))
       << ", \"shape\": " << JsonShape(in.tensor.shape())
       << ", \"source\": " << JsonString(in.source) << "}";
  }
  os << "], \"outputs\": [";
  for (size_t i = 0; i < r.outputs->size(); ++i) {
    const HostTensor& out = (*r.outputs)[i];
    os << (i ? ", " : "") << "{\"name\": " << JsonString(m.outputs[i].name)
       << ", \"dtype\": " << JsonString(DTypeName(out.dtype()))
       << ", \"shape\": " << JsonShape(out.shape()) << ", \"file\": "
       << (r.output_files.empty() ? "null" : JsonString(r.output_files[i])) << "}";
  }
  const LatencyStats& l = r.latency;
  os << "], \"latency_ms\": {\"min\": " << JsonNumber(l.min) << ", \"p50\": " << JsonNumber(l.p50)
     << ", \"p90\": " << JsonNumber(l.p90) << ", \"p99\": " << JsonNumber(l.p99)
     << ", \"max\": " << JsonNumber(l.max) << ", \"mean\": " << JsonNumber(l.mean)
     << "}, \"throughput_rows_per_s\": " << JsonNumber(r.rows_per_second) << "}\n";
}

void PrintTable(const Results& r, std::ostream& os) {
  const Manifest& m = *r.manifest;
  char line[256];
  os << "model        " << m.model_name << "\n"
     << "artifact     " << r.artifact << "\n"
     << "target       " << m.target_name << " (" << m.target_kind << ", " << m.target_arch << ")\n"
     << "threads      " << r.threads << "\n";
  for (const Input& in : *r.inputs) {
    os << "input        " << in.name << ": " << DTypeName(in.tensor.dtype())
       << ShapeToString(in.tensor.shape()) << " from " << in.source << "\n";
  }
  for (size_t i = 0; i < r.outputs->size(); ++i) {
    const HostTensor& out = (*r.outputs)[i];
    os << "output       " << m.outputs[i].name << ": " << DTypeName(out.dtype())
       << ShapeToString(out.shape());
    if (!r.output_files.empty()) os << " -> " << r.output_files[i];
    os << "\n";
  }
  os << "batch rows   " << r.rows << "\n"
     << "warmup       " << r.warmup << "\n"
     << "iterations   " << r.iterations << "\n\n";
  const LatencyStats& l = r.latency;
  std::snprintf(line, sizeof(line), "%-14s %10s %10s %10s %10s %10s %10s\n", "latency (ms)", "min",
                "p50", "p90", "p99", "max", "mean");
  os << line;
  std::snprintf(line, sizeof(line), "%-14s %10.4f %10.4f %10.4f %10.4f %10.4f %10.4f\n", "", l.min,
                l.p50, l.p90, l.p99, l.max, l.mean);
  os << line;
  std::snprintf(line, sizeof(line), "throughput     %.1f rows/s\n", r.rows_per_second);
  os << line;
}

// --- The run. ---

int Main(const std::vector<std::string>& args) {
  Result<Options> parsed = ParseArgs(args);
  if (!parsed.ok()) return ReportFailure({kExitUsage, parsed.status().message(), true});
  const Options& options = parsed.value();
  if (options.help) {
    std::cout << kUsage;
    return kExitOk;
  }

  const int threads = ConfigureThreads(options.threads);
  Result<std::unique_ptr<runtime::Model>> loaded = runtime::Model::Load(options.artifact);
  if (!loaded.ok()) return ReportFailure({kExitError, loaded.status().ToString()});
  runtime::Model& model = *loaded.value();
  const Manifest& manifest = model.manifest();

  Result<std::vector<Input>> made = MakeInputs(options, manifest);
  if (!made.ok()) return ReportFailure(FromStatus(made.status()));
  const std::vector<Input>& inputs = made.value();
  runtime::NamedTensorViews views;
  for (const Input& in : inputs) views.emplace_back(in.name, in.tensor.view());
  // The core's validation: names, dtypes, shapes and one row count, before anything runs.
  auto validated = model.ValidateInputs(views);
  if (!validated.ok()) return ReportFailure(FromStatus(validated.status()));
  const int64_t rows = manifest.has_batch_axis() ? validated.value().second : 1;

  for (int64_t i = 0; i < options.warmup; ++i) {
    auto warm = model.Run(views);
    if (!warm.ok()) return ReportFailure(FromStatus(warm.status()));
  }
  std::vector<double> latencies_ms;
  latencies_ms.reserve(static_cast<size_t>(options.iterations));
  std::vector<HostTensor> last_outputs;
  for (int64_t i = 0; i < options.iterations; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto result = model.Run(views);
    const auto stop = std::chrono::steady_clock::now();
    if (!result.ok()) return ReportFailure(FromStatus(result.status()));
    latencies_ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
    last_outputs = std::move(result).value();
  }

  Results results;
  results.manifest = &manifest;
  results.artifact = options.artifact;
  results.threads = threads;
  results.rows = rows;
  results.warmup = options.warmup;
  results.iterations = options.iterations;
  results.latency = Summarize(latencies_ms);
  const double mean_ms = results.latency.mean;
  results.rows_per_second = mean_ms > 0 ? static_cast<double>(rows) * 1000.0 / mean_ms : 0;
  results.inputs = &inputs;
  results.outputs = &last_outputs;
  if (options.output_dir) {
    auto written = WriteOutputs(*options.output_dir, manifest, last_outputs);
    if (!written.ok()) return ReportFailure({kExitError, written.status().ToString()});
    results.output_files = std::move(written).value();
  }
  if (options.json) {
    PrintJson(results, std::cout);
  } else {
    PrintTable(results, std::cout);
  }
  std::cout.flush();
  return std::cout ? kExitOk : kExitError;
}

}  // namespace
}  // namespace ember::run

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    return ember::run::Main(args);
  } catch (const std::exception& error) {
    std::cerr << "ember-run: error: internal error: " << error.what() << "\n";
  } catch (...) {
    std::cerr << "ember-run: error: internal error (unknown exception)\n";
  }
  return ember::run::kExitError;
}
