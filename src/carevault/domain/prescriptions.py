"""E-prescriptions: the rules of gematik's E-Rezept ``Task`` workflow, as CareVault follows it.

A prescription is a ``Task`` the prescriber creates (``draft``), then activates with the signed
prescription (``ready``); a pharmacy that holds the access code accepts it (``in-progress``,
and it gets a secret), then returns it (``ready``) or completes it (``completed``) with the
secret; it is cancelled (``cancelled``) by its prescriber or patient before a pharmacy holds it,
or by the pharmacy that holds it. A completed, cancelled or expired prescription is never
accepted again.

Here, standard library only: the prescription number (with a check digit, readable aloud),
the status machine, the codes (access code and secret: 256 random bits each, kept as hashes)
and the validity window. Who may take each step is the engine's (`decide_prescribing`,
`decide_dispensing`); the race between pharmacies is settled by the database.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from carevault.domain.errors import BusinessRuleViolation, Conflict, InvalidInput

# CareVault's own naming systems, in the places gematik's E-Rezept API puts its own.
NAMING_SYSTEM = "https://carevault.lu/fhir/NamingSystem"
PRESCRIPTION_ID_SYSTEM = f"{NAMING_SYSTEM}/PrescriptionID"
ACCESS_CODE_SYSTEM = f"{NAMING_SYSTEM}/AccessCode"
SECRET_SYSTEM = f"{NAMING_SYSTEM}/Secret"

# The flow type of a prescription of medicines dispensed by a pharmacy (gematik's "160").
FLOW_TYPE = "160"
FLOW_TYPE_SYSTEM = "https://carevault.lu/fhir/CodeSystem/prescription-flow-type"

CODE_BYTES = 32  # 256 bits: 64 hex digits, as the E-Rezept access code
_CODE = re.compile(r"^[0-9a-f]{64}$")
_NUMBER = re.compile(r"^(\d{3})\.(\d{3})\.(\d{3})\.(\d{3})\.(\d{3})\.(\d{2})$")

DEFAULT_VALIDITY = timedelta(days=28)
MAX_VALIDITY = timedelta(days=366)


class TaskStatus(enum.StrEnum):
    DRAFT = "draft"
    READY = "ready"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Step(enum.StrEnum):
    ACTIVATE = "activate"
    ACCEPT = "accept"
    REJECT = "reject"
    CLOSE = "close"
    ABORT = "abort"  # by the prescriber or the patient
    ABORT_DISPENSING = "abort-dispensing"  # by the pharmacy that holds it


# From which status each step may be taken, and the status it leads to.
TRANSITIONS: dict[Step, tuple[frozenset[TaskStatus], TaskStatus]] = {
    Step.ACTIVATE: (frozenset({TaskStatus.DRAFT}), TaskStatus.READY),
    Step.ACCEPT: (frozenset({TaskStatus.READY}), TaskStatus.IN_PROGRESS),
    Step.REJECT: (frozenset({TaskStatus.IN_PROGRESS}), TaskStatus.READY),
    Step.CLOSE: (frozenset({TaskStatus.IN_PROGRESS}), TaskStatus.COMPLETED),
    Step.ABORT: (frozenset({TaskStatus.DRAFT, TaskStatus.READY}), TaskStatus.CANCELLED),
    Step.ABORT_DISPENSING: (frozenset({TaskStatus.IN_PROGRESS}), TaskStatus.CANCELLED),
}

_WHY = {
    TaskStatus.DRAFT: "it has not been activated by its prescriber",
    TaskStatus.READY: "it is waiting for a pharmacy",
    TaskStatus.IN_PROGRESS: "a pharmacy has taken it",
    TaskStatus.COMPLETED: "it has been dispensed",
    TaskStatus.CANCELLED: "it has been cancelled",
}


class TaskConflict(Conflict):
    """The step is not possible in the task's status (HTTP 409); ``status`` says which."""

    def __init__(self, step: Step, status: TaskStatus | str) -> None:
        status = TaskStatus(status)
        super().__init__(f"the prescription cannot be {_past(step)}: {_WHY[status]} ({status})")
        self.status = status


def _past(step: Step) -> str:
    return {
        Step.ACTIVATE: "activated",
        Step.ACCEPT: "accepted",
        Step.REJECT: "returned",
        Step.CLOSE: "closed",
        Step.ABORT: "cancelled",
        Step.ABORT_DISPENSING: "cancelled",
    }[step]


def next_status(step: Step, current: TaskStatus | str) -> TaskStatus:
    """The status ``step`` leads to from ``current``; `TaskConflict` if it may not be taken."""
    current = TaskStatus(current)
    sources, target = TRANSITIONS[step]
    if current not in sources:
        raise TaskConflict(step, current)
    return target


def allowed_from(step: Step) -> frozenset[TaskStatus]:
    return TRANSITIONS[step][0]


# --- the prescription number ------------------------------------------------------------------


def _check_digits(digits: str) -> str:
    """ISO 7064 MOD 97-10 (the check of IBANs and of E-Rezept numbers): two digits that make
    the whole number ≡ 1 (mod 97), so one wrong digit or two swapped ones are caught."""
    return f"{98 - int(digits + '00') % 97:02d}"


def prescription_number(random_digits: str | None = None) -> str:
    """A new number ``160.ddd.ddd.ddd.ddd.cc``: the flow type, twelve random digits, two check
    digits, in groups of three to be read aloud on the phone."""
    body = random_digits if random_digits is not None else f"{secrets.randbelow(10**12):012d}"
    if not re.fullmatch(r"\d{12}", body):
        raise ValueError("twelve digits")
    digits = FLOW_TYPE + body
    check = _check_digits(digits)
    groups = [digits[i : i + 3] for i in range(0, 15, 3)]
    return ".".join([*groups, check])


