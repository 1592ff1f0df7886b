"""A picture of the comparison: candidate throughput normalized to tgt = 1.0.

One bar per scenario with its min-max spread and the goal it must reach, so
the README can show at a glance where pyscst stands. matplotlib is optional:
without it the harness still prints and writes JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from report import Comparison


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw(
    comps: Sequence[Comparison],
    path: Path,
    *,
    baseline: str,
    candidate: str,
    footer: str,
) -> None:
    """Write a PNG of candidate/baseline ratios with goal marks to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in comps if c.ratio is not None]
    titles = [f"{c.scenario.title}\n({c.scenario.metric})" for c in shown]
    ratios = [c.ratio or 0.0 for c in shown]
    # The spread of the candidate's runs, relative to the baseline median.
    lows, highs = [], []
    for c, r in zip(shown, ratios, strict=True):
        assert c.candidate is not None and c.baseline is not None
        lows.append(r - c.candidate.low / c.baseline.median)
        highs.append(c.candidate.high / c.baseline.median - r)
    colors = [
        "#4c72b0" if c.scenario.goal is None
        else ("#55a868" if (c.ratio or 0) >= c.scenario.goal else "#c44e52")
        for c in shown
    ]  # fmt: skip

    fig, ax = plt.subplots(figsize=(9, 0.7 * len(shown) + 2.2))
    ys = list(range(len(shown)))[::-1]
    ax.barh(ys, ratios, color=colors, xerr=[lows, highs], capsize=3, height=0.6,
            label=f"{candidate} / {baseline}")  # fmt: skip
    for y, c, r in zip(ys, shown, ratios, strict=True):
        if c.scenario.goal is not None:
            ax.plot([c.scenario.goal] * 2, [y - 0.4, y + 0.4], color="black", lw=2)
        ax.text(r + 0.02, y, f"{r:.2f}x", va="center", fontsize=9)
    ax.axvline(1.0, color="gray", ls="--", lw=1)
    ax.set_yticks(ys, titles, fontsize=9)
    ax.set_xlabel(f"{candidate} relative to {baseline} (= 1.0); black ticks: goals")
    ax.set_xlim(0, max([1.3, *(r + h + 0.15 for r, h in zip(ratios, highs, strict=True))]))
    ax.set_title(f"{candidate} vs {baseline}: throughput per scenario (median of rounds)")
    fig.text(0.01, 0.01, footer, fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
