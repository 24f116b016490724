"""Running the `digitnet` command as a user would: a real subprocess, its JSON line, its error line."""

from __future__ import annotations

import json
import subprocess
import sys


def command(*args) -> list[str]:
    return [sys.executable, "-m", "digitnet", *map(str, args)]


def digitnet(*args, cwd=None, timeout=300):
    """Run ``digitnet ARGS...`` to its end and return the CompletedProcess (text output captured)."""
    return subprocess.run(command(*args), capture_output=True, text=True, cwd=cwd, timeout=timeout)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def assert_user_error(result, *fragments):
    """One line on stderr, starting 'error:', exit status 2, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
