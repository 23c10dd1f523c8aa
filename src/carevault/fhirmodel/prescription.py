"""Reading a prescription Bundle (the payload the prescriber signs) and writing the FHIR
resources of the E-Rezept workflow (``Task``).

The Bundle carries, as in gematik's KBV prescription: one ``MedicationRequest`` (structured
``Dosage``, the quantity, the validity period), the ``Medication`` it names (an ATC code and a
national product code from the catalogue), the ``Patient``, the prescribing ``Practitioner``
(and optionally their ``PractitionerRole``) and their ``Organization``. What the platform
needs of it is read here into a `Prescription`; the whole Bundle stays signed as it came.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from carevault.domain.errors import InvalidInput
from carevault.domain.prescriptions import (
    ATC_SYSTEM,
    PRESCRIPTION_ID_SYSTEM,
    MedicationCatalogue,
    Product,
)
from carevault.fhirmodel.validate import date_time, validate_resource

JsonObject = dict[str, Any]

_REQUIRED = ("MedicationRequest", "Medication", "Patient", "Practitioner", "Organization")
_OPTIONAL = ("PractitionerRole", "Composition", "Coverage")
_PERIOD_WORDS = {"h": "hour", "d": "day", "wk": "week", "mo": "month", "min": "minute"}


@dataclass(frozen=True)
class Prescription:
    patient_identifier: tuple[str, str]  # (system, value)
    practitioner_identifier: tuple[str, str]
    organization: str
    product: Product
    medication: str  # as written by the prescriber
    dosage: str  # in words
    quantity: str
    validity_start: datetime | None
    validity_end: datetime | None
    authored_on: str | None
    prescriber: str = ""  # the Practitioner's name, as written
    patient: str = ""  # the Patient's name, as written
    # The prescription number the Bundle's identifier names (gematik's PrescriptionID): the
    # task it was signed for, so that a signed prescription is activated on that task alone.
    number: str | None = None


def _fail(message: str, where: str) -> InvalidInput:
    return InvalidInput(message, expression=where)


def _optional_time(value: object, where: str) -> datetime | None:
    return None if value is None else date_time(value, where, zone_required=False)


def _identifier(resource: JsonObject, system: str, kind: str) -> tuple[str, str]:
    for identifier in resource.get("identifier", []):
        if identifier.get("system") == system and identifier.get("value"):
            return system, str(identifier["value"])
    raise _fail(f"the {kind} needs an identifier of system {system}", f"{kind}.identifier")


def _refers(reference: object, entry: tuple[str, JsonObject]) -> bool:
    full_url, resource = entry
    target = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(target, str) or not target:
        return False
    local = f"{resource.get('resourceType')}/{resource.get('id')}"
    return target in (full_url, local) or (bool(full_url) and full_url.endswith("/" + target))


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _name(resource: JsonObject) -> str:
    names = resource.get("name") or [{}]
    first = names[0] if isinstance(names[0], dict) else {}
    if first.get("text"):
        return str(first["text"])
    return " ".join([*map(str, first.get("given", [])), str(first.get("family", ""))]).strip()


# The timing in French and German, for the patient's portal: (once per unit, every N units).
_TIMING = {
    "fr": {
        "h": ("par heure", "toutes les {n} heures"),
        "d": ("par jour", "tous les {n} jours"),
        "wk": ("par semaine", "toutes les {n} semaines"),
        "mo": ("par mois", "tous les {n} mois"),
        "min": ("par minute", "toutes les {n} minutes"),
    },
    "de": {
        "h": ("pro Stunde", "alle {n} Stunden"),
        "d": ("pro Tag", "alle {n} Tage"),
        "wk": ("pro Woche", "alle {n} Wochen"),
        "mo": ("pro Monat", "alle {n} Monate"),
        "min": ("pro Minute", "alle {n} Minuten"),
    },
}
_TIMES = {"fr": "{n} fois", "de": "{n}-mal"}


def dosage_in_words(dosage: JsonObject, lang: str = "en") -> str:
    """A structured ``Dosage`` in words: ``1 tablet, 3 times every 1 day`` (English, as the
    printout has it), or in French or German for the patient's portal (``3 fois par jour``,
    ``3-mal pro Tag``); the dose's unit and the free text stay as the prescriber wrote them."""
    dose = (dosage.get("doseAndRate") or [{}])[0].get("doseQuantity") or {}
    repeat = (dosage.get("timing") or {}).get("repeat") or {}
    if "value" not in dose or not (dose.get("unit") or dose.get("code")):
        raise _fail(
            "the dosage needs a structured dose (doseAndRate.doseQuantity with a unit)",
            "MedicationRequest.dosageInstruction.doseAndRate",
        )
    if not all(k in repeat for k in ("frequency", "period", "periodUnit")):
        raise _fail(
            "the dosage needs a structured timing (timing.repeat: frequency, period, periodUnit)",
            "MedicationRequest.dosageInstruction.timing",
        )
    unit = _PERIOD_WORDS.get(str(repeat["periodUnit"]), str(repeat["periodUnit"]))
    period = _number(repeat["period"])
    text = dosage.get("text")
    timing = _TIMING.get(lang, {}).get(str(repeat["periodUnit"]))
    if timing is not None:
        once, every = timing
        words = (
            f"{_number(dose['value'])} {dose.get('unit') or dose.get('code')}, "
            f"{_TIMES[lang].format(n=_number(repeat['frequency']))} "
            f"{once if period == '1' else every.format(n=period)}"
        )
        return f"{words} ({text})" if isinstance(text, str) and text.strip() else words
    words = (
        f"{_number(dose['value'])} {dose.get('unit') or dose.get('code')}, "
        f"{_number(repeat['frequency'])} time{'s' if repeat['frequency'] != 1 else ''} "
        f"every {period} {unit}{'s' if period != '1' else ''}"
    )
    return f"{words} ({text})" if isinstance(text, str) and text.strip() else words


