"""Tests for the rate limiter and the development gate."""

from __future__ import annotations

import os

import pytest

from carevault.api.access import DevLoopbackGate, TokenBucketLimiter, is_loopback
from carevault.api.fhir.door import FhirRequest, Interaction
from carevault.domain.errors import NotAuthenticated, RateLimited
from carevault.settings import Settings


@pytest.fixture(autouse=True)
def _no_carevault_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CAREVAULT_"):
            monkeypatch.delenv(name)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _admitted(limiter: TokenBucketLimiter, client: str) -> bool:
    try:
        limiter.check(client)
    except RateLimited:
        return False
    return True


# --- token buckets ---------------------------------------------------------------------------


def test_a_full_burst_is_allowed_then_refused() -> None:
    limiter = TokenBucketLimiter(60, clock=FakeClock())
    for _ in range(60):
        limiter.check("a")
    with pytest.raises(RateLimited) as caught:
        limiter.check("a")
    assert caught.value.retry_after >= 1
    assert str(caught.value.retry_after) in caught.value.message


def test_the_bucket_refills_over_time() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(60, clock=clock)  # one token per second
    for _ in range(60):
        limiter.check("a")
    assert not _admitted(limiter, "a")
    clock.advance(0.5)
    assert not _admitted(limiter, "a")
    clock.advance(0.5)
    assert _admitted(limiter, "a")
    assert not _admitted(limiter, "a")
    clock.advance(10)
    assert sum(_admitted(limiter, "a") for _ in range(20)) == 10


def test_the_bucket_never_holds_more_than_one_burst() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(60, clock=clock)
    clock.advance(3600)
    limiter.check("a")
    clock.advance(3600)
    assert sum(_admitted(limiter, "a") for _ in range(100)) == 60


def test_refused_requests_do_not_consume_tokens() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(60, clock=clock)
    for _ in range(60):
        limiter.check("a")
    for _ in range(50):
        assert not _admitted(limiter, "a")
    clock.advance(1)
    assert _admitted(limiter, "a")


@pytest.mark.parametrize(("first", "second"), [
    ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"),  # one /64, two addresses
    ("ip:2001:db8:1:2::1", "ip:2001:db8:1:2::2"),  # as the token endpoint names them
    ("::ffff:192.0.2.7", "192.0.2.7"),  # an IPv4-mapped address is its IPv4 address
])
def test_a_client_is_counted_by_its_network_as_the_sign_in_throttle_counts_it(
        first: str, second: str) -> None:
    """An IPv6 client holds a whole /64: one bucket for all of it, or it would have as many
    buckets as it likes (found by a review of resource limits)."""
    limiter = TokenBucketLimiter(2, clock=FakeClock())
    limiter.check(first)
    limiter.check(first)
    assert not _admitted(limiter, second)
    assert _admitted(limiter, "2001:db8:1:3::1")  # the next /64 is another client
    assert _admitted(limiter, "client:hospital-7") and _admitted(limiter, "client:hospital-7")


def test_a_full_table_drops_idle_buckets_then_the_least_recently_used_never_all(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Flooding the table with other clients used to clear it, a throttled client's bucket
    included (found by a review of resource limits): now the buckets full again go first
    (idle a minute: as good as none), then the least recently used, one at a time."""
    monkeypatch.setattr(TokenBucketLimiter, "MAX_CLIENTS", 50)
    clock = FakeClock()
    limiter = TokenBucketLimiter(60, clock=clock)
    for i in range(30):
        limiter.check(f"198.51.100.{i}")
    clock.advance(61)  # those 30 are full again
    throttled = "203.0.113.9"
    for _ in range(60):
        limiter.check(throttled)
    for i in range(19):
        limiter.check(f"192.0.2.{i}")
    assert len(limiter._buckets) == 50 and not _admitted(limiter, throttled)
    limiter.check("192.0.2.100")  # full: the 30 idle buckets go, nothing else
    assert len(limiter._buckets) == 21 and not _admitted(limiter, throttled)
    for i in range(29):
        limiter.check(f"192.0.2.{120 + i}")
    assert not _admitted(limiter, throttled)  # the most recently used now
    limiter.check("192.0.2.200")  # full, none idle: the least recently used goes, one
    assert len(limiter._buckets) == 50
    assert "ip:192.0.2.0" not in limiter._buckets and "ip:192.0.2.1" in limiter._buckets
    assert not _admitted(limiter, throttled)


@pytest.mark.parametrize("rate", [1, 6, 7, 60, 1200])
def test_waiting_retry_after_seconds_is_enough(rate: int) -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate, clock=clock)
    for _ in range(rate):
        limiter.check("a")
    with pytest.raises(RateLimited) as caught:
        limiter.check("a")
    wait = caught.value.retry_after
    assert wait >= 1
    assert wait <= max(1, 60 // rate + 1)
    clock.advance(wait)
    limiter.check("a")


def test_clients_have_independent_buckets() -> None:
    limiter = TokenBucketLimiter(5, clock=FakeClock())
    for _ in range(5):
        limiter.check("10.0.0.1")
    assert not _admitted(limiter, "10.0.0.1")
    for _ in range(5):
        limiter.check("10.0.0.2")
    assert not _admitted(limiter, "10.0.0.2")
    assert not _admitted(limiter, "10.0.0.1")


# --- the development gate --------------------------------------------------------------------


def _gate(environment: str) -> DevLoopbackGate:
    return DevLoopbackGate(Settings(environment=environment, _env_file=None))  # type: ignore[call-arg]


def _request(client: str, interaction: Interaction = Interaction.READ) -> FhirRequest:
    kind = None if interaction is Interaction.CAPABILITIES else "Patient"
    return FhirRequest("GET", interaction, kind, "123", client=client)


@pytest.mark.parametrize("client", ["127.0.0.1", "127.0.0.2", "::1"])
def test_dev_admits_loopback(client: str) -> None:
    admission = _gate("dev").admit(_request(client))
    assert admission.rule.startswith("dev:")
    assert admission.who is None


@pytest.mark.parametrize(
    "client", ["10.0.0.5", "192.168.1.1", "::2", "2001:db8::1", "", "localhost", "testclient"]
)
def test_dev_refuses_other_addresses(client: str) -> None:
    with pytest.raises(NotAuthenticated, match="authentication is required"):
        _gate("dev").admit(_request(client))


@pytest.mark.parametrize("environment", ["integration", "preprod", "prod"])
@pytest.mark.parametrize("client", ["127.0.0.1", "::1", "10.0.0.5"])
def test_other_environments_refuse_even_loopback(environment: str, client: str) -> None:
    with pytest.raises(NotAuthenticated):
        _gate(environment).admit(_request(client))


@pytest.mark.parametrize("environment", ["dev", "integration", "preprod", "prod"])
@pytest.mark.parametrize("client", ["127.0.0.1", "10.0.0.5", ""])
def test_capability_statement_is_always_admitted(environment: str, client: str) -> None:
    admission = _gate(environment).admit(_request(client, Interaction.CAPABILITIES))
    assert admission.rule == "public: capability statement"


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1", True), ("::1", True), ("10.0.0.5", False), ("not an ip", False), ("", False)],
)
def test_is_loopback(address: str, expected: bool) -> None:
    assert is_loopback(address) is expected
