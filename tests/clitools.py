"""Helpers shared by the tests that run the real commands of this environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

BIN = Path(sys.executable).parent
"""Where this environment's console scripts (ns-train, ns-latentavatar-*) are."""


def run_cli(args: List[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a console script of this environment; output captured as text."""
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def free_port() -> int:
    """A TCP port nothing listens on right now (for a viewer started by a test)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
