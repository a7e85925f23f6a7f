"""fastdiff.mcmc.ess / rhat against arviz-stats on 10^4 chains x 10^3 draws: time and agreement.

Runs both on the same float64 array (one coordinate), interleaved in one process (fastdiff, arviz, fastdiff,
...), and prints the median thread CPU time of 3 rounds each on one torch thread, the ratio and the relative
difference of the values; then fastdiff alone on 8 coordinates at once. Needs arviz-stats (the test extra).

    python benchmarks/diagnostics_vs_arviz.py
"""
import statistics
import time

import numpy as np
import torch

from fastdiff import mcmc


def main() -> None:
    from arviz_stats.base import array_stats

    torch.set_num_threads(1)
    x = np.random.default_rng(0).normal(size=(10_000, 1_000))
    t = torch.from_numpy(x)
    axes = dict(chain_axis=0, draw_axis=1)
    cases = [
        ("ess bulk", lambda: mcmc.ess(t), lambda: array_stats.ess(x, method="bulk", **axes)),
        ("ess tail", lambda: mcmc.ess(t, "tail"),
         lambda: array_stats.ess(x, method="tail", prob=(0.05, 0.95), **axes)),
        ("rhat", lambda: mcmc.rhat(t), lambda: array_stats.rhat(x, **axes)),
    ]
    for name, ours, theirs in cases:
        t_ours, t_theirs = [], []
        for _ in range(3):
            c0 = time.thread_time()
            v_ours = float(ours())
            t_ours.append(time.thread_time() - c0)
            c0 = time.thread_time()
            v_theirs = float(theirs())
            t_theirs.append(time.thread_time() - c0)
        ratio = statistics.median(b / a for a, b in zip(t_ours, t_theirs))
        print(f"{name}: fastdiff {statistics.median(t_ours):.2f} s, arviz-stats {statistics.median(t_theirs):.2f} s "
              f"(thread CPU, median of 3, interleaved; arviz / fastdiff {ratio:.2f}); values {v_ours:.6f} vs "
              f"{v_theirs:.6f} (relative difference {abs(v_ours - v_theirs) / abs(v_theirs):.1e})")
    x8 = torch.randn(10_000, 1_000, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    c0 = time.thread_time()
    mcmc.ess(x8)
    print(f"ess bulk of (10^4, 10^3, 8): {time.thread_time() - c0:.1f} s thread CPU")


if __name__ == "__main__":
    main()
