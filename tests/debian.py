"""Debian packages the tests need (SLURM, a headless Chromium): installed with apt-get when missing and the
tests run as root, else the reason they cannot run."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable


def debian_install_reason(
    what: str, packages: tuple[str, ...], missing: Callable[[], list[str]]
) -> str | None:
    """None when `missing()` (the absent binaries) is empty, now or after `apt-get install packages`;
    otherwise why `what` is not installed and cannot be."""
    if not missing():
        return None
    if os.geteuid() != 0:
        return f"{what} is not installed ({', '.join(missing())} missing) and installing needs root"
    if shutil.which("apt-get") is None:
        return f"{what} is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *packages]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return f"apt-get install {' '.join(packages)} failed: {done.stderr.strip()[-300:]}"
    return f"{what} still incomplete after apt-get: {missing()}" if missing() else None