def read_prescription(
    bundle: JsonObject,
    catalogue: MedicationCatalogue,
    *,
    patient_system: str,
    practitioner_system: str,
) -> Prescription:
    """What the platform reads of a prescription Bundle; `InvalidInput` naming what is wrong."""
    validate_resource(bundle, "Bundle")
    if bundle.get("type") not in ("document", "collection"):
        raise _fail("the prescription is a Bundle of type document", "Bundle.type")
    found: dict[str, list[tuple[str, JsonObject]]] = {}
    for entry in bundle.get("entry", []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise _fail("every entry of the prescription holds a resource", "Bundle.entry")
        kind = str(resource.get("resourceType"))
        if kind not in _REQUIRED + _OPTIONAL:
            raise _fail(f"a prescription holds no {kind}", "Bundle.entry")
        found.setdefault(kind, []).append((str(entry.get("fullUrl", "")), resource))
    for kind in _REQUIRED:
        if len(found.get(kind, [])) != 1:
            raise _fail(f"the prescription holds exactly one {kind}", "Bundle.entry")
    (request_entry,) = found["MedicationRequest"]
    (medication_entry,) = found["Medication"]
    (patient_entry,) = found["Patient"]
    (practitioner_entry,) = found["Practitioner"]
    (organization_entry,) = found["Organization"]
    request = request_entry[1]
    if request.get("status") != "active" or request.get("intent") != "order":
        raise _fail("the MedicationRequest is an active order", "MedicationRequest.status")
    if not _refers(request.get("subject"), patient_entry):
        raise _fail("the MedicationRequest's subject is the Bundle's Patient", "subject")
    requester_ok = _refers(request.get("requester"), practitioner_entry) or any(
        _refers(request.get("requester"), role) for role in found.get("PractitionerRole", [])
    )
    if not requester_ok:
        raise _fail(
            "the MedicationRequest's requester is the Bundle's Practitioner (or their role)",
            "MedicationRequest.requester",
        )
    if not _refers(request.get("medicationReference"), medication_entry):
        raise _fail(
            "the MedicationRequest names the Bundle's Medication (medicationReference)",
            "MedicationRequest.medicationReference",
        )
    instructions = request.get("dosageInstruction") or []
    if not instructions:
        raise _fail("the prescription needs a dosage", "MedicationRequest.dosageInstruction")
    dosage = "; ".join(dosage_in_words(d) for d in instructions)
    dispense = request.get("dispenseRequest") or {}
    quantity = dispense.get("quantity") or {}
    if "value" not in quantity or not (quantity.get("unit") or quantity.get("code")):
        raise _fail(
            "the prescription states the quantity to dispense, with its unit",
            "MedicationRequest.dispenseRequest.quantity",
        )
    validity = dispense.get("validityPeriod") or {}
    medication = medication_entry[1]
    codings = (medication.get("code") or {}).get("coding") or []
    atc = next((c.get("code") for c in codings if c.get("system") == ATC_SYSTEM), None)
    product_code = next(
        (c.get("code") for c in codings if c.get("system") == catalogue.product_system), None
    )
    if not atc or not product_code:
        raise _fail(
            f"the Medication is coded with an ATC code ({ATC_SYSTEM}) and a national product "
            f"code ({catalogue.product_system})",
            "Medication.code",
        )
    product = catalogue.product(str(product_code), str(atc))
    medication_text = (medication.get("code") or {}).get("text") or product.display
    organization = organization_entry[1]
    return Prescription(
        patient_identifier=_identifier(patient_entry[1], patient_system, "Patient"),
        practitioner_identifier=_identifier(
            practitioner_entry[1], practitioner_system, "Practitioner"
        ),
        organization=str(organization.get("name") or ""),
        product=product,
        medication=str(medication_text),
        dosage=dosage,
        quantity=f"{_number(quantity['value'])} {quantity.get('unit') or quantity.get('code')}",
        validity_start=_optional_time(validity.get("start"), "validityPeriod.start"),
        validity_end=_optional_time(validity.get("end"), "validityPeriod.end"),
        authored_on=request.get("authoredOn"),
        prescriber=_name(practitioner_entry[1]),
        patient=_name(patient_entry[1]),
        number=_bundle_number(bundle),
    )


def _bundle_number(bundle: JsonObject) -> str | None:
    """The value of the Bundle's identifier of system PrescriptionID, if it has one."""
    identifier = bundle.get("identifier")
    if isinstance(identifier, dict) and identifier.get("system") == PRESCRIPTION_ID_SYSTEM:
        value = identifier.get("value")
        return value if isinstance(value, str) else None
    return None


def dosage_text(bundle: JsonObject, lang: str) -> str:
    """The dosage of a prescription Bundle (read and checked at its activation) in ``lang``."""
    request = _entry_of(bundle, "MedicationRequest")
    return "; ".join(dosage_in_words(d, lang) for d in request.get("dosageInstruction") or [])


# --- the medication list: what the searches answer -------------------------------------------


def _entry_of(bundle: JsonObject, kind: str) -> JsonObject:
    for entry in bundle.get("entry", []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == kind:
            return resource
    return {}


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def medication_request(
    bundle: JsonObject,
    *,
    task_id: str,
    number: str,
    number_system: str,
    status: str,
    patient_id: str,
    prescriber_id: str,
    authored: datetime,
    expires: datetime | None,
    repeat_of: str | None,
) -> JsonObject:
    """The ``MedicationRequest`` of a stored prescription, as the medication list shows it:
    what the prescriber signed (dosage, quantity, validity, the medication's codes, inlined
    as ``medicationCodeableConcept``), with references into CareVault's own resources
    instead of the Bundle's, and the status its ``Task`` has reached."""
    signed = _entry_of(bundle, "MedicationRequest")
    medication = _entry_of(bundle, "Medication")
    dispense = dict(signed.get("dispenseRequest") or {})
    if expires is not None:
        dispense["validityPeriod"] = {
            **(dispense.get("validityPeriod") or {}),
            "end": _stamp(expires),
        }
    resource: JsonObject = {
        "resourceType": "MedicationRequest",
        "id": task_id,
        "identifier": [{"system": number_system, "value": number}],
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": medication.get("code") or {"text": "unknown"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": signed.get("authoredOn") or _stamp(authored),
        "requester": {"reference": f"Practitioner/{prescriber_id}"},
        "dosageInstruction": signed.get("dosageInstruction") or [],
        "dispenseRequest": dispense,
    }
    if repeat_of is not None:
        resource["basedOn"] = [{"reference": f"MedicationRequest/{repeat_of}"}]
    return resource


def medication_dispense(
    dispense: JsonObject,
    *,
    task_id: str,
    patient_id: str,
    pharmacist_id: str | None,
    pharmacy_id: str | None,
    completed: datetime,
) -> JsonObject:
    """The ``MedicationDispense`` a pharmacy sent with ``$close`` (validated then), pinned to
    CareVault's references: its patient, the pharmacist and pharmacy that closed the task,
    the prescription it authorizes (``MedicationRequest/[task id]``)."""
    resource: JsonObject = {
        key: value
        for key, value in dispense.items()
        if key not in ("id", "meta", "contained", "subject", "performer", "text")
    }
    performers = [
        {"actor": {"reference": f"{kind}/{ref}"}}
        for kind, ref in (("Practitioner", pharmacist_id), ("Organization", pharmacy_id))
        if ref
    ]
    resource.update(
        {
            "resourceType": "MedicationDispense",
            "id": task_id,
            "status": "completed",
            "subject": {"reference": f"Patient/{patient_id}"},
            "performer": performers,
            "authorizingPrescription": [{"reference": f"MedicationRequest/{task_id}"}],
        }
    )
    resource.setdefault("whenHandedOver", _stamp(completed))
    if "medicationReference" in resource and "medicationCodeableConcept" not in resource:
        # A reference into the pharmacy's own system means nothing here: keep its words.
        display = resource.pop("medicationReference").get("display") or "see the prescription"
        resource["medicationCodeableConcept"] = {"text": display}
    return resource
