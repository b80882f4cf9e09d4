"""The prober's self-doubt verdict is cached (every round of every server asks for it), but
a change in what servers report, or reports ageing out, still changes the answer."""

from __future__ import annotations

from mcp_operator.health.doubt import Doubt, DoubtSettings, RoundReport


def test_cached_verdict_follows_reports_and_ageing() -> None:
    doubt = Doubt(DoubtSettings(clear_s=0.0))  # the raw condition (no hysteresis)
    for i in range(5):
        doubt.report(RoundReport(f"s{i}", at=100.0, probes=2, suspect=0))
    assert doubt.verdict(100.0) is None
    for i in range(4):  # 4 of 5 fail at once: the prober's own fault
        doubt.report(RoundReport(f"s{i}", at=100.2, probes=2, suspect=2))
    assert doubt.verdict(100.2) is not None
    doubt.report(RoundReport("s0", at=100.4, probes=2, suspect=0))
    doubt.report(RoundReport("s1", at=100.4, probes=2, suspect=0))
    assert doubt.verdict(100.4) is None  # 2 of 5: servers, not the prober
    doubt.report(RoundReport("s0", at=100.5, probes=2, suspect=2))
    doubt.report(RoundReport("s1", at=100.5, probes=2, suspect=2))
    assert doubt.verdict(100.5) is not None
    doubt.forget("s0")
    doubt.forget("s1")
    assert doubt.verdict(100.6) is None  # 2 of 3 failing is not >= 4 servers
    # Every report is older than the window 12 s later: no longer counted.
    for i in range(2, 5):
        doubt.report(RoundReport(f"s{i}", at=100.7, probes=2, suspect=2))
    doubt.report(RoundReport("s5", at=100.7, probes=2, suspect=2))
    assert doubt.verdict(100.7) is not None
    assert doubt.verdict(112.0) is None
