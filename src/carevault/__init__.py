"""CareVault: a patient-controlled shared care record."""

__version__ = "0.1.0"
