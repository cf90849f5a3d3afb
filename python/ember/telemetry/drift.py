"""Input drift detection: per-feature two-sample tests of recent rows against a reference sample.

Statistics, per feature (m features):

* KS (decides by default): the two-sample Kolmogorov-Smirnov statistic D = sup |F_ref - F_cur|,
  computed exactly, with the asymptotic p-value from Kolmogorov's limit law at
  sqrt(n_ref * n_cur / (n_ref + n_cur)) * D. The family-wise false positive rate is held at `alpha`
  with Bonferroni: a feature drifts when p < alpha / m. The limit law is slightly conservative
  at finite sample sizes. Ties (discrete features: digits pixels take 17 values) do not inflate
  false positives: D with ties never exceeds D after breaking the ties at random, which is
  continuous data with the usual null distribution, so the p-value is conservative for discrete
  data. tests/python/test_drift.py checks the false positive rate on Gaussian data and on the
  real digits pixels. A feature constant at the same value in both samples has D = 0 and
  never drifts.
* PSI: sum((c - r) * ln(c / r)) over bins cut at reference quantiles (deciles by default). The
  edges are data values, deduplicated for discrete features, and a bin holding under half its
  share of the reference is merged into its neighbour (slivers make PSI noise). A bin empty in
  one sample counts as `EMPTY_BIN_ROWS` (half a row) of that sample: an epsilon that scales
  with the sample, where a fixed 1e-4 makes every empty bin of a small sample look like drift.
  Under no drift PSI is about (1/n_ref + 1/n_cur) * chi2(bins - 1) (it is the symmetric KL
  divergence, a chi-square statistic to second order), so the default `psi_threshold` is that
  scale times the chi2 quantile at 1 - alpha / m: larger samples get smaller thresholds. The
  approximation needs tens of current rows per bin; with fewer, chance exceeds it more often
  than alpha, which is one reason KS decides by default. A fixed threshold (the industry's 0.1
  or 0.25) ignores sample size: small samples cross it by chance, large ones hide drift under it.

The decision: with `psi_threshold=None` KS with Bonferroni decides ("ks+bonferroni") and PSI
with its sample-size threshold is reported alongside as an effect size; with a fixed
`psi_threshold` PSI above it decides ("psi"). `DriftReport.method` names the rule.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from .errors import DriftError

EMPTY_BIN_ROWS = 0.5  # a bin empty in one sample counts as half a row of it (PSI's epsilon)
_CHUNK_ELEMENTS = 1 << 22  # features are tested in blocks of about this many pooled values

DataLike = np.ndarray | Mapping[str, np.ndarray]


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's test results: PSI against its threshold and the KS statistic and p-value."""

    feature: str
    psi: float
    psi_threshold: float
    ks_statistic: float
    ks_pvalue: float
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    """The outcome of one drift check over every feature; `drifted` when any feature drifted."""

    drifted: bool
    n_reference: int
    n_current: int
    alpha: float
    corrected_alpha: float
    features: tuple[FeatureDrift, ...]
    drifted_features: tuple[str, ...]
    method: str

    def summary(self, max_names: int = 5) -> str:
        """One line for logs: the verdict, the rule, the sample sizes and the drifted features."""
        sizes = (
            f"{self.method}, alpha={self.alpha:g} (per feature {self.corrected_alpha:.3g}), "
            f"n_reference={self.n_reference}, n_current={self.n_current}"
        )
        if not self.drifted:
            return f"no drift in {len(self.features)} features ({sizes})"
        names = ", ".join(self.drifted_features[:max_names])
        if len(self.drifted_features) > max_names:
            names += f", ... ({len(self.drifted_features) - max_names} more)"
        counts = f"{len(self.drifted_features)}/{len(self.features)}"
        return f"drift in {counts} features ({sizes}): {names}"


