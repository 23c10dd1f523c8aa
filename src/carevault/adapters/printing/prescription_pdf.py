"""The printed e-prescription: one A5 page a patient takes to a pharmacy without a phone.

Legible first: the medication, the dosage in words, the quantity, the prescriber and the
validity, with labels in French, English and German. Two 2D codes (QR, segno): the one a
pharmacy scans, holding the task reference and its access code in gematik's shape
(``{"urls": ["Task/{id}/$accept?ac=…"]}``), and the platform's signature over what the page
says (a compact JWS), which anyone checks offline with the key the platform publishes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import segno
from fpdf import FPDF


@dataclass(frozen=True)
class Printout:
    number: str
    medication: str
    dosage: str
    quantity: str
    valid_until: str
    prescriber: str
    organization: str
    patient: str
    access_payload: str  # what the pharmacy's 2D code holds
    signature: str  # the platform's compact JWS over the printed facts


def _latin1(text: str) -> str:
    """The PDF core fonts speak Latin-1: other characters are printed as '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


def _qr_png(payload: str) -> io.BytesIO:
    out = io.BytesIO()
    segno.make(payload, error="m", micro=False).save(out, kind="png", scale=6, border=4)
    out.seek(0)
    return out


def prescription_pdf(printout: Printout) -> bytes:
    pdf = FPDF(format=(148, 210))  # A5, in millimetres
    pdf.set_title(_latin1(f"Ordonnance {printout.number}"))
    pdf.set_creator("CareVault")
    pdf.set_auto_page_break(auto=True, margin=10)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(0, 8, "Ordonnance / Prescription / Rezept", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 11)
    pdf.cell(0, 7, _latin1(f"N° {printout.number}"), new_x="LMARGIN", new_y="NEXT")
    rows = (
        ("Patient / Patient / Patient", printout.patient),
        ("Médicament / Medication / Arzneimittel", printout.medication),
        ("Posologie / Dosage / Dosierung", printout.dosage),
        ("Quantité / Quantity / Menge", printout.quantity),
        ("Valable jusqu'au / Valid until / Gültig bis", printout.valid_until),
        ("Prescripteur / Prescriber / Verordnende Person", printout.prescriber),
        ("Cabinet / Practice / Praxis", printout.organization),
    )
    for label, value in rows:
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(0, 5, _latin1(label), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 11)
        pdf.multi_cell(0, 6, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    top = pdf.get_y() + 3
    pdf.image(_qr_png(printout.access_payload), x=10, y=top, w=48)
    pdf.image(_qr_png(printout.signature), x=78, y=top, w=58)
    pdf.set_y(top + 60)
    pdf.set_font("Helvetica", "", 7)
    pdf.multi_cell(
        0,
        3.5,
        _latin1(
            "Left: the code the pharmacy scans. Right: CareVault's signature over this page "
            "(verify it with /.well-known/carevault-signing-key.pem). "
            "À gauche : le code que la pharmacie lit. À droite : la signature de CareVault."
        ),
    )
    return bytes(pdf.output())
