"""glibc's heap in long-running processes: how many arenas it keeps, how it grows, and handing freed memory back.

glibc keeps memory a process frees for its next allocations and returns
it to the operating system only from the top of the heap.  A block task
allocates and frees tens of MB per part of its reflections while the
results it keeps pile up between them, so the freed memory below them
stays resident: at 400 2M-like images a worker ended its first pass with
about 400 MB resident of which 180-200 MB were live (``malloc_trim``
returned the rest).  A block task hands freed memory back whenever it has
grown by :data:`RETAINED_BYTES` (:class:`FreedMemoryReturn`): the largest
block peak at 400 images went from 448-472 to 425-437 MB on two workers
and from 686-698 to 647-657 MB on one, and at 100 images from 349-368 to
327-338 MB on two.  Elsewhere than glibc these do nothing.
"""

from __future__ import annotations

import ctypes
import functools

import psutil

#: Resident bytes a block task may gain over what it held after it last handed freed memory back, before
#: it does so again.  One part's own temporaries exceed 64 MB: at that allowance a block of 400 images
#: handed memory back after 54 of its 79 parts and paid 0.22-0.26 s for it (and page faults for the memory
#: used again); at 128 MB, 3-4 times, 0.03 s.
RETAINED_BYTES = 128 << 20

#: Allocations up to this size come from glibc's heap in block tasks and in the command, and stay there for
#: reuse once freed (``M_MMAP_THRESHOLD``; glibc's own adaptive rule reaches at most 32 MB).
HEAP_ALLOCATION_LIMIT = 256 << 20

#: Bytes by which glibc extends its heap beyond what an allocation needs (``M_TOP_PAD``) in block tasks and in
#: the command.
HEAP_GROWTH_STEP = 64 << 20

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@functools.cache
def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _mallopt(parameter: int, value: int) -> None:
    """glibc's ``mallopt(parameter, value)``; nothing elsewhere than glibc."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(parameter, value)


def release_memory() -> None:
    """Hand memory freed by large temporaries back to the operating system (glibc's ``malloc_trim``)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas (I/O threads otherwise each keep freed memory of their own)."""
    _mallopt(_M_ARENA_MAX, arenas)


def tune_heap(largest_allocation: int = 0, step: int = HEAP_GROWTH_STEP) -> None:
    """Set glibc's heap up for block tasks and the command, for the rest of the process's life: allocations of
    up to :data:`HEAP_ALLOCATION_LIMIT` bytes (or ``largest_allocation``, a decoded image, when larger) come
    from the heap and freed ones stay there for the next to reuse, and the heap grows ``step`` bytes more than
    an allocation needs.

    glibc maps an allocation above its mmap threshold afresh and unmaps it
    when it is freed; the kernel then zeroes its pages on every first touch,
    which costs this virtual machine milliseconds a MB.  Its threshold adapts
    to the sizes freed (up to 32 MB) only until a program sets any of the
    heap's parameters: the growth step alone had frozen it at 128 KiB, and
    a block of 400 2M-like images on one worker with profile fitting then
    mapped 1.5 GB afresh in 1-8 MB pieces (grid cells, corner coordinates,
    background models: 200-270 k page faults in the run).  With the
    threshold fixed here: 87-92 k faults, system time 0.89-1.11 -> 0.46-0.74
    s, first pass 5.45-7.22 -> 5.18-6.16 s (means 6.13 -> 5.56 s, 5
    alternating runs), block peak 411-416 -> 418-428 MB; summation only,
    whose parts make few such buffers, unchanged; on two workers the first
    pass 3.57-4.12 -> 3.19-3.99 s and block peaks 326-330 -> 328-331 MB (3
    runs).  The trim threshold, twice the mmap threshold as glibc's
    own rule sets it, keeps freed memory at the heap's top too; block tasks
    hand freed memory back themselves (:class:`FreedMemoryReturn`).

    Growing in steps: a block task's heap grows whenever the rows waiting
    for their profiles outgrow it, and glibc extended it by just the
    shortfall, a few MB at a time.  The first writes to each such extension
    cost this virtual machine 30-80 ms (about 500 page faults, each 60-160
    us), paid by the part whose background model wrote there first: at 400
    2M-like images on one worker with profile fitting, 6-9 of the 79 parts
    took 27-80 ms for a background model that otherwise takes 5 ms.  The
    command's own preparation of the predictions grows its heap the same way
    (0.48-0.53 -> 0.45-0.48 s at 400 images).  Untouched pages of the pad
    are not resident, so the process's peak resident memory is not raised
    by it.

    6M-like frames (50 MB decoded by fabio, 25 MB by :mod:`braggint.io.cbf`)
    are kept on the heap by the same setting: read in a fresh process, each
    took 6.5 k page faults and 24-25 ms mapped afresh, 8.5 ms reused; in a
    block of the large case on one worker, the read stage took 3.5-4.2 s
    with 71-100 k faults, 3.5-3.8 s with 19-23 k kept (4 alternating runs).
    """
    threshold = max(HEAP_ALLOCATION_LIMIT, largest_allocation + (1 << 20))
    _mallopt(_M_MMAP_THRESHOLD, threshold)
    _mallopt(_M_TRIM_THRESHOLD, 2 * threshold)
    _mallopt(_M_TOP_PAD, step)


def resident_bytes() -> int:
    """This process's resident memory now (bytes)."""
    return psutil.Process().memory_info().rss


class FreedMemoryReturn:
    """Hands freed memory back (:func:`release_memory`) each time :meth:`check` finds the process
    ``allowance`` bytes larger than after the last time; ``returns`` counts how often it did."""

    def __init__(self, allowance: int = RETAINED_BYTES):
        self.allowance = allowance
        self.level = resident_bytes()
        self.returns = 0

    def check(self) -> None:
        if resident_bytes() > self.level + self.allowance:
            release_memory()
            self.returns += 1
            self.level = resident_bytes()
