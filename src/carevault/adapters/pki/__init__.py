"""The platform PKI: X.509 certificates and CRLs, and the credential files handed to holders."""
