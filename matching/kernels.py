"""The int8 scan behind matching.quantised, compiled by numba.

NumPy has no int8 matrix product with a 32-bit sum (its integer matmul is a plain loop, and casting the codes to
float32 for BLAS costs a pass four times their size), nor a way to fuse the threshold into the scan. numba
compiles this loop for the machine it runs on (AVX-512 VNNI or AVX2 dot products), releases the GIL so that
threads can scan ranges of rows at once, and caches the compiled code beside this file (`cache=True`), so that
only the first process after an install pays the compile (a few seconds). See bench/README.md for the figures.
"""

from __future__ import annotations

import numpy as np
from numba import njit

DIM = 128
REMOVED = 1 << 30


@njit(cache=True, inline="always")
def _limit_squared(limit: float, reach: float, residual_max: float, inverse_scale: float) -> int:
    """The largest integer D that can pass for this limit, with a margin upward (0 rows pass when negative)."""
    edge = (limit + reach + residual_max) * inverse_scale
    if edge < 0.0:
        return -1
    return np.int64(edge * edge * (1.0 + 1e-9)) + 1


# Rows per block: the hot loop only finds (row, probe) pairs under the coarse limit, a block at a time; the rare
# pairs it finds are then checked and recorded outside it. Kept apart, the hot loop compiles to the tight dot
# products alone (with the bookkeeping inside, it ran about three times slower).
BLOCK_ROWS = 256


@njit(cache=True, nogil=True, boundscheck=False)
def _block_candidates(codes, sq_norms, probe_codes, probe_sq, coarse, lo, hi, found_row, found_probe, found_d):
    probes = probe_codes.shape[0]
    # The dot products go through an int32 array: stored as 32 bits, they are computed in 32-bit lanes (exact:
    # |dot| <= 128 * 127 * 127), which vectorises about four times better than a sum LLVM must keep in 64 bits.
    dots = np.empty(probes, dtype=np.int32)
    count = 0
    for i in range(lo, hi):
        sq = np.int64(sq_norms[i])
        for p in range(probes):
            acc = np.int32(0)
            for j in range(DIM):
                acc += np.int32(codes[i, j]) * np.int32(probe_codes[p, j])
            dots[p] = acc
        for p in range(probes):
            d = sq + probe_sq[p] - 2 * np.int64(dots[p])
            if d <= coarse[p]:
                found_row[count] = i
                found_probe[count] = p
                found_d[count] = d
                count += 1
    return count


@njit(cache=True, nogil=True, boundscheck=False)
def scan_rows(
    codes,
    sq_norms,
    residuals,
    subject_ids,
    lo,
    hi,
    probe_codes,
    probe_sq,
    reach,
    threshold,
    scale,
    residual_max,
    k,
):
    """Rows lo..hi against every probe: (probe index, row, lower bound, upper bound) of each row that passes.

    A row passes when its lower bound is at most the probe's running limit: the threshold, lowered to the k-th
    smallest upper bound among distinct subjects seen so far (never below the final U_k; see matching.quantised).
    A removed row's squared norm (REMOVED) puts it beyond every limit.
    """
    probes = probe_codes.shape[0]
    inverse_scale = 1.0 / scale
    top_upper = np.full((probes, k), np.inf)
    top_subject = np.full((probes, k), -1, dtype=np.int64)
    limit = np.full(probes, threshold)
    coarse = np.empty(probes, dtype=np.int64)
    for p in range(probes):
        coarse[p] = _limit_squared(threshold, reach[p], residual_max, inverse_scale)
    found_row = np.empty(BLOCK_ROWS * probes, dtype=np.int64)
    found_probe = np.empty(BLOCK_ROWS * probes, dtype=np.int64)
    found_d = np.empty(BLOCK_ROWS * probes, dtype=np.int64)
    capacity = 1024
    out_probe = np.empty(capacity, dtype=np.int32)
    out_row = np.empty(capacity, dtype=np.int64)
    out_lower = np.empty(capacity, dtype=np.float64)
    out_upper = np.empty(capacity, dtype=np.float64)
    count = 0
    for start in range(lo, hi, BLOCK_ROWS):
        found = _block_candidates(
            codes,
            sq_norms,
            probe_codes,
            probe_sq,
            coarse,
            start,
            min(hi, start + BLOCK_ROWS),
            found_row,
            found_probe,
            found_d,
        )
        for f in range(found):
            i = found_row[f]
            p = found_probe[f]
            d = found_d[f]
            if d > coarse[p]:  # the limit fell since the block was scanned
                continue
            r = np.float64(residuals[i])
            base = scale * np.sqrt(np.float64(d))
            lower = base - r - reach[p]
            if lower > limit[p]:
                continue
            upper = base + r + reach[p]
            if count == capacity:
                capacity *= 2
                grown_probe = np.empty(capacity, dtype=np.int32)
                grown_row = np.empty(capacity, dtype=np.int64)
                grown_lower = np.empty(capacity, dtype=np.float64)
                grown_upper = np.empty(capacity, dtype=np.float64)
                grown_probe[:count] = out_probe[:count]
                grown_row[:count] = out_row[:count]
                grown_lower[:count] = out_lower[:count]
                grown_upper[:count] = out_upper[:count]
                out_probe, out_row, out_lower, out_upper = grown_probe, grown_row, grown_lower, grown_upper
            out_probe[count] = p
            out_row[count] = i
            out_lower[count] = lower
            out_upper[count] = upper
            count += 1
            # The k smallest upper bounds among distinct subjects, ascending.
            subject = np.int64(subject_ids[i])
            slot = -1
            for t in range(k):
                if top_subject[p, t] == subject:
                    slot = t
                    break
            if slot >= 0:
                if upper >= top_upper[p, slot]:
                    continue
                top_upper[p, slot] = upper
            elif upper < top_upper[p, k - 1]:
                slot = k - 1
                top_upper[p, slot] = upper
                top_subject[p, slot] = subject
            else:
                continue
            while slot > 0 and top_upper[p, slot] < top_upper[p, slot - 1]:
                top_upper[p, slot], top_upper[p, slot - 1] = top_upper[p, slot - 1], top_upper[p, slot]
                top_subject[p, slot], top_subject[p, slot - 1] = top_subject[p, slot - 1], top_subject[p, slot]
                slot -= 1
            kth = top_upper[p, k - 1]
            if kth < limit[p]:
                limit[p] = kth
                coarse[p] = _limit_squared(kth, reach[p], residual_max, inverse_scale)
    return out_probe[:count], out_row[:count], out_lower[:count], out_upper[:count]
