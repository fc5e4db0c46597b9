"""Brent's minimisation of a function of one variable on a closed interval.

Golden-section steps combined with parabolic interpolation through the
three best points (R. P. Brent, *Algorithms for Minimization without
Derivatives*, 1973, ch. 5).  Written here rather than taken from
``scipy.optimize`` because importing that module cost about 0.13 s of every
integration's serial start-up, for the one call that estimates sigma_m.
"""

from __future__ import annotations

import math

#: The golden-section fraction (3 - sqrt 5) / 2.
GOLDEN = 0.5 * (3.0 - math.sqrt(5.0))
#: Square root of the float64 machine epsilon: the relative part of the tolerance.
SQRT_EPSILON = math.sqrt(2.0 ** -52)


def bounded_minimum(function, low: float, high: float, xatol: float = 1e-5, max_evaluations: int = 500) -> float:
    """The x in [low, high] at which ``function`` is smallest, to ``xatol`` absolute.

    The function is assumed unimodal on the interval; elsewhere a local
    minimum is returned.  The interval shrinks until its middle is within
    ``2 tol`` of the best point, ``tol = SQRT_EPSILON |x| + xatol / 3``;
    no point is evaluated closer than ``tol`` to another or to the ends.
    Raises ``ValueError`` on a reversed interval or when ``max_evaluations``
    are spent first.
    """
    a, b = float(low), float(high)
    if not a <= b:
        raise ValueError(f"bounded_minimum: the interval [{low}, {high}] is reversed")
    x = w = v = a + GOLDEN * (b - a)  # best, second best and previous second best points
    fx = fw = fv = function(x)
    step = previous_step = 0.0
    for _ in range(max_evaluations):
        middle = 0.5 * (a + b)
        tol = SQRT_EPSILON * abs(x) + xatol / 3.0
        if abs(x - middle) <= 2.0 * tol - 0.5 * (b - a):
            return x
        golden = True
        if abs(previous_step) > tol:
            # The parabola through (v, fv), (w, fw), (x, fx): its vertex is x + p / q.
            r = (x - w) * (fx - fv)
            q = (x - v) * (fx - fw)
            p = (x - v) * q - (x - w) * r
            q = 2.0 * (q - r)
            if q > 0.0:
                p = -p
            q = abs(q)
            older_step, previous_step = previous_step, step
            # Accepted when it lies inside the interval and moves less than half the step before last.
            if abs(p) < abs(0.5 * q * older_step) and q * (a - x) < p < q * (b - x):
                step = p / q
                if (x + step) - a < 2.0 * tol or b - (x + step) < 2.0 * tol:
                    step = tol if x < middle else -tol
                golden = False
        if golden:
            previous_step = (b - x) if x < middle else (a - x)
            step = GOLDEN * previous_step
        u = x + (step if abs(step) >= tol else math.copysign(tol, step))
        fu = function(u)
        if fu <= fx:
            if u < x:
                b = x
            else:
                a = x
            v, fv, w, fw, x, fx = w, fw, x, fx, u, fu
        else:
            if u < x:
                a = u
            else:
                b = u
            if fu <= fw or w == x:
                v, fv, w, fw = w, fw, u, fu
            elif fu <= fv or v == x or v == w:
                v, fv = u, fu
    raise ValueError(f"bounded_minimum: no convergence in {max_evaluations} evaluations")
