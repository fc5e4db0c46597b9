"""Preparing the strong, indexed spots ("reference") for profile modelling.

1. ``split_reference``: keep indexed rows that are good for refinement and
   have a non-zero Miller index; the rest is "rubbish" (kept so that
   ``output.include_bad_reference`` can append it).
2. ``mask_neighbouring_pixels``: pixels of a reference shoebox that belong
   to another reflection (their fractional Miller index, evaluated on both
   frame boundaries, rounds to a different hkl) become Valid|Background.
3. ``match_reference``: pair reference spots with predictions by
   (hkl, entering, id, panel) and the nearest ``xyzcal.px`` (< 2 px/frames).
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputFileError
from ..models.experiment import ExperimentList
from ..models.flags import Flags, MaskCode
from ..models.reflection_table import ReflectionTable
from ..models.shoebox import ragged_positions
from ..tasks.coordinates import unit
from ..tasks.neighbours import mask_foreign_voxels
from ..tasks.pixel_lab import panel_table

log = logging.getLogger("braggint")

#: Reference flags copied onto the predictions they match.
REFERENCE_FLAGS = Flags.strong | Flags.indexed | Flags.used_in_refinement
#: Largest distance (pixels and frames) of an accepted reference-prediction pair.
MATCH_DISTANCE = 2.0


def split_reference(reference: ReflectionTable, path: str = "reference",
                    keep_rubbish: bool = True) -> tuple[np.ndarray, ReflectionTable]:
    """``(usable rows, rubbish)`` of the strong spots; logs what was removed.

    ``usable``: the row numbers (int64) in ``reference`` of the spots kept;
    the table is left whole, its shoeboxes not copied (:func:`matched_reference`
    copies those of the spots that match, once).  With ``keep_rubbish`` False
    the rubbish is an empty table (its shoeboxes are not copied only to be
    dropped).
    """
    log.info("Processing reference reflections\n read %d strong spots", reference.nrows)
    indexed = reference.get_flags(Flags.indexed)
    bad = reference.get_flags(Flags.bad_for_refinement, all=False)
    zero_hkl = (reference["miller_index"] == 0).all(axis=1)
    if (~indexed).any():
        log.info(" removing %d unindexed reflections", int((~indexed).sum()))
    if not indexed.any():
        raise InputFileError(f"{path}: no indexed spots found in the reference reflections")
    if (indexed & bad).any():
        log.info(" removing %d reflections marked as bad for refinement", int((indexed & bad).sum()))
    if (indexed & ~bad & zero_hkl).any():
        log.info(" removing %d reflections with hkl (0,0,0)", int((indexed & ~bad & zero_hkl).sum()))
    keep = indexed & ~bad & ~zero_hkl
    usable = np.flatnonzero(keep)
    if (reference["id"][usable] < 0).any():
        raise InputFileError(f"{path}: {int((reference['id'][usable] < 0).sum())} reference spots have an invalid "
                             "experiment id")
    if not np.array_equal(reference["panel"][usable].astype(np.int64),
                          reference["shoebox"].panel[usable].astype(np.int64)):
        raise InputFileError(f'{path}: the "panel" column does not match the shoebox panels')
    # In DIALS's order: the unindexed spots, then those bad for refinement, then those of hkl (0,0,0).
    rubbish = reference.select(np.concatenate([np.flatnonzero(~indexed), np.flatnonzero(indexed & bad),
                                               np.flatnonzero(indexed & ~bad & zero_hkl)])) if keep_rubbish \
        else ReflectionTable()
    log.info(" using %d indexed reflections\n found %d junk reflections", len(usable), int((~keep).sum()))
    return usable, rubbish


def mask_neighbouring_pixels(reference: ReflectionTable, experiments: ExperimentList,
                             rows: np.ndarray | None = None) -> int:
    """Set Valid|Background on pixels closer to another hkl (in place), in the shoeboxes of rows ``rows``
    (row numbers; every row when None); returns the number of shoeboxes changed.

    The fractional index at a pixel centre is ``h = A^-1 F^-1 R(e, phi)^T
    S^-1 (s' - s0)``, s' being the pixel's lab direction scaled to |s0|,
    evaluated at both edges of the voxel's frame (for a still, once with no
    rotation: ``h = A^-1 (s' - s0)``).
    """
    shoeboxes = reference["shoebox"]
    changed_rows = np.zeros(reference.nrows, bool)
    code = np.uint8(MaskCode.Valid | MaskCode.Background)
    hkl = np.ascontiguousarray(reference["miller_index"], dtype=np.int64)
    bbox, panel = shoeboxes.bbox.astype(np.int64), shoeboxes.panel.astype(np.int64)
    ids = reference["id"]
    rows = np.arange(reference.nrows) if rows is None else np.asarray(rows, np.int64)
    for number in np.unique(ids[rows]):
        experiment = experiments[int(number)]
        of_experiment = rows[ids[rows] == number]
        if experiment.is_still:
            unsetting, scan, axis = np.eye(3), np.zeros(3), np.array([1.0, 0.0, 0.0])
            to_hkl = np.linalg.inv(experiment.crystal.A)
        else:
            gonio = experiment.goniometer
            unsetting = np.linalg.inv(gonio.setting_rotation)
            phi0, dphi = experiment.scan.oscillation_rad
            scan = np.array([experiment.scan.array_range[0], phi0, dphi], dtype=float)
            axis = unit(np.asarray(gonio.rotation_axis, dtype=float))
            to_hkl = np.linalg.inv(gonio.fixed_rotation @ experiment.crystal.A)
        changed_rows[of_experiment] = mask_foreign_voxels(
            of_experiment, panel_table(experiment.detector), panel, np.asarray(experiment.beam.s0, dtype=float),
            unsetting, bbox, shoeboxes.offsets, shoeboxes.mask, hkl, scan, axis, to_hkl, code)
    return int(changed_rows.sum())


def _distinct_row_ids(keys: np.ndarray) -> np.ndarray:
    """For each row of ``keys`` (n, k; integers) the number of its distinct value in lexicographic order
    (what ``np.unique(keys, axis=0, return_inverse=True)`` gives).

    When the columns' ranges fit in 63 bits together (Miller indices,
    entering, experiment and panel do), each row is packed into one int64
    whose order is the rows' lexicographic order, and one sort of those
    numbers gives the ids (the 143 k keys of 400 2M-like images: 19 ms
    against 57 ms by a lexsort of the columns in a fresh process, 18-19
    against 22-24 ms warm); otherwise the columns are lexsorted.
    """
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    low = keys.min(axis=0)
    bits = [int(span).bit_length() for span in keys.max(axis=0) - low]
    if sum(bits) <= 63:
        packed = np.zeros(len(keys), np.int64)
        for column, width in enumerate(bits):
            packed = (packed << width) | (keys[:, column] - low[column])
        return np.unique(packed, return_inverse=True)[1].astype(np.int64)
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    new = np.concatenate([[False], np.any(ordered[1:] != ordered[:-1], axis=1)])
    ids = np.empty(len(keys), np.int64)
    ids[order] = np.cumsum(new)
    return ids


def match_reference(predicted: ReflectionTable, reference: ReflectionTable,
                    rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(predicted rows, reference rows)`` of matching spots, among the reference's rows ``rows`` (row
    numbers; every row when None).

    Key: (h, k, l, entering, id, panel); within a key each reference keeps
    its nearest prediction in ``xyzcal.px``, and pairs further apart than
    :data:`MATCH_DISTANCE` are dropped.
    """
    def keys(table):
        return np.column_stack([table["miller_index"].astype(np.int64), table["entering"].astype(np.int64),
                                table["id"].astype(np.int64), table["panel"].astype(np.int64)])

    rows = np.arange(reference.nrows) if rows is None else np.asarray(rows, np.int64)
    pk, rk = keys(predicted), keys(reference)[rows]
    key_id = _distinct_row_ids(np.concatenate([pk, rk]))
    p_key, r_key = key_id[: len(pk)], key_id[len(pk):]
    p_order = np.argsort(p_key, kind="stable")
    p_sorted = p_key[p_order]
    starts = np.searchsorted(p_sorted, r_key, side="left")
    ends = np.searchsorted(p_sorted, r_key, side="right")
    p_xyz, r_xyz = predicted["xyzcal.px"], reference["xyzcal.px"][rows]
    # Every (reference, candidate prediction) pair; each reference keeps its nearest candidate (the first
    # in prediction order on a tie).
    counts = ends - starts
    ref_rows = np.repeat(np.arange(len(r_key)), counts)
    position = ragged_positions(counts)
    pred_rows = p_order[starts[ref_rows] + position]
    distance = np.sum((p_xyz[pred_rows] - r_xyz[ref_rows]) ** 2, axis=1)
    order = np.lexsort((position, distance, ref_rows))
    nearest = order[np.concatenate([[True], np.diff(ref_rows[order]) != 0])] if len(order) else order
    nearest = nearest[distance[nearest] < MATCH_DISTANCE**2]
    pred_rows, ref_rows = pred_rows[nearest].astype(np.int64), ref_rows[nearest].astype(np.int64)
    # One reference per prediction: keep the nearest.
    if len(pred_rows):
        distance = np.sum((p_xyz[pred_rows] - r_xyz[ref_rows]) ** 2, axis=1)
        order = np.lexsort((distance, pred_rows))
        first = np.concatenate([[True], np.diff(pred_rows[order]) != 0])
        pred_rows, ref_rows = pred_rows[order][first], ref_rows[order][first]
    return pred_rows, rows[ref_rows]


def matched_reference(predicted: ReflectionTable, reference: ReflectionTable, path: str = "reference",
                      rows: np.ndarray | None = None, copy_shoeboxes: bool = True) -> ReflectionTable:
    """Reference rows (among ``rows``, row numbers; every row when None) that match a prediction, carrying
    the predicted geometry, in the order of the predictions they match (as DIALS orders them).

    Marks the matched predictions ``reference_spot`` and ORs the reference's
    strong/indexed/used_in_refinement flags into them (in place).  The
    returned rows keep their own bbox and observed centroids, and their
    shoeboxes, copied; with ``copy_shoeboxes`` False they carry instead
    ``reference_row``, their row numbers in ``reference``, whose shoebox
    column the profile model then reads in place (a copy of the matched
    spots' voxels cost sweep400's run 0.2 s, most of it the first touch of
    50 MB of fresh memory).
    """
    pred_rows, ref_rows = match_reference(predicted, reference, rows)
    if len(pred_rows) == 0:
        raise InputFileError(f"{path}: zero reference spots were matched to predictions")
    unmatched = (reference.nrows if rows is None else len(rows)) - len(ref_rows)
    if unmatched:
        log.warning("Warning: %d reference spots were not matched to predictions", unmatched)
    flags = predicted["flags"]
    flags[pred_rows] |= np.uint64(Flags.reference_spot) | (
        reference["flags"][ref_rows] & np.uint64(REFERENCE_FLAGS))
    matched = (reference if copy_shoeboxes else reference.without(["shoebox"])).select(ref_rows)
    if not copy_shoeboxes:
        matched["reference_row"] = ref_rows
    for name in ("s1", "xyzcal.mm", "xyzcal.px", "d", "entering"):
        if name in predicted:
            matched[name] = predicted[name][pred_rows]
    matched["predicted_row"] = pred_rows
    return matched
