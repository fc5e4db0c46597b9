"""Background models of shoeboxes (``integration.background``), compiled with numba.

Every algorithm works per shoebox on the candidate pixels, those that are
Valid & Background and not Overlapped; it writes a value into every voxel of
the background array and sets BackgroundUsed on the pixels it used.  Kernels
loop over the shoeboxes of a :class:`ShoeboxColumn` (flat arrays addressed by
``offsets``, each box shaped (nz, ny, nx) = frames, rows, columns) and
return per shoebox ``ok`` (False: the reflection failed background
modelling) and ``mean`` (``background.mean``); ``simple`` also returns
``mse`` and ``dispersion``, ``gmodel`` the ``scale``.  Pixel coordinates
inside a box are voxel centres (i + 0.5, j + 0.5, k + 0.5).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..models.flags import MaskCode

_VALID_BG = np.uint8(MaskCode.Valid | MaskCode.Background)
_OVERLAPPED = np.uint8(MaskCode.Overlapped)
_USED = np.uint8(MaskCode.BackgroundUsed)
_NOT_USED = np.uint8(0xFF ^ MaskCode.BackgroundUsed)


SIMPLE_MODELS = ("constant2d", "constant3d", "linear2d", "linear3d")
REJECTORS = ("null", "nsigma", "truncated", "normal", "plane", "tukey")
GLM_MODELS = ("constant2d", "constant3d", "loglinear2d", "loglinear3d")


@njit(cache=True, error_model="numpy")
def _is_candidate(m):
    """Whether a pixel of mask value ``m`` is a background candidate: Valid & Background, not Overlapped."""
    return (m & _VALID_BG) == _VALID_BG and (m & _OVERLAPPED) == 0


@njit(cache=True, error_model="numpy")
def _candidates(mask, lo, hi):
    """Indices in [lo, hi) of the candidate pixels."""
    index = np.empty(hi - lo, np.int64)
    n = 0
    for i in range(lo, hi):
        if _is_candidate(mask[i]):
            index[n] = i
            n += 1
    return index[:n]


# ----------------------------------------------------------------- special functions
@njit(cache=True, error_model="numpy")
def gamma_q(a, x):
    """Regularised upper incomplete gamma Q(a, x) for a > 0, x >= 0 (series or continued fraction)."""
    if x <= 0.0:
        return 1.0
    log_prefactor = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = 1.0 / a
        total = term
        ap = a
        for _ in range(10000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefactor))
    # Modified Lentz evaluation of the continued fraction.
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(log_prefactor) * h


@njit(cache=True, error_model="numpy")
def normal_quantile(p):
    """z with Phi(z) = p (0 < p < 1), by bisection on math.erfc."""
    low, high = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-13:
            break
    return 0.5 * (low + high)


# ----------------------------------------------------------------- outlier rejection
@njit(cache=True, error_model="numpy")
def _mark_all(data, mask, index):
    for i in index:
        mask[i] |= _USED


@njit(cache=True, error_model="numpy")
def _reject_nsigma(data, mask, index, lower, upper):
    values = data[index].astype(np.float64)
    mean = values.mean()
    sd = math.sqrt(((values - mean) ** 2).sum() / (len(values) - 1)) if len(values) > 1 else 0.0
    for i in index:
        if mean - lower * sd <= data[i] <= mean + upper * sd:
            mask[i] |= _USED


@njit(cache=True, error_model="numpy")
def _reject_truncated(data, mask, index, lower, upper):
    order = index[np.argsort(data[index], kind="mergesort")]
    n = len(order)
    for i in order[int(math.floor(lower * n / 2)):n - int(math.floor(upper * n / 2))]:
        mask[i] |= _USED


@njit(cache=True, error_model="numpy")
def _reject_normal(data, mask, index, min_pixels):
    if len(index) < min_pixels:
        raise ValueError("too few background pixels")
    order = index[np.argsort(data[index], kind="mergesort")]
    values = data[order].astype(np.float64)
    n = len(values)
    while n > min_pixels:
        head = values[:n]
        mean = head.mean()
        sd = math.sqrt(((head - mean) ** 2).sum() / (n - 1))
        if sd == 0 or (head.max() - mean) / sd < normal_quantile(1.0 - 0.5 / n):  # = sqrt(2) erfinv(1 - 1/n)
            break
        n -= 1
    for i in order[:n]:
        mask[i] |= _USED


@njit(cache=True, error_model="numpy")
def _reject_plane(data, mask, index, nz, ny, nx, fraction, n_sigma):
    """MOSFLM's rejector, frame by frame: a plane through the lowest pixels, then a sqrt(c) band."""
    area = ny * nx
    factor = 0.8
    if fraction >= 0.999:
        factor = 0.0
    elif fraction >= 0.9:
        factor = 0.05
    elif fraction >= 0.7:
        factor = 0.2
    elif fraction >= 0.5:
        factor = 0.4
    elif fraction >= 0.3:
        factor = 0.6
    hy, hx = ny // 2, nx // 2
    for k in range(nz):
        frame = index[(index >= k * area) & (index < (k + 1) * area)]
        if len(frame) == 0:
            raise ValueError("a frame without background pixels")
        order = frame[np.argsort(data[frame], kind="mergesort")]
        n_active = int(math.floor(fraction * len(order) + 0.5))
        if n_active == 0:
            raise ValueError("no active pixels for the plane")
        A = np.zeros((3, 3))
        B = np.zeros(3)
        for i in order[:n_active]:
            x = (i % nx) - hx
            y = ((i // nx) % ny) - hy
            p = data[i]
            row = np.array([1.0, x, y])
            A += np.outer(row, row)
            B += row * p
        c, a, b = np.linalg.solve(A, B)
        c = c + factor * math.sqrt(abs(c))
        band = n_sigma * math.sqrt(abs(c))
        for i in frame:
            x = (i % nx) - hx
            y = ((i // nx) % ny) - hy
            if abs(data[i] - (a * x + b * y + c)) > band:
                mask[i] &= _NOT_USED
            else:
                mask[i] |= _USED


@njit(cache=True, error_model="numpy")
def _reject_tukey(data, mask, index, lower, upper):
    order = index[np.argsort(data[index], kind="mergesort")]
    n = len(order)
    mid = n // 2
    q1 = data[order[mid // 2]]
    q3 = data[order[mid + (n - mid) // 2]]
    iqr = q3 - q1
    for i in order:
        if q1 - lower * iqr <= data[i] <= q3 + upper * iqr:
            mask[i] |= _USED


# ----------------------------------------------------------------- simple models
@njit(cache=True, error_model="numpy")
def _fit_simple(data, used, nz, ny, nx, model, background):
    """Fill ``background`` with the least-squares model of the used pixels."""
    area = ny * nx
    if model == 1:  # constant3d
        count = used.sum()
        if count <= 1:
            raise ValueError("too few pixels")
        background[:] = data[used].astype(np.float64).mean()
        return
    if model == 3:  # linear3d
        _fit_linear(data, used, 0, len(data), nx, ny, 4, background, "too few pixels")
        return
    for k in range(nz):
        lo, hi = k * area, (k + 1) * area
        if model == 0:  # constant2d
            sel = used[lo:hi]
            if sel.sum() <= 1:
                raise ValueError("too few pixels on a frame")
            background[lo:hi] = data[lo:hi][sel].astype(np.float64).mean()
        else:  # linear2d
            _fit_linear(data, used, lo, hi, nx, ny, 3, background, "too few pixels on a frame")


@njit(cache=True, error_model="numpy")
def _linear_terms(i, nx, ny, n_terms):
    """(1, x, y[, z]) at voxel i's centre (pixels and frames within the shoebox)."""
    area = nx * ny
    if n_terms == 4:
        return np.array([1.0, i % nx + 0.5, (i // nx) % ny + 0.5, i // area + 0.5])
    return np.array([1.0, i % nx + 0.5, (i // nx) % ny + 0.5])


@njit(cache=True, error_model="numpy")
def _fit_linear(data, used, lo, hi, nx, ny, n_terms, background, message):
    """Least-squares plane (3 terms) or 3-D linear model (4 terms) of the used voxels in [lo, hi)."""
    A = np.zeros((n_terms, n_terms))
    B = np.zeros(n_terms)
    count = 0
    for i in range(lo, hi):
        if used[i]:
            row = _linear_terms(i, nx, ny, n_terms)
            A += np.outer(row, row)
            B += row * data[i]
            count += 1
    if count <= n_terms:
        raise ValueError(message)
    p = np.linalg.solve(A, B)
    for i in range(lo, hi):
        background[i] = (p * _linear_terms(i, nx, ny, n_terms)).sum()


@njit(cache=True, error_model="numpy")
def _simple_one(data, mask, background, nz, ny, nx, model, rejector, p1, p2, min_pixels):
    index = _candidates(mask, 0, len(mask))
    if rejector == 0:
        _mark_all(data, mask, index)
    elif rejector == 1:
        _reject_nsigma(data, mask, index, p1, p2)
    elif rejector == 2:
        _reject_truncated(data, mask, index, p1, p2)
    elif rejector == 3:
        _reject_normal(data, mask, index, int(p1))
    elif rejector == 4:
        _reject_plane(data, mask, index, nz, ny, nx, p1, p2)
    else:
        _reject_tukey(data, mask, index, p1, p2)
    used = (mask & _USED) != 0
    model_values = np.zeros(len(data))
    _fit_simple(data, used, nz, ny, nx, model, model_values)
    background[:] = model_values
    values = data[used].astype(np.float64)
    count = len(values)
    if count < min_pixels:
        raise ValueError("too few background pixels")
    mean = values.mean()
    var = ((values - mean) ** 2).sum() / (count - 1)
    if mean < 0:
        raise ValueError("negative background")
    mse = ((model_values[used] - values) ** 2).sum() / count
    return mean, mse, (var / mean if mean > 0 else 0.0)


@njit(cache=True, error_model="numpy")
def simple_background(data, mask, background, offsets, bbox, model, rejector, p1, p2, min_pixels):
    """The ``simple`` algorithm on every shoebox.  Returns ``(ok, mean, mse, dispersion)``."""
    n = len(offsets) - 1
    ok = np.zeros(n, np.bool_)
    mean = np.zeros(n)
    mse = np.zeros(n)
    dispersion = np.zeros(n)
    for r in range(n):
        a, b = offsets[r], offsets[r + 1]
        if b == a:
            continue
        nx, ny, nz = bbox[r, 1] - bbox[r, 0], bbox[r, 3] - bbox[r, 2], bbox[r, 5] - bbox[r, 4]
        try:
            mean[r], mse[r], dispersion[r] = _simple_one(data[a:b], mask[a:b], background[a:b], nz, ny, nx,
                                                         model, rejector, p1, p2, min_pixels)
            ok[r] = True
        except Exception:  # noqa: BLE001 - numba raises plain exceptions; the row is flagged, not fatal
            mean[r], mse[r], dispersion[r] = 0.0, 0.0, 0.0
    return ok, mean, mse, dispersion


# ----------------------------------------------------------------- robust Poisson GLM
@njit(cache=True, error_model="numpy")
def _poisson_pdf(mu, k):
    """P(Y = k) for Y ~ Poisson(mu); 0 for k < 0 and for mu = 0 (scitbx's conventions)."""
    if mu == 0 or k < 0:
        return 0.0
    return math.exp(k * math.log(mu) - mu - math.lgamma(k + 1.0))


@njit(cache=True, error_model="numpy")
def _poisson_cdf(mu, k):
    """P(Y <= k) = Q(floor(k) + 1, mu); 0 for k < 0 and for mu = 0 (scitbx's conventions)."""
    if mu == 0 or k < 0:
        return 0.0
    return gamma_q(math.floor(k + 1.0), mu)


@njit(cache=True, error_model="numpy")
def _expectations(mu, svar, c):
    """E[psi] and the derivative term of Cantoni & Ronchetti's robust Poisson score."""
    j1 = math.floor(mu - c * svar)
    j2 = math.floor(mu + c * svar)
    p1 = _poisson_pdf(mu, j1)
    p2 = _poisson_pdf(mu, j2)
    p3 = _poisson_cdf(mu, j1)
    p6 = 1.0 - _poisson_cdf(mu, j2 + 1) + _poisson_pdf(mu, j2 + 1)
    p7 = _poisson_pdf(mu, j1 - 1)
    p8 = _poisson_pdf(mu, j2 - 1)
    p10 = _poisson_cdf(mu, j2 - 1) - p3 + p1
    epsi1 = c * (p6 - p3) + (mu / svar) * (p1 - p2)
    epsi2 = c * (p1 + p2) + (mu * mu / (svar * svar * svar)) * (p10 / mu + p7 - p1 - p8 + p2)
    return epsi1, epsi2


@njit(cache=True, error_model="numpy")
def _huber(r, c):
    if abs(r) < c:
        return r
    return c if r > 0 else -c


@njit(cache=True, error_model="numpy")
def _upper_median(values):
    """The value at position n // 2 of the sorted values (a linear-time selection, not a sort)."""
    middle = len(values) // 2
    return np.partition(values, middle)[middle]


@njit(cache=True, error_model="numpy")
def _distinct_from_tally(tally):
    present = np.flatnonzero(tally)
    return present.astype(np.float64), tally[present]


@njit(cache=True, error_model="numpy")
def _distinct_by_sorting(values):
    ordered = np.sort(values)
    starts = np.flatnonzero(np.concatenate((np.ones(1, np.bool_), ordered[1:] != ordered[:-1])))
    ends = np.append(starts[1:], len(values))
    return ordered[starts], ends - starts


@njit(cache=True, error_model="numpy")
def _tally_limit(n):
    """The largest count tallied in an array for ``n`` values; beyond it the values are sorted."""
    return 4 * n + 64


#: Photon counts below this are tallied in the first pass over a box's pixels (background counts nearly
#: always are); a box with a larger or non-integral candidate is looked at again (:func:`_wide_value_counts`).
SMALL_COUNTS = 64
_SMALL = np.float32(SMALL_COUNTS)
_BELOW_ZERO = np.float32(-1.0)


@njit(cache=True, error_model="numpy")
def _candidate_value_counts(data, mask, lo, hi):
    """``(distinct values, occurrences, number of candidates)`` of the candidate pixels in [lo, hi),
    tallied in an array when they are photon counts of a modest range; raises on a negative candidate.

    Each candidate is clamped into [-1, SMALL_COUNTS] in float32 (a NaN to
    -1), converted to an integer and tallied when that integer is in range
    and equal to the value; only a box with some other candidate looks at
    its pixels again (:func:`_wide_value_counts`).  Against comparing in
    float64 and keeping every candidate's maximum and integrality as it went,
    in four interleaved tallies: the GLM background of 13 captured parts of
    sweep400 (24.8 M voxels) 59-60 -> 48-49 ms, the tally alone 52 -> 39 ms,
    with the same results (2026-12-05).
    """
    tally = np.zeros(SMALL_COUNTS, np.int64)
    n_pixels = 0
    n_tallied = 0
    for i in range(lo, hi):
        if _is_candidate(mask[i]):
            n_pixels += 1
            y = data[i]
            k = np.int32(min(max(_BELOW_ZERO, y), _SMALL))
            if np.uint32(k) < np.uint32(SMALL_COUNTS) and np.float32(k) == y:
                tally[k] += 1
                n_tallied += 1
    if n_tallied == n_pixels:
        return _distinct_from_tally(tally) + (n_pixels,)
    return _wide_value_counts(data, mask, lo, hi) + (n_pixels,)


@njit(cache=True, error_model="numpy")
def _wide_value_counts(data, mask, lo, hi):
    """``(distinct values, occurrences)`` of candidates some of which are not small photon counts: tallied
    when all are whole and below :func:`_tally_limit`, else sorted; raises on a negative candidate."""
    n_pixels = 0
    high = 0.0
    integral = True
    for i in range(lo, hi):
        if _is_candidate(mask[i]):
            y = data[i]
            if y < 0:
                raise ValueError("negative background pixel")
            n_pixels += 1
            high = max(high, y)
            integral = integral and y == np.int64(y)
    if not (integral and high < _tally_limit(n_pixels)):
        return _distinct_by_sorting(data[_candidates(mask, lo, hi)].astype(np.float64))
    tally = np.zeros(int(high) + 1, np.int64)
    for i in range(lo, hi):
        if _is_candidate(mask[i]):
            tally[int(data[i])] += 1
    return _distinct_from_tally(tally)


@njit(cache=True, error_model="numpy")
def _robust_mean_of_counts(distinct, counts, n, c, tolerance, max_iter):
    """exp(beta) of the Huber-robust Poisson mean of ``n`` non-negative values, given as their distinct
    values (ascending) and occurrences; raises if not converged.

    Starts from the upper median (the value at sorted position n // 2); the
    score sums over the distinct values, each weighted by how often it
    occurs (background counts take few distinct values).
    """
    median = distinct[np.searchsorted(np.cumsum(counts), n // 2, side="right")]
    beta = math.log(median if median != 0 else 1.0)
    for _ in range(max_iter):
        mu = math.exp(beta)
        svar = math.sqrt(mu)
        epsi1, epsi2 = _expectations(mu, svar, c)
        U = 0.0
        for i in range(len(distinct)):
            U += counts[i] * (_huber((distinct[i] - mu) / svar, c) - epsi1) * mu / svar
        H = n * epsi2 * mu * mu / svar
        step = U / H
        error = math.sqrt(step * step / max(1e-10, beta * beta))
        beta += step
        if error < tolerance:
            if not -300 < beta < 300:
                raise ValueError("background out of range")
            return math.exp(beta)
    raise ValueError("robust Poisson mean did not converge")


@njit(cache=True, error_model="numpy")
def robust_poisson_glm(X, values, beta, c, tolerance, max_iter):
    """Huber-robust Poisson GLM with log link (design X (n, p)); returns the coefficients."""
    n, p = X.shape
    for _ in range(max_iter):
        U = np.zeros(p)
        H = np.zeros((p, p))
        for i in range(n):
            eta = (X[i] * beta).sum()
            mu = math.exp(eta)
            svar = math.sqrt(mu)
            epsi1, epsi2 = _expectations(mu, svar, c)
            q = (_huber((values[i] - mu) / svar, c) - epsi1) * mu / svar
            b = epsi2 * mu * mu / svar
            U += q * X[i]
            H += b * np.outer(X[i], X[i])
        step = np.linalg.solve(H, U)
        error = math.sqrt((step * step).sum() / max(1e-10, (beta * beta).sum()))
        beta = beta + step
        if error < tolerance:
            return beta
    raise ValueError("robust Poisson GLM did not converge")


@njit(cache=True, error_model="numpy")
def _glm_constant(data, mask, background, lo, hi, c, min_pixels, max_iter):
    """Constant robust Poisson background of voxels [lo, hi); returns (sum of the background over the
    pixels used, their number)."""
    distinct, counts, n_pixels = _candidate_value_counts(data, mask, lo, hi)
    if n_pixels < min_pixels:
        raise ValueError("too few background pixels")
    level = _robust_mean_of_counts(distinct, counts, n_pixels, c, 1e-3, max_iter)
    background[lo:hi] = level
    for i in range(lo, hi):
        if _is_candidate(mask[i]):
            mask[i] |= _USED
    return float(background[lo]) * n_pixels, n_pixels


@njit(cache=True, error_model="numpy")
def _glm_loglinear2d(data, mask, background, lo, hi, nx, ny, c, min_pixels, max_iter):
    """Log-linear robust Poisson background in x and y of voxels [lo, hi) (one frame of a box); returns
    (sum of the background over the pixels used, their number)."""
    index = _candidates(mask, lo, hi)
    if len(index) < min_pixels:
        raise ValueError("too few background pixels")
    values = data[index].astype(np.float64)
    if values.min() < 0:
        raise ValueError("negative background pixel")
    local = index - lo
    xs, ys = local % nx, local // nx
    if xs.min() == xs.max() or ys.min() == ys.max():
        raise ValueError("background pixels do not vary in x and y")
    X = np.ones((len(index), 3))
    X[:, 1] = ys + 0.5
    X[:, 2] = xs + 0.5
    median = _upper_median(values)
    beta = np.array([math.log(median if median != 0 else 1.0), 0.0, 0.0])
    beta = robust_poisson_glm(X, values, beta, c, 1e-3, max_iter)
    for b in beta:
        if not -300 < b < 300:
            raise ValueError("background out of range")
    for i in range(lo, hi):
        background[i] = math.exp(beta[0] + beta[1] * ((i - lo) // nx + 0.5) + beta[2] * ((i - lo) % nx + 0.5))
    total = 0.0
    for i in index:
        mask[i] |= _USED
        total += background[i]
    return total, len(index)


@njit(cache=True, error_model="numpy")
def glm_background(data, mask, background, offsets, bbox, model, c, min_pixels, max_iter):
    """The ``glm`` algorithm on every shoebox.  Returns ``(ok, mean)``.

    ``model``: 0 constant2d, 1 constant3d, 2 loglinear2d, 3 loglinear3d.
    loglinear3d fails every reflection, as it does upstream (DIALS never
    counts variation along z, so its own check always fails).
    """
    n = len(offsets) - 1
    ok = np.zeros(n, np.bool_)
    mean = np.zeros(n)
    for r in range(n):
        a, b = offsets[r], offsets[r + 1]
        if b == a:
            continue
        nx, ny, nz = bbox[r, 1] - bbox[r, 0], bbox[r, 3] - bbox[r, 2], bbox[r, 5] - bbox[r, 4]
        d, m, g = data[a:b], mask[a:b], background[a:b]
        try:
            if model == 1:
                total, used = _glm_constant(d, m, g, 0, b - a, c, min_pixels, max_iter)
            elif model == 3:
                raise ValueError("loglinear3d")
            else:
                total, used = 0.0, 0
                for k in range(nz):
                    lo, hi = k * nx * ny, (k + 1) * nx * ny
                    if model == 0:
                        frame_total, frame_used = _glm_constant(d, m, g, lo, hi, c, min_pixels, max_iter)
                    else:
                        frame_total, frame_used = _glm_loglinear2d(d, m, g, lo, hi, nx, ny, c, min_pixels,
                                                                   max_iter)
                    total += frame_total
                    used += frame_used
            mean[r] = total / used if used else 0.0
            ok[r] = True
        except Exception:  # noqa: BLE001 - the row is flagged, not fatal
            mean[r] = 0.0
    return ok, mean


@njit(cache=True, error_model="numpy")
def gmodel_background(data, mask, background, offsets, bbox, model_values, robust, min_pixels):
    """Scale a global background image (already cut to each box in ``model_values``) to the data.

    Returns ``(ok, mean, scale)``.  Non-robust: scale = sum(data) / sum(model)
    over candidates; robust: Anscombe-transformed weighted regression through
    the origin (10 passes, weights min(1, 3/|residual|)).
    """
    n = len(offsets) - 1
    ok = np.zeros(n, np.bool_)
    mean = np.zeros(n)
    scale = np.zeros(n)
    for r in range(n):
        a, b = offsets[r], offsets[r + 1]
        if b == a:
            continue
        m = mask[a:b]
        index = _candidates(m, 0, b - a)
        if len(index) < min_pixels:
            continue
        y = data[a:b][index].astype(np.float64)
        x = model_values[a:b][index].astype(np.float64)
        if robust:
            ty = 2.0 * np.sqrt(np.maximum(y, 0.0) + 0.375)
            tx = 2.0 * np.sqrt(np.maximum(x, 0.0) + 0.375)
            w = np.ones(len(y))
            s = 1.0
            for _ in range(10):
                s = (w * tx * ty).sum() / (w * tx * tx).sum()
                resid = np.abs(ty - s * tx)
                w = np.minimum(1.0, 3.0 / np.maximum(resid, 1e-12))
            s = (w * x * y).sum() / (w * x * x).sum()
        else:
            if y.sum() < 0 or x.sum() <= 0:
                continue
            s = y.sum() / x.sum()
        scale[r] = s
        background[a:b] = s * model_values[a:b]
        for i in index:
            m[i] |= _USED
        mean[r] = s * x.mean()
        ok[r] = True
    return ok, mean, scale
