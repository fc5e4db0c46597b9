"""Profile fitting of a block's reflections during its first pass, as soon as their reference profiles are final.

A reference profile that only this block's strong spots teach (see
:func:`.profile_fitting.block_local_profiles`) is final once the last of
those spots has been mapped: the other blocks add nothing to it.  The rows
fitted with such a profile wait in memory (their grid cells, a few z-steps
of the sweep's worth at most) until then and are fitted there, so their
grids never go to the work store; the rest are stored for the second pass
as before, unless the blocks exchange their sums (:mod:`.profile_exchange`):
then they wait too and are fitted once every block's sums are in.  Fitted
here or in the second pass, a row gets the same numbers.
"""

from __future__ import annotations

import numpy as np

from ..models.fit_grids import FitGrids
from ..models.reflection_table import ReflectionTable
from .part_rows import per_experiment, reassemble
from .profile_fitting import (
    FITTED_COLUMNS,
    MIN_REFERENCE_PARTIALITY,
    ReferenceProfiles,
    fit_profiles,
    make_sampler,
    profiles_with_folds,
    teaching_rows,
)
from .timing import StageTimes
from .validation import FOLD_COLUMN, STATISTICS, fold_statistics

#: Most bytes of grid cells (counts and background) waiting in memory for their profiles; rows beyond it
#: go to the work store for the second pass instead (a sweep of 400 2M-like images at 0.2 degrees peaked at
#: 80 MB).  Bounds a block's memory whatever the detector, oscillation or scan_step.
WAITING_BYTES = 128 << 20


def fit_part(job, part: ReflectionTable, source, references: dict[int, ReferenceProfiles],
             held_out: dict[int, list[ReferenceProfiles]] | None, timing: StageTimes,
             validation: dict[int, np.ndarray], only: np.ndarray | None = None) -> ReflectionTable:
    """Fit the rows of ``part`` (a group of a block's rows, fitted in place; returned in its row order) with
    ``references`` per experiment; with ``held_out`` profiles (validation folds), add each fold's statistics
    to ``validation[experiment]``.  ``source``: the rows' FitGrids or shoeboxes (detector space).  ``only``
    (bool, one per row): fit those rows alone (see :func:`fit_profiles`), reading the others' grids not at
    all, so a group's ready rows are fitted where they lie."""
    fit_method = job.params.profile.gaussian_rs.fitting.fit_method
    only = np.ones(part.nrows, bool) if only is None else only
    pieces = []
    for experiment_id, sub_rows, sub_table, sub_source in per_experiment(part, source):
        experiment_id = int(experiment_id)
        if experiment_id in references:
            experiment = job.experiments[experiment_id]
            with timing.stage("profile fitting"):
                fit_profiles(experiment, sub_table, sub_source, references[experiment_id], fit_method,
                             only[sub_rows])
            if held_out and experiment_id in held_out:
                with timing.stage("validation"):
                    _validate(experiment, sub_table, sub_source, held_out[experiment_id], fit_method,
                              validation.setdefault(experiment_id, np.zeros((job.n_folds, len(STATISTICS)))),
                              only[sub_rows])
        pieces.append((sub_rows, sub_table, sub_source))
    fitted, _ = reassemble(part, (source,), pieces)
    return fitted


def _validate(experiment, table: ReflectionTable, source, models: list[ReferenceProfiles], fit_method: str,
              statistics: np.ndarray, only: np.ndarray) -> None:
    """Fit each fold's fully recorded rows among ``only`` with the profiles learned without them; add their
    statistics."""
    full = (table["partiality"] > MIN_REFERENCE_PARTIALITY) & only
    for fold, model in enumerate(models):
        rows = np.flatnonzero((table[FOLD_COLUMN] == fold) & full)
        if len(rows):
            held = table.select(rows)
            fit_profiles(experiment, held, source.select(rows), model, fit_method)
            statistics[fold] += fold_statistics(held, table.select(rows))


