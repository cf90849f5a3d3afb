"""Smoke test for benchmarks/quantization.py (CI runs benchmarks once): the digits MLP through
ember's and ONNX Runtime's int8 paths, checking the table comes out and int8 kept accuracy."""

from __future__ import annotations

import pytest

import quantization


def test_quantization_script_runs_on_the_digits_mlp(capsys: pytest.CaptureFixture[str]) -> None:
    assert quantization.main(["--models", "digits_mlp", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "| digits_mlp |" in out
    assert "ember int8: acc 0.98" in out  # fp32 is 0.9822 on the held-out split
    assert "ember int8-weight: acc 0.98" in out
    assert "'matmul_q8': 8" in out  # both MatMuls at each of the 4 buckets ran in int8
    # ORT's own QDQ model, compiled by ember, runs on the int8 kernels too and keeps accuracy.
    assert "ember on ORT's int8 model: acc 0.98" in out
    assert "ember on ORT's int8 model: kernels {'name': 'dnnl'" in out
    assert out.count("'matmul_q8': 8") == 2
