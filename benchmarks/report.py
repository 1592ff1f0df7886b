"""Turning raw runs into the comparison issue 6 asks for: medians, spread, ratios.

Kept apart from the runner so the arithmetic (and its tests) never needs a
target, and so the JSON written is exactly what the table and chart show.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

import attrs

from scenarios import Scenario

RSS_GOAL_MIB = 150.0  # pyscst RSS with RSS_GOAL_SESSIONS idle sessions
RSS_GOAL_SESSIONS = 100
NOISY_CPUS = 0.25  # background load that makes a run's numbers suspect


@attrs.frozen
class RunRecord:
    """One measured run of one scenario on one target."""

    scenario: str
    target: str
    round: int
    commands: int
    seconds: float
    iops: float
    mbps: float
    cpu_seconds: float
    rss_peak_kib: int
    client_cpu_seconds: float = 0.0
    # CPUs' worth of work the rest of the machine (neither target nor client)
    # did during the run: a run with much of it was disturbed by something else.
    background_cpus: float = 0.0

    def metric(self, name: str) -> float:
        return self.iops if name == "iops" else self.mbps

    @property
    def cpu_per_100k(self) -> float | None:
        return self.cpu_seconds * 100_000 / self.commands if self.commands else None


@attrs.frozen
class Spread:
    """Median and range of one quantity over the rounds."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread | None:
        vals = sorted(values)
        if not vals:
            return None
        return cls(statistics.median(vals), vals[0], vals[-1], len(vals))


@attrs.frozen
class Comparison:
    """A scenario's outcome on both targets."""

    scenario: Scenario
    baseline: Spread | None
    candidate: Spread | None
    baseline_cpu: Spread | None  # CPU seconds per 100k commands
    candidate_cpu: Spread | None

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.candidate is None or self.baseline.median == 0:
            return None
        return self.candidate.median / self.baseline.median

    @property
    def verdict(self) -> str:
        ratio, goal = self.ratio, self.scenario.goal
        if goal is None:
            return "info"
        if ratio is None:
            return "n/a"
        return "pass" if ratio >= goal else "miss"


def compare(
    scenarios: Sequence[Scenario], records: Sequence[RunRecord], baseline: str, candidate: str
) -> list[Comparison]:
    out = []
    for sc in scenarios:
        def pick(target: str, sc: Scenario = sc) -> list[RunRecord]:
            return [r for r in records if r.scenario == sc.key and r.target == target]

        base, cand = pick(baseline), pick(candidate)
        out.append(Comparison(
            sc,
            Spread.of(r.metric(sc.metric) for r in base),
            Spread.of(r.metric(sc.metric) for r in cand),
            Spread.of(c for r in base if (c := r.cpu_per_100k) is not None),
            Spread.of(c for r in cand if (c := r.cpu_per_100k) is not None),
        ))  # fmt: skip
    return out


def _fmt_value(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def fmt_spread(s: Spread | None) -> str:
    if s is None:
        return "-"
    return f"{_fmt_value(s.median)} [{_fmt_value(s.low)}-{_fmt_value(s.high)}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def throughput_table(comps: Sequence[Comparison], baseline: str, candidate: str) -> str:
    rows = []
    for c in comps:
        ratio = c.ratio
        goal = c.scenario.goal
        rows.append([
            f"{c.scenario.title} ({c.scenario.metric})",
            fmt_spread(c.baseline),
            fmt_spread(c.candidate),
            f"{ratio:.2f}x" if ratio is not None else "-",
            f">= {goal:.1f}x" if goal is not None else "-",
            c.verdict,
        ])  # fmt: skip
    return _table(["scenario", f"{baseline} median [min-max]",
                   f"{candidate} median [min-max]", "ratio", "goal", "result"], rows)  # fmt: skip


def cpu_table(comps: Sequence[Comparison], baseline: str, candidate: str) -> str:
    rows = []
    for c in comps:
        b, k = c.baseline_cpu, c.candidate_cpu
        ratio = f"{k.median / b.median:.2f}x" if b and k and b.median else "-"
        rows.append([c.scenario.title, fmt_spread(b), fmt_spread(k), ratio])
    return _table(["target CPU s / 100k commands", baseline, candidate, "ratio"], rows)


def background_note(records: Sequence[RunRecord]) -> str | None:
    """Warn when other programs used a noticeable CPU share during the runs."""
    loads = [r.background_cpus for r in records]
    if not loads:
        return None
    worst = max(loads)
    text = (f"background load during runs: median {statistics.median(loads):.2f} CPU, "
            f"max {worst:.2f}")
    return text + (" -- noisy, rerun on an idle machine" if worst > NOISY_CPUS else "")


def latency_note(comps: Sequence[Comparison], baseline: str, candidate: str) -> str | None:
    """Mean latency at queue depth 1 is just 1/IOPS; say it in microseconds."""
    for c in comps:
        if c.scenario.depth == 1 and c.scenario.metric == "iops":
            parts = [
                f"{name} {1e6 / s.median:.0f} us"
                for name, s in ((baseline, c.baseline), (candidate, c.candidate))
                if s is not None and s.median
            ]
            return f"{c.scenario.title} mean latency: " + ", ".join(parts)
    return None


@attrs.frozen
class MemoryReport:
    """RSS of one target at the moments issue 6 names, in KiB."""

    target: str
    idle_kib: int
    sessions: int
    sessions_alive: int
    with_sessions_kib: int
    under_load_peak_kib: int
    idle_after_kib: int


def memory_table(reports: Sequence[MemoryReport], candidate: str) -> str:
    rows = []
    for m in reports:
        with_sessions = m.with_sessions_kib / 1024
        goal = ""
        if m.target == candidate and m.sessions < RSS_GOAL_SESSIONS:
            goal = f"n/a (goal is at {RSS_GOAL_SESSIONS} sessions)"
        elif m.target == candidate:
            ok = with_sessions < RSS_GOAL_MIB and m.sessions_alive == m.sessions
            goal = f"< {RSS_GOAL_MIB:.0f} MiB: {'pass' if ok else 'miss'}"
        rows.append([
            m.target,
            f"{m.idle_kib / 1024:.1f}",
            f"{with_sessions:.1f} ({m.sessions_alive}/{m.sessions} up)",
            f"{m.under_load_peak_kib / 1024:.1f}",
            f"{m.idle_after_kib / 1024:.1f}",
            goal or "-",
        ])  # fmt: skip
    held = max((m.sessions for m in reports), default=0)
    return _table(["RSS MiB", "idle", f"{held} idle sessions", "peak under load",
                   "idle after", "goal"], rows)  # fmt: skip


def comparison_json(c: Comparison) -> dict[str, object]:
    return {
        "scenario": attrs.asdict(c.scenario),
        "baseline": attrs.asdict(c.baseline) if c.baseline else None,
        "candidate": attrs.asdict(c.candidate) if c.candidate else None,
        "baseline_cpu_per_100k": attrs.asdict(c.baseline_cpu) if c.baseline_cpu else None,
        "candidate_cpu_per_100k": attrs.asdict(c.candidate_cpu) if c.candidate_cpu else None,
        "ratio": c.ratio,
        "verdict": c.verdict,
    }
