"""Aggregating probe evidence: fresh critical results only; any passing path means healthy."""
from gateway.continuity.controller import aggregate
from gateway.health import ProbeResult


def r(name, ok, at, critical=True):
    return ProbeResult(probe=name, ok=ok, at=at, latency=0.01, detail="x", critical=critical)


def test_all_fresh_critical_failing_is_failure():
    ok, detail = aggregate([r("smtp", False, 99), r("organic", False, 98)], 100, 30)
    assert ok is False and "smtp: FAIL" in detail


def test_one_path_working_is_healthy():
    assert aggregate([r("smtp:a", False, 99), r("smtp:b", True, 98)], 100, 30)[0] is True


def test_old_organic_successes_do_not_hide_a_failing_probe():
    assert aggregate([r("smtp", False, 99), r("organic", True, 100)], 100, 30)[0] is False


def test_organic_decides_without_probe_evidence():
    assert aggregate([r("organic", False, 100)], 100, 30)[0] is False
    assert aggregate([r("smtp", False, 10), r("organic", True, 100)], 100, 30)[0] is True


def test_http_pages_alone_do_not_decide():
    assert aggregate([r("http:owa", False, 99, critical=False)], 100, 30) == (None, "no fresh evidence")


def test_stale_results_are_ignored():
    assert aggregate([r("smtp", False, 10)], 100, 30)[0] is None
    assert aggregate([None], 100, 30)[0] is None
