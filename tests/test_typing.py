"""The public API as type checkers see it: mypy --strict on tests/typing/check_public_api.py.

Each line there whose comment is "E:" and a code must be reported with that code, and no
other line may be: so a signature that stops being checked fails here, not in a user's IDE.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CHECKED = Path(__file__).resolve().parent / "typing" / "check_public_api.py"
EXPECTED = re.compile(r"#\s*E:\s*([a-z-]+)")
REPORTED = re.compile(r"^[^:]+:(\d+): error: .*\[([a-z-]+)\]$")


def expected_errors() -> dict[int, str]:
    lines = CHECKED.read_text().splitlines()
    return {number: match.group(1) for number, line in enumerate(lines, 1)
            if (match := EXPECTED.search(line))}


def test_the_public_api_types_as_documented():
    pytest.importorskip("mypy", reason="mypy is a test extra: pip install -e '.[test]'")
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                             "--no-incremental", "--cache-dir=/dev/null", str(CHECKED)],
                            capture_output=True, text=True, timeout=300)
    reported = {}
    for line in result.stdout.splitlines():
        match = REPORTED.match(line)
        if match:
            reported[int(match.group(1))] = match.group(2)
    assert reported == expected_errors(), result.stdout
    assert expected_errors(), "the checked file marks no expected error"
