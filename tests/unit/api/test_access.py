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