class _Waiting:
    """A processed group's rows fitted here (block rows ``rows``, their table and grids), of which those
    still ``pending`` wait for their profiles.

    Rows that become ready are fitted where they lie in the group (see
    :meth:`take`), and the group is cut down to its pending rows only once
    fewer than half of them are left: each row's grids are then copied a
    bounded number of times, not again each time some of its group's rows
    become ready.
    """

    def __init__(self, rows: np.ndarray, table: ReflectionTable, grids: FitGrids):
        self.rows, self.table, self.grids = rows, table, grids
        self.pending = np.ones(len(rows), bool)

    @property
    def nbytes(self) -> int:
        """Bytes of grid cells (counts and background) the group holds."""
        return 8 * len(self.grids.data)

    def take(self, which: np.ndarray) -> tuple[np.ndarray, ReflectionTable, FitGrids, np.ndarray]:
        """``(block rows, table, grids, which)`` for fitting the rows ``which`` (pending ones), which stop
        pending: the block rows of those, and the group's whole table and grids, not copies (fitting
        writes into that table only the rows ``which`` picks)."""
        taken = (self.rows[which], self.table, self.grids, which)
        self._stop_pending(which)
        return taken

    def take_copies(self, which: np.ndarray) -> tuple[np.ndarray, ReflectionTable, FitGrids]:
        """``(block rows, table, grids)`` of the rows ``which`` (pending ones), copied out; they stop
        pending."""
        taken = self._picked(which)
        self._stop_pending(which)
        return taken

    def _stop_pending(self, which: np.ndarray) -> None:
        self.pending = self.pending & ~which
        left = np.count_nonzero(self.pending)
        if 0 < left < len(self.rows) / 2:
            self.rows, self.table, self.grids = self._picked(self.pending)
            self.pending = np.ones(left, bool)

    def _picked(self, which: np.ndarray) -> tuple[np.ndarray, ReflectionTable, FitGrids]:
        if which.all():
            return self.rows, self.table, self.grids
        return self.rows[which], self.table.select(which), self.grids.select(which)


