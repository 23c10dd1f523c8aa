"""The coded professions and specialties of the professional directory.

"One function, one directory": a professional's profession is what the authorization engine's
profile matrix keys on, so it is coded, never free text. The code system is configuration (a
JSON file, the built-in one holds the professions named by the seeds); this module validates it
and answers questions about it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from carevault.domain.errors import BusinessRuleViolation


@dataclass(frozen=True)
class Code:
    code: str
    display_en: str
    display_fr: str
    profession: str | None = None  # for a specialty: the profession it belongs to


@dataclass(frozen=True)
class Professions:
    version: str
    profession_system: str
    specialty_system: str
    professions: dict[str, Code]
    specialties: dict[str, Code]

    @classmethod
    def from_json(cls, text: str) -> Professions:
        """Parse a code system file; a specialty must name a profession defined before it."""
        data = json.loads(text)
        professions = {
            item["code"]: Code(item["code"], item["display"]["en"], item["display"]["fr"])
            for item in data["professions"]
        }
        specialties: dict[str, Code] = {}
        for item in data["specialties"]:
            if item["profession"] not in professions:
                raise ValueError(
                    f"specialty {item['code']!r} names unknown profession {item['profession']!r}"
                )
            specialties[item["code"]] = Code(
                item["code"], item["display"]["en"], item["display"]["fr"], item["profession"]
            )
        return cls(
            version=str(data["version"]),
            profession_system=data["profession_system"],
            specialty_system=data["specialty_system"],
            professions=professions,
            specialties=specialties,
        )

    def check(self, profession: str, specialty: str | None) -> None:
        """Refuse an unknown profession, or a specialty that is not one of that profession's."""
        if profession not in self.professions:
            known = ", ".join(sorted(self.professions))
            raise BusinessRuleViolation(
                f"unknown profession {profession!r}; known: {known}",
                expression="PractitionerRole.code",
            )
        if specialty is None:
            return
        found = self.specialties.get(specialty)
        if found is None or found.profession != profession:
            allowed = sorted(c for c, s in self.specialties.items() if s.profession == profession)
            raise BusinessRuleViolation(
                f"specialty {specialty!r} is not a specialty of {profession!r}"
                f"; allowed: {', '.join(allowed) or 'none'}",
                expression="PractitionerRole.specialty",
            )
