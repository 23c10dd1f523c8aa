"""The account rules with nothing but Python objects: password policy, logins, mandates,
throttle arithmetic and its keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carevault.domain.accounts import (
    ACCOUNT_POLICY,
    IP_POLICY,
    MAX_PASSWORD_LENGTH,
    AccountKind,
    AuthenticationFailed,
    LoginThrottle,
    Mandate,
    Throttled,
    ThrottlePolicy,
    ThrottleState,
    WeakPassword,
    account_key,
    check_account,
    check_password,
    client_key,
    fold_login,
    login_key,
    normalize_password,
)
from carevault.domain.errors import (
    BusinessRuleViolation,
    InvalidInput,
    NotAuthenticated,
    RateLimited,
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


# --- passwords ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",
        "Zw9!kq ventilateur",
        "tresor-du-grenier-1987",
        "ééééééüüüüüüx",  # any Unicode, no composition rules
        "Lëtzebuerg ass schéin",
        "w" * 60 + "q" * 68,  # the longest allowed
    ],
)
def test_good_passwords_pass(password: str) -> None:
    check_password(password, context=("anne@example.lu",))


def test_no_composition_rules_only_lowercase_letters_are_fine() -> None:
    check_password("quietmeadowlantern")


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("short1!Aa", "at least 12"),
        ("x" * 11, "at least 12"),
        ("y" * (MAX_PASSWORD_LENGTH + 1), "at most 128"),
        ("Password1234", "too common"),
        ("LUXEMBOURG123", "too common"),
        ("aaaaaaaaaaaa", "repeated or sequential"),
        ("abcabcabcabc", "repeated or sequential"),
        ("121212121212", "repeated or sequential"),
        ("abcdefghijklm", "repeated or sequential"),
        ("9876543210987"[:10] + "zzz", None),  # not a full run: fine
        ("my-carevault-pass", "name of the service"),
        ("anne.muller-secret", "the login"),
    ],
)
def test_weak_passwords_are_refused_with_the_rule(password: str, rule: str | None) -> None:
    if rule is None:
        check_password(password, context=("anne.muller@example.lu",))
        return
    with pytest.raises(WeakPassword, match=rule) as caught:
        check_password(password, context=("anne.muller@example.lu",))
    assert caught.value.expression == "password"
    assert isinstance(caught.value, BusinessRuleViolation)


def test_length_is_counted_after_nfkc_normalization() -> None:
    # U+FB01 (the "fi" ligature) becomes two characters under NFKC.
    assert normalize_password("\ufb01") == "fi"
    assert len("of\ufb01cehours!") == 11
    check_password("of\ufb01cehours!")  # 12 characters once normalized
    with pytest.raises(WeakPassword, match="at least 12"):
        check_password("of\ufb01cehour!")  # 11


# --- logins and accounts ------------------------------------------------------------------------


def test_logins_are_folded() -> None:
    assert fold_login("  Anne.Muller@Example.LU ") == "anne.muller@example.lu"
    assert fold_login("STRASSE") == fold_login("straße")


@pytest.mark.parametrize("login", ["ab", "x" * 255, "anne muller", "anne\x00x", ""])
def test_malformed_logins_are_refused(login: str) -> None:
    with pytest.raises(InvalidInput):
        fold_login(login)


def test_account_invariants() -> None:
    check_account(AccountKind.PATIENT, patient_id="p1", roles=frozenset(), has_second_factor=True)
    check_account(
        AccountKind.OPERATOR,
        patient_id=None,
        roles=frozenset({"security_officer"}),
        has_second_factor=True,
    )
    with pytest.raises(BusinessRuleViolation, match="TOTP"):
        check_account(
            AccountKind.OPERATOR, patient_id=None, roles=frozenset(), has_second_factor=False
        )
    with pytest.raises(BusinessRuleViolation, match="bound to a patient"):
        check_account(
            AccountKind.PATIENT, patient_id=None, roles=frozenset(), has_second_factor=True
        )
    with pytest.raises(BusinessRuleViolation, match="not bound"):
        check_account(
            AccountKind.REPRESENTATIVE, patient_id="p1", roles=frozenset(), has_second_factor=True
        )
    with pytest.raises(BusinessRuleViolation, match="only operator"):
        check_account(
            AccountKind.PATIENT,
            patient_id="p1",
            roles=frozenset({"security_officer"}),
            has_second_factor=True,
        )
    with pytest.raises(BusinessRuleViolation, match="unknown"):
        check_account(
            AccountKind.OPERATOR, patient_id=None, roles=frozenset({"root"}), has_second_factor=True
        )


def test_error_classes_slot_into_the_hierarchy() -> None:
    assert issubclass(AuthenticationFailed, NotAuthenticated)
    assert Throttled("x", retry_after=3).retry_after == 3
    assert issubclass(Throttled, RateLimited)


# --- mandates -----------------------------------------------------------------------------------


def mandate(start: datetime, end: datetime | None, scope: str = "read") -> Mandate:
    return Mandate("m1", "rep", "pat", scope, start, end)


def test_a_mandate_is_active_from_its_start_until_before_its_end() -> None:
    m = mandate(T0, T0 + timedelta(days=30))
    assert not m.active_at(T0 - timedelta(microseconds=1))
    assert m.active_at(T0)
    assert m.active_at(T0 + timedelta(days=29, hours=23))
    assert not m.active_at(T0 + timedelta(days=30))


def test_an_open_ended_mandate_never_expires() -> None:
    assert mandate(T0, None).active_at(T0 + timedelta(days=3650))


def test_mandate_rules() -> None:
    with pytest.raises(BusinessRuleViolation, match="scope"):
        mandate(T0, None, scope="write")
    with pytest.raises(BusinessRuleViolation, match="ends after"):
        mandate(T0, T0)
    with pytest.raises(InvalidInput, match="time zone"):
        mandate(datetime(2026, 1, 1), None)


def test_manage_includes_read() -> None:
    assert mandate(T0, None, "manage").allows("read")
    assert mandate(T0, None, "manage").allows("manage")
    assert not mandate(T0, None, "read").allows("manage")


# --- throttling ---------------------------------------------------------------------------------


def failures(throttle: LoginThrottle, count: int, now: datetime = T0) -> ThrottleState:
    state = ThrottleState()
    for _ in range(count):
        state = throttle.fail(state, now)
    return state


def test_five_free_failures_then_backoff_then_a_lock_at_ten() -> None:
    throttle = LoginThrottle(ACCOUNT_POLICY)
    for n in range(1, 5):
        assert throttle.retry_after(failures(throttle, n), T0) == 0
    assert throttle.retry_after(failures(throttle, 5), T0) == 2
    assert [throttle.retry_after(failures(throttle, n), T0) for n in range(5, 10)] == [
        2,
        4,
        8,
        16,
        32,
    ]
    nine, ten = failures(throttle, 9), failures(throttle, 10)
    assert nine.locked_at is None and ten.locked_at == T0
    assert LoginThrottle.newly_locked(nine, ten)
    assert throttle.retry_after(ten, T0) == 3600
    assert throttle.retry_after(ten, T0 + timedelta(hours=1)) == 0


def test_every_failure_after_the_lock_locks_again() -> None:
    throttle = LoginThrottle(ACCOUNT_POLICY)
    ten = failures(throttle, 10)
    later = T0 + timedelta(hours=2)
    eleven = throttle.fail(ten, later)
    assert LoginThrottle.newly_locked(ten, eleven)
    assert throttle.retry_after(eleven, later) == 3600


def test_the_address_policy_never_locks_and_caps_its_backoff() -> None:
    throttle = LoginThrottle(IP_POLICY)
    assert throttle.retry_after(failures(throttle, 19), T0) == 0
    assert throttle.retry_after(failures(throttle, 20), T0) == 2
    many = failures(throttle, 200)
    assert many.locked_at is None
    assert throttle.retry_after(many, T0) == 15 * 60


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    throttle = LoginThrottle(ACCOUNT_POLICY)
    state = failures(throttle, 5)  # next allowed at T0 + 2 s
    assert throttle.retry_after(state, T0 + timedelta(milliseconds=1500)) == 1
    assert throttle.retry_after(state, T0 + timedelta(milliseconds=1)) == 2


def test_policies_that_make_no_sense_are_refused() -> None:
    with pytest.raises(ValueError, match="after the free"):
        ThrottlePolicy(free_failures=5, lock_after=5)
    with pytest.raises(ValueError, match="at least as long"):
        ThrottlePolicy(lock_duration=timedelta(minutes=1))


policies = st.builds(
    ThrottlePolicy,
    free_failures=st.integers(1, 30),
    lock_after=st.none() | st.integers(31, 60),
    base_delay=st.integers(1, 60).map(lambda s: timedelta(seconds=s)),
    max_delay=st.integers(60, 3600).map(lambda s: timedelta(seconds=s)),
    lock_duration=st.integers(3600, 86400).map(lambda s: timedelta(seconds=s)),
)


@given(policy=policies, n=st.integers(0, 2000))
def test_backoff_never_decreases_with_more_failures(policy: ThrottlePolicy, n: int) -> None:
    throttle = LoginThrottle(policy)
    assert throttle.backoff(n + 1) >= throttle.backoff(n)
    assert throttle.retry_after(failures(throttle, n + 1), T0) >= throttle.retry_after(
        failures(throttle, n), T0
    )


@given(policy=policies, n=st.integers(0, 100), offset=st.integers(0, 100_000))
def test_a_success_resets_everything(policy: ThrottlePolicy, n: int, offset: int) -> None:
    throttle = LoginThrottle(policy)
    now = T0 + timedelta(seconds=offset)
    failures(throttle, n, now)
    fresh = throttle.succeed()
    assert fresh == ThrottleState()
    assert throttle.retry_after(fresh, now) == 0
    # After a reset the free failures are free again.
    assert throttle.retry_after(failures(throttle, policy.free_failures - 1, now), now) == 0


# --- keys ---------------------------------------------------------------------------------------


def test_throttle_keys() -> None:
    assert account_key("abc") == "account:abc"
    assert login_key("anne@example.lu").startswith("login:")
    assert "anne" not in login_key("anne@example.lu")
    assert client_key("203.0.113.7") == "ip:203.0.113.7"
    assert client_key("::ffff:203.0.113.7") == "ip:203.0.113.7"
    # One IPv6 client holds a /64: every address in it shares one key.
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") == "ip:2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("testclient") == "ip:testclient"
