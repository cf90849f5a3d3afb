"""Small models trained on scikit-learn's bundled 8x8 digits (no download): an MLP and a CNN.

They give tests and demos a real accuracy to check, measured by running the ONNX model itself.
Training runs BLAS on one thread, so a seed gives the same weights whatever the core count.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from threadpoolctl import threadpool_limits

from .zoo import GraphBuilder, flatten_via_shape

__all__ = [
    "DigitsData",
    "digits_cnn",
    "digits_mlp",
    "load_digits_split",
    "onnx_accuracy",
    "train_digits_mlp",
]


@dataclass(frozen=True)
class DigitsData:
    """Stratified train/held-out split of the digits; x is float32 pixels/16 in [0, 1], y int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split(seed: int = 0) -> DigitsData:
    """Loads sklearn's digits and holds out a stratified 25%; x has shape (n, 64)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=seed
    )
    return DigitsData(x_train, y_train, x_test, y_test)


def onnx_accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of `model` (one input, logits first output) run in onnxruntime on CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float(np.mean(np.argmax(logits, axis=1) == y))


def digits_mlp(seed: int = 0) -> tuple[onnx.ModelProto, float]:
    """MLP 64-128-10 (ReLU) trained with sklearn's MLPClassifier, exported as MatMul/Add/Relu.

    Returns the model (input `x` [batch, 64], output `logits` [batch, 10]) and held-out accuracy.
    """
    data = load_digits_split(seed)
    model = train_digits_mlp(data.x_train, data.y_train, seed)
    return model, onnx_accuracy(model, data.x_test, data.y_test)


def train_digits_mlp(x: np.ndarray, y: np.ndarray, seed: int = 0) -> onnx.ModelProto:
    """Trains the 64-128-10 MLP on rows `x` [n, 64] with labels `y` and exports it to ONNX (what
    a retraining hook does with recent data)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=(128,), activation="relu", max_iter=400, random_state=seed
    )
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        # Adam converges in ~260 epochs; should it stop at max_iter, the accuracy still tells.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)

    g = GraphBuilder("digits_mlp")
    xin = g.input("x", ["batch", 64])
    h = g.op("MatMul", xin, g.weight("fc1.weight", clf.coefs_[0]))
    h = g.op("Relu", g.op("Add", h, g.weight("fc1.bias", clf.intercepts_[0])))
    h = g.op("MatMul", h, g.weight("fc2.weight", clf.coefs_[1]))
    g.op("Add", h, g.weight("fc2.bias", clf.intercepts_[1]), out="logits")
    g.output("logits", ["batch", 10])
    return g.build()


# Digits CNN: Conv(1->16) Relu Conv(16->32) Relu MaxPool2 Flatten Linear(512->64) Relu
# Linear(64->10), trained with Adam in vectorized numpy. Activations are NHWC, weights ONNX layouts.


def _im2col(x: np.ndarray) -> np.ndarray:
    """3x3/pad-1 patches of NHWC `x` as rows (n*h*w, c*9), columns ordered (c, kh, kw) like ONNX."""
    n, h, w, c = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    return windows.reshape(n * h * w, c * 9)  # windows: (n, h, w, c, 3, 3)


