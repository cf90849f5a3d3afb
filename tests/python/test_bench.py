"""`ember bench`: one schema for every runner (ember here, ONNX Runtime, emulated aarch64 through
a stand-in bundle, a device over TVM RPC), the Markdown and PNG reports, and clear errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ember.bench import RESULT_KEYS, BenchError, validate_results
from ember.bench.defaults import DEFAULT_SYSROOT
from ember.bench.inputs import outputs_delta
from ember.bench.schema import EMULATED_LABEL, PERCENTILES
from ember.cli import main

BATCHES = (1, 8)
LEVELS = (1, 4)


def run_cli(*args: str | Path) -> tuple[int, str]:
    """`ember ARGS` in this process; returns the exit code and what it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, err.getvalue()


def load_results(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "results.json").read_text())
    return doc


def rows_of(doc: dict[str, Any], target: str, runner: str) -> list[dict[str, Any]]:
    return [r for r in doc["results"] if r["target"] == target and r["runner"] == runner]


def table_rows(markdown: str, section: str) -> list[list[str]]:
    """The body rows of the table under `## section` (cells stripped)."""
    lines = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    table = [line for line in lines if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The issue's command for cpu and the ORT baseline, run once: (out dir, stderr)."""
    out = tmp_path_factory.mktemp("bench") / "cpu"
    code, err = run_cli(
        "bench", "digits_mlp", "--targets", "cpu", "--batch-sizes", "1,8",
        "--concurrency", "1,4", "--min-time", "0.2", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    return out, err


def test_json_has_one_schema_for_every_cell(cpu_run: tuple[Path, str]) -> None:
    out, _ = cpu_run
    doc = load_results(out)
    validate_results(doc)
    assert doc["model"]["name"] == "digits_mlp" and doc["baseline"] == "onnxruntime"
    assert (doc["batch_sizes"], doc["concurrency"]) == (list(BATCHES), list(LEVELS))
    cells = {(b, c) for b in BATCHES for c in LEVELS}
    for target, runner in (("cpu", "local"), ("onnxruntime", "baseline")):
        rows = rows_of(doc, target, runner)
        assert {(r["batch"], r["concurrency"]) for r in rows} == cells
        for row in rows:
            assert list(row) == list(RESULT_KEYS)
            assert row["status"] == "ok" and row["emulated"] is False, row
            values = [row[k] for k in PERCENTILES]
            assert values[0] > 0 and values == sorted(values), values
            assert row["throughput_rows_s"] > 0 and row["requests"] >= 3
            assert row["peak_rss_mb"] > 50  # the whole bench process
            device = row["device"]
            assert device["arch"] == "x86_64" and device["cores_usable"] >= 1
            assert {"cpu_model", "isa_features", "memory_gb", "os", "versions"} <= set(device)
            assert device["versions"]["onnxruntime"] and device["versions"]["tvm"]
    for row in rows_of(doc, "cpu", "local"):
        assert row["max_abs_delta"] < 1e-4 and row["cosine"] > 0.999999
        assert row["compile_s"] > 0 and row["tune_s"] == 0
    assert doc["artifacts"]["cpu"]["reused"] is False
    assert Path(doc["artifacts"]["cpu"]["path"], "manifest.json").is_file()


def test_markdown_has_a_row_per_cell(cpu_run: tuple[Path, str]) -> None:
    out, _ = cpu_run
    doc = load_results(out)
    rows = table_rows((out / "results.md").read_text(), "Device speed")
    assert len(rows) == len(doc["results"]) == 8
    assert {(r[0], r[1], r[3], r[4]) for r in rows} == {
        (t, runner, str(b), str(c))
        for t, runner in (("cpu", "local"), ("onnxruntime", "baseline"))
        for b in BATCHES
        for c in LEVELS
    }
    by_cell = {(r[0], r[3], r[4]): r for r in rows}
    json_row = rows_of(doc, "cpu", "local")[0]
    assert float(by_cell["cpu", "1", "1"][5]) == pytest.approx(json_row["p50_ms"], rel=0.01)


def test_png_is_a_readable_plot(cpu_run: tuple[Path, str]) -> None:
    out, _ = cpu_run
    data = (out / "results.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert 800 <= width <= 4000 and 500 <= height <= 3000
    import matplotlib.image

    pixels = matplotlib.image.imread(out / "results.png")
    assert pixels.std() > 0.05  # bars, axes and text, not a blank canvas


def test_progress_line_per_cell_and_compile(cpu_run: tuple[Path, str]) -> None:
    _, err = cpu_run
    lines = err.splitlines()
    assert "[bench] compiling digits_mlp for cpu (batch 1,8)" in lines
    for label in ("cpu", "onnxruntime"):
        for b in BATCHES:
            for c in LEVELS:
                prefix = f"[bench] {label} b={b} c={c}: p50 "
                line = next(line for line in lines if line.startswith(prefix))
                assert line.split(", ")[1].endswith(" rows/s"), line


FAKE_QEMU = """\
#!/bin/sh
# Stands in for qemu-aarch64: logs its arguments, drops -L SYSROOT, exports -E's VAR=VALUE
# and runs the rest natively.
if [ "$1" = "--version" ]; then echo "qemu-aarch64 version 9.9.9 (test stand-in)"; exit 0; fi
echo "$@" >> "{log}"
[ "$1" = "-L" ] || {{ echo "expected -L SYSROOT first" >&2; exit 9; }}
[ "$3" = "-E" ] || {{ echo "expected -E VAR=VALUE second" >&2; exit 9; }}
export "$4"
shift 4
exec "$@"
"""

FAKE_EMBER_RUN = """\
#!{python}
# Stands in for the aarch64 ember-run: runs the model with ONNX Runtime, adds 1e-3 to every
# output (so the bench must read these files to see the delta), writes them, prints the JSON.
import json, os, sys
import numpy as np
import onnxruntime as ort

args = sys.argv[1:]
artifact, inputs, out_dir, iterations = args[0], {{}}, None, 1
i = 1
while i < len(args):
    if args[i] == "--input":
        name, path = args[i + 1].split("=", 1)
        inputs[name] = np.load(path)
    elif args[i] == "--output-dir":
        out_dir = args[i + 1]
    elif args[i] == "--iterations":
        iterations = int(args[i + 1])
    i += 1 if args[i] == "--json" else 2
with open({log!r}, "a") as log:
    log.write(json.dumps({{"artifact": artifact, "ld": os.environ.get("LD_LIBRARY_PATH")}}) + "\\n")
session = ort.InferenceSession({model!r})
names = [o.name for o in session.get_outputs()]
os.makedirs(out_dir, exist_ok=True)
outputs = []
for name, value in zip(names, session.run(names, inputs)):
    path = os.path.join(out_dir, name + ".npy")
    np.save(path, value + np.float32(1e-3))
    outputs.append({{"name": name, "dtype": str(value.dtype), "shape": list(value.shape),
                    "file": path}})
rows = len(next(iter(inputs.values())))
latency = {{"min": 4.0, "p50": 5.0, "p90": 6.0, "p99": 7.0, "max": 8.0, "mean": 5.0}}
print(json.dumps({{"model": "digits_mlp", "iterations": iterations, "batch_rows": rows,
                  "latency_ms": latency, "throughput_rows_per_s": rows * 200.0,
                  "outputs": outputs}}))
"""


def make_fake_bundle(root: Path, model: Path) -> tuple[Path, Path, Path]:
    """A bundle whose bin/ember-run is a script, and a qemu stand-in; returns (bundle, qemu,
    log)."""
    bundle = root / "bundle"
    (bundle / "bin").mkdir(parents=True)
    (bundle / "lib").mkdir()
    log = root / "calls.log"
    runner = bundle / "bin" / "ember-run"
    runner.write_text(FAKE_EMBER_RUN.format(python=sys.executable, log=str(log), model=str(model)))
    qemu = root / "qemu-aarch64"
    qemu.write_text(FAKE_QEMU.format(log=str(root / "qemu.log")))
    for script in (runner, qemu):
        script.chmod(0o755)
    return bundle, qemu, log


def test_emulated_rows_are_labelled_and_never_device_speed(tmp_path: Path) -> None:
    from ember.samples import digits_mlp

    model = tmp_path / "digits.onnx"
    model.write_bytes(digits_mlp()[0].SerializeToString())
    bundle, qemu, log = make_fake_bundle(tmp_path, model)
    out = tmp_path / "out"
    code, err = run_cli(
        "bench", "digits_mlp", "--targets", "aarch64", "--batch-sizes", "1,8",
        "--concurrency", "1,2", "--min-time", "0.1", "--out", out,
        "--aarch64-bundle", bundle, "--qemu", qemu, "--emulated-iterations", "3",
    )  # fmt: skip
    assert code == 0, err
    doc = load_results(out)
    validate_results(doc)
    rows = rows_of(doc, "aarch64", "emulated")
    ran = [r for r in rows if r["status"] == "ok"]
    assert [(r["batch"], r["concurrency"]) for r in ran] == [(1, 1), (8, 1)]
    for row in ran:
        assert row["emulated"] is True and row["device"]["emulated"] is True
        assert row["device"]["emulator"] == "qemu-aarch64 version 9.9.9 (test stand-in)"
        assert row["p50_ms"] == 5.0 and row["p95_ms"] is None and row["requests"] == 3
        assert row["max_abs_delta"] == pytest.approx(1e-3, rel=1e-3)  # read from its files
        assert row["compile_s"] > 0
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert [(r["batch"], r["concurrency"]) for r in skipped] == [(1, 2), (8, 2)]
    assert all("not run emulated" in r["reason"] for r in skipped)

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    artifact = Path(doc["artifacts"]["aarch64"]["path"])
    assert [Path(c["artifact"]) for c in calls] == [artifact, artifact]
    assert all(c["ld"] == str((bundle / "lib").resolve()) for c in calls)
    assert json.loads((artifact / "manifest.json").read_text())["target"]["arch"] == "aarch64"
    qemu_args = (tmp_path / "qemu.log").read_text().split()
    assert qemu_args[:5] == [
        "-L",
        str(DEFAULT_SYSROOT),
        "-E",
        f"LD_LIBRARY_PATH={(bundle / 'lib').resolve()}",
        str(bundle / "bin" / "ember-run"),
    ]

    markdown = (out / "results.md").read_text()
    speed = table_rows(markdown, "Device speed")
    assert {r[0] for r in speed} == {"onnxruntime"}  # no emulated number on the speed table
    title = EMULATED_LABEL[0].upper() + EMULATED_LABEL[1:]
    emulated = table_rows(markdown, title)
    assert [(r[0], r[1], r[2]) for r in emulated] == [
        ("aarch64", EMULATED_LABEL, "1"),
        ("aarch64", EMULATED_LABEL, "8"),
    ]
    not_run = table_rows(markdown, "Not run")
    assert [r[1] for r in not_run] == [EMULATED_LABEL, EMULATED_LABEL]
    assert "emulated, not device speed" in err
    assert (out / "results.png").stat().st_size > 10_000


REPO = Path(__file__).resolve().parents[2]
REAL_BUNDLE = REPO / "build" / "aarch64-bundle"


@pytest.mark.skipif(
    not (REAL_BUNDLE / "bin" / "ember-run").is_file() or shutil.which("qemu-aarch64") is None,
    reason="needs the aarch64 bundle (tools/build_aarch64_bundle.sh) and qemu-aarch64 (qemu-user)",
)
def test_real_aarch64_bundle_under_qemu_matches_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, err = run_cli(
        "bench", "digits_mlp", "--targets", "aarch64", "--batch-sizes", "1,8",
        "--min-time", "0.1", "--out", out, "--aarch64-bundle", REAL_BUNDLE,
        "--emulated-iterations", "1",
    )  # fmt: skip
    assert code == 0, err
    doc = load_results(out)
    validate_results(doc)
    rows = rows_of(doc, "aarch64", "emulated")
    assert [(r["batch"], r["status"]) for r in rows] == [(1, "ok"), (8, "ok")], rows
    for row in rows:
        assert row["max_abs_delta"] < 1e-4 and row["cosine"] > 0.999999
        assert row["device"]["emulator"].startswith("qemu-aarch64 version")


def test_missing_bundle_skips_without_compiling(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, err = run_cli(
        "bench", "digits_mlp", "--targets", "aarch64", "--baseline", "none", "--out", out,
        "--aarch64-bundle", tmp_path / "no-bundle", "--batch-sizes", "1",
    )  # fmt: skip
    assert code == 0, err
    doc = load_results(out)
    validate_results(doc)
    [row] = doc["results"]
    assert (row["target"], row["runner"], row["status"]) == ("aarch64", "emulated", "skipped")
    assert row["emulated"] is True
    assert row["reason"] == (
        f"no aarch64 bundle at {tmp_path / 'no-bundle'} (run tools/build_aarch64_bundle.sh)"
    )
    assert not (out / "artifacts").exists()  # nothing compiled that cannot run anywhere
    assert table_rows((out / "results.md").read_text(), "Not run")[0][-1] == row["reason"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server(*command: str, port_end: bool = False) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Start an RPC server subprocess on a free loopback port; yields (port, process)."""
    port = free_port()
    extra = ["--port-end", str(port + 1)] if port_end else []
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its session processes end with it
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        yield port, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)


def ember_command() -> list[str]:
    return [sys.executable, "-c", "import sys, ember.cli; sys.exit(ember.cli.main())"]


def test_remote_rows_through_ember_rpc_server(cpu_run: tuple[Path, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(cpu_run[0] / "artifacts", out / "artifacts")
    with server(*ember_command(), "rpc-server") as (port, _):
        code, err = run_cli(
            "bench", "digits_mlp", "--targets", "cpu", "--batch-sizes", "1,8",
            "--concurrency", "1,4", "--min-time", "0.1", "--out", out, "--reuse",
            "--remote", f"127.0.0.1:{port}",
        )  # fmt: skip
    assert code == 0, err
    doc = load_results(out)
    validate_results(doc)
    assert doc["artifacts"]["cpu"]["reused"] is True
    assert doc["remote"]["remote"] == f"127.0.0.1:{port}"
    rows = rows_of(doc, "cpu", "remote")
    ran = [r for r in rows if r["status"] == "ok"]
    assert [(r["batch"], r["concurrency"]) for r in ran] == [(1, 1), (8, 1)]
    for row in ran:
        assert row["max_abs_delta"] < 1e-4 and row["cosine"] > 0.999999
        assert row["requests"] >= 20 and row["p50_ms"] > 0
        assert row["device"]["remote"] == f"127.0.0.1:{port}"
        assert "ember.dnnl.matmul" in row["device"]["ember_functions"]
    assert all("not run over RPC" in r["reason"] for r in rows if r["status"] == "skipped")
    assert len(rows_of(doc, "cpu", "local")) == 4  # the host runs alongside the device


def test_reused_artifacts_run_where_tvm_cannot_be_imported(
    cpu_run: tuple[Path, str], tmp_path: Path
) -> None:
    """A host that only runs prebuilt artifacts (a GPU box, a device) may lack TVM's 259 MB
    compiler: with --reuse the plan comes from the artifact's manifest, not from TVM."""
    out = tmp_path / "out"
    shutil.copytree(cpu_run[0] / "artifacts", out / "artifacts")
    no_tvm = "import sys; sys.modules['tvm'] = None; import ember.cli; sys.exit(ember.cli.main())"
    proc = subprocess.run(
        [sys.executable, "-c", no_tvm, "bench", "digits_mlp", "--targets", "cpu",
         "--batch-sizes", "1,8", "--min-time", "0.1", "--out", str(out), "--reuse"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "reusing" in proc.stderr
    doc = load_results(out)
    assert doc["artifacts"]["cpu"]["reused"] is True
    rows = rows_of(doc, "cpu", "local")
    assert [(r["batch"], r["status"]) for r in rows] == [(1, "ok"), (8, "ok")]
    assert all(r["max_abs_delta"] < 1e-4 for r in rows)


def test_stock_tvm_rpc_server_is_refused_clearly(tmp_path: Path) -> None:
    with server(sys.executable, "-m", "tvm.exec.rpc_server", port_end=True) as (port, _):
        code, err = run_cli(
            "bench", "digits_mlp", "--out", tmp_path, "--remote", f"127.0.0.1:{port}"
        )
    assert code == 1
    assert f"127.0.0.1:{port} is a TVM RPC server without ember's functions" in err
    assert "ember rpc-server" in err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--targets", "cpu,tpu"], 1, "unknown target 'tpu'; known targets: cpu, x86-avx2"),
        (["--batch-sizes", "1,x"], 2, "--batch-sizes wants positive integers like 1,8,32"),
        (["--batch-sizes", "0,8"], 2, "--batch-sizes wants positive integers like 1,8,32"),
        (["--concurrency", ""], 2, "--concurrency wants positive integers"),
        (["--min-time", "0"], 2, "wants seconds > 0"),
        (["--remote", "no-port"], 1, "--remote wants HOST:PORT"),
    ],
)
def test_bad_options_fail_clearly(args: list[str], code: int, message: str, tmp_path: Path) -> None:
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            got = main(["bench", "digits_mlp", "--out", str(tmp_path), *args])
        except SystemExit as exc:  # argparse
            got = int(exc.code or 0)
    assert got == code
    assert message in err.getvalue()
    assert not (tmp_path / "artifacts").exists()


def test_unreachable_remote_fails_before_compiling(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    code, err = run_cli("bench", "digits_mlp", "--out", tmp_path, "--remote", f"127.0.0.1:{port}")
    assert code == 1
    assert f"cannot reach an RPC server at 127.0.0.1:{port}" in err
    assert f"ember rpc-server --port {port}" in err
    assert not (tmp_path / "artifacts").exists()


def test_unknown_model_names_the_samples(tmp_path: Path) -> None:
    code, err = run_cli("bench", "no_such_model", "--out", tmp_path)
    assert code == 1
    assert "MODEL 'no_such_model' is neither an ONNX file nor a sample name" in err
    assert "digits_mlp" in err


def test_schema_validation_rejects_bad_rows(cpu_run: tuple[Path, str]) -> None:
    doc = load_results(cpu_run[0])
    row = next(r for r in doc["results"] if r["status"] == "ok")
    unordered = {**row, "p50_ms": row["p999_ms"] + 1}
    mislabelled = {**row, "runner": "emulated"}  # emulated numbers must say so
    no_reason = {**row, "status": "skipped", "reason": None}
    for bad in (unordered, mislabelled, no_reason, {**row, "throughput_rows_s": 0.0}):
        with pytest.raises(BenchError, match="results do not match the schema"):
            validate_results({**doc, "results": [bad]})


def test_outputs_delta() -> None:
    a = {"y": np.array([[1.0, 2.0]], np.float32)}
    assert outputs_delta(a, a) == (0.0, pytest.approx(1.0))
    max_abs, cosine = outputs_delta({"y": a["y"] * -1}, a)
    assert max_abs == 4.0 and cosine == pytest.approx(-1.0)
    with pytest.raises(BenchError, match=r"outputs \['y'\] are missing"):
        outputs_delta({"z": a["y"]}, a)


def test_rpc_server_help_and_bench_help() -> None:
    for command in (["bench", "--help"], ["rpc-server", "--help"]):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
            main(command)
        assert exc.value.code == 0
        assert "usage: ember " + command[0] in out.getvalue()
