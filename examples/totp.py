"""Print the authenticator code of a TOTP secret (what the phone app shows).

``--previous`` prints the code of the 30-second step before this one: CareVault accepts each
step once, so a script that confirms an enrolment and then signs in at once confirms with the
previous step's code and keeps the current one for the sign-in. CareVault accepts a code one
step either side of its own clock, so a previous code printed in the last seconds of a step
would be refused once that step ends: then this waits for the next step first (as someone
reading an authenticator waits for a fresh code), so that the code printed stays good for at
least MARGIN seconds.
"""

from __future__ import annotations

import sys
import time

import pyotp

MARGIN = 15  # seconds the printed previous code stays within the server's window, at least


def main() -> None:
    args = sys.argv[1:]
    previous = "--previous" in args
    secrets = [a for a in args if a != "--previous"]
    if len(secrets) != 1:
        sys.exit("usage: totp.py SECRET [--previous]")
    totp = pyotp.TOTP(secrets[0])
    if not previous:
        print(totp.now())
        return
    left = totp.interval - time.time() % totp.interval
    if left < MARGIN:
        time.sleep(left + 0.1)  # into the next step: the one just ended is "previous"
    print(totp.at(time.time() - totp.interval))


if __name__ == "__main__":
    main()
