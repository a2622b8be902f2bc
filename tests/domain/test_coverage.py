"""Block sums: what segments add to each block, per block size (tamstore.domain.coverage)."""

from __future__ import annotations

import random

from tamstore.domain.coverage import BLOCK_SECONDS, block_sums

S = 10**9


def test_block_sums_are_the_sums_of_the_segments_starting_in_each_block() -> None:
    """Against a plain sum per segment and size, over random timelines that cross zero, with gaps
    and segments longer than a block (the fast path sums the finest blocks, then those)."""
    rng = random.Random(1)
    for _ in range(200):
        spans = []
        t = rng.randrange(-(10**13), 10**13)
        for _ in range(rng.randrange(1, 300)):
            length = rng.randrange(1, 10**12)
            spans.append((t, t + length))
            t += length + rng.choice([0, 0, rng.randrange(1, 10**12)])
        expected: dict[tuple[int, int], list[int]] = {}
        for a, b in spans:
            for seconds in BLOCK_SECONDS:
                sums = expected.setdefault((seconds, a // (seconds * S)), [0, 0, b - a, b - a])
                sums[0] += 1
                sums[1] += b - a
                sums[2], sums[3] = min(sums[2], b - a), max(sums[3], b - a)
        got = {(x.seconds, x.block): [x.segments, x.covered, x.shortest, x.longest] for x in block_sums(spans)}
        assert got == expected
