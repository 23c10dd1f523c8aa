"""FHIR R4 resources as CareVault reads and writes them.

Validation uses `fhir.resources`' R4B models: for the resources we serve (Patient, Practitioner,
PractitionerRole, Organization, Bundle, OperationOutcome, CapabilityStatement, Parameters) R4B is
R4 on the wire, and we announce ``fhirVersion`` 4.0.1. Differences we rely on are noted where
they matter.
"""