def valid_number(text: str) -> bool:
    """Whether ``text`` is a well-formed number whose check digits hold."""
    match = _NUMBER.match(text.strip())
    if match is None:
        return False
    digits = "".join(match.groups()[:5])
    return int(digits + match.group(6)) % 97 == 1


def spoken(number: str) -> str:
    """The number as read aloud, group by group (``160 123 456 789 012, check 34``)."""
    if not valid_number(number):
        raise InvalidInput("not a prescription number")
    *groups, check = number.split(".")
    return f"{' '.join(groups)}, check {check}"


# --- the codes --------------------------------------------------------------------------------


def new_code() -> str:
    """An access code or secret: 256 random bits, 64 lower-case hex digits."""
    return secrets.token_hex(CODE_BYTES)


def code_hash(code: str) -> str:
    """What is stored of a code. The codes carry 256 random bits, so a plain SHA-256 cannot be
    reversed by guessing; it keeps them out of the database and its backups."""
    return hashlib.sha256(code.encode("ascii")).hexdigest()


def well_formed_code(code: str) -> bool:
    return _CODE.match(code) is not None


def code_matches(code: str, stored_hash: str | None) -> bool:
    """Constant-time comparison of a presented code with a stored hash."""
    if stored_hash is None or not well_formed_code(code):
        return False
    return hmac.compare_digest(code_hash(code), stored_hash)


# --- validity ---------------------------------------------------------------------------------


def validity_end(
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    *,
    default: timedelta = DEFAULT_VALIDITY,
    longest: timedelta = MAX_VALIDITY,
) -> datetime:
    """When a prescription activated ``now`` stops being dispensable: the end of its validity
    period, or ``default`` after its start; never more than ``longest`` after now, never past."""
    begin = start or now
    until = end or begin + default
    if end is not None and start is not None and end < start:
        raise BusinessRuleViolation(
            "the validity period ends before it starts",
            expression="MedicationRequest.dispenseRequest.validityPeriod",
        )
    if until <= now:
        raise BusinessRuleViolation(
            "the validity period is already over",
            expression="MedicationRequest.dispenseRequest.validityPeriod.end",
        )
    if until - now > longest:
        raise BusinessRuleViolation(
            f"a prescription is valid at most {longest.days} days",
            expression="MedicationRequest.dispenseRequest.validityPeriod.end",
        )
    return until


def expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and now >= expires_at


def not_yet_valid(valid_from: datetime | None, now: datetime) -> bool:
    """Whether a prescription's validity window (a repeat's, say) has not opened yet."""
    return valid_from is not None and now < valid_from


# --- attempts with a wrong code ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredTask:
    """A prescription's Task as stored: its state, who holds it, and the hashes of its codes."""

    id: str
    number: str
    patient_id: str | None
    prescriber_id: str
    status: str
    version: int
    access_code_hash: str
    secret_hash: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    pharmacist_id: str | None = None
    pharmacy_id: str | None = None
    signed_prescription: str | None = None
    dispense: str | None = None
    receipt: str | None = None
    repeat_of: str | None = None
    valid_from: datetime | None = None  # not dispensed before (a repeat's own window)
    access_code_sealed: bytes | None = None  # the access code, sealed for its patient


@dataclass(frozen=True)
class AttemptLimit:
    """How many wrong codes (or unknown numbers) one pharmacist may present in ``window``
    before every further attempt is refused until the window has passed; reaching the limit
    alerts the security officer once."""

    failures: int = 5
    window: timedelta = timedelta(minutes=15)

    def blocked(self, recent_failures: int) -> bool:
        return recent_failures >= self.failures

    def alerts(self, recent_failures: int) -> bool:
        """Whether this failure (the ``recent_failures``-th) is the one that reaches the limit."""
        return recent_failures == self.failures


# --- the medicinal products a prescription may name -------------------------------------------

ATC_SYSTEM = "http://www.whocc.no/atc"


@dataclass(frozen=True)
class Product:
    code: str  # the national product code
    atc: str
    display: str


@dataclass(frozen=True)
class MedicationCatalogue:
    """The national product codes a prescription may name, each with its ATC code
    (configuration: a JSON file, parsed here from the mapping it holds)."""

    version: str
    product_system: str
    products: dict[str, Product]

    @classmethod
    def from_mapping(cls, data: dict[str, object]) -> MedicationCatalogue:
        version, system = data.get("version"), data.get("product_system")
        items = data.get("products")
        if not isinstance(version, str) or not isinstance(system, str) or not system:
            raise ValueError("the medication catalogue needs a version and a product_system")
        if not isinstance(items, list):
            raise ValueError("the medication catalogue needs a 'products' list")
        products: dict[str, Product] = {}
        for item in items:
            if not isinstance(item, dict) or not all(
                isinstance(item.get(k), str) and item.get(k) for k in ("code", "atc", "display")
            ):
                raise ValueError(f"product {item!r}: code, atc and display are text")
            products[str(item["code"])] = Product(
                str(item["code"]), str(item["atc"]), str(item["display"])
            )
        return cls(version, system, products)

    def product(self, code: str, atc: str) -> Product:
        """The product of this code, whose ATC code must be ``atc``."""
        found = self.products.get(code)
        if found is None:
            raise BusinessRuleViolation(
                f"product code {code!r} is not in the medication catalogue ({self.version})",
                expression="Medication.code",
            )
        if found.atc != atc:
            raise BusinessRuleViolation(
                f"product {code!r} has ATC code {found.atc}, not {atc}",
                expression="Medication.code",
            )
        return found
