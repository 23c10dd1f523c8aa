"""The chores loop, with its collaborators as the stand-ins written here: the lease (granted,
refused, lost), the audit log's tree heads, the housekeeping chores, the time-stamping authority
and the ATNA exporters. Only the holder of the lease does chores; a chore that fails does not
stop the others nor the loop; a lost lease pauses everything and stops the exporters.

The loop's pace is its stop event's ``wait``: the stand-in `Ticks` returns at once and sets
itself after a given number of ticks, so each test runs a known number of rounds, in this
thread, without sleeping."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import cast

import pytest

from carevault.adapters.storage.lease import Lease
from carevault.adapters.timestamping import TimeStampAuthority
from carevault.domain.audit import STREAMS
from carevault.services.chores import TREE_HEAD_INTERVAL_SECONDS, Chores


class Ticks(threading.Event):
    """A stop event that does not wait: each ``wait`` is one tick of the loop, and the event
    sets itself once ``rounds`` ticks have run."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds
        self.tick = 0
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        if self.tick >= self.rounds:
            self.set()
        else:
            self.tick += 1
        return self.is_set()


class Journal:
    """What the collaborators were asked, in order, with the tick they were asked at."""

    def __init__(self, ticks: Ticks) -> None:
        self.ticks = ticks
        self.events: list[tuple[int, str]] = []

    def note(self, what: str) -> None:
        self.events.append((self.ticks.tick, what))

    def at(self, tick: int) -> list[str]:
        return [what for when, what in self.events if when == tick]

    def ticks_of(self, what: str) -> list[int]:
        return [when for when, done in self.events if done == what]


class RecordingTreeHeads:
    """The audit log's tree heads: notes each signing and stamping; fails for the streams
    named in ``failing``."""

    def __init__(self, journal: Journal, failing: frozenset[str] = frozenset()) -> None:
        self.journal = journal
        self.failing = failing
        self.authorities: list[TimeStampAuthority] = []

    def sign_tree_head(self, stream: str) -> object:
        self.journal.note(f"sign {stream}")
        if stream in self.failing:
            raise ConnectionError("the database is unreachable")
        return stream

    def stamp_latest_tree_head(self, stream: str, authority: TimeStampAuthority) -> int | None:
        self.journal.note(f"stamp {stream}")
        self.authorities.append(authority)
        if stream in self.failing:
            raise TimeoutError("the TSA did not answer")
        return 1


class StandInLease:
    """A lease that is alive until ``lose_at`` (a tick), and notes its release."""

    def __init__(self, journal: Journal, name: str, lose_at: int | None = None) -> None:
        self.journal = journal
        self.name = name
        self.lose_at = lose_at

    def alive(self) -> bool:
        return self.lose_at is None or self.journal.ticks.tick < self.lose_at

    def release(self) -> None:
        self.journal.note(f"release {self.name}")


class Leases:
    """The lease port: gives, at each ask, the next answer (a lease, None for "another process
    holds it", or an exception to raise); None once the answers run out."""

    def __init__(self, journal: Journal, *answers: StandInLease | Exception | None) -> None:
        self.journal = journal
        self.answers = list(answers)

    def __call__(self) -> Lease | None:
        self.journal.note("ask")
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer


class Exporters:
    """The ATNA exporters: one thread per start that ends when its event is set, noting it."""

    def export(self, stop: threading.Event) -> None:
        stop.wait()
        self.journal.note("export stopped")

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.events: list[threading.Event] = []
        self.threads: list[threading.Thread] = []

    def __call__(self, stop: threading.Event) -> list[threading.Thread]:
        self.journal.note("start export")
        self.events.append(stop)
        thread = threading.Thread(target=self.export, args=(stop,), name="export-stand-in",
                                  daemon=True)
        thread.start()
        self.threads.append(thread)
        return [thread]


def chore(journal: Journal, name: str, fails: bool = False) -> Callable[[], object]:
    def run() -> object:
        journal.note(name)
        if fails:
            raise OSError(f"{name} failed")
        return name

    return run


SIGNING = [f"sign {s}" for s in STREAMS]
A_TSA = cast(TimeStampAuthority, object())


def test_the_loop_ticks_once_a_second_until_it_is_stopped() -> None:
    ticks = Ticks(3)
    journal = Journal(ticks)
    Chores(RecordingTreeHeads(journal), Leases(journal)).run(ticks)
    assert ticks.timeouts == [TREE_HEAD_INTERVAL_SECONDS] * 4 and TREE_HEAD_INTERVAL_SECONDS == 1
    assert journal.ticks_of("ask") == [1, 2, 3]


def test_a_stopped_loop_does_nothing() -> None:
    ticks = Ticks(0)
    journal = Journal(ticks)
    exporters = Exporters(journal)
    Chores(RecordingTreeHeads(journal), Leases(journal, StandInLease(journal, "L")),
           housekeeping=[chore(journal, "sweep")], start_export=exporters).run(ticks)
    assert journal.events == []


