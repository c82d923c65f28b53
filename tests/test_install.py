"""The install script's checks, on a fake system."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_libusb_is_found_however_long_the_library_listing(tmp_path):
    """`ldconfig -p | grep -q` under pipefail missed an installed libusb when grep stopped reading before
    ldconfig finished writing (SIGPIPE): here the listing is long, so that happens every time."""
    fake = tmp_path / "ldconfig"
    fake.write_text("#!/bin/bash\necho '\tlibusb-1.0.so.0 (libc6,x86-64) => /lib/libusb-1.0.so.0'\n"
                    "for i in $(seq 200000); do echo \"\tlibfake$i.so (libc6) => /lib/libfake$i.so\"; done\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    script = f"set -euo pipefail; source {SCRIPTS / 'libusb.sh'}; if have_libusb; then echo found; else echo missing; fi"
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "found", out
    old = "set -euo pipefail; if ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so'; then echo found; else echo missing; fi"
    before = subprocess.run(["bash", "-c", old], env=env, capture_output=True, text=True, timeout=60)
    assert before.stdout.strip() == "missing"  # the old check, on the same listing
    fake.write_text("#!/bin/bash\necho '\tlibc.so.6 (libc6,x86-64) => /lib/libc.so.6'\n")
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "missing", out
