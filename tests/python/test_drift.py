"""ember.telemetry.DriftDetector: the false positive rate on undrifted data stays at its nominal
level (continuous Gaussian features and the real, discrete digits pixels), real shifts are found
and named, PSI thresholds shrink with sample size, the sampled window behaves, bad input fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import scipy.stats

import ember
from ember.samples import load_digits_split
from ember.telemetry import DriftDetector, DriftError, DriftReport

TRIALS = 200
ALPHA = 0.05
# Binomial tolerance on a rate measured over TRIALS independent trials.
FPR_BOUND = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / TRIALS)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits_split().x_train


Draw = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]


def false_positive_rate(draw: Draw, trials: int = TRIALS, alpha: float = ALPHA) -> float:
    """The fraction of (reference, current) pairs from one distribution reported as drifted."""
    drifted = 0
    for trial in range(trials):
        reference, current = draw(np.random.default_rng(trial))
        report = DriftDetector(reference, alpha=alpha).check(current)
        assert report.method == "ks+bonferroni"
        assert report.corrected_alpha == pytest.approx(alpha / reference.shape[1])
        drifted += report.drifted
    return drifted / trials


def test_false_positive_rate_on_gaussian_data_is_at_most_alpha() -> None:
    def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return rng.standard_normal((600, 20)), rng.standard_normal((300, 20))

    assert false_positive_rate(draw) <= FPR_BOUND


def test_false_positive_rate_on_discrete_digits_pixels_is_at_most_alpha(
    digits: np.ndarray,
) -> None:
    # 64 pixels with 17 values each, many rows tied: resampled rows of the real training set.
    assert len(np.unique(digits)) == 17

    def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return (
            digits[rng.integers(0, len(digits), 600)],
            digits[rng.integers(0, len(digits), 300)],
        )

    assert false_positive_rate(draw) <= FPR_BOUND


def test_default_psi_threshold_holds_its_level_on_large_samples(digits: np.ndarray) -> None:
    # The chi-square threshold is asymptotic: check it where samples are large.
    exceeded = 0
    trials = 100
    for trial in range(trials):
        rng = np.random.default_rng(10_000 + trial)
        reference = digits[rng.integers(0, len(digits), 1000)]
        current = digits[rng.integers(0, len(digits), 1000)]
        report = DriftDetector(reference, alpha=ALPHA).check(current)
        exceeded += any(f.psi > f.psi_threshold for f in report.features)
    assert exceeded / trials <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / trials)


def test_a_mean_shift_is_detected_in_exactly_the_shifted_features() -> None:
    rng = np.random.default_rng(1)
    reference = rng.standard_normal((2000, 20))
    current = rng.standard_normal((500, 20))
    current[:, [3, 7]] += 0.5
    report = DriftDetector(reference, alpha=0.001).check(current)
    assert report.drifted
    assert report.drifted_features == ("feature_3", "feature_7")
    by_name = {f.feature: f for f in report.features}
    for name in report.drifted_features:
        assert by_name[name].ks_pvalue < report.corrected_alpha
        assert by_name[name].psi > by_name[name].psi_threshold
    assert by_name["feature_0"].ks_pvalue > report.corrected_alpha
    assert "feature_3" in report.summary() and "\n" not in report.summary()


def test_noise_on_digits_pixels_is_detected_and_the_held_out_split_is_not(
    digits: np.ndarray,
) -> None:
    detector = DriftDetector(digits, alpha=0.01)
    held_out = load_digits_split().x_test  # the same distribution, other rows
    clean = detector.check(held_out)
    assert not clean.drifted, clean.summary()
    assert clean.summary().startswith("no drift in 64 features")

    # Sensor noise on four pixels: the 17 discrete levels become continuous values.
    noisy = held_out.copy()
    pixels = [10, 21, 42, 53]
    rng = np.random.default_rng(2)
    noisy[:, pixels] += rng.normal(0, 0.25, (len(noisy), 4)).astype(np.float32)
    report = detector.check(noisy)
    assert report.drifted_features == tuple(f"feature_{p}" for p in pixels)
    assert report.n_reference == len(digits) and report.n_current == len(held_out)


def test_a_fixed_psi_threshold_decides_when_given() -> None:
    rng = np.random.default_rng(3)
    reference = rng.standard_normal((1000, 4))
    current = rng.standard_normal((1000, 4))
    current[:, 1] = current[:, 1] * 2.0 + 1.0
    report = DriftDetector(reference, psi_threshold=0.25).check(current)
    assert report.method == "psi"
    assert report.drifted_features == ("feature_1",)
    assert all(f.psi_threshold == 0.25 for f in report.features)
    assert all(f.drifted == (f.psi > 0.25) for f in report.features)


def test_psi_thresholds_shrink_as_samples_grow() -> None:
    rng = np.random.default_rng(4)
    reference = rng.standard_normal((4000, 5))
    detector = DriftDetector(reference, alpha=0.01)
    thresholds = [
        np.array([f.psi_threshold for f in detector.check(rng.standard_normal((n, 5))).features])
        for n in (100, 1000, 4000)
    ]
    assert np.all(thresholds[0] > thresholds[1]) and np.all(thresholds[1] > thresholds[2])
    # (1/n_ref + 1/n_cur) * chi2 quantile with 9 degrees of freedom for deciles.
    expected = (1 / 4000 + 1 / 1000) * scipy.stats.chi2.ppf(1 - 0.01 / 5, 9)
    np.testing.assert_allclose(thresholds[1], expected, rtol=1e-12)
    small_reference = DriftDetector(reference[:500], alpha=0.01).check(reference[:1000])
    assert all(f.psi_threshold > expected for f in small_reference.features)


def test_ks_statistic_matches_scipy_with_conservative_pvalues(digits: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    cases = [
        (rng.standard_normal((400, 3)), rng.standard_normal((150, 3)) + 0.25),
        (digits[:700, 20:26], digits[700:1000, 20:26]),  # ties
    ]
    for reference, current in cases:
        report = DriftDetector(reference).check(current)
        for j, feature in enumerate(report.features):
            scipy_result = scipy.stats.ks_2samp(reference[:, j], current[:, j], method="exact")
            assert feature.ks_statistic == pytest.approx(scipy_result.statistic, abs=1e-12)
            assert feature.ks_pvalue >= 0.95 * scipy_result.pvalue
            assert feature.ks_pvalue <= max(1.5 * scipy_result.pvalue, 1e-9) or (
                feature.ks_pvalue == pytest.approx(1.0)
            )


def test_constant_features_never_drift_but_a_moved_constant_does() -> None:
    rng = np.random.default_rng(6)
    reference = np.column_stack([np.zeros(500), rng.standard_normal(500), np.ones(500)])
    current = np.column_stack([np.zeros(300), rng.standard_normal(300) + 1.0, np.ones(300)])
    for psi_threshold in (None, 0.1):
        report = DriftDetector(reference, psi_threshold=psi_threshold).check(current)
        assert report.drifted_features == ("feature_1",)
        constant = report.features[0]
        assert (constant.psi, constant.ks_statistic, constant.ks_pvalue) == (0.0, 0.0, 1.0)
    current[:, 2] = 2.0
    report = DriftDetector(reference).check(current)
    assert report.drifted_features == ("feature_1", "feature_2")


def test_sampling_respects_sample_rate_and_the_window_keeps_the_latest_rows() -> None:
    rng = np.random.default_rng(7)
    detector = DriftDetector(rng.standard_normal((100, 2)), sample_rate=0.25, window=500, seed=1)
    n = 8000
    ids = np.arange(n, dtype=np.float64)
    for start in range(0, n, 97):  # odd batch sizes wrap the ring at every offset
        block = ids[start : start + 97]
        detector.observe(np.column_stack([block, -block]))
    assert detector.rows_observed == n
    expected = 0.25 * n
    assert abs(detector.rows_sampled - expected) < 4 * math.sqrt(n * 0.25 * 0.75)
    window = detector.window_rows()
    assert window.shape == (500, 2)
    assert np.all(np.diff(window[:, 0]) > 0), "the window must be the latest rows, oldest first"
    assert window[0, 0] > n - 4 * 500 / 0.25 and window[-1, 0] > n - 100
    np.testing.assert_array_equal(window[:, 1], -window[:, 0])
    assert detector.check().n_current == 500

    rarely = DriftDetector(rng.standard_normal((100, 2)), sample_rate=1e-6)
    rarely.observe(np.ones((3, 2)))
    assert (rarely.rows_observed, rarely.rows_sampled, len(rarely.window_rows())) == (3, 0, 0)

    same_seed = DriftDetector(rng.standard_normal((100, 2)), sample_rate=0.25, window=500, seed=1)
    for start in range(0, n, 97):
        block = ids[start : start + 97]
        same_seed.observe(np.column_stack([block, -block]))
    np.testing.assert_array_equal(same_seed.window_rows(), window)


def test_every_row_is_kept_at_rate_one_and_reset_empties_the_window() -> None:
    detector = DriftDetector(np.random.default_rng(8).standard_normal((50, 3)), window=64)
    rows = np.arange(300, dtype=np.float32).reshape(100, 3)
    for start in (0, 37, 74):
        detector.observe(rows[start : start + 37])
    np.testing.assert_array_equal(detector.window_rows(), rows[-64:])
    detector.observe(np.tile(rows[:1], (200, 1)))  # a batch bigger than the window
    np.testing.assert_array_equal(detector.window_rows(), np.tile(rows[:1], (64, 1)))
    detector.observe(rows[:0])  # an empty batch changes nothing
    assert detector.rows_observed == 300 and len(detector.window_rows()) == 64
    detector.reset_window()
    assert len(detector.window_rows()) == 0
    with pytest.raises(DriftError, match="window holds 0 row"):
        detector.check()


def test_mapping_inputs_and_multidimensional_rows() -> None:
    rng = np.random.default_rng(9)
    reference = {"x": rng.standard_normal((800, 2, 3)), "age": rng.uniform(20, 60, 800)}
    detector = DriftDetector(reference, alpha=0.01)
    assert detector.feature_names == ("x[0]", "x[1]", "x[2]", "x[3]", "x[4]", "x[5]", "age")
    current = {"x": rng.standard_normal((400, 2, 3)), "age": rng.uniform(30, 70, 400)}
    detector.observe(current)
    report = detector.check()
    assert report.drifted_features == ("age",)
    assert report.n_current == 400

    images = DriftDetector(
        rng.standard_normal((100, 4, 4)), feature_names=[f"p{i}" for i in range(16)]
    )
    assert images.n_features == 16 and images.feature_names[-1] == "p15"
    assert not images.check(rng.standard_normal((100, 4, 4))).drifted


def test_bad_input_raises_clear_errors() -> None:
    rng = np.random.default_rng(10)
    reference = rng.standard_normal((100, 4))
    with pytest.raises(DriftError, match="reference has 1 row"):
        DriftDetector(reference[:1])
    for alpha in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(DriftError, match="alpha must be in"):
            DriftDetector(reference, alpha=alpha)
    with pytest.raises(DriftError, match="bins must be"):
        DriftDetector(reference, bins=1)
    with pytest.raises(DriftError, match="sample_rate"):
        DriftDetector(reference, sample_rate=0.0)
    with pytest.raises(DriftError, match="window must be"):
        DriftDetector(reference, window=1)
    with pytest.raises(DriftError, match="psi_threshold"):
        DriftDetector(reference, psi_threshold=-1.0)
    with pytest.raises(DriftError, match="feature_names has 2 names for 4"):
        DriftDetector(reference, feature_names=["a", "b"])
    bad = reference.copy()
    bad[[1, 5, 9], 2] = [np.nan, np.inf, -np.inf]
    with pytest.raises(DriftError, match="reference has 3 non-finite"):
        DriftDetector(bad)

    detector = DriftDetector(reference)
    with pytest.raises(DriftError, match=r"current has 3 features per row .* reference has 4"):
        detector.check(rng.standard_normal((50, 3)))
    with pytest.raises(DriftError, match="batch has 5 features per row"):
        detector.observe(rng.standard_normal((10, 5)))
    with pytest.raises(DriftError, match="batch has 3 non-finite"):
        detector.observe(bad[:20])
    with pytest.raises(DriftError, match="current has 1 row"):
        detector.check(reference[:1])
    with pytest.raises(DriftError, match="dtype"):
        detector.check(np.array([["a"] * 4] * 3))
    with pytest.raises(DriftError, match="mapping but the reference was an array"):
        detector.check({"x": reference})
    assert detector.rows_observed == 0, "rejected batches are not counted"

    mapped = DriftDetector({"x": reference, "y": reference[:, 0]})
    with pytest.raises(DriftError, match=r"has inputs \['x'\]; the reference has \['x', 'y'\]"):
        mapped.check({"x": reference})
    with pytest.raises(DriftError, match="different row counts"):
        mapped.observe({"x": reference, "y": reference[:50, 0]})
    assert issubclass(DriftError, ember.EmberError) and issubclass(DriftError, ValueError)


def test_report_summary_names_the_rule_and_the_features() -> None:
    rng = np.random.default_rng(11)
    reference = rng.standard_normal((500, 8))
    current = rng.standard_normal((500, 8)) + 1.0
    report = DriftDetector(reference).check(current)
    assert isinstance(report, DriftReport) and len(report.drifted_features) == 8
    line = report.summary()
    assert line.startswith("drift in 8/8 features (ks+bonferroni, alpha=0.01")
    assert "feature_0" in line and "(3 more)" in line
