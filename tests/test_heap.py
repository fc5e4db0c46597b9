"""Handing freed heap memory back to the operating system during a block's first pass (glibc)."""

from __future__ import annotations

import platform

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
