"""A one-node SLURM cluster on loopback for the tests: Debian's slurm-wlm and munge (installed with apt-get
when missing and the tests run as root), a slurm.conf under a temporary folder, and munged, slurmctld and
slurmd started in the foreground and stopped by pid. `SlurmCluster.env` is the environment (SLURM_CONF) in
which sbatch, squeue and scontrol talk to it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.debian import debian_install_reason

BINARIES = ("sbatch", "srun", "scontrol", "squeue", "sinfo", "slurmctld", "slurmd", "munged", "munge")
PACKAGES = ("slurm-wlm", "munge")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def install_reason() -> str | None:
    """None when SLURM is (now) installed; otherwise why it is not and cannot be."""
    return debian_install_reason("SLURM", PACKAGES, missing_binaries)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _munge_works() -> bool:
    encoded = subprocess.run(["munge", "-n"], capture_output=True)
    if encoded.returncode != 0:
        return False
    return subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True).returncode == 0


def _wait_for(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"{what} after {timeout:.0f} s")
        time.sleep(0.2)


@dataclass
class SlurmCluster:
    root: Path  # slurm.conf, state, spool and daemon logs
    node: str
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)

    @classmethod
    def start(cls) -> SlurmCluster:
        root = Path(tempfile.mkdtemp(prefix="facemogle-slurm-"))
        processes = []
        if not _munge_works():  # reuse a running munged (e.g. the system's), else start one
            MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
            shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
            log = open(root / "munged.log", "wb")  # noqa: SIM115 - the daemon writes it until stop()
            processes.append(
                subprocess.Popen(["munged", "--foreground", "--force"], user="munge", stdout=log, stderr=log)
            )
            _wait_for(_munge_works, 10, "munged did not answer")
        node_line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True)
        node_spec = node_line.stdout.splitlines()[0]
        node = node_spec.split()[0].removeprefix("NodeName=")
        conf = root / "slurm.conf"
        conf.write_text(_slurm_conf(root, node_spec, node))
        env = {**os.environ, "SLURM_CONF": str(conf)}
        cluster = cls(root, node, env, processes)
        try:
            for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", node]):
                log = open(root / f"{daemon[0]}.out", "wb")  # noqa: SIM115
                processes.append(subprocess.Popen(daemon, env=env, stdout=log, stderr=log))
            _wait_for(cluster.idle, 30, f"the node did not become idle; logs in {root}")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def run(self, *command: str, check: bool = True) -> str:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def idle(self) -> bool:
        return self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False) == "idle"

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, Reason, ExitCode, ...)."""
        fields = self.run("scontrol", "show", "job", "-o", str(job_id)).split()
        return dict(f.split("=", 1) for f in fields if "=" in f)

    def stop(self) -> None:
        if any(p.poll() is None for p in self.processes):
            self.run("scancel", "--user", "root", check=False)
        for p in reversed(self.processes):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _slurm_conf(root: Path, node_spec: str, node: str) -> str:
    for folder in ("state", "spool"):
        (root / folder).mkdir()
    return f"""\
ClusterName=facemogle-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=10
{node_spec} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""