class StreamedFits:
    """The rows of one block fitted during its first pass, waiting for their profiles and then fitted.

    ``local``: ``{experiment: (P,) bool}``, the profiles only this block
    teaches.  Rows of those experiments whose nearest profile is local (or
    who have none: outside the sampler's range) are fitted here; with
    ``exchange`` (the blocks exchange their sums at the end of the first
    pass, :mod:`.profile_exchange`) the other rows of those experiments
    wait too, for :meth:`finish_with` or :meth:`finish_alone`.
    """

    def __init__(self, job, local: dict[int, np.ndarray], exchange: bool = False):
        self.job = job
        self.local = local
        table = job.table
        gaussian = job.params.profile.gaussian_rs.fitting
        # Held for every row of the block all through its first pass: 6 bytes a row.  What a row teaches
        # follows from its nearest profile (Sampler.neighbours_of).
        self.profile_of_row = np.full(table.nrows, -1, np.int32)
        self.fitted_here = np.zeros(table.nrows, bool)
        self.teaches = np.zeros(table.nrows, bool)
        self.samplers = {}
        self.left: dict[int, np.ndarray] = {}  # experiment -> (P,) its block's references not mapped yet
        for number, is_local in local.items():
            sampler = self.samplers[number] = make_sampler(job.experiments[number], gaussian)
            rows = np.flatnonzero(table["id"] == number)
            profile = sampler.nearest(table["xyzcal.px"][rows])
            self.profile_of_row[rows] = profile
            self.fitted_here[rows] = True if exchange else (profile < 0) | is_local[np.maximum(profile, 0)]
            teaching, nearest = teaching_rows(table, number, sampler)
            self.teaches[teaching] = True
            profiles = sampler.neighbours_of(nearest)
            self.left[number] = np.bincount(profiles[profiles >= 0], minlength=sampler.size)
        self.waiting: list[_Waiting] = []
        self.fitted: list[tuple[np.ndarray, dict]] = []  # (block rows, their FITTED_COLUMNS)
        self.validation: dict[int, np.ndarray] = {}
        self.completed = False  # a profile became final since the last fit
        self.waiting_bytes = 0

    def add(self, rows: np.ndarray, table: ReflectionTable, grids: FitGrids) -> np.ndarray:
        """Take over the rows of a processed group (block rows ``rows``, their table and grids) that are
        fitted here once it has been mapped; returns which of them are left for the second pass (all of them
        while :data:`WAITING_BYTES` of grids are waiting)."""
        here = self.fitted_here[rows]
        if self.waiting_bytes + 8 * len(grids.data) > WAITING_BYTES:
            here = np.zeros(len(rows), bool)
        if here.any():
            # The table is always a copy: fitting writes its columns into the table it is given.
            kept = _Waiting(rows[here], table.select(here), grids if here.all() else grids.select(here))
            self.waiting.append(kept)
            self.waiting_bytes += kept.nbytes
        teaches = self.teaches[rows]
        teaching = rows[teaches]
        ids = np.asarray(table["id"])[teaches]
        for number in np.unique(ids):
            number = int(number)
            profiles = self.samplers[number].neighbours_of(self.profile_of_row[teaching[ids == number]])
            left = self.left[number]
            before = left == 0
            left -= np.bincount(profiles[profiles >= 0], minlength=len(left))
            self.completed |= bool(((left == 0) & ~before).any())
        return ~here

    def fit_ready(self, accumulators: dict, timing: StageTimes, final: bool = False) -> None:
        """Fit the waiting rows whose profiles are final (``final``: all of them, the block being mapped)
        with the block's own sums (``accumulators``: experiment -> ProfileAccumulator)."""
        if not self.waiting or not (final or self.completed):
            return
        self.completed = False
        ready_parts = []
        for group in self.waiting:
            ready = group.pending & (True if final else self._ready(group.rows, group.table))
            if ready.any():
                ready_parts.append(group.take(ready))
        self.waiting = [group for group in self.waiting if group.pending.any()]
        self.waiting_bytes = sum(group.nbytes for group in self.waiting)
        if not ready_parts:
            return
        sums = {number: accumulators[number].result() for number in self.left if number in accumulators}
        self._fit(ready_parts, sums, timing)

    def finish_alone(self, accumulators: dict, timing: StageTimes) -> list[tuple[np.ndarray, ReflectionTable,
                                                                                   FitGrids]]:
        """At the end of the block, without the other blocks' sums: fit the waiting rows whose profiles
        are final (local) and hand back the others ``(block rows, table, grids)`` for the work store."""
        self.completed = True
        self.fit_ready(accumulators, timing)
        left, self.waiting, self.waiting_bytes = self.waiting, [], 0
        return [group.take_copies(group.pending) for group in left]

    def finish_with(self, sums: dict, timing: StageTimes) -> None:
        """At the end of the block, with every block's reduced ``sums`` (experiment -> (sums, counts)): fit
        every waiting row."""
        left, self.waiting, self.waiting_bytes = self.waiting, [], 0
        self._fit([group.take(group.pending) for group in left], sums, timing)

    def _fit(self, parts: list, sums: dict, timing: StageTimes) -> None:
        """Fit ``parts`` (block rows, table, grids, the rows of those to fit: :meth:`_Waiting.take`) with the
        profiles made from ``sums``."""
        if not parts:
            return
        references, held_out = self._models(sums, timing)
        for rows, table, grids, which in parts:
            fitted = fit_part(self.job, table, grids, references, held_out, timing, self.validation, which)
            every_row = which.all()
            self.fitted.append((rows, {name: fitted[name] if every_row else fitted[name][which]
                                       for name in FITTED_COLUMNS}))

    def _ready(self, rows: np.ndarray, table: ReflectionTable) -> np.ndarray:
        """Which rows' profiles are final: local ones whose teaching spots are all mapped (or none)."""
        profile = self.profile_of_row[rows]
        ready = profile < 0
        ids = np.asarray(table["id"])
        for number in np.unique(ids):
            mine = (ids == number) & (profile >= 0)
            number = int(number)
            ready[mine] = (self.left[number][profile[mine]] == 0) & self.local[number][profile[mine]]
        return ready

    def _models(self, sums: dict, timing: StageTimes):
        """The profiles (and those without each validation fold) per experiment from ``sums``."""
        job = self.job
        gaussian = job.params.profile.gaussian_rs.fitting
        references, held_out = {}, {}
        with timing.stage("profile modelling"):
            for number, (fold_sums, counts) in sums.items():
                if number not in self.left:
                    continue
                references[number], without_fold = profiles_with_folds(
                    job.experiments[number], job.profiles[number], gaussian, fold_sums, counts, quiet=True)
                if without_fold is not None:
                    held_out[number] = without_fold
        return references, held_out
