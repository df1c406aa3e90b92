"""A real OpenSSH server on loopback for the SSH VM tier's tests.

`start_sshd(workdir)` runs Debian's `/usr/sbin/sshd` as the current user with a private config
(temporary host key, a temporary user key in its own authorized_keys file, no PAM) on a free
127.0.0.1 port, and puts the stand-in `docker` (tests/support/fake_docker.py) first on the PATH
of every SSH session through `SetEnv`. Install the server with
`apt-get install -y openssh-server`.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
FAKE_DOCKER = Path(__file__).with_name("fake_docker.py")


class SshdUnavailable(RuntimeError):
    pass


@dataclass
class Sshd:
    port: int
    user: str
    host_key: str  # public, "ssh-ed25519 AAAA..."
    user_private_key: str
    docker_state: Path
    process: subprocess.Popen[bytes]
    workdir: Path
    log: Path
    _stopped: bool = field(default=False, repr=False)

    def docker_calls(self) -> list[list[str]]:
        path = self.docker_state / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def containers_created(self) -> list[str]:
        """Names of the containers `docker run` actually created, in order."""
        path = self.docker_state / "created.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def container(self, name: str) -> dict:
        return json.loads((self.docker_state / "containers" / f"{name}.json").read_text())

    def set_container_state(self, name: str, **state: object) -> None:
        path = self.docker_state / "containers" / f"{name}.json"
        data = json.loads(path.read_text())
        data["State"].update(state)
        path.write_text(json.dumps(data))

    def fail_next_runs(self, kind: str, count: int = 1) -> None:
        """The next `count` `docker run` calls fail: "transient" (registry rate limit) or
        "permanent" (image not pullable)."""
        (self.docker_state / "faults").write_text(json.dumps({"kind": kind, "count": count}))

    def hold_new_containers_created(self) -> None:
        """New containers stay in Docker's "created" state until `set_container_state`."""
        (self.docker_state / "run_state").write_text("created")

    def set_daemon_down(self, down: bool) -> None:
        flag = self.docker_state / "daemon_down"
        if down:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def generate_public_key(workdir: Path, name: str) -> str:
    """A fresh ed25519 public key line, e.g. a host key the server does not have."""
    path = workdir / name
    _keygen(path)
    return path.with_suffix(".pub").read_text().strip()


def start_sshd(workdir: Path) -> Sshd:
    if not SSHD.exists() or shutil.which("ssh-keygen") is None:
        raise SshdUnavailable(
            "Debian's openssh-server is not installed (apt-get install -y openssh-server)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "ssh_host_ed25519_key"
    user_key = workdir / "id_ed25519"
    _keygen(host_key)
    _keygen(user_key)
    authorized = workdir / "authorized_keys"
    authorized.write_text(user_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)

    bin_dir = workdir / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(f"#!{sys.executable}\n" + FAKE_DOCKER.read_text())
    docker.chmod(0o755)
    state = workdir / "docker-state"
    state.mkdir(exist_ok=True)
    home = workdir / "home"
    home.mkdir(exist_ok=True)

    if os.geteuid() == 0:
        # sshd started as root insists on its privilege separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    port = _free_port()
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                # HOME too: the real home's shell start-up files (sourced by bash under sshd) must
                # neither slow the sessions down nor change their PATH.
                f"SetEnv PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin HOME={home}"
                f" FAKE_DOCKER_STATE={state}",
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    log = workdir / "sshd.log"
    proc = subprocess.Popen(
        [str(SSHD), "-D", "-f", str(config), "-E", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Sshd(
        port=port,
        user=getpass.getuser(),
        host_key=host_key.with_suffix(".pub").read_text().strip(),
        user_private_key=user_key.read_text(),
        docker_state=state,
        process=proc,
        workdir=workdir,
        log=log,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SshdUnavailable(
                f"sshd exited at start: {log.read_text() if log.exists() else ''}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise SshdUnavailable("sshd did not start listening within 15 s")
