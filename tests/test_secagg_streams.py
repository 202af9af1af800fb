"""secagg.prg.add_streams (cache-blocked, threaded) equals mask-by-mask expansion."""

from __future__ import annotations

import os

import numpy as np
import pytest

from secagg import prg
from secagg.errors import SecAggParameterError
from secagg.prg import MaskExpander, add_streams


def _reference(d, bits, items, dtype):
    acc = np.zeros(d, dtype=dtype)
    exp = MaskExpander(d, bits)
    for seed, sign in items:
        exp._add_raw(acc, seed, sign)
    return acc


@pytest.mark.parametrize("d", [0, 1, 3, 5, 4095, 4096, 40_001, 300_007])
@pytest.mark.parametrize("bits, dtype", [(32, np.uint32), (64, np.uint64)])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_add_streams_matches_expansion_for_any_size_and_workers(
    d, bits, dtype, workers, monkeypatch
):
    monkeypatch.setattr(prg, "STREAM_CHUNK_BYTES", 1 << 12)  # many chunks and thread ranges
    items = [(os.urandom(32), (-1) ** k) for k in range(7)]
    start = np.arange(d, dtype=dtype)
    acc = start.copy()
    add_streams(acc, items, workers=workers)
    want = start + _reference(d, bits, items, dtype)
    np.testing.assert_array_equal(acc, want)


def test_add_streams_checks_its_arguments():
    acc = np.zeros(8, dtype=np.uint32)
    with pytest.raises(SecAggParameterError, match="sign"):
        add_streams(acc, [(bytes(32), 2)])
    with pytest.raises(SecAggParameterError, match="seed"):
        add_streams(acc, [(bytes(31), 1)])
    with pytest.raises(SecAggParameterError, match="uint32 or uint64"):
        add_streams(np.zeros(8, dtype=np.float32), [(bytes(32), 1)])
    with pytest.raises(SecAggParameterError, match="contiguous"):
        add_streams(np.zeros(16, dtype=np.uint32)[::2], [(bytes(32), 1)])
    with pytest.raises(SecAggParameterError, match="workers"):
        add_streams(acc, [(bytes(32), 1)], workers=0)
