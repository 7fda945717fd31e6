"""Vectorised MacKinnon approximate p-values and critical values for unit-root tests.

This is a pure numpy/scipy re-implementation of ``statsmodels.tsa.adfvalues``
(``mackinnonp`` and ``mackinnoncrit``, statsmodels 0.15) that works on whole
arrays of test statistics at once, so a screen over hundreds of thousands of
pairs does not call a Python function per pair.

p-values (MacKinnon 1994, "Approximate asymptotic distribution functions for
unit-root and cointegration tests", JBES 12(2)) are the standard normal CDF of
a polynomial in the tau statistic. Two polynomials are fitted per case: one for
the left tail (``tau <= tau_star``) and one for the rest. Outside the fitted
range the p-value is clamped: ``tau > tau_max`` gives 1 and ``tau < tau_min``
gives 0. ``N`` is the number of I(1) series in the test (1 for a Dickey-Fuller
test on one series, 2 for an Engle-Granger test of one pair), ``regression`` is
the deterministic part of the *cointegrating* regression ("c" for the pair
regression with an intercept used by ``coint(..., trend="c")``).

Critical values (MacKinnon 2010, "Critical values for cointegration tests",
Queen's Economics WP 1227) are response surfaces in ``1/nobs``.

The table constants are MacKinnon's published numbers, as also tabulated by
statsmodels; they are built with the same scaling arithmetic so the
coefficients are bit-identical and the p-values agree to rounding.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Regression = Literal["n", "c", "ct", "ctt"]

# Bounds of the fitted region, indexed by N - 1 (N = 1..6).
_TAU_MAX: dict[str, tuple[float, ...]] = {
    "n": (np.inf, 1.51, 0.86, 0.88, 1.05, 1.24),
    "c": (2.74, 0.92, 0.55, 0.61, 0.79, 1.0),
    "ct": (0.7, 0.63, 0.71, 0.93, 1.19, 1.42),
    "ctt": (0.54, 0.79, 1.08, 1.43, 3.49, 1.92),
}
_TAU_MIN: dict[str, tuple[float, ...]] = {
    "n": (-19.04, -19.62, -21.21, -23.25, -21.63, -25.74),
    "c": (-18.83, -18.86, -23.48, -28.07, -25.96, -23.27),
    "ct": (-16.18, -21.15, -25.37, -26.63, -26.53, -26.18),
    "ctt": (-17.17, -21.1, -24.33, -24.03, -24.33, -28.22),
}
# Switch point between the left-tail ("small p") and the other ("large p") fit.
_TAU_STAR: dict[str, tuple[float, ...]] = {
    "n": (-1.04, -1.53, -2.68, -3.09, -3.07, -3.77),
    "c": (-1.61, -2.62, -3.13, -3.47, -3.78, -3.93),
    "ct": (-2.89, -3.19, -3.50, -3.65, -3.80, -4.36),
    "ctt": (-3.21, -3.51, -3.81, -3.83, -4.12, -4.63),
}

# Polynomial coefficients in increasing powers of tau, as published (scaled
# below). Rows are N = 1..6.
_SMALL_P_SCALING = np.array([1, 1, 1e-2])
_LARGE_P_SCALING = np.array([1, 1e-1, 1e-1, 1e-2])
_TAU_SMALL_P: dict[str, np.ndarray] = {
    key: np.asarray(table) * _SMALL_P_SCALING
    for key, table in {
        "n": [
            [0.6344, 1.2378, 3.2496],
            [1.9129, 1.3857, 3.5322],
            [2.7648, 1.4502, 3.4186],
            [3.4336, 1.4835, 3.19],
            [4.0999, 1.5533, 3.59],
            [4.5388, 1.5344, 2.9807],
        ],
        "c": [
            [2.1659, 1.4412, 3.8269],
            [2.92, 1.5012, 3.9796],
            [3.4699, 1.4856, 3.164],
            [3.9673, 1.4777, 2.6315],
            [4.5509, 1.5338, 2.9545],
            [5.1399, 1.6036, 3.4445],
        ],
        "ct": [
            [3.2512, 1.6047, 4.9588],
            [3.6646, 1.5419, 3.6448],
            [4.0983, 1.5173, 2.9898],
            [4.5844, 1.5338, 2.8796],
            [5.0722, 1.5634, 2.9472],
            [5.53, 1.5914, 3.0392],
        ],
        "ctt": [
            [4.0003, 1.658, 4.8288],
            [4.3534, 1.6016, 3.7947],
            [4.7343, 1.5768, 3.2396],
            [5.214, 1.6077, 3.3449],
            [5.6481, 1.6274, 3.3455],
            [5.9296, 1.5929, 2.8223],
        ],
    }.items()
}
_TAU_LARGE_P: dict[str, np.ndarray] = {
    key: np.asarray(table) * _LARGE_P_SCALING
    for key, table in {
        "n": [
            [0.4797, 9.3557, -0.6999, 3.3066],
            [1.5578, 8.558, -2.083, -3.3549],
            [2.2268, 6.8093, -3.2362, -5.4448],
            [2.7654, 6.4502, -3.0811, -4.4946],
            [3.2684, 6.8051, -2.6778, -3.4972],
            [3.7268, 7.167, -2.3648, -2.8288],
        ],
        "c": [
            [1.7339, 9.3202, -1.2745, -1.0368],
            [2.1945, 6.4695, -2.9198, -4.2377],
            [2.5893, 4.5168, -3.6529, -5.0074],
            [3.0387, 4.5452, -3.3666, -4.1921],
            [3.5049, 5.2098, -2.9158, -3.3468],
            [3.9489, 5.8933, -2.5359, -2.721],
        ],
        "ct": [
            [2.5261, 6.1654, -3.7956, -6.0285],
            [2.85, 5.272, -3.6622, -5.1695],
            [3.221, 5.255, -3.2685, -4.1501],
            [3.652, 5.9758, -2.7483, -3.2081],
            [4.0712, 6.6428, -2.3464, -2.546],
            [4.4735, 7.1757, -2.0681, -2.1196],
        ],
        "ctt": [
            [3.0778, 4.9529, -4.1477, -5.9359],
            [3.4713, 5.967, -3.2507, -4.2286],
            [3.8637, 6.7852, -2.6286, -3.1381],
            [4.2736, 7.6199, -2.1534, -2.4026],
            [4.6679, 8.2618, -1.822, -1.9147],
            [5.0009, 8.3735, -1.6994, -1.6928],
        ],
    }.items()
}

# MacKinnon (2010) response surfaces: crit(nobs) = b0 + b1/nobs + b2/nobs^2 + b3/nobs^3.
# Indexed [N - 1][level] with levels 1 %, 5 %, 10 %. Only the cases this
# project uses are tabulated: "n" exists for N = 1 only (MacKinnon 1996).
_TAU_2010: dict[str, np.ndarray] = {
    "n": np.array(
        [
            [
                [-2.56574, -2.2358, -3.627, 0.0],
                [-1.94100, -0.2686, -3.365, 31.223],
                [-1.61682, 0.2656, -2.714, 25.364],
            ]
        ]
    ),
    "c": np.array(
        [
            [
                [-3.43035, -6.5393, -16.786, -79.433],
                [-2.86154, -2.8903, -4.234, -40.040],
                [-2.56677, -1.5384, -2.809, 0.0],
            ],
            [
                [-3.89644, -10.9519, -33.527, 0.0],
                [-3.33613, -6.1101, -6.823, 0.0],
                [-3.04445, -4.2412, -2.720, 0.0],
            ],
            [
                [-4.29374, -14.4354, -33.195, 47.433],
                [-3.74066, -8.5632, -10.852, 27.982],
                [-3.45218, -6.2143, -3.718, 0.0],
            ],
        ]
    ),
    "ct": np.array(
        [
            [
                [-3.95877, -9.0531, -28.428, -134.155],
                [-3.41049, -4.3904, -9.036, -45.374],
                [-3.12705, -2.5856, -3.925, -22.380],
            ],
            [
                [-4.32762, -15.4387, -35.679, 0.0],
                [-3.78057, -9.5106, -12.074, 0.0],
                [-3.49631, -7.0815, -7.538, 21.892],
            ],
            [
                [-4.66305, -18.7688, -49.793, 104.244],
                [-4.11890, -11.8922, -19.031, 77.332],
                [-3.83511, -9.0723, -8.504, 35.403],
            ],
        ]
    ),
}


def _check_case(regression: str, n_series: int, max_series: int) -> None:
    if regression not in _TAU_MAX:
        raise ValueError(f"regression must be one of {sorted(_TAU_MAX)}, got {regression!r}")
    if not 1 <= n_series <= max_series:
        raise ValueError(f"n_series must be in 1..{max_series}, got {n_series}")


def mackinnon_pvalue(stat: np.ndarray | float, regression: Regression = "c", n_series: int = 1) -> np.ndarray:
    """MacKinnon (1994) approximate asymptotic p-values for an array of tau statistics.

    Matches ``statsmodels.tsa.adfvalues.mackinnonp(stat, regression, N=n_series)``
    element-wise. ``-inf`` maps to 0 (statsmodels' value for perfectly
    collinear pairs) and NaN stays NaN.

    For an Engle-Granger test of one pair with an intercept in the pair
    regression use ``regression="c", n_series=2``.
    """
    _check_case(regression, n_series, max_series=6)
    tau = np.asarray(stat, dtype=np.float64)
    index = n_series - 1
    small_p_coefficients = _TAU_SMALL_P[regression][index]
    large_p_coefficients = _TAU_LARGE_P[regression][index]
    # np.polyval wants the highest power first.
    in_left_tail = tau <= _TAU_STAR[regression][index]
    # Infinite statistics make the polynomials NaN; they are clamped below.
    with np.errstate(invalid="ignore", over="ignore"):
        polynomial = np.where(
            in_left_tail,
            np.polyval(small_p_coefficients[::-1], tau),
            np.polyval(large_p_coefficients[::-1], tau),
        )
    pvalue = _normal_cdf(polynomial)
    pvalue = np.where(tau > _TAU_MAX[regression][index], 1.0, pvalue)
    pvalue = np.where(tau < _TAU_MIN[regression][index], 0.0, pvalue)
    return pvalue


# Up to this many values the normal CDF is computed with math.erfc, one call each (60 ms for 200,000); more are
# left to scipy's ndtr, imported then (importing scipy.special costs 0.15 to 0.25 s: a 100-symbol screening run
# pays that for 9,900 values otherwise, #18).
_ERFC_LOOP_MAX = 200_000
_SQRT_HALF = math.sqrt(0.5)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, as scipy.special.ndtr (within an ulp or two: 0.5 erfc(-x / sqrt 2))."""
    if x.size > _ERFC_LOOP_MAX:
        from scipy.special import ndtr

        return ndtr(x)
    flat = np.fromiter((0.5 * math.erfc(-v * _SQRT_HALF) for v in x.ravel().tolist()), dtype=np.float64,
                       count=x.size)
    return flat.reshape(x.shape)


def mackinnon_critical_values(regression: Regression = "c", n_series: int = 1, nobs: float = np.inf) -> np.ndarray:
    """MacKinnon (2010) critical values at the 1 %, 5 % and 10 % levels.

    Matches ``statsmodels.tsa.adfvalues.mackinnoncrit(N=n_series,
    regression=regression, nobs=nobs)``; ``nobs=inf`` gives the asymptotic
    values. Tabulated for regression "n" with N = 1 and "c"/"ct" with N = 1..3.
    ``coint(..., trend="c")`` reports these with ``nobs = T - 1`` and N = 2.
    """
    if regression not in _TAU_2010:
        raise ValueError(f"critical values tabulated for {sorted(_TAU_2010)}, got {regression!r}")
    table = _TAU_2010[regression]
    _check_case(regression, n_series, max_series=table.shape[0])
    coefficients = table[n_series - 1]
    if np.isinf(nobs):
        return coefficients[:, 0].copy()
    return np.polyval(coefficients[:, ::-1].T, 1.0 / nobs)