def _col2im(cols: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Adjoint of `_im2col`: scatters-adds patch gradients back to an NHWC gradient."""
    n, h, w, c = shape
    patches = cols.reshape(n, h, w, c, 3, 3)
    padded = np.zeros((n, h + 2, w + 2, c), dtype=cols.dtype)
    for kh in range(3):
        for kw in range(3):
            padded[:, kh : kh + h, kw : kw + w, :] += patches[..., kh, kw]
    return padded[:, 1:-1, 1:-1, :]


class _DigitsCnn:
    """Parameters (ONNX layouts) plus forward/backward of the digits CNN on NHWC batches."""

    def __init__(self, rng: np.random.Generator) -> None:
        def he(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
            scale = np.float32(np.sqrt(2.0 / fan_in))
            return rng.standard_normal(shape, dtype=np.float32) * scale

        self.params: dict[str, np.ndarray] = {
            "conv1.weight": he((16, 1, 3, 3), 9),
            "conv1.bias": np.zeros(16, np.float32),
            "conv2.weight": he((32, 16, 3, 3), 144),
            "conv2.bias": np.zeros(32, np.float32),
            "fc1.weight": he((64, 512), 512),
            "fc1.bias": np.zeros(64, np.float32),
            "fc2.weight": he((10, 64), 64) / np.float32(2.0),
            "fc2.bias": np.zeros(10, np.float32),
        }

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """x: (n, 8, 8, 1) -> logits (n, 10) and the cache needed by `backward`."""
        p = self.params
        n = x.shape[0]
        cols1 = _im2col(x)
        a1 = np.maximum(cols1 @ p["conv1.weight"].reshape(16, 9).T + p["conv1.bias"], 0)
        a1 = a1.reshape(n, 8, 8, 16)
        cols2 = _im2col(a1)
        a2 = np.maximum(cols2 @ p["conv2.weight"].reshape(32, 144).T + p["conv2.bias"], 0)
        a2 = a2.reshape(n, 8, 8, 32)
        blocks = a2.reshape(n, 4, 2, 4, 2, 32)
        pooled = blocks.max(axis=(2, 4))  # (n, 4, 4, 32)
        flat = pooled.transpose(0, 3, 1, 2).reshape(n, 512)  # NCHW flatten order, as in ONNX
        h = np.maximum(flat @ p["fc1.weight"].T + p["fc1.bias"], 0)
        logits = h @ p["fc2.weight"].T + p["fc2.bias"]
        cache = {"cols1": cols1, "a1": a1, "cols2": cols2, "a2": a2, "pooled": pooled}
        cache.update(flat=flat, h=h)
        return logits, cache

    def backward(self, dlogits: np.ndarray, cache: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Gradients of every parameter given dL/dlogits."""
        p = self.params
        n = dlogits.shape[0]
        grads = {"fc2.weight": dlogits.T @ cache["h"], "fc2.bias": dlogits.sum(0)}
        dh = (dlogits @ p["fc2.weight"]) * (cache["h"] > 0)
        grads["fc1.weight"] = dh.T @ cache["flat"]
        grads["fc1.bias"] = dh.sum(0)
        dpooled = (dh @ p["fc1.weight"]).reshape(n, 32, 4, 4).transpose(0, 2, 3, 1)
        a2, pooled = cache["a2"], cache["pooled"]
        blocks = a2.reshape(n, 4, 2, 4, 2, 32)
        mask = blocks == pooled[:, :, None, :, None, :]
        # Ties only happen among zeros, whose gradient the ReLU below discards anyway.
        da2 = (mask * dpooled[:, :, None, :, None, :]).reshape(n, 8, 8, 32)
        dz2 = (da2 * (a2 > 0)).reshape(n * 64, 32)
        grads["conv2.weight"] = (dz2.T @ cache["cols2"]).reshape(32, 16, 3, 3)
        grads["conv2.bias"] = dz2.sum(0)
        da1 = _col2im(dz2 @ p["conv2.weight"].reshape(32, 144), (n, 8, 8, 16))
        dz1 = (da1 * (cache["a1"] > 0)).reshape(n * 64, 16)
        grads["conv1.weight"] = (dz1.T @ cache["cols1"]).reshape(16, 1, 3, 3)
        grads["conv1.bias"] = dz1.sum(0)
        return grads


def _train_cnn(
    data: DigitsData, seed: int, epochs: int = 30, batch_size: int = 32, lr: float = 2e-3
) -> dict[str, np.ndarray]:
    """Adam with softmax cross-entropy and a cosine learning-rate decay; returns the parameters."""
    rng = np.random.default_rng(seed)
    net = _DigitsCnn(rng)
    x = data.x_train.reshape(-1, 8, 8, 1)
    y = data.y_train
    m = {k: np.zeros_like(v) for k, v in net.params.items()}
    v = {k: np.zeros_like(val) for k, val in net.params.items()}
    beta1, beta2, eps, weight_decay = 0.9, 0.999, 1e-8, 1e-4
    steps_per_epoch = -(-len(x) // batch_size)
    total, step = epochs * steps_per_epoch, 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            logits, cache = net.forward(x[idx])
            shifted = logits - logits.max(axis=1, keepdims=True)
            probs = np.exp(shifted)
            probs /= probs.sum(axis=1, keepdims=True)
            probs[np.arange(len(idx)), y[idx]] -= 1.0
            grads = net.backward(probs / len(idx), cache)
            step += 1
            rate = lr * 0.5 * (1.0 + np.cos(np.pi * (step - 1) / total))
            for k, param in net.params.items():
                grad = grads[k].astype(np.float32) + weight_decay * param
                m[k] = beta1 * m[k] + (1 - beta1) * grad
                v[k] = beta2 * v[k] + (1 - beta2) * grad * grad
                m_hat = m[k] / (1 - beta1**step)
                v_hat = v[k] / (1 - beta2**step)
                param -= (rate * m_hat / (np.sqrt(v_hat) + eps)).astype(np.float32)
    return net.params


def digits_cnn(seed: int = 0) -> tuple[onnx.ModelProto, float]:
    """Small CNN trained in pure numpy on (n, 1, 8, 8) digit images.

    Returns the model (input `x` [batch, 1, 8, 8], output `logits` [batch, 10]) and its
    held-out accuracy.
    """
    data = load_digits_split(seed)
    with threadpool_limits(limits=1):
        params = _train_cnn(data, seed)

    g = GraphBuilder("digits_cnn")
    x = g.input("x", ["batch", 1, 8, 8])
    for name in ("conv1", "conv2"):
        w = g.weight(f"{name}.weight", params[f"{name}.weight"])
        b = g.weight(f"{name}.bias", params[f"{name}.bias"])
        x = g.op(
            "Conv",
            x,
            w,
            b,
            dilations=[1, 1],
            group=1,
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
        )
        x = g.op("Relu", x)
    x = g.op("MaxPool", x, kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2], ceil_mode=0)
    x = flatten_via_shape(g, x)
    w1, b1 = g.weight("fc1.weight", params["fc1.weight"]), g.weight("fc1.bias", params["fc1.bias"])
    x = g.op("Relu", g.op("Gemm", x, w1, b1, alpha=1.0, beta=1.0, transB=1))
    w2, b2 = g.weight("fc2.weight", params["fc2.weight"]), g.weight("fc2.bias", params["fc2.bias"])
    g.op("Gemm", x, w2, b2, out="logits", alpha=1.0, beta=1.0, transB=1)
    g.output("logits", ["batch", 10])
    model = g.build()
    return model, onnx_accuracy(model, data.x_test.reshape(-1, 1, 8, 8), data.y_test)
