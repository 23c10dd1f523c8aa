"""Tests for the MPI's identity rules: local identifiers, merge and unmerge."""

from __future__ import annotations

import pytest

from carevault.domain.directory import (
    Identifier,
    MergeState,
    check_local_identifiers,
    check_merge,
    check_unmerge,
)
from carevault.domain.errors import BusinessRuleViolation, Conflict

CHL = "https://chl.lu/fhir/sid/patient"
HRS = "https://hrs.lu/fhir/sid/patient"
AUTHORITIES = {CHL, HRS}


# --- local identifiers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "local_ids",
    [
        (),
        (Identifier(CHL, "123"),),
        (Identifier(CHL, "123"), Identifier(HRS, "123")),
    ],
)
def test_local_identifiers_from_distinct_known_authorities_are_accepted(local_ids) -> None:
    check_local_identifiers(local_ids, AUTHORITIES)


def test_identifier_from_unknown_authority_is_refused() -> None:
    unknown = "https://elsewhere.example/sid"
    with pytest.raises(BusinessRuleViolation) as caught:
        check_local_identifiers((Identifier(CHL, "1"), Identifier(unknown, "2")), AUTHORITIES)
    assert unknown in caught.value.message
    assert "assigning authority" in caught.value.message
    assert caught.value.expression == "Patient.identifier"


def test_no_authority_is_known_when_none_is_registered() -> None:
    with pytest.raises(BusinessRuleViolation, match="not the assigning authority"):
        check_local_identifiers((Identifier(CHL, "1"),), set())


def test_two_identifiers_from_one_authority_are_refused() -> None:
    with pytest.raises(BusinessRuleViolation) as caught:
        check_local_identifiers(
            (Identifier(CHL, "1"), Identifier(HRS, "9"), Identifier(CHL, "2")), AUTHORITIES
        )
    assert "two local identifiers from the same assigning authority" in caught.value.message
    assert CHL in caught.value.message
    assert caught.value.expression == "Patient.identifier"


def test_the_same_identifier_twice_is_refused() -> None:
    with pytest.raises(BusinessRuleViolation, match="same assigning authority"):
        check_local_identifiers((Identifier(CHL, "1"), Identifier(CHL, "1")), AUTHORITIES)


# --- merge -----------------------------------------------------------------------------------


def test_merge_of_two_unmerged_entries_is_accepted() -> None:
    check_merge(MergeState("a", None), MergeState("b", None))


def test_self_merge_is_a_business_rule_violation() -> None:
    with pytest.raises(BusinessRuleViolation) as caught:
        check_merge(MergeState("a", None), MergeState("a", None))
    assert caught.value.message == "a patient cannot be merged into itself"


def test_merging_an_already_merged_source_is_a_conflict() -> None:
    with pytest.raises(Conflict) as caught:
        check_merge(MergeState("a", "c"), MergeState("b", None))
    assert not isinstance(caught.value, BusinessRuleViolation)
    assert caught.value.message == "Patient/a is already merged into Patient/c"


def test_merging_into_a_merged_survivor_is_a_conflict_naming_the_real_survivor() -> None:
    with pytest.raises(Conflict) as caught:
        check_merge(MergeState("a", None), MergeState("b", "c"))
    assert caught.value.message == (
        "Patient/b is itself merged into Patient/c; merge into that one"
    )


def test_merge_cycle_is_refused() -> None:
    # b was merged into a; merging a into b would close a cycle.
    with pytest.raises(Conflict, match="Patient/b is itself merged into Patient/a"):
        check_merge(MergeState("a", None), MergeState("b", "a"))


# --- unmerge ---------------------------------------------------------------------------------


def test_unmerge_returns_the_survivor() -> None:
    assert check_unmerge(MergeState("a", "b")) == "b"


def test_unmerge_of_an_unmerged_entry_is_a_conflict() -> None:
    with pytest.raises(Conflict) as caught:
        check_unmerge(MergeState("a", None))
    assert caught.value.message == "Patient/a is not merged"
