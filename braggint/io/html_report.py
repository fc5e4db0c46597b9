"""A self-contained HTML report of an integration run: tables and inline SVG plots, no scripts.

Plots: I/sigma (summation and profile fitting) and reflection counts
against image and against resolution, mean background against image, the
profile model (sigma_b, sigma_m) and the central sections of the reference
profiles.
"""

from __future__ import annotations

import html

import numpy as np

from ..models.experiment import ExperimentList
from .atomic import atomic_open

_WIDTH, _HEIGHT, _MARGIN = 520, 260, 48
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def svg_lines(title: str, x: np.ndarray, series: dict[str, np.ndarray], x_label: str, y_label: str) -> str:
    """A line plot of ``series`` (name -> y values) against ``x``, as an inline SVG element."""
    x = np.asarray(x, float)
    ys = [np.asarray(v, float) for v in series.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in ys] + [np.zeros(1)])
    y_low, y_high = min(0.0, finite.min()), max(finite.max(), 1e-9)
    x_low, x_high = (x.min(), x.max()) if len(x) > 1 and x.max() > x.min() else (0.0, 1.0)

    def sx(v):
        return _MARGIN + (v - x_low) / (x_high - x_low) * (_WIDTH - 1.5 * _MARGIN)

    def sy(v):
        return _HEIGHT - _MARGIN + -(v - y_low) / (y_high - y_low) * (_HEIGHT - 1.7 * _MARGIN)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" role="img">',
             f"<title>{html.escape(title)}</title>",
             f'<text x="{_WIDTH / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
             f'<line x1="{_MARGIN}" y1="{_HEIGHT - _MARGIN}" x2="{_WIDTH - _MARGIN / 2}" y2="{_HEIGHT - _MARGIN}" '
             'stroke="black"/>',
             f'<line x1="{_MARGIN}" y1="{_HEIGHT - _MARGIN}" x2="{_MARGIN}" y2="{0.7 * _MARGIN}" stroke="black"/>',
             f'<text x="{_WIDTH / 2}" y="{_HEIGHT - 10}" text-anchor="middle" font-size="11">'
             f"{html.escape(x_label)}</text>",
             f'<text x="12" y="{_HEIGHT / 2}" font-size="11" transform="rotate(-90 12 {_HEIGHT / 2})" '
             f'text-anchor="middle">{html.escape(y_label)}</text>']
    for value in np.linspace(x_low, x_high, 5):
        parts.append(f'<text x="{sx(value):.1f}" y="{_HEIGHT - _MARGIN + 14}" font-size="10" '
                     f'text-anchor="middle">{value:.3g}</text>')
    for value in np.linspace(y_low, y_high, 5):
        parts.append(f'<text x="{_MARGIN - 4}" y="{sy(value) + 3:.1f}" font-size="10" '
                     f'text-anchor="end">{value:.3g}</text>')
    for k, (name, y) in enumerate(zip(series, ys)):
        colour = _COLOURS[k % len(_COLOURS)]
        points = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(x, y) if np.isfinite(b))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
        parts.append(f'<text x="{_WIDTH - _MARGIN}" y="{28 + 14 * k}" font-size="11" fill="{colour}" '
                     f'text-anchor="end">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_image(title: str, image: np.ndarray, size: int = 132) -> str:
    """A small grey-scale picture of a 2-D array (e.g. a profile section)."""
    image = np.asarray(image, float)
    top = image.max() if image.max() > 0 else 1.0
    ny, nx = image.shape
    cell = size / max(nx, ny)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size + 16}" role="img">',
             f"<title>{html.escape(title)}</title>",
             f'<text x="{size / 2}" y="11" font-size="10" text-anchor="middle">{html.escape(title)}</text>']
    for j in range(ny):
        for i in range(nx):
            level = int(255 * (1 - image[j, i] / top))
            parts.append(f'<rect x="{i * cell:.1f}" y="{16 + j * cell:.1f}" width="{cell:.1f}" height="{cell:.1f}" '
                         f'fill="rgb({level},{level},{level})"/>')
    parts.append("</svg>")
    return "".join(parts)


def _column(table, key):
    return np.array([float(row[[k for k, _ in table.cols].index(key)]) for row in table.rows])


def write_html_report(path: str, experiments: ExperimentList, report_tables, references: dict,
                      title: str = "braggint integration report") -> None:
    """Write the report to ``path`` (temporary name, then renamed)."""
    by_name = {t.name: t for t in report_tables}
    sections = [f"<h1>{html.escape(title)}</h1>"]
    for number, experiment in enumerate(experiments):
        profile = experiment.profile
        if profile is not None:
            sections.append(f"<p>Experiment {number}: sigma_b = {np.mean(profile.sigma_b):.4f}&deg;, "
                            f"sigma_m = {np.mean(profile.sigma_m):.4f}&deg;, n_sigma = {profile.n_sigma}</p>")
    images = by_name.get("integration.image.summary")
    if images is not None and images.rows:
        x = _column(images, "image")
        sections.append("<h2>Against image</h2>")
        sections.append(svg_lines("I/sigma(I) against image", x, {"summation": _column(images, "ios_sum"),
                                                                    "profile fitting": _column(images, "ios_prf")},
                                  "image", "mean I/sigma"))
        sections.append(svg_lines("Reflections against image", x, {"summation": _column(images, "n_sum"),
                                                                     "profile fitting": _column(images, "n_prf")},
                                  "image", "reflections"))
        sections.append(svg_lines("Background against image", x, {"mean background": _column(images, "ibg")},
                                  "image", "counts per pixel"))
    shells = by_name.get("integration.resolution.summary")
    if shells is not None and shells.rows:
        d = _column(shells, "dmin")
        x = 1.0 / d**2
        sections.append("<h2>Against resolution</h2>")
        sections.append(svg_lines("I/sigma(I) against resolution", x,
                                  {"summation": _column(shells, "ios_sum"), "profile fitting": _column(shells, "ios_prf")},
                                  "1/d^2 (1/A^2)", "mean I/sigma"))
    for number, model in references.items():
        pictures = []
        for j in np.flatnonzero(model.usable)[:9]:
            grid = model.profiles[j]
            pictures.append(svg_image(f"profile {j}", grid[grid.shape[0] // 2]))
        if pictures:
            sections.append(f"<h2>Reference profiles, experiment {number} (central e3 section)</h2>"
                            + "".join(pictures))
    for table in report_tables:
        head = "".join(f"<th>{html.escape(label)}</th>" for _, label in table.cols)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in table.rows)
        sections.append(f"<h2>{html.escape(table.title)}</h2><table><tr>{head}</tr>{body}</table>")
    document = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
                "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
                "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}svg{margin:4px}</style></head><body>"
                + "\n".join(sections) + "</body></html>")
    with atomic_open(path, "w") as handle:
        handle.write(document)
