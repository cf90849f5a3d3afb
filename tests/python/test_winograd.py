"""ember.dnnl.conv2d_wino (Winograd F(2x2,3x3), cpp/src/kernels/winograd.cc) end to end: the
convs dispatch's rule picks (3x3, stride 1, pad 1, NHWC, 64-256 channels, or 16-63 and 512 with
enough tiles) run on it, their outputs match ONNX Runtime, the rest stay on ember.dnnl.conv2d, and
EMBER_WINOGRAD=0 turns it off."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_matches_ort, make_model, ort_run
from onnx import TensorProto, helper

import ember
from ember.compiler.dispatch import WINOGRAD_ENV


def _block_model(n: int | str, c: int, h: int, w: int, post: str = "relu") -> onnx.ModelProto:
    """A ResNet basic block at stride 1: conv3x3+bias+ReLU, conv3x3+bias, + x, then `post`
    ("relu", "clip" for ReLU6, "none" or "sigmoid")."""
    rng = np.random.default_rng(c + h)
    scale = 1.0 / np.sqrt(9 * c)
    inits = [
        ("w1", (rng.standard_normal((c, c, 3, 3)) * scale).astype(np.float32)),
        ("b1", rng.standard_normal(c).astype(np.float32) * 0.1),
        ("w2", (rng.standard_normal((c, c, 3, 3)) * scale).astype(np.float32)),
        ("b2", rng.standard_normal(c).astype(np.float32) * 0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "x"], ["s"]),
    ]
    if post == "relu":
        nodes.append(helper.make_node("Relu", ["s"], ["y"]))
    elif post == "clip":
        inits += [("lo", np.array(0.0, np.float32)), ("hi", np.array(6.0, np.float32))]
        nodes.append(helper.make_node("Clip", ["s", "lo", "hi"], ["y"]))
    elif post == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["s"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["s"], ["y"]))
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c, h, w])],
        inits,
    )


def _feeds(n: int, c: int, h: int, w: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(n * h).standard_normal((n, c, h, w)).astype(np.float32)}


def _compile(model: onnx.ModelProto, path: Path, **kwargs: object) -> ember.Artifact:
    return ember.compile(model, output=path, **{"batch_sizes": None, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "c", "h", "w", "post"),
    [
        (1, 64, 9, 11, "relu"),  # odd H, W: tiles cut at the edges
        (3, 64, 8, 8, "clip"),
        (1, 128, 7, 7, "none"),  # the residual add is the last fused op
        (2, 72, 5, 6, "relu"),  # channels not a multiple of 8: the transforms' portable tail
    ],
)
def test_winograd_convs_match_ort(
    n: int, c: int, h: int, w: int, post: str, tmp_path: Path
) -> None:
    model = _block_model(n, c, h, w, post)
    feeds = _feeds(n, c, h, w)
    artifact = _compile(model, tmp_path / "a")
    stats = artifact.manifest["kernel_library"]
    assert stats["conv_layout"] == "NHWC"
    assert stats["conv2d"] == stats["conv2d_wino"] == 2  # both convs, through the Winograd kernel
    assert stats["residual"] == 1
    assert_matches_ort(ember.load(artifact.path).run(feeds), ort_run(model, feeds))


def test_winograd_in_batch_splitting_lanes(tmp_path: Path) -> None:
    """Buckets (2, 4): 4 rows run as two single-threaded lanes of 2, each calling the kernel from
    inside a parallel region, and odd row counts run a bucket padded or in pieces."""
    model = _block_model("N", 64, 10, 9)
    artifact = ember.compile(model, batch_sizes=(2, 4), output=tmp_path / "a")
    assert artifact.manifest["kernel_library"]["conv2d_wino"] == 4  # 2 convs x 2 buckets
    compiled = ember.load(artifact.path)
    for rows in (4, 3, 1):
        feeds = _feeds(rows, 64, 10, 9)
        assert_matches_ort(compiled.run(feeds), ort_run(model, feeds))


def test_env_var_turns_winograd_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _block_model(1, 64, 8, 8)
    feeds = _feeds(1, 64, 8, 8)
    monkeypatch.setenv(WINOGRAD_ENV, "0")
    artifact = _compile(model, tmp_path / "off")
    stats = artifact.manifest["kernel_library"]
    assert stats["conv2d"] == 2 and "conv2d_wino" not in stats
    assert_matches_ort(ember.load(artifact.path).run(feeds), ort_run(model, feeds))


def _single_conv(
    n: int, c: int, k: int, hw: int, kernel: int = 3, stride: int = 1, post: str = "relu"
) -> onnx.ModelProto:
    rng = np.random.default_rng(k)
    pad = kernel // 2
    out = (hw + 2 * pad - kernel) // stride + 1
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[pad] * 4, strides=[stride, stride]),
        helper.make_node("Sigmoid" if post == "sigmoid" else "Relu", ["c"], ["y"]),
    ]
    weight = (rng.standard_normal((k, c, kernel, kernel)) / np.sqrt(9 * c)).astype(np.float32)
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, k, out, out])],
        [("w", weight)],
    )


IDS = ["3x3", "stride2", "5x5", "c32", "c16-k32-b32", "c16-k16-b32", "c32-b8", "sigmoid"]
IDS += ["c512-b1", "c512-b16"]


@pytest.mark.parametrize(
    ("case", "winograd"),
    [
        ((1, 64, 64, 8, 3, 1, "relu"), True),
        ((1, 64, 64, 8, 3, 2, "relu"), False),  # stride 2
        ((1, 64, 64, 8, 5, 1, "relu"), False),  # 5x5
        ((1, 32, 32, 8, 3, 1, "relu"), False),  # < 64 channels and 16 tiles: too thin
        ((32, 16, 32, 8, 3, 1, "relu"), True),  # the digits CNN's conv at batch 32: 512 tiles
        ((32, 16, 16, 8, 3, 1, "relu"), False),  # 16 -> 16 channels: no faster
        ((8, 32, 32, 8, 3, 1, "relu"), False),  # 128 tiles: slower
        ((1, 64, 64, 8, 3, 1, "sigmoid"), False),  # an activation the kernel does not fuse
        ((1, 512, 512, 7, 3, 1, "relu"), False),  # 512 channels, 16 tiles: slower than direct
        ((16, 512, 512, 7, 3, 1, "relu"), True),  # 512 channels, 256 tiles: faster
    ],
    ids=IDS,
)
def test_dispatch_rule(case: tuple[int, ...], winograd: bool, tmp_path: Path) -> None:
    n, c, k, hw, kernel, stride, post = case
    model = _single_conv(n, c, k, hw, kernel, stride, str(post))
    feeds = _feeds(n, c, hw, hw)
    artifact = _compile(model, tmp_path / "a")
    stats = artifact.manifest["kernel_library"]
    assert stats["conv2d"] == 1
    assert stats.get("conv2d_wino", 0) == int(winograd)
    assert_matches_ort(ember.load(artifact.path).run(feeds), ort_run(model, feeds))


def test_a_few_channel_cnn_runs_winograd_in_nhwc_where_its_large_bucket_gains(
    tmp_path: Path,
) -> None:
    """16 -> 32 channels would run blocked (NCHW8c) by oneDNN, but at batch 32 the Winograd
    kernel is faster, and that needs NHWC: the batch-32 bucket's FLOPs outvote batch 1's. With
    only batch 1, the conv stays blocked."""
    rng = np.random.default_rng(7)
    weight = (rng.standard_normal((32, 16, 3, 3)) / 12).astype(np.float32)
    model = make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32, 8, 8])],
        [("w", weight)],
    )
    both = _compile(model, tmp_path / "both", batch_sizes=(1, 32))
    stats = both.manifest["kernel_library"]
    assert stats["conv_layout"] == "NHWC" and stats["conv2d_wino"] == 1  # batch 32 only
    alone = _compile(model, tmp_path / "alone", batch_sizes=(1,))
    stats = alone.manifest["kernel_library"]
    assert stats["conv_layout"] == "NCHW8c" and "conv2d_wino" not in stats
    for batch in (1, 32):
        feeds = _feeds(batch, 16, 8, 8)
        assert_matches_ort(ember.load(both.path).run(feeds), ort_run(model, feeds))


@pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-g++") is None,
    reason="needs the aarch64 cross compiler (apt-get install g++-aarch64-linux-gnu)",
)
def test_aarch64_targets_keep_the_direct_conv(tmp_path: Path) -> None:
    """The rule was measured on x86-64 only: aarch64 artifacts call ember.dnnl.conv2d."""
    artifact = _compile(_block_model(1, 64, 8, 8), tmp_path / "arm", target="aarch64")
    stats = artifact.manifest["kernel_library"]
    assert stats["conv2d"] == 2 and "conv2d_wino" not in stats
