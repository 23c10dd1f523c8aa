"""Print one value of var/demo-accounts.json, by a dotted path: ``patients.0.patient_id``.

The README's examples read the demo people's ids from the file `carevault demo` wrote.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: demo.py PATH  (e.g. patients.0.patient_id)")
    value: Any = json.loads(Path("var/demo-accounts.json").read_text(encoding="utf-8"))
    for step in sys.argv[1].split("."):
        try:
            value = value[int(step)] if isinstance(value, list) else value[step]
        except (KeyError, IndexError, ValueError):
            sys.exit(f"demo.py: no {sys.argv[1]!r} in var/demo-accounts.json")
    print(value if isinstance(value, str) else json.dumps(value))


if __name__ == "__main__":
    main()
