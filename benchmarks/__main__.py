"""Run every benchmark: ``python -m benchmarks`` (or ``make bench``)."""

from __future__ import annotations

import sys

from benchmarks import timer_lateness


def main() -> int:
    ok = timer_lateness.main()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
