"""A stand-in `docker` CLI for the SSH VM tests, put first on the PATH of the SSH session.

It records every invocation's argv (one JSON list per line in $FAKE_DOCKER_STATE/calls.jsonl)
and keeps containers as JSON files in $FAKE_DOCKER_STATE/containers/, answering the handful of
subcommands the SSH backend uses the way Docker does (exit codes, "No such container", name
conflicts). Tests change a container's state by rewriting its file. Standard library only: it
runs under whatever python3 the SSH session finds.
"""

import json
import os
import sys
import time
import uuid
from pathlib import Path

STATE = Path(os.environ["FAKE_DOCKER_STATE"])
CONTAINERS = STATE / "containers"


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(message + "\n")
    sys.exit(code)


def load(name: str) -> dict:
    path = CONTAINERS / f"{name}.json"
    if not path.exists():
        fail(f"Error: No such container: {name}")
    return json.loads(path.read_text())


def take_fault() -> str:
    """The next injected `docker run` failure, if any: $STATE/faults holds {"kind", "count"}."""
    path = STATE / "faults"
    if not path.exists():
        return ""
    fault = json.loads(path.read_text())
    if fault["count"] <= 0:
        return ""
    fault["count"] -= 1
    path.write_text(json.dumps(fault))
    return fault["kind"]


def option(args: list, flag: str) -> str:
    return args[args.index(flag) + 1] if flag in args else ""


def main(args: list) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    CONTAINERS.mkdir(exist_ok=True)
    with (STATE / "calls.jsonl").open("a") as f:
        f.write(json.dumps(args) + "\n")
    if (STATE / "daemon_down").exists():
        fail("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")
    cmd = args[0] if args else ""
    if cmd == "version":
        print("27.0.0-fake")
    elif cmd == "ps":
        filters = [args[i + 1] for i, a in enumerate(args) if a == "--filter"]
        labels = [f.removeprefix("label=") for f in filters if f.startswith("label=")]
        # Like Docker: several status filters are alternatives; without -a only running ones.
        statuses = [f.removeprefix("status=") for f in filters if f.startswith("status=")]
        if not statuses:
            statuses = ["created", "running", "restarting", "paused", "exited", "dead"]
            if "-a" not in args:
                statuses = ["running"]
        for path in sorted(CONTAINERS.glob("*.json")):
            c = json.loads(path.read_text())
            if c["State"]["Status"] in statuses and all(lb in c["Labels"] for lb in labels):
                print(c["Name"])
    elif cmd == "inspect":
        state = load(args[-1])["State"]
        print(json.dumps(state))
    elif cmd == "rm":
        path = CONTAINERS / f"{args[-1]}.json"
        if not path.exists():
            fail(f"Error response from daemon: No such container: {args[-1]}")
        path.unlink()
        print(args[-1])
    elif cmd == "run":
        name = option(args, "--name")
        image = option(args, "--entrypoint") and args[args.index("--entrypoint") + 2]
        if (CONTAINERS / f"{name}.json").exists():
            fail(
                f'docker: Error response from daemon: Conflict. The container name "/{name}" '
                "is already in use by container 0123abcd.",
                125,
            )
        fault = take_fault()
        if fault == "transient" or "toomanyrequests" in image:
            fail(
                "docker: Error response from daemon: toomanyrequests: You have reached your "
                "pull rate limit.",
                125,
            )
        if fault == "permanent" or "doesnotexist" in image:
            fail(f"docker: Error response from daemon: pull access denied for {image}", 125)
        if "slowpull" in image:
            time.sleep(3)
            fail("docker: pull interrupted", 125)
        if "echoargs" in image:
            fail("docker: something broke running: " + " ".join(args), 125)
        labels = [args[i + 1] for i, a in enumerate(args) if a == "--label"]
        # A test may have containers stay "created" until it starts them itself.
        run_state = STATE / "run_state"
        initial = run_state.read_text().strip() if run_state.exists() else "running"
        container = {
            "Name": name,
            "Image": image,
            "Labels": labels,
            "State": {"Status": initial, "ExitCode": 0, "Error": "", "OOMKilled": False},
        }
        (CONTAINERS / f"{name}.json").write_text(json.dumps(container))
        with (STATE / "created.jsonl").open("a") as f:
            f.write(json.dumps(name) + "\n")
        print(uuid.uuid4().hex)
    elif cmd == "image":
        # `image inspect`: only what `docker pull` fetched is there.
        pulled = STATE / "pulled"
        if pulled.exists() and pulled.read_text() == args[-1]:
            print("sha256:" + "0" * 64)
        else:
            fail(f"Error: No such image: {args[-1]}")
    elif cmd == "pull":
        if "doesnotexist" in args[-1]:
            fail(f"Error response from daemon: pull access denied for {args[-1]}")
        (STATE / "pulled").write_text(args[-1])
    else:
        fail(f"fake docker: unsupported command {args!r}", 2)


if __name__ == "__main__":
    main(sys.argv[1:])
