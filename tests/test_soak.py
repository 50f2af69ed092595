"""The short CI variant of bench/soak.py: several caller processes, zero errors allowed."""
import json
import subprocess
import sys

from support import ROOT, port_block


def test_short_soak_has_no_errors():
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", "3",
                             "--processes", "2", "--threads", "2", "--json", "--port", str(port_block())],
                            capture_output=True, text=True, timeout=120)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["calls"] > 100 and summary["p99_ms"] > 0
    assert summary["events_received"] > 0 and summary["events_lost"] == 0 and summary["events_out_of_order"] == 0
    assert result.returncode == 0
