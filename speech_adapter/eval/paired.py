"""Paired comparison of two runs' scores, row by row: mean difference with a paired bootstrap CI
(Efron & Tibshirani 1993) and an exact sign test on the discordant pairs (McNemar's test, exact
form, for 0/1 scores). Below `report`, `scorecard` and `learn_forget`, which all pair runs.
"""

from __future__ import annotations

import math

import numpy as np


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign test (binomial, p = 0.5) on the discordant pairs; 1.0 when there are none."""
    n = wins + losses
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**n)


def _verdict(lo: float, hi: float) -> str:
    return "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"


def _paired_stats(base: np.ndarray, other: np.ndarray, n_boot: int, seed: int) -> dict:
    """Means (%), Δ = other − base (points), 95 % paired bootstrap CI of Δ, wins/losses/ties, sign-test p."""
    n = len(base)
    if n == 0:
        return {"n": 0, "base_pct": None, "other_pct": None, "diff_pts": None, "ci_pts": None,
                "wins": 0, "losses": 0, "ties": 0, "sign_p": 1.0, "verdict": "no clear difference"}
    diff = other - base
    # a fresh generator per group: a group's CI does not depend on which groups came before it
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # chunks bound memory at 256·n indices
        stop = min(n_boot, start + 256)
        boot[start:stop] = diff[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    lo, hi = (100 * float(x) for x in np.percentile(boot, [2.5, 97.5]))
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    return {"n": n, "base_pct": 100 * float(base.mean()), "other_pct": 100 * float(other.mean()),
            "diff_pts": 100 * float(diff.mean()), "ci_pts": [lo, hi],
            "wins": wins, "losses": losses, "ties": n - wins - losses,
            "sign_p": sign_test_p(wins, losses), "verdict": _verdict(lo, hi)}


def paired_difference(base_rows: list[dict], other_rows: list[dict], mode: str = "speech",
                      n_boot: int = 2000, seed: int = 0) -> dict:
    """Compare two runs' scores.jsonl rows of one mode, paired by row `id`.

    Only rows with a non-null score in both runs count (open-ended tasks have none). Returns the
    `_paired_stats` dict for all paired rows, plus the same per split (`by_split`) and per task
    (`by_task`), each keyed by the base run's split / task.
    """
    def scored(rows):
        return {r["id"]: r for r in rows if r.get("mode") == mode and r.get("score") is not None}

    base, other = scored(base_rows), scored(other_rows)
    ids = [i for i in base if i in other]

    def stats(keep):
        sel = [i for i in ids if keep(base[i])]
        return _paired_stats(np.array([float(base[i]["score"]) for i in sel]),
                             np.array([float(other[i]["score"]) for i in sel]), n_boot, seed)

    out = stats(lambda r: True)
    out["by_split"] = {s: stats(lambda r, s=s: r.get("split") == s)
                       for s in sorted({base[i].get("split") for i in ids}, key=str)}
    out["by_task"] = {t: stats(lambda r, t=t: r.get("task") == t)
                      for t in sorted({base[i].get("task") for i in ids}, key=str)}
    return out
