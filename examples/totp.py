"""Print the authenticator code of a TOTP secret (what the phone app shows).

``--previous`` prints the code of the 30-second step before this one: CareVault accepts each
step once, so a script that confirms an enrolment and then signs in at once confirms with the
previous step's code and keeps the current one for the sign-in.
"""

from __future__ import annotations

import sys
import time

import pyotp


def main() -> None:
    args = sys.argv[1:]
    previous = "--previous" in args
    secrets = [a for a in args if a != "--previous"]
    if len(secrets) != 1:
        sys.exit("usage: totp.py SECRET [--previous]")
    totp = pyotp.TOTP(secrets[0])
    print(totp.at(time.time() - 30) if previous else totp.now())


if __name__ == "__main__":
    main()
