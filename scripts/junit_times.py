"""Per-module test counts and times from pytest JUnit reports (what .ci/run prints last).

python scripts/junit_times.py .work/junit-*.xml
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict


def module_times(paths: list[str]) -> dict[str, tuple[int, float]]:
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for path in paths:
        for case in ET.parse(path).getroot().iter("testcase"):
            module = case.get("classname", "?").replace(".", "/") + ".py"
            totals[module][0] += 1
            totals[module][1] += float(case.get("time", 0))
    return {m: (int(n), t) for m, (n, t) in totals.items()}


def main(paths: list[str]) -> int:
    times = module_times(paths)
    for module, (count, seconds) in sorted(times.items(), key=lambda item: -item[1][1]):
        print(f"{seconds:8.1f} s {count:5d} tests  {module}")
    print(
        f"{sum(t for _, t in times.values()):8.1f} s {sum(n for n, _ in times.values()):5d} tests  (sum of test times)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
