"""The access matrix's rows for e-prescriptions (``Task`` and its E-Rezept operations).

Who may take each step is the engine's: writing a prescription is `decide_prescribing` (and,
once it names its patient, `decide` on their record as a document of the prescription class);
taking one is `decide_dispensing`; reading one is `decide` on the record, the prescription
decided as a document by its prescriber; the patient cancels their own (``manage``). Beyond
the engine, the service adds what only the prescription knows: a prescription is activated by
its own prescriber, signed with their own card (a system's certificate does not sign one)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from carevault.api.fhir.door import Target
from carevault.domain.authorization import (
    PRESCRIPTION_CLASS,
    Action,
    Decision,
    DocumentFacts,
    Subject,
    decide_dispensing,
    decide_prescribing,
)
from carevault.services.prescriptions import PrescriptionService
from carevault.services.record_policy import Actor, practitioner_subject
from support.access_matrix import (
    DENIED,
    UNAUTHENTICATED,
    Call,
    Expected,
    Need,
    Oracle,
    Row,
    _concerning,
    _fixed,
    _record_search,
    _ref,
    fhir_row,
)
from support.erezept import CREATE, activation, dispense, identifier, prescription_bundle, sign
from support.matrix_world import Caller, World, bearer

SECRET = "https://carevault.lu/fhir/NamingSystem/Secret"
ACCESS_CODE = "https://carevault.lu/fhir/NamingSystem/AccessCode"


def _service(world: World) -> PrescriptionService:
    handler: Any = world.platform.door.handlers["Task"]
    service: PrescriptionService = handler.prescriptions
    return service


def _actor(world: World, name: str) -> Actor:
    practitioner_id = world.caller(name).practitioner_id
    assert practitioner_id is not None
    with world.platform.unit_of_work() as uow:
        subject = practitioner_subject(uow, practitioner_id)
    return Actor(subject, f"Practitioner/{practitioner_id}")


def _professional_identifier(world: World, practitioner_id: str) -> str:
    with world.platform.unit_of_work() as uow:
        stored = uow.directory.practitioner(practitioner_id)
    assert stored is not None
    found = identifier(stored.resource, world.platform.settings.professional_id_system)
    assert found is not None
    return found


def _signed(world: World, caller: Caller, task_id: str) -> str:
    """A prescription for the patient under attack, naming ``caller``'s practitioner, for the
    task ``task_id`` (its number) and signed with ``caller``'s key (their card, or their
    organization system's)."""
    assert caller.signer is not None and caller.practitioner_id is not None
    settings = world.platform.settings
    bundle = prescription_bundle(
        patient_system=settings.national_id_system, patient_id_value=world.patient_national_id,
        practitioner_system=settings.professional_id_system,
        practitioner_id_value=_professional_identifier(world, caller.practitioner_id),
        number=_service(world).get(task_id).number)
    key, chain = caller.signer
    return sign(bundle, key if isinstance(key, str) else key.decode(), chain)


def _draft(world: World, name: str = "author") -> tuple[str, str]:
    created = _service(world).create(_actor(world, name))
    return created.task.id, created.access_code


def _ready(world: World) -> tuple[str, str]:
    """A prescription by the author (who saw the patient), ready for a pharmacy."""
    task_id, code = _draft(world)
    _service(world).activate(_actor(world, "author"), task_id,
                             _signed(world, world.caller("author"), task_id))
    return task_id, code


_SHARED: dict[int, str] = {}


def _shared(world: World) -> str:
    """One ready prescription of the world, for the cells that are refused (and the reads)."""
    if id(world) not in _SHARED:
        _SHARED[id(world)] = _ready(world)[0]
    return _SHARED[id(world)]


def _accepted(world: World) -> tuple[str, str]:
    """A prescription the matrix's pharmacist holds: (id, secret)."""
    task_id, code = _ready(world)
    accepted = _service(world).accept(_actor(world, "pharmacist"), task_id, code)
    return task_id, accepted.secret


