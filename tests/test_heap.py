"""Handing freed heap memory back to the operating system during a block's first pass (glibc)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from braggint.pipeline.heap import FreedMemoryReturn, release_memory, resident_bytes

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


def test_freed_memory_goes_back_once_the_process_has_grown_by_the_allowance():
    release_memory()  # so that the chunks below need fresh pages, whatever earlier tests freed
    keeper = FreedMemoryReturn(allowance=32 << 20)
    keeper.check()
    assert keeper.returns == 0  # nothing grown yet
    chunks = [bytearray(64 << 10) for _ in range(1600)]  # 100 MB of heap chunks, every page written
    pinned = bytearray(64 << 10)  # allocated above them: the heap's top cannot shrink past it
    grown = resident_bytes()
    del chunks
    keeper.check()
    assert keeper.returns == 1
    assert resident_bytes() < grown - (64 << 20)
    keeper.check()
    assert keeper.returns == 1  # back near its level: nothing more to hand back
    del pinned


#: Allocates, writes and frees a buffer of argv[2] bytes (and one of half that) twelve times, after setting
#: the heap up as argv[1] says, and prints the minor page faults of the last ten: "default" leaves glibc as
#: it is, "pad" sets only its growth step (M_TOP_PAD), "tune" calls :func:`tune_heap`.
ALLOCATION_LOOP = """
import resource, sys
import numpy as np
from braggint.pipeline import heap
mode, size = sys.argv[1], int(sys.argv[2])
if mode == "pad":
    heap._mallopt(heap._M_TOP_PAD, heap.HEAP_GROWTH_STEP)
elif mode == "tune":
    heap.tune_heap(size)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(12):
    if i == 2:
        before = faults()
    buffer, half = np.empty(size // 8), np.empty(size // 16)
    buffer[:] = half[:] = i
    del buffer, half
print(faults() - before)
"""


def _allocation_faults(mode: str, size: int) -> int:
    result = subprocess.run([sys.executable, "-c", ALLOCATION_LOOP, mode, str(size)], capture_output=True,
                            text=True, check=True)
    return int(result.stdout)


def test_frames_beyond_glibcs_adaptive_threshold_reuse_their_freed_memory():
    # A 6M-like frame decoded to int64 (50 MB), above the 32 MB glibc's own rule reaches: glibc maps each
    # such buffer afresh (at least one fault per 2 MB huge page, 25 a frame, and one per 4 KB page, 12 800 a
    # frame, without huge pages).  Kept on the heap, the next frame finds it mapped.
    assert _allocation_faults("default", 50 << 20) >= 10 * 25
    assert _allocation_faults("tune", 50 << 20) < 10 * 5


def test_setting_the_heaps_growth_alone_would_map_every_mid_sized_buffer_afresh():
    # glibc's adaptive threshold keeps 4 MB buffers on the heap, but setting any heap parameter freezes the
    # threshold at 128 KiB: the growth step alone made every such buffer a fresh mapping (1.5 GB in a block
    # of 400 2M-like images).  tune_heap fixes the threshold with it.
    assert _allocation_faults("default", 4 << 20) < 10 * 5
    assert _allocation_faults("pad", 4 << 20) >= 10 * 25
    assert _allocation_faults("tune", 4 << 20) < 10 * 5


#: Allocates 64 KiB chunks (below glibc's mmap threshold) until glibc extends its heap (its ``arena`` bytes,
#: from mallinfo2, grow), with or without :func:`tune_heap`, and prints by how many bytes the first
#: extension grew it.
HEAP_GROWTH = """
import ctypes, sys
from braggint.pipeline.heap import tune_heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "steps":
    tune_heap(step=64 << 20)
held = []
start = libc.mallinfo2().arena
while libc.mallinfo2().arena == start:
    held.append(bytearray(64 << 10))
print(libc.mallinfo2().arena - start)
"""


def _first_heap_extension(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", HEAP_GROWTH, mode], capture_output=True, text=True, check=True)
    return int(result.stdout)


def test_block_tasks_heap_grows_in_large_steps():
    # glibc extends its heap by the shortfall plus 128 KiB; with the step, by the shortfall plus 64 MB.
    assert _first_heap_extension("default") < 4 << 20
    assert _first_heap_extension("steps") >= 64 << 20
