"""The append checker catches what it claims to catch (pure: synthetic histories, no server)."""

from __future__ import annotations

import time

from tests.append_checker import AppendChecker, Read


def history() -> tuple[AppendChecker, dict[str, list[str]]]:
    """Session s: b0 (2 msgs) then b1 (1 msg) then b2 (2 msgs), all acknowledged in turn."""
    checker = AppendChecker("r")
    final: list[str] = []
    for index, size in enumerate((2, 1, 2)):
        batch, _ = checker.new_batch("s", 0, index, size)
        checker.acknowledge(batch)
        final += batch.markers
    return checker, {"s": final}


def test_a_correct_history_passes() -> None:
    checker, final = history()
    checker.reads.clear()
    report = checker.check(final)
    assert report.anomalies == [] and report.lost == 0 and report.duplicated == 0
    assert report.appends == report.acknowledged == 3
    assert report.messages_acknowledged == 5


def test_lost_duplicated_partial_and_phantom() -> None:
    checker, final = history()
    markers = final["s"]
    assert checker.check({"s": markers[:3]}).lost == 2  # b2 missing
    assert checker.check({"s": [*markers, markers[0]]}).duplicated == 1
    partial = checker.check({"s": markers[:4]})
    assert partial.lost == 1 and any("partial" in a for a in partial.anomalies)
    phantom = checker.check({"s": [*markers, "<r|s|0|9|0|1>"]})
    assert any("never appended" in a for a in phantom.anomalies)


def test_reordered_batches_and_torn_batches() -> None:
    checker, final = history()
    m = final["s"]
    reordered = checker.check({"s": [m[2], m[0], m[1], m[3], m[4]]})
    assert any("reordered" in a or "comes after" in a for a in reordered.anomalies)
    torn = checker.check({"s": [m[0], m[2], m[1], m[3], m[4]]})
    assert any("not contiguous" in a for a in torn.anomalies)


def test_failed_appends_may_land_once_but_not_twice() -> None:
    checker = AppendChecker("r")
    ok, _ = checker.new_batch("s", 0, 0, 1)
    checker.acknowledge(ok)
    failed, _ = checker.new_batch("s", 0, 1, 2)
    checker.fail(failed, RuntimeError("lost connection"))
    assert checker.check({"s": list(ok.markers)}).anomalies == []
    landed = checker.check({"s": [*ok.markers, *failed.markers]})
    assert landed.anomalies == [] and landed.failed_landed == 1
    twice = checker.check({"s": [*ok.markers, *failed.markers, *failed.markers]})
    assert twice.duplicated == 2


def test_reads_must_be_whole_batch_prefixes_and_not_stale() -> None:
    checker, final = history()
    m = final["s"]
    checker.reads.clear()
    checker.record_read("s", 0.0, [])
    assert checker.check(final).anomalies == []

    def read(markers: list[str], invoked: float) -> list[str]:
        checker.reads.clear()
        checker.reads.append(Read("s", invoked, invoked, tuple(markers)))
        return checker.check(final).anomalies

    assert read(m[:3], 0.0) == []
    assert any("inside a batch" in a for a in read(m[:1], 0.0))
    assert any("not a prefix" in a for a in read([m[2]], 0.0))
    # A read that began after every batch was acknowledged must see them all.
    assert any("misses" in a for a in read(m[:3], time.monotonic() + 1))