def _decided(decider: Any, scope: tuple[str, str]) -> Any:
    """An expectation from a decision outside the records (prescribing, dispensing)."""
    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        if caller.token is None:
            return Expected(False, UNAUTHENTICATED, "no token")
        with oracle.uow() as uow:
            found = oracle.token_caller(uow, caller)
            if found is None:
                return Expected(False, UNAUTHENTICATED, "the token is refused")
            subject, _powers = oracle.subject(uow, caller, found, scope)
        decision: Decision = decider(w, subject)
        if not decision.permit:
            return Expected(False, DENIED, decision.explain(), subject)
        return Expected(True, frozenset(), decision.explain(), subject)
    return expect


def _prescribing(w: World, subject: Subject) -> Decision:
    return decide_prescribing(subject, w.platform.policy.matrix)


def _dispensing(w: World, subject: Subject) -> Decision:
    return decide_dispensing(subject, frozenset(w.platform.settings.dispensing_professions))


@fhir_row("Task", "$create@type:POST")
def _create(world: World) -> list[Row]:
    return [Row("Task $create (a prescription's draft)", ("Task", "$create@type:POST"),
                ("Task", "c"), lambda _w, _c, _p: Call("POST", "Task/$create", json=CREATE),
                writes=True, expect=_decided(_prescribing, ("Task", "c")))]


@fhir_row("Task", "$activate@instance:POST")
def _activate(world: World) -> list[Row]:
    need = Need(Target.RECORD, Action.WRITE, world.patient_id,
                writes=(DocumentFacts("", "", "", PRESCRIPTION_CLASS),))

    def call(w: World, caller: Caller, permitted: bool) -> Call:
        if permitted and caller.kind in ("practitioner", "system") and caller.token:
            made = w.http.post("/fhir/Task/$create", json=CREATE, headers=bearer(caller.token))
            assert made.status_code == 201, made.text
            task_id = str(made.json()["id"])
            return Call("POST", f"Task/{task_id}/$activate",
                        json=activation(_signed(w, caller, task_id)))
        task_id, _code = _draft(w)
        return Call("POST", f"Task/{task_id}/$activate",
                    json=activation(_signed(w, w.caller("author"), task_id)))

    inner = Row("", ("Task", "$activate@instance:POST"), ("Task", "u"), call,
                lambda _w, _c: need)

    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        base = oracle.expect(inner, caller)
        if not base.permit or caller.kind == "practitioner":
            return base
        # Permitted on the record, but not this prescription's prescriber (a patient), or a
        # system's certificate where the prescriber's card signs.
        return replace(base, permit=False, statuses=frozenset({403, 422}),
                       why="only its prescriber activates a prescription, with their own card")

    return [Row("Task/[id] $activate (a signed prescription)",
                ("Task", "$activate@instance:POST"), ("Task", "u"), call, writes=True,
                expect=expect)]


def _dispensing_row(label: str, operation: str, call: Any) -> Row:
    return Row(label, ("Task", f"${operation}@instance:POST"), ("Task", "u"), call,
               writes=True, expect=_decided(_dispensing, ("Task", "u")))


@fhir_row("Task", "$accept@instance:POST")
def _accept(world: World) -> list[Row]:
    def call(w: World, _c: Caller, permitted: bool) -> Call:
        task_id, code = _ready(w) if permitted else (_shared(w), "0" * 64)
        return Call("POST", f"Task/{task_id}/$accept", (("ac", code),))
    return [_dispensing_row("Task/[id] $accept (with the access code)", "accept", call)]


@fhir_row("Task", "$reject@instance:POST")
def _reject(world: World) -> list[Row]:
    def call(w: World, _c: Caller, permitted: bool) -> Call:
        task_id, secret = _accepted(w) if permitted else (_shared(w), "0" * 64)
        return Call("POST", f"Task/{task_id}/$reject", (("secret", secret),))
    return [_dispensing_row("Task/[id] $reject (with the secret)", "reject", call)]


@fhir_row("Task", "$close@instance:POST")
def _close(world: World) -> list[Row]:
    def call(w: World, _c: Caller, permitted: bool) -> Call:
        task_id, secret = _accepted(w) if permitted else (_shared(w), "0" * 64)
        return Call("POST", f"Task/{task_id}/$close", (("secret", secret),),
                    json=dispense(task_id, w.patient_national_id,
                                  w.platform.settings.national_id_system))
    return [_dispensing_row("Task/[id] $close (with the secret)", "close", call)]


