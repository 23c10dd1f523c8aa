"""The authorization engine's invariants over random facts (hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from carevault.adapters.package_config import builtin_profile_matrix
from carevault.domain.authorization import (
    Action,
    Block,
    Confidentiality,
    Delegation,
    DocumentFacts,
    EmergencySetting,
    EmergencyWindow,
    Grant,
    GrantLevel,
    MandateScope,
    Party,
    RecordFacts,
    RecordModel,
    RecordState,
    Representative,
    Subject,
    SubjectKind,
    decide,
    visible_filter,
)

BUILTIN_MATRIX = builtin_profile_matrix()
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PATIENT_ID = "pat-1"
PRACTITIONERS = ("p1", "p2", "p3")
ORGANIZATIONS = ("o1", "o2")
TEAMS = ("t1", "t2")
REPRESENTATIVES = ("r1", "r2")
CLASSES = (
    "medication",
    "allergy",
    "consultation-report",
    "laboratory",
    "psychiatric",
    "hiv",
    "unknown-class",
)
PROFESSIONS = ("physician", "pharmacist", "nurse", "laboratory-biologist", "medical-assistant")

instants = st.integers(min_value=-30, max_value=30).map(lambda days: NOW + timedelta(days=days))
optional_instants = st.none() | instants
levels = st.sampled_from(GrantLevel)


def ids_of(options: tuple[str, ...]) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(options), max_size=len(options))


practitioners = st.builds(
    Subject,
    kind=st.just(SubjectKind.PRACTITIONER),
    id=st.sampled_from(PRACTITIONERS),
    profession=st.sampled_from(PROFESSIONS),
    specialty=st.sampled_from((None, "psychiatry", "general-practice")),
    organization_ids=ids_of(ORGANIZATIONS),
    care_team_ids=ids_of(TEAMS),
    licence_active=st.booleans(),
    identity_valid=st.booleans(),
)

subjects = st.one_of(
    practitioners,
    st.builds(
        Subject,
        kind=st.just(SubjectKind.ASSISTANT),
        id=st.just("a1"),
        profession=st.just("medical-assistant"),
        organization_ids=ids_of(ORGANIZATIONS),
        identity_valid=st.booleans(),
        mandator=st.none() | practitioners,
    ),
    st.builds(
        Subject,
        kind=st.just(SubjectKind.ORGANIZATION_SYSTEM),
        id=st.just("client-1"),
        organization_ids=ids_of(ORGANIZATIONS),
        identity_valid=st.booleans(),
    ),
    st.builds(
        Subject,
        kind=st.just(SubjectKind.PATIENT),
        id=st.sampled_from((PATIENT_ID, "pat-2")),
        identity_valid=st.booleans(),
    ),
    st.builds(
        Subject,
        kind=st.just(SubjectKind.REPRESENTATIVE),
        id=st.sampled_from(REPRESENTATIVES),
        identity_valid=st.booleans(),
    ),
    st.builds(Subject, kind=st.just(SubjectKind.OPERATOR), id=st.just("op-1")),
)


@st.composite
def grants(draw: st.DrawFn) -> Grant:
    party = draw(st.sampled_from(Party))
    party_id = draw(
        st.sampled_from(
            {Party.PRACTITIONER: PRACTITIONERS, Party.ORGANIZATION: ORGANIZATIONS}.get(party, TEAMS)
        )
    )
    return Grant(
        party,
        party_id,
        draw(levels),
        draw(instants),
        draw(optional_instants),
        granted_by=PATIENT_ID,
        delegable=draw(st.booleans()),
    )


blocks = st.one_of(
    st.builds(Block, st.just(Party.PRACTITIONER), st.sampled_from(PRACTITIONERS)),
    st.builds(Block, st.just(Party.ORGANIZATION), st.sampled_from(ORGANIZATIONS)),
)

records = st.builds(
    RecordFacts,
    patient_id=st.just(PATIENT_ID),
    state=st.sampled_from(RecordState),
    model=st.sampled_from(RecordModel),
    referring_physician_id=st.none() | st.sampled_from(PRACTITIONERS),
    grants=st.lists(grants(), max_size=4).map(tuple),
    blocks=st.lists(blocks, max_size=2).map(tuple),
    emergency_setting=st.sampled_from(EmergencySetting),
    emergency_windows=st.lists(
        st.builds(EmergencyWindow, st.sampled_from(PRACTITIONERS), instants), max_size=2
    ).map(tuple),
    representatives=st.lists(
        st.builds(
            Representative,
            st.sampled_from(REPRESENTATIVES),
            st.sampled_from(MandateScope),
            instants,
            optional_instants,
        ),
        max_size=2,
    ).map(tuple),
    delegation_allowed=st.booleans(),
    delegations=st.lists(
        st.builds(
            Delegation,
            st.sampled_from(PRACTITIONERS),
            st.sampled_from(PRACTITIONERS),
            levels,
            instants,
            instants,
        ),
        max_size=2,
    ).map(tuple),
)

documents = st.builds(
    DocumentFacts,
    id=st.just("doc-1"),
    author_id=st.sampled_from((*PRACTITIONERS, "a1")),
    author_organization_id=st.sampled_from(ORGANIZATIONS),
    class_code=st.sampled_from(CLASSES),
    confidentiality=st.sampled_from(Confidentiality),
    hidden=st.booleans(),
    not_yet_visible_to_patient=st.booleans(),
)

actions = st.sampled_from(Action)
optional_records = st.none() | records
optional_documents = st.none() | documents


def permitted(
    subject: Subject, action: Action, record: RecordFacts | None, document: DocumentFacts | None
) -> bool:
    return decide(subject, action, record, document, NOW, BUILTIN_MATRIX).permit


@settings(database=None, deadline=None, max_examples=400)
@given(subjects, actions, records, optional_documents, st.data())
def test_removing_a_grant_never_shows_more(
    subject: Subject,
    action: Action,
    record: RecordFacts,
    document: DocumentFacts | None,
    data: st.DataObject,
) -> None:
    if not record.grants:
        return
    index = data.draw(st.integers(0, len(record.grants) - 1))
    fewer = replace(record, grants=record.grants[:index] + record.grants[index + 1 :])
    if permitted(subject, action, fewer, document):
        assert permitted(subject, action, record, document)


@settings(database=None, deadline=None, max_examples=400)
@given(subjects, actions, records, optional_documents, blocks)
def test_adding_a_block_never_shows_more(
    subject: Subject,
    action: Action,
    record: RecordFacts,
    document: DocumentFacts | None,
    block: Block,
) -> None:
    more = replace(record, blocks=(*record.blocks, block))
    if permitted(subject, action, more, document):
        assert permitted(subject, action, record, document)


@settings(database=None, deadline=None, max_examples=400)
@given(subjects, actions, records, optional_documents)
def test_removing_a_delegation_or_emergency_window_never_shows_more(
    subject: Subject,
    action: Action,
    record: RecordFacts,
    document: DocumentFacts | None,
) -> None:
    for fewer in (
        replace(record, delegations=record.delegations[1:]),
        replace(record, emergency_windows=record.emergency_windows[1:]),
        replace(record, emergency_setting=EmergencySetting.OFF),
    ):
        if permitted(subject, action, fewer, document):
            assert permitted(subject, action, record, document)


@settings(database=None, deadline=None, max_examples=1000)
@given(subjects, optional_records, st.lists(documents, min_size=1, max_size=5))
def test_the_search_filter_agrees_exactly_with_single_reads(
    subject: Subject, record: RecordFacts | None, docs: list[DocumentFacts]
) -> None:
    search = visible_filter(subject, record, NOW, BUILTIN_MATRIX)
    for document in docs:
        read = decide(subject, Action.READ, record, document, NOW, BUILTIN_MATRIX)
        assert search.matches(document) is read.permit, (search, read.explain())
        assert (
            decide(subject, Action.SEARCH, record, document, NOW, BUILTIN_MATRIX).permit
            is read.permit
        )
    if search.matches_nothing:
        assert not any(search.matches(document) for document in docs)


@settings(database=None, deadline=None, max_examples=400)
@given(subjects, actions, optional_records, optional_documents)
def test_decisions_are_deterministic_and_explained(
    subject: Subject,
    action: Action,
    record: RecordFacts | None,
    document: DocumentFacts | None,
) -> None:
    first = decide(subject, action, record, document, NOW, BUILTIN_MATRIX)
    second = decide(subject, action, record, document, NOW, BUILTIN_MATRIX)
    assert first == second
    assert first.path[-1] == first.rule
    assert first.path[0] == "identity"
    assert len(set(first.path)) == len(first.path)
    assert set(first.reasons) == {"en", "fr"}
    assert all(first.reasons.values())
    assert any(obligation.kind == "audit" for obligation in first.obligations)
    if first.rule == "emergency" and first.permit:
        assert {o.kind for o in first.obligations} >= {"notify-patient", "alert-security-officer"}


@settings(database=None, deadline=None, max_examples=400)
@given(subjects, actions, records, documents)
def test_an_operator_or_a_stranger_to_the_record_never_gets_in(
    subject: Subject, action: Action, record: RecordFacts, document: DocumentFacts
) -> None:
    operator = Subject(SubjectKind.OPERATOR, "op-1")
    assert not permitted(operator, action, record, document)
    if subject.kind is SubjectKind.PATIENT and subject.id != PATIENT_ID:
        assert not permitted(subject, action, record, document)
    # Only the patient and a managing representative act on a closed record.
    closed = replace(record, state=RecordState.CLOSED)
    if subject.kind not in (SubjectKind.PATIENT, SubjectKind.REPRESENTATIVE):
        assert not permitted(subject, action, closed, document)
    # V: only the author and the patient.
    secret = replace(document, confidentiality=Confidentiality.V)
    if permitted(subject, Action.READ, record, secret):
        assert subject.kind is SubjectKind.PATIENT or subject.id == secret.author_id
