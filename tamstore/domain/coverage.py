"""Coverage blocks: a Flow's segments summed per minute and per hour of its timeline.

A zoomed-out timeline (a day, a month, a year of a Flow) asks how much of each part of a long
range is covered, how many segments it holds and how long they are. Read from the segments,
that answer costs a row per segment: 10 million one-second segments took seconds. Every write
that adds or removes segments also keeps, per block of ``BLOCK_SECONDS`` of the timeline, the
count, total duration and shortest and longest duration of the segments that *start* in it;
a long range is then answered from whole blocks (an hour at a time where it can be, a minute at
the edges) and only its ragged ends from segments, so the rows read grow with the range's hours,
not with its segments.

Blocks are numbered by floor division of a segment's start (negative timestamps included), in
integers of nanoseconds, as every timestamp here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from tamstore.domain.timerange import NS_PER_S

__all__ = ["BLOCK_SECONDS", "MIN_BLOCKS", "BlockSums", "Piece", "block_sums", "pieces"]

BLOCK_SECONDS = (60, 3600)  # finest first; each a whole multiple of the one before
MIN_BLOCKS = 4  # a level serves a stretch only where it has at least this many whole blocks


class BlockSums(NamedTuple):
    """The segments starting in one block (``block``: start // size) of one size."""

    seconds: int
    block: int
    segments: int
    covered: int  # nanoseconds: the sum of the segments' durations
    shortest: int
    longest: int


class Piece(NamedTuple):
    """A stretch ``[start, end)`` of a range, answered from blocks of ``seconds`` (None: from
    the segments starting in it)."""

    seconds: int | None
    start: int
    end: int


def block_sums(spans: Iterable[tuple[int, int]]) -> list[BlockSums]:
    """What ``spans`` (segments' ``(ts_start, ts_end)``) add to each block of every size. Summed
    per finest block first, then the coarser blocks from those: one dictionary step a segment
    (it runs for every segment registered)."""
    finest = BLOCK_SECONDS[0]
    size = finest * NS_PER_S
    acc: dict[int, list[int]] = {}
    for start, end in spans:
        length = end - start
        sums = acc.get(start // size)
        if sums is None:
            acc[start // size] = [1, length, length, length]
        else:
            sums[0] += 1
            sums[1] += length
            if length < sums[2]:
                sums[2] = length
            elif length > sums[3]:
                sums[3] = length
    out = [BlockSums(finest, block, *sums) for block, sums in acc.items()]
    for seconds in BLOCK_SECONDS[1:]:
        ratio = seconds // finest
        coarse: dict[int, list[int]] = {}
        for block, (n, covered, shortest, longest) in acc.items():
            sums = coarse.get(block // ratio)
            if sums is None:
                coarse[block // ratio] = [n, covered, shortest, longest]
            else:
                sums[0] += n
                sums[1] += covered
                sums[2] = min(sums[2], shortest)
                sums[3] = max(sums[3], longest)
        out += [BlockSums(seconds, block, *sums) for block, sums in coarse.items()]
    return out


def pieces(start: int, end: int, largest: int | None = None) -> list[Piece]:
    """``[start, end)`` as stretches in time order: the coarsest blocks (none longer than
    ``largest`` nanoseconds) that fit ``MIN_BLOCKS`` whole in the middle, finer ones towards the
    ends, and segments for what is left (a few minutes at most at either end)."""
    sizes = [s for s in BLOCK_SECONDS if largest is None or s * NS_PER_S <= largest]
    return _split(start, end, sizes[::-1])


def _split(start: int, end: int, sizes: list[int]) -> list[Piece]:
    if start >= end:
        return []
    for i, seconds in enumerate(sizes):
        size = seconds * NS_PER_S
        first, last = -(-start // size), end // size  # whole blocks: [first, last)
        if last - first >= MIN_BLOCKS:
            finer = sizes[i + 1 :]
            return [
                *_split(start, first * size, finer),
                Piece(seconds, first * size, last * size),
                *_split(last * size, end, finer),
            ]
    return [Piece(None, start, end)]