@fhir_row("Task", "$abort@instance:POST")
def _abort(world: World) -> list[Row]:
    def call(w: World, _c: Caller, permitted: bool) -> Call:
        task_id = _ready(w)[0] if permitted else _shared(w)
        return Call("POST", f"Task/{task_id}/$abort")
    return [Row("Task/[id] $abort (the patient cancels their own)",
                ("Task", "$abort@instance:POST"), ("Task", "u"), call,
                lambda w, _c: Need(Target.RECORD, Action.MANAGE, w.patient_id), writes=True)]


@fhir_row("Task", "read")
def _read(world: World) -> list[Row]:
    task_id = _shared(world)
    author = world.caller("author").practitioner_id or ""
    facts = DocumentFacts(task_id, author, "", PRESCRIPTION_CLASS)
    return [Row("Task read (a ready prescription)", ("Task", "read"), ("Task", "r"),
                lambda _w, _c, _p: Call("GET", f"Task/{task_id}"),
                lambda w, _c: Need(Target.RECORD, Action.READ, w.patient_id, facts=facts))]


_record_search("Task", Action.SEARCH, _concerning(_ref("for", "reference")))

_fixed("/.well-known/carevault-signing-key.pem", "GET", 200)


@fhir_row("Task", "$print@instance:POST")
def _print(world: World) -> list[Row]:
    """The printout: a prescriber's, of their own prescription, with its access code."""
    made: dict[str, tuple[str, str]] = {}

    def call(w: World, _c: Caller, _p: bool) -> Call:
        if "task" not in made:
            made["task"] = _ready(w)  # the author's
        task_id, code = made["task"]
        return Call("POST", f"Task/{task_id}/$print", (("ac", code),))

    decided = _decided(_prescribing, ("Task", "r"))

    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        base: Expected = decided(oracle, w, caller)
        if base.permit and caller.name != "author":
            return replace(base, permit=False, statuses=frozenset({403}),
                           why="only its prescriber prints a prescription")
        return base

    return [Row("Task/[id] $print (the author's prescription)", ("Task", "$print@instance:POST"),
                ("Task", "r"), call, expect=expect)]


# --- the medication list: MedicationRequest and MedicationDispense searches -------------------

_record_search("MedicationRequest", Action.SEARCH, _concerning(_ref("subject", "reference")))
_record_search("MedicationDispense", Action.SEARCH, _concerning(_ref("subject", "reference")))


@fhir_row("MedicationRequest", "search:requester")
def _requester(world: World) -> list[Row]:
    """The author's own prescriptions, across their patients: the author alone."""
    author = world.caller("author").practitioner_id or ""

    def decider(w: World, subject: Subject) -> Decision:
        return decide_prescribing(subject, w.platform.policy.matrix, author)

    return [Row("MedicationRequest search requester (the author's)",
                ("MedicationRequest", "search:requester"), ("MedicationRequest", "s"),
                lambda _w, _c, _p: Call("GET", "MedicationRequest",
                                        (("requester", f"Practitioner/{author}"),)),
                expect=_decided(decider, ("MedicationRequest", "s")))]


@fhir_row("MedicationDispense", "search:performer")
def _performer(world: World) -> list[Row]:
    """What the matrix's pharmacy dispensed: its pharmacists alone."""
    with world.platform.unit_of_work() as uow:
        pharmacy = uow.directory.organization_ids_by_identifier(["ORG-MX-PHA"])["ORG-MX-PHA"]

    def decider(w: World, subject: Subject) -> Decision:
        professions = frozenset(w.platform.settings.dispensing_professions)
        return decide_dispensing(subject, professions, pharmacy)

    return [Row("MedicationDispense search performer (the matrix pharmacy's)",
                ("MedicationDispense", "search:performer"), ("MedicationDispense", "s"),
                lambda _w, _c, _p: Call("GET", "MedicationDispense",
                                        (("performer", f"Organization/{pharmacy}"),)),
                expect=_decided(decider, ("MedicationDispense", "s")))]
