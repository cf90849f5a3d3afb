"""The `ember` command: compile, run, info and demo, as a user would call them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import mlp, ort_run

from ember.cli import main


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "mlp.onnx"
    onnx.save(mlp(), path)
    return path


def test_compile_run_info(
    onnx_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "art"
    assert (
        main(
            [
                "compile",
                str(onnx_file),
                "--target",
                "cpu",
                "--batch-sizes",
                "1,8,32",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == str(out)

    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert (
        main(
            [
                "run",
                str(out),
                "--input",
                f"x={tmp_path / 'x.npy'}",
                "--output-dir",
                str(tmp_path / "outs"),
            ]
        )
        == 0
    )
    assert "y: float32[3, 5]" in capsys.readouterr().out
    expected = ort_run(mlp(), {"x": x})["y"]
    np.testing.assert_allclose(np.load(tmp_path / "outs" / "y.npy"), expected, rtol=1e-4, atol=1e-4)

    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    for needle in (
        "model",
        "mlp",
        "batch buckets",
        "1, 8, 32",
        "x: float32[batch, 16]",
        "TVM 0.27",
    ):
        assert needle in info


def test_cli_errors_are_one_clear_line(
    onnx_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compile", str(onnx_file), "--target", "tpu", "-o", str(tmp_path / "a")]) == 1
    assert "UnknownTargetError: unknown target 'tpu'" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert "is not an ember artifact" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compile", str(onnx_file), "--batch-sizes", "a,b", "-o", str(tmp_path / "b")])


def test_console_script_demo(tmp_path: Path) -> None:
    """`ember demo`: trains on real digits, serves them through the core, compares with ORT."""
    result = subprocess.run(
        [sys.executable, "-m", "ember.cli", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    accuracy = next(line for line in lines if line.startswith("accuracy")).split()
    assert float(accuracy[1]) >= 0.95 and float(accuracy[2]) >= 0.95
    diff_line = next(line for line in lines if line.startswith("max |ember - ORT|"))
    assert float(diff_line.split(":")[1].split()[0]) <= 1e-4
    assert "PASS" in result.stdout


def test_cli_conv_layout_choices_match_the_compiler() -> None:
    from ember.cli import CONV_LAYOUT_CHOICES
    from ember.compiler.dispatch import CONV_LAYOUTS

    assert CONV_LAYOUT_CHOICES == CONV_LAYOUTS