class DriftDetector:
    """Tests recent inputs against a reference sample, feature by feature, for distribution drift.

    `observe` keeps a sampled sliding window of serving rows cheaply; `check` tests it (or any
    sample). See the module docstring for the statistics. Thread-safe.
    """

    def __init__(
        self,
        reference: DataLike,
        *,
        alpha: float = 0.01,
        psi_threshold: float | None = None,
        bins: int = 10,
        sample_rate: float = 1.0,
        window: int = 2048,
        feature_names: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        if not 0.0 < alpha < 1.0:
            raise DriftError(f"alpha must be in (0, 1) (a false positive rate), got {alpha!r}")
        if psi_threshold is not None and not (math.isfinite(psi_threshold) and psi_threshold > 0):
            raise DriftError(
                f"psi_threshold must be a positive number or None, got {psi_threshold}"
            )
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise DriftError(f"bins must be an integer >= 2, got {bins!r}")
        if not 0.0 < sample_rate <= 1.0:
            raise DriftError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise DriftError(f"window must be an integer >= 2 (rows), got {window!r}")

        self.alpha = float(alpha)
        self.psi_threshold = None if psi_threshold is None else float(psi_threshold)
        self.bins = bins
        self.sample_rate = float(sample_rate)
        self.window = window

        self._input_names: tuple[str, ...] | None = None
        self._input_widths: tuple[int, ...] = ()
        if isinstance(reference, Mapping):
            self._input_names = tuple(reference)
            if not self._input_names:
                raise DriftError("reference mapping is empty; expected {input name: array}")
            blocks = [
                _rows_2d(np.asarray(reference[name]), f"reference[{name!r}]")
                for name in self._input_names
            ]
            self._input_widths = tuple(block.shape[1] for block in blocks)
            reference_rows = _check_finite(_concat_inputs(blocks, self._input_names), "reference")
            default_names = _mapping_feature_names(self._input_names, self._input_widths)
        else:
            reference_rows = _check_finite(
                _rows_2d(np.asarray(reference), "reference"), "reference"
            )
            default_names = [f"feature_{i}" for i in range(reference_rows.shape[1])]
        n_reference, n_features = reference_rows.shape
        if n_reference < 2:
            raise DriftError(f"reference has {n_reference} row(s); drift tests need at least 2")
        if n_features < 1:
            raise DriftError("reference rows have no features")
        if feature_names is None:
            names = default_names
        else:
            names = [str(name) for name in feature_names]
            if len(names) != n_features:
                raise DriftError(
                    f"feature_names has {len(names)} names for {n_features} reference features"
                )
        self.feature_names: tuple[str, ...] = tuple(names)
        self.n_features = n_features
        self._reference_by_feature = np.ascontiguousarray(reference_rows.T)
        self.n_reference = n_reference
        self._bin_edges = _quantile_bin_edges(reference_rows, bins)
        self._reference_fractions = _bin_fractions(reference_rows, self._bin_edges)

        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self._ring = np.empty((window, n_features), dtype=np.float64)
        self._ring_next = 0
        self._ring_rows = 0
        self._rows_observed = 0
        self._rows_sampled = 0

    # --- the window ----------------------------------------------------------------------------

    def observe(self, batch: DataLike) -> None:
        """Sample each row with probability `sample_rate` into the window of the latest rows.

        Costs one random draw per row and a copy of the sampled rows; only sampled rows are
        converted and checked for NaN or inf (which raise DriftError).
        """
        n_rows = self._validate_layout(batch, "batch")
        with self._lock:
            if self.sample_rate >= 1.0:
                n_sampled = n_rows
                selected: np.ndarray | slice = slice(max(n_rows - self.window, 0), None)
            else:
                indices = np.flatnonzero(self._rng.random(n_rows) < self.sample_rate)
                n_sampled = len(indices)
                selected = indices[-self.window :]
        rows = self._as_rows(batch, "batch", selected)  # only rows that stay in the window
        with self._lock:
            self._rows_observed += n_rows
            self._rows_sampled += n_sampled
            start = self._ring_next
            head = min(len(rows), self.window - start)
            self._ring[start : start + head] = rows[:head]
            self._ring[: len(rows) - head] = rows[head:]
            self._ring_next = (start + len(rows)) % self.window
            self._ring_rows = min(self._ring_rows + len(rows), self.window)

    def reset_window(self) -> None:
        """Forget the window's rows (e.g. after a deliberate change of the input distribution)."""
        with self._lock:
            self._ring_next = 0
            self._ring_rows = 0

    def window_rows(self) -> np.ndarray:
        """A copy of the rows in the window, oldest first, shape (rows, features)."""
        with self._lock:
            if self._ring_rows < self.window:
                return self._ring[: self._ring_rows].copy()
            return np.concatenate([self._ring[self._ring_next :], self._ring[: self._ring_next]])

    @property
    def rows_observed(self) -> int:
        """Rows passed to `observe` since creation."""
        return self._rows_observed

    @property
    def rows_sampled(self) -> int:
        """Rows `observe` sampled into the window since creation (older ones have left it)."""
        return self._rows_sampled

    # --- the tests -----------------------------------------------------------------------------

    def check(self, current: DataLike | None = None) -> DriftReport:
        """Test `current` (or the window when None) against the reference, every feature."""
        if current is None:
            rows = self.window_rows()
            if len(rows) < 2:
                raise DriftError(
                    f"the window holds {len(rows)} row(s); observe() at least 2 before check()"
                )
        else:
            rows = self._as_rows(current, "current", None)
            if len(rows) < 2:
                raise DriftError(f"current has {len(rows)} row(s); drift tests need at least 2")
        n_reference, n_current = self.n_reference, len(rows)
        corrected_alpha = self.alpha / self.n_features

        ks_statistics = _ks_statistics(self._reference_by_feature, rows)
        pvalues = ks_pvalues(ks_statistics, n_reference, n_current)

        current_fractions = _bin_fractions(rows, self._bin_edges)
        psi = _psi(self._reference_fractions, current_fractions, n_reference, n_current)
        if self.psi_threshold is None:
            thresholds = psi_thresholds(
                self._reference_fractions, n_reference, n_current, corrected_alpha
            )
            drifted = pvalues < corrected_alpha
            method = "ks+bonferroni"
        else:
            thresholds = np.full(self.n_features, self.psi_threshold)
            drifted = psi > self.psi_threshold
            method = "psi"

        features = tuple(
            FeatureDrift(
                feature=name,
                psi=float(psi[i]),
                psi_threshold=float(thresholds[i]),
                ks_statistic=float(ks_statistics[i]),
                ks_pvalue=float(pvalues[i]),
                drifted=bool(drifted[i]),
            )
            for i, name in enumerate(self.feature_names)
        )
        drifted_names = tuple(f.feature for f in features if f.drifted)
        return DriftReport(
            drifted=bool(drifted_names),
            n_reference=n_reference,
            n_current=n_current,
            alpha=self.alpha,
            corrected_alpha=corrected_alpha,
            features=features,
            drifted_features=drifted_names,
            method=method,
        )

    # --- input handling ------------------------------------------------------------------------

    def _validate_layout(self, data: DataLike, what: str) -> int:
        """Check inputs, dtypes and features per row without copying; return the row count."""
        if isinstance(data, Mapping):
            if self._input_names is None:
                raise DriftError(
                    f"{what} is a mapping but the reference was an array; pass an array with "
                    f"{self.n_features} features per row"
                )
            if set(data) != set(self._input_names):
                expected = sorted(self._input_names)
                raise DriftError(f"{what} has inputs {sorted(data)}; the reference has {expected}")
            arrays = [np.asarray(data[name]) for name in self._input_names]
            labels = [f"{what}[{name!r}]" for name in self._input_names]
            widths = self._input_widths
        else:
            arrays, labels, widths = [np.asarray(data)], [what], (self.n_features,)
        for array, label, width in zip(arrays, labels, widths, strict=True):
            _check_numeric(array, label)
            features = math.prod(array.shape[1:]) if array.ndim >= 2 else 1
            if features != width:
                raise DriftError(
                    f"{label} has {features} features per row (shape {array.shape}); "
                    f"the reference has {width}"
                )
        counts = [len(array) for array in arrays]
        if len(set(counts)) > 1:
            sizes = ", ".join(f"{label}: {n}" for label, n in zip(labels, counts, strict=True))
            raise DriftError(f"{what} inputs have different row counts ({sizes})")
        return counts[0]

    def _as_rows(
        self, data: DataLike, what: str, selected: np.ndarray | slice | None
    ) -> np.ndarray:
        """Rows of `data` as float64 (rows, features), optionally only the `selected` rows."""
        self._validate_layout(data, what)
        if isinstance(data, Mapping):
            names = self._input_names or ()
            arrays = [np.asarray(data[name]) for name in names]
        else:
            arrays = [np.asarray(data)]
        if selected is not None:
            arrays = [array[selected] for array in arrays]
        blocks = [_rows_2d(array, what) for array in arrays]
        rows = np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
        return _check_finite(rows, what)


def psi_thresholds(
    reference_fractions: np.ndarray, n_reference: int, n_current: int, alpha: float
) -> np.ndarray:
    """Per-feature PSI exceeded by chance with probability about `alpha` under no drift.

    (1/n_reference + 1/n_current) * chi2.ppf(1 - alpha, bins - 1), with bins counted where the
    reference has rows: larger samples give smaller thresholds.
    """
    degrees = np.maximum(np.count_nonzero(reference_fractions > 0, axis=1) - 1, 1)
    scale = 1.0 / n_reference + 1.0 / n_current
    return np.asarray(scale * stats.chi2.ppf(1.0 - alpha, degrees), dtype=np.float64)


def _rows_2d(array: np.ndarray, what: str) -> np.ndarray:
    """(rows, features): 1-D is one feature per row, 2-D+ is flattened per row."""
    _check_numeric(array, what)
    features = math.prod(array.shape[1:])  # 1 for a 1-D array: one feature per row
    rows = array.reshape(len(array), features)
    return rows.astype(np.float64, copy=False)


def _concat_inputs(blocks: list[np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    counts = {len(block) for block in blocks}
    if len(counts) != 1:
        sizes = ", ".join(f"{name}: {len(b)}" for name, b in zip(names, blocks, strict=True))
        raise DriftError(f"reference inputs have different row counts ({sizes})")
    return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]


def _check_numeric(array: np.ndarray, what: str) -> None:
    if array.ndim == 0:
        raise DriftError(f"{what} is a scalar; expected rows (an array of shape (rows, ...))")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DriftError(f"{what} has dtype {array.dtype}; expected numbers")


def _check_finite(rows: np.ndarray, what: str) -> np.ndarray:
    bad = rows.size - int(np.count_nonzero(np.isfinite(rows)))
    if bad:
        raise DriftError(
            f"{what} has {bad} non-finite value(s) (NaN or inf) in {rows.size}; "
            "drift tests need finite numbers"
        )
    return rows


def _mapping_feature_names(names: tuple[str, ...], widths: tuple[int, ...]) -> list[str]:
    """`name` for a one-column input, `name[i]` (flat index) for the columns of a wider one."""
    out: list[str] = []
    for name, width in zip(names, widths, strict=True):
        out.extend([name] if width == 1 else [f"{name}[{i}]" for i in range(width)])
    return out


def _feature_blocks(values_per_feature: int, n_features: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(values_per_feature, 1))
    return [slice(i, min(i + step, n_features)) for i in range(0, n_features, step)]


def _ks_statistics(reference_by_feature: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Two-sample KS statistic of every feature from one sort of the pooled values, vectorised.

    The empirical CDFs' gap is accumulated in integers (n_ref * n_cur units), so D is exact.
    """
    n_features, n_reference = reference_by_feature.shape
    n_current = len(current)
    steps = np.concatenate(
        [np.full(n_reference, n_current, np.int64), np.full(n_current, -n_reference, np.int64)]
    )
    out = np.empty(n_features)
    for block in _feature_blocks(n_reference + n_current, n_features):
        pooled = np.concatenate([reference_by_feature[block], current[:, block].T], axis=1)
        order = np.argsort(pooled, axis=1)
        values = np.take_along_axis(pooled, order, axis=1)
        gap = np.abs(np.cumsum(steps[order], axis=1))
        # Within a run of tied values only its end is a point where both CDFs are evaluated.
        gap[:, :-1][values[:, 1:] == values[:, :-1]] = 0
        out[block] = gap.max(axis=1) / (n_reference * n_current)
    return out


def ks_pvalues(statistics: np.ndarray, n_reference: int, n_current: int) -> np.ndarray:
    """Asymptotic two-sample KS p-values: Kolmogorov's limit law at sqrt(n_eff) * D.

    n_eff = n_ref * n_cur / (n_ref + n_cur). The limit law is slightly conservative at finite
    sizes (more so with ties), so the false positive rate stays at or below the nominal level.
    """
    effective_n = n_reference * n_current / (n_reference + n_current)
    return np.asarray(special.kolmogorov(math.sqrt(effective_n) * statistics), dtype=np.float64)


def _quantile_bin_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges per feature (features, edges), +inf padded: bins are (e[k-1], e[k]].

    Edges are reference quantiles that are data values, deduplicated; an edge is kept only if the
    bin it closes and the rest above it each hold at least half a bin's share of the reference
    (discrete features would otherwise make slivers whose PSI is noise). A constant feature gets
    bins below, at and above its value, so any other value stands out.
    """
    levels = np.arange(1, bins) / bins
    candidates = np.quantile(reference, levels, axis=0, method="inverted_cdf").T
    n_features, n_candidates = candidates.shape
    # The reference CDF at each candidate edge, (features, candidates).
    cdf = np.stack([np.mean(reference <= candidates[:, k], axis=0) for k in range(n_candidates)], 1)
    min_share = 0.5 / bins
    edges = np.full((n_features, max(n_candidates, 2)), np.inf)
    kept = np.zeros(n_features, dtype=np.intp)
    cdf_at_last_edge = np.zeros(n_features)
    rows = np.arange(n_features)
    for k in range(n_candidates):
        keep = (cdf[:, k] - cdf_at_last_edge >= min_share) & (1.0 - cdf[:, k] >= min_share)
        edges[rows[keep], kept[keep]] = candidates[keep, k]
        cdf_at_last_edge[keep] = cdf[keep, k]
        kept[keep] += 1
    lowest, highest = reference.min(axis=0), reference.max(axis=0)
    constant = lowest == highest
    edges[constant, 0] = np.nextafter(lowest[constant], -np.inf)
    edges[constant, 1] = lowest[constant]
    return edges


def _bin_fractions(rows: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fraction of rows in each bin per feature, shape (features, edges + 1)."""
    n_features, n_bins = edges.shape[0], edges.shape[1] + 1
    counts = np.zeros((n_features, n_bins))
    for block in _feature_blocks(len(rows) * edges.shape[1], n_features):
        # A value's bin is the number of edges below it: (e[k-1], e[k]] -> k.
        index = np.sum(rows[:, block, None] > edges[None, block, :], axis=2)
        offsets = np.arange(block.stop - block.start) * n_bins
        flat = np.bincount((index + offsets).ravel(), minlength=len(offsets) * n_bins)
        counts[block] = flat.reshape(-1, n_bins)
    return counts / len(rows)


def _psi(
    reference_fractions: np.ndarray,
    current_fractions: np.ndarray,
    n_reference: int,
    n_current: int,
) -> np.ndarray:
    """Population stability index per feature; an empty bin counts as EMPTY_BIN_ROWS rows."""
    used = (reference_fractions > 0) | (current_fractions > 0)
    ref = np.maximum(reference_fractions, EMPTY_BIN_ROWS / n_reference)
    cur = np.maximum(current_fractions, EMPTY_BIN_ROWS / n_current)
    terms = np.where(used, (cur - ref) * np.log(cur / ref), 0.0)
    return np.asarray(terms.sum(axis=1))