def test_a_process_without_the_lease_does_no_chores_and_asks_again_every_tick() -> None:
    ticks = Ticks(4)
    journal = Journal(ticks)
    exporters = Exporters(journal)
    Chores(RecordingTreeHeads(journal), Leases(journal), housekeeping=[chore(journal, "sweep")],
           authority=A_TSA, start_export=exporters).run(ticks)
    assert journal.events == [(1, "ask"), (2, "ask"), (3, "ask"), (4, "ask")]
    assert exporters.events == []


def test_the_lease_holder_exports_and_signs_every_streams_tree_head_at_every_tick() -> None:
    ticks = Ticks(3)
    journal = Journal(ticks)
    exporters = Exporters(journal)
    Chores(RecordingTreeHeads(journal), Leases(journal, StandInLease(journal, "L")),
           start_export=exporters).run(ticks)
    assert journal.at(1) == ["ask", "start export", *SIGNING]
    assert journal.at(2) == SIGNING
    # Stopped: the exporters are told to stop and have ended, then the lease is released.
    assert journal.at(3) == [*SIGNING, "export stopped", "release L"]
    assert journal.ticks_of("ask") == [1]  # held: not asked again
    assert not exporters.threads[0].is_alive()


def test_housekeeping_runs_before_the_tree_heads_and_a_failing_chore_does_not_stop_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    ticks = Ticks(2)
    journal = Journal(ticks)
    housekeeping = [chore(journal, "release held"), chore(journal, "sweep blobs", fails=True),
                    chore(journal, "purge")]
    with caplog.at_level(logging.ERROR, "carevault.audit"):
        Chores(RecordingTreeHeads(journal), Leases(journal, StandInLease(journal, "L")),
               housekeeping=housekeeping).run(ticks)
    assert journal.at(1) == ["ask", "release held", "sweep blobs", "purge", *SIGNING]
    assert journal.at(2)[:len(SIGNING)] == SIGNING  # the loop went on
    [failed] = [r for r in caplog.records if r.getMessage() == "housekeeping failed"]
    assert failed.exc_info is not None and str(failed.exc_info[1]) == "sweep blobs failed"


def test_a_tree_head_that_cannot_be_signed_does_not_stop_the_other_stream_nor_the_next_tick(
        caplog: pytest.LogCaptureFixture) -> None:
    ticks = Ticks(2)
    journal = Journal(ticks)
    with caplog.at_level(logging.ERROR, "carevault.audit"):
        Chores(RecordingTreeHeads(journal, failing=frozenset({STREAMS[0]})),
               Leases(journal, StandInLease(journal, "L"))).run(ticks)
    assert journal.at(1) == ["ask", *SIGNING] and journal.at(2) == [*SIGNING, "release L"]
    assert [r.getMessage() for r in caplog.records].count("tree head not signed") == 2


def test_a_lost_lease_pauses_the_chores_stops_the_exporters_and_is_released(
        caplog: pytest.LogCaptureFixture) -> None:
    ticks = Ticks(5)
    journal = Journal(ticks)
    exporters = Exporters(journal)
    lease = StandInLease(journal, "L", lose_at=3)
    with caplog.at_level(logging.WARNING, "carevault.audit"):
        Chores(RecordingTreeHeads(journal), Leases(journal, lease),
               housekeeping=[chore(journal, "sweep")], authority=A_TSA,
               stamp_interval_seconds=0, start_export=exporters).run(ticks)
    assert journal.ticks_of("sign clinical") == [1, 2]
    assert journal.ticks_of("stamp clinical") == [1, 2]
    # At tick 3 the lease is found lost: the exporters stop, the lease is let go, and another
    # one is asked for (and refused) at each tick from then on.
    assert journal.at(3) == ["export stopped", "release L", "ask"]
    assert journal.at(4) == ["ask"] and journal.at(5) == ["ask"]
    assert not exporters.threads[0].is_alive()
    assert journal.ticks_of("release L") == [3]  # released once, not again when stopped
    assert "the chores lease was lost; chores paused" in [r.getMessage() for r in caplog.records]


def test_the_chores_resume_under_a_new_lease_with_new_exporters() -> None:
    ticks = Ticks(4)
    journal = Journal(ticks)
    exporters = Exporters(journal)
    first, second = StandInLease(journal, "L1", lose_at=2), StandInLease(journal, "L2")
    Chores(RecordingTreeHeads(journal), Leases(journal, first, None, second),
           start_export=exporters).run(ticks)
    assert journal.at(2) == ["export stopped", "release L1", "ask"]
    assert journal.at(3) == ["ask", "start export", *SIGNING]
    assert journal.at(4) == [*SIGNING, "export stopped", "release L2"]
    old, new = exporters.events
    assert old is not new


