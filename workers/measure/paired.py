"""Interleaved A/B's statistics: the round order, the paired ratio of per-round medians and its verdict.

Rounds are the unit. In round r every arm is warmed up and timed in turn, so the candidate's and
the base's round medians were measured seconds apart, under the same state of the process (its
threads, pages, clocks) and of the machine; whatever drifts slower than a round (a neighbour's
load, thermals, the process's own pace) moves both and cancels in their ratio::

    d_r   = log(median_r(candidate) / median_r(base))      # one paired difference per round
    g = floor(TRIM * R), h = R - 2 g                        # rounds trimmed from each end, rounds kept
    ratio = exp(mean of d without its g lowest and g highest)
    se    = sqrt((R - 1) * var(d winsorized at those ends) / (h (h - 1)))
    ci    = exp(log(ratio) -+ t_{h-1, (1+confidence)/2} * se)     # Yuen's trimmed-mean interval

Why a t interval on log ratios, not a bootstrap: the R round ratios are the independent units,
and R is small (20 by default). A percentile bootstrap of a mean over 20 units covers less than
its nominal level (it ignores the t distribution's tails: ~92% for a nominal 95% at n = 20),
while a t interval is close to exact for near-normal differences; log ratios of two medians are
near-symmetric for the small effects a gate looks for, and make the interval multiplicative (a
2% regression and a 2% improvement are mirror images). The spread of the round differences is
the noise the design really has: the drift within a round, the order effects that remain, the
medians' own noise; a within-round bootstrap would know only the last.

Why trimmed (Yuen, 1974): on a shared machine a round now and then has one arm's whole window
stalled (the process descheduled, a neighbour's burst): its log ratio is off by tens of percent.
One such round in 6 widened a plain t interval from +-0.5% to +-60% on a loaded 2-core machine,
hiding a 5% slowdown. Trimming 20% from each end drops such rounds from the estimate and keeps
their weight in the spread only as far as the winsorized variance lets it; on clean normal rounds
it costs a few percent of the interval's width and keeps its coverage.

The order of the arms in each round is drawn from the plan's seed, balanced over blocks of rounds
(A B B A ...: ``round_orders``), so no arm is always first (after the other's warm-up, or just after
a round's start) and an order effect becomes noise in d rather than a bias of the ratio.

Builds as units (``Interleave.builds`` > 1). Rounds see the drift within one set of runners, not
what differs between two builds of one configuration: on an H100, two runners of the same GPU-bound
configuration (torch's CUDA graph, ORT with IO binding) in one process measured up to 3.3% apart,
steadily, round after round, so a rounds-only interval called 4 of 9 A/A pairs changed. With
``builds: K`` the rounds split into K blocks, every arm is built afresh for each block (in a seeded
order), and the interval is a t interval over the K blocks' median log ratios: it holds the
between-build spread, at the price of K - 1 degrees of freedom.

Verdict, as ``compare``'s: regressed when the ratio is above ``1 + threshold`` and the whole
interval above 1 (improved: mirrored); otherwise unchanged. The interval controls the false alarms
the within-process noise would give (at 99%, 1 row in 200 per side); the threshold is the change too
small to act on and covers what the rounds cannot see (a systematic difference between the arms'
places that the shuffle leaves): set it at least at the spread that interleaved A/A pairs show on
the machine (``bench/aa.py --part interleaved-aa`` reports it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from workers.measure.stats import t_quantile

#: the share of rounds trimmed from each end of the log ratios (Yuen's trimmed mean): see the module's doc
TRIM = 0.2


def round_orders(arms: int, rounds: int, seed: int) -> list[list[int]]:
    """For each round, the arms' indices in the order they are timed. Rounds come in blocks of ``arms``:
    a block takes a seeded shuffle of the arms and its rotations, in a seeded order, so each arm has
    every place once per block (two arms: A B B A or B A A B, then another block), and no place, first
    or last, belongs to one arm more than the others over the run."""
    rng = np.random.default_rng([seed, arms, rounds, 0xAB])
    out: list[list[int]] = []
    while len(out) < rounds:
        perm = rng.permutation(arms)
        out += [[int(i) for i in np.roll(perm, -int(k))] for k in rng.permutation(arms)]
    return out[:rounds]


def build_blocks(rounds: int, builds: int) -> list[np.ndarray]:
    """The rounds' indices in ``builds`` consecutive blocks, each timed on runners built afresh: the
    split the worker builds by (``workers.scenarios._interleave``) and the interval judges by."""
    return np.array_split(np.arange(rounds), builds)


def paired_ratio(base: Sequence[float], cand: Sequence[float], confidence: float, *,
                 builds: int = 1) -> tuple[float, float, float] | None:
    """(ratio, low, high) of ``cand`` over ``base``, two arms' per-round medians (see the module's doc):
    Yuen's interval of the TRIM-trimmed mean of the rounds' log ratios. None with fewer than 2 rounds
    where both have a positive median.

    ``builds`` > 1: the rounds are that many consecutive blocks, each measured on runners built
    afresh (``Interleave.builds``), and the blocks are the units: each block's median log ratio,
    then a t interval of their mean (untrimmed: a block's median already drops a stalled round)."""
    b, c = np.asarray(base, dtype=np.float64), np.asarray(cand, dtype=np.float64)
    ok = (b > 0) & (c > 0) & np.isfinite(b) & np.isfinite(c)
    if builds > 1:
        blocks = [np.log(c[i][ok[i]] / b[i][ok[i]]) for i in build_blocks(len(b), builds)]
        d = np.sort([float(np.median(x)) for x in blocks if len(x)])
        trim = 0.0
    else:
        d = np.sort(np.log(c[ok] / b[ok]))
        trim = TRIM
    n = len(d)
    if n < 2:
        return None
    g = int(trim * n)
    h = n - 2 * g
    mean = float(d[g:n - g].mean())
    winsorized = np.clip(d, d[g], d[n - g - 1])
    se = math.sqrt((n - 1) * float(winsorized.var(ddof=1)) / (h * (h - 1))) if h > 1 else 0.0
    half = t_quantile((1 + confidence) / 2, h - 1) * se if h > 1 else math.inf
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def verdict(ratio: float, low: float, high: float, threshold: float) -> str:
    """regressed / improved / unchanged, as the module's doc says (ratio > 1: the candidate is slower)."""
    if ratio > 1 + threshold and low > 1:
        return "regressed"
    if ratio < 1 / (1 + threshold) and high < 1:
        return "improved"
    return "unchanged"