def test_a_lease_that_cannot_be_asked_for_is_asked_again_at_the_next_tick(
        caplog: pytest.LogCaptureFixture) -> None:
    ticks = Ticks(2)
    journal = Journal(ticks)
    with caplog.at_level(logging.ERROR, "carevault.audit"):
        Chores(RecordingTreeHeads(journal),
               Leases(journal, ConnectionError("no database"), StandInLease(journal, "L"))
               ).run(ticks)
    assert journal.at(1) == ["ask"]
    assert journal.at(2) == ["ask", *SIGNING, "release L"]
    assert "the chores lease could not be asked for" in [r.getMessage() for r in caplog.records]


def test_the_latest_tree_heads_are_time_stamped_after_signing_when_a_tsa_is_given() -> None:
    ticks = Ticks(2)
    journal = Journal(ticks)
    heads = RecordingTreeHeads(journal)
    Chores(heads, Leases(journal, StandInLease(journal, "L")), authority=A_TSA,
           stamp_interval_seconds=0).run(ticks)
    stamping = [f"stamp {s}" for s in STREAMS]
    assert journal.at(1) == ["ask", *SIGNING, *stamping]
    assert journal.at(2) == [*SIGNING, *stamping, "release L"]
    assert heads.authorities == [A_TSA] * 4


def test_time_stamps_are_asked_for_once_an_interval() -> None:
    ticks = Ticks(3)
    journal = Journal(ticks)
    Chores(RecordingTreeHeads(journal), Leases(journal, StandInLease(journal, "L")),
           authority=A_TSA, stamp_interval_seconds=3600).run(ticks)
    assert journal.ticks_of("stamp clinical") == [1]


def test_without_a_tsa_nothing_is_time_stamped() -> None:
    ticks = Ticks(2)
    journal = Journal(ticks)
    Chores(RecordingTreeHeads(journal), Leases(journal, StandInLease(journal, "L"))).run(ticks)
    assert not [what for _, what in journal.events if what.startswith("stamp")]


def test_a_tsa_that_fails_for_one_stream_does_not_stop_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    ticks = Ticks(1)
    journal = Journal(ticks)
    with caplog.at_level(logging.WARNING, "carevault.audit"):
        Chores(RecordingTreeHeads(journal, failing=frozenset({STREAMS[0]})),
               Leases(journal, StandInLease(journal, "L")), authority=A_TSA,
               stamp_interval_seconds=0).run(ticks)
    assert [w for w in journal.at(1) if w.startswith("stamp")] == [f"stamp {s}" for s in STREAMS]
    assert "tree head not time-stamped: the TSA did not answer" in [
        r.getMessage() for r in caplog.records]


class SlowToStopExporters(Exporters):
    """Exporters whose first thread is in the middle of a delivery when told to stop: it ends
    only when ``finish`` is set (the delivery over), not when its stop event is."""

    def __init__(self, journal: Journal) -> None:
        super().__init__(journal)
        self.finish = threading.Event()

    def export(self, stop: threading.Event) -> None:
        if stop is self.events[0]:
            self.finish.wait()
        else:
            stop.wait()
        self.journal.note("export stopped")


class TicksThatFinishTheDelivery(Ticks):
    """Ticks that, at tick ``at``, let the slow exporter finish and wait until it has ended."""

    def __init__(self, rounds: int, at: int) -> None:
        super().__init__(rounds)
        self.at = at
        self.exporters: SlowToStopExporters | None = None

    def wait(self, timeout: float | None = None) -> bool:
        stopped = super().wait(timeout)
        if self.tick == self.at and self.exporters and not self.exporters.finish.is_set():
            self.exporters.finish.set()
            self.exporters.threads[0].join()
        return stopped


def test_a_lost_lease_whose_exporter_is_still_delivering_starts_no_second_exporter_until_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    """Two exporters on one cursor send the batch in flight twice. Under a new lease, the
    chores go on at once, but the export starts again only once the exporter of the lost lease,
    which outlasted its stop time (a delivery can take the sender's whole timeout), has ended."""
    ticks = TicksThatFinishTheDelivery(5, at=4)
    journal = Journal(ticks)
    exporters = ticks.exporters = SlowToStopExporters(journal)
    first, second = StandInLease(journal, "L1", lose_at=2), StandInLease(journal, "L2")
    with caplog.at_level(logging.WARNING, "carevault.audit"):
        Chores(RecordingTreeHeads(journal), Leases(journal, first, second),
               start_export=exporters, export_stop_seconds=0).run(ticks)
    assert journal.at(1) == ["ask", "start export", *SIGNING]
    # Lost at tick 2 while its exporter is still delivering: a new lease, no second exporter.
    assert journal.at(2) == ["release L1", "ask", *SIGNING]
    assert journal.at(3) == SIGNING
    assert journal.at(4) == ["export stopped", "start export", *SIGNING]
    exporters.threads[1].join()  # told to stop at tick 5 (and waited for 0 s here), it ends
    assert journal.at(5)[: len(SIGNING)] == SIGNING
    assert sorted(journal.at(5)[len(SIGNING) :]) == ["export stopped", "release L2"]
    assert journal.ticks_of("start export") == [1, 4]
    assert "an ATNA exporter of the lost chores lease has not ended yet" in caplog.text
