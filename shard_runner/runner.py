"""The shard runner: runs one shard's WAA tasks inside the windowsarena/winarena container.

Standard library only, Python 3.9+ (the image's interpreter), and self-contained: the SSH tier
uploads this single file to the VM and runs `python runner.py`; elsewhere `python -m
shard_runner` does the same. Configuration comes from environment variables (see README.md).

What it does, in order:
1. checks the KVM device: no nested virtualization is a permanent failure of the tier, reported
   at once (exit 3);
2. starts the heartbeat thread (the first heartbeat is the control plane's "container started");
3. starts the container's entry setup (which boots the Windows VM) and probes the WAA server's
   readiness URL until it answers, with its own deadline (exit 4 / 5);
4. runs the tasks one at a time, each with a timeout, and reports one `task_result` per task;
5. writes one JSON per task and a summary to the output folder, posts `finished`, exits 0 when
   every task completed and 1 when some failed.

Messages go through a background sender with a bounded queue that retries with exponential
backoff while the endpoint is unreachable or answers 5xx/429, so a slow or absent control plane
never blocks the tasks. The bearer token is never logged.
"""
# ruff: noqa: UP017, UP035, UP006, UP045
# (Python 3.9 in the image: no datetime.UTC, no `X | Y` outside annotations.)

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

log = logging.getLogger("shard_runner")

# Exit codes (Batch and the SSH tier map 3 to "permanent for the tier"). The adapters read them
# from adapters/compute/runner_exit_codes.py, as this file must stay self-contained;
# tests/shard_runner/test_exit_codes.py keeps the two equal.
EXIT_OK = 0
EXIT_TASKS_FAILED = 1
EXIT_CONFIG = 2
EXIT_NO_KVM = 3
EXIT_NOT_READY = 4
EXIT_SETUP_FAILED = 5
EXIT_INTERNAL = 6
EXIT_TERMINATED = 143

# Defaults for the windowsarena/winarena image (layout of microsoft/WindowsAgentArena's
# src/win-arena-container): /entry_setup.sh starts the Windows VM (/start_vm.sh) in the
# background and waits for the WAA server at 20.20.20.21:5000/probe; the client is /client/run.py,
# which reads a {domain: [task ids]} file and writes result.txt (the score) per task.
DEFAULT_SETUP_COMMAND = "/entry_setup.sh"
DEFAULT_READY_URL = "http://20.20.20.21:5000/probe"
# WAA's own option names, from the argparse `config()` of src/win-arena-container/client/run.py,
# each spelled out: run.py's parser allows abbreviations, so the `--agent` this runner used to
# pass only worked as a prefix of `--agent_name`, and parse_known_args would silently drop any
# misspelling. The result-layout options are passed explicitly so the folder read back below is
# the one run.py wrote, whatever its defaults become.
DEFAULT_TASK_COMMAND = (
    "python run.py --agent_name {agent} --model {model} --som_origin {som_origin}"
    " --a11y_backend {a11y_backend} --max_steps {max_steps}"
    " --action_space {action_space} --observation_type {observation_type}"
    " --trial_id {trial_id} --test_all_meta_path {task_meta_path}"
    " --result_dir {task_output_dir} --emulator_ip 20.20.20.21"
)
# run.py's defaults for the options above (its argparse `config()`).
WAA_DEFAULTS = {
    "agent": "navi",
    "som_origin": "oss",
    "a11y_backend": "uia",
    "action_space": "pyautogui",
    "observation_type": "a11y_tree",
    "trial_id": "0",
}
DEFAULT_TASK_CWD = "/client"
DEFAULT_TASK_CATALOG = "/client/evaluation_examples_windows/test_all.json"

PLACEHOLDERS = (
    "task_id",
    "max_steps",
    "agent",
    "model",
    "output_dir",
    "task_output_dir",
    "task_meta_path",
    "domain",
    "som_origin",
    "a11y_backend",
    "action_space",
    "observation_type",
    "trial_id",
)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_REASON_LIMIT = 2000


class ConfigError(ValueError):
    pass


class Config:
    """The runner's settings, read from environment variables."""

    def __init__(self, env: Mapping[str, str]) -> None:
        problems: List[str] = []

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                problems.append(f"{name} is required")
            return value

        def number(name: str, default: float, minimum: float = 0.0) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                problems.append(f"{name} must be a number, got {raw!r}")
                return default
            if value < minimum:
                problems.append(f"{name} must be at least {minimum:g}")
            return value

        self.job_name = required("WAA_JOB_NAME")
        self.heartbeat_url = required("WAA_HEARTBEAT_URL")
        self.token = required("WAA_HEARTBEAT_TOKEN")
        self.task_ids = [t.strip() for t in env.get("WAA_TASK_IDS", "").split(",") if t.strip()]
        if not self.task_ids:
            problems.append("WAA_TASK_IDS must list at least one task id")
        self.max_steps = str(int(number("WAA_MAX_STEPS", 15, 1)))
        self.agent = env.get("WAA_AGENT", "").strip() or WAA_DEFAULTS["agent"]
        self.model = env.get("WAA_MODEL", "").strip() or "gpt-4o"
        self.som_origin = env.get("WAA_SOM_ORIGIN", "").strip() or WAA_DEFAULTS["som_origin"]
        self.a11y_backend = env.get("WAA_A11Y_BACKEND", "").strip() or WAA_DEFAULTS["a11y_backend"]
        self.action_space = env.get("WAA_ACTION_SPACE", "").strip() or WAA_DEFAULTS["action_space"]
        self.observation_type = (
            env.get("WAA_OBSERVATION_TYPE", "").strip() or WAA_DEFAULTS["observation_type"]
        )
        self.trial_id = env.get("WAA_TRIAL_ID", "").strip() or WAA_DEFAULTS["trial_id"]
        self.output_dir = env.get("WAA_OUTPUT_DIR", "").strip() or "/results"
        self.heartbeat_interval = number("WAA_HEARTBEAT_INTERVAL_SECONDS", 30, 0.01)
        self.ready_timeout = number("WAA_READY_TIMEOUT_SECONDS", 1200, 0)
        self.ready_poll = number("WAA_READY_POLL_SECONDS", 5, 0.01)
        self.task_timeout = number("WAA_TASK_TIMEOUT_SECONDS", 1800, 1)
        self.final_flush = number("WAA_FINAL_FLUSH_SECONDS", 120, 0)
        self.retry_base = number("WAA_POST_RETRY_BASE_SECONDS", 1, 0.001)
        self.retry_max = number("WAA_POST_RETRY_MAX_SECONDS", 60, 0.001)
        self.auth_retries = int(number("WAA_POST_AUTH_RETRIES", 3, 0))
        self.kvm_device = env.get("WAA_KVM_DEVICE", "").strip() or "/dev/kvm"
        self.setup_command = _split(env, "WAA_SETUP_COMMAND", DEFAULT_SETUP_COMMAND, problems)
        self.ready_url = env.get("WAA_READY_URL", DEFAULT_READY_URL).strip()
        self.task_command = _split(env, "WAA_TASK_COMMAND", DEFAULT_TASK_COMMAND, problems)
        if not self.task_command:
            problems.append("WAA_TASK_COMMAND must not be empty")
        self.task_cwd = env.get("WAA_TASK_CWD", DEFAULT_TASK_CWD).strip() or None
        self.task_catalog = env.get("WAA_TASK_CATALOG", DEFAULT_TASK_CATALOG).strip()
        self.result_file = env.get("WAA_RESULT_FILE", "").strip() or "result.txt"
        for template in (self.setup_command, self.task_command):
            for item in template:
                for name in _PLACEHOLDER.findall(item):
                    if name not in PLACEHOLDERS:
                        problems.append(
                            f"unknown placeholder {{{name}}} in a command template "
                            f"(known: {', '.join(PLACEHOLDERS)})"
                        )
        if self.heartbeat_url and not self.heartbeat_url.startswith(("http://", "https://")):
            problems.append("WAA_HEARTBEAT_URL must be an http(s) URL")
        if problems:
            raise ConfigError("; ".join(problems))

    def __repr__(self) -> str:  # the token stays out of any accidental print
        return f"Config(job_name={self.job_name!r}, tasks={len(self.task_ids)})"


def _split(env: Mapping[str, str], name: str, default: str, problems: List[str]) -> List[str]:
    raw = env.get(name)
    try:
        return shlex.split(default if raw is None else raw)
    except ValueError as err:
        problems.append(f"{name} is not a valid command line: {err}")
        return []


def render(template: Sequence[str], values: Mapping[str, str]) -> List[str]:
    """Fill placeholders item by item: each template item stays exactly one argv item, whatever
    the values contain, and nothing is ever given to a shell."""
    return [
        _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), item) for item in template
    ]


def redacted_url(url: str) -> str:
    """The URL without its query (a Functions key may travel as ?code=...)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


# --- Posting to the control plane -----------------------------------------------------------


class Sender:
    """Delivers messages in order from a background thread, retrying with backoff.

    The queue is bounded: heartbeats are coalesced (one waiting is enough) and dropped first
    when it is full, so task results are the last thing ever lost. 401/403 are retried a few
    times only (a wrong token stays wrong); after that the sender stops sending.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        max_queue: int = 1000,
        retry_base: float = 1.0,
        retry_max: float = 60.0,
        auth_retries: int = 3,
        request_timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._token = token
        self._max_queue = max_queue
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._auth_retries = auth_retries
        self._timeout = request_timeout
        self._queue: Deque[Dict[str, object]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abandon = threading.Event()
        self._busy = False
        self.disabled = False
        self.delivered = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="sender", daemon=True)
        self._thread.start()

    def post(self, message: Dict[str, object]) -> None:
        """Queue a message; never blocks."""
        with self._cond:
            if self.disabled:
                self.dropped += 1
                return
            is_beat = message.get("kind") == "heartbeat"
            if is_beat and any(m.get("kind") == "heartbeat" for m in self._queue):
                return
            if len(self._queue) >= self._max_queue:
                beats = [m for m in self._queue if m.get("kind") == "heartbeat"]
                if is_beat:
                    self.dropped += 1
                    return
                victim = beats[0] if beats else self._queue[0]
                self._queue.remove(victim)
                self.dropped += 1
                log.warning("message queue full: dropped a queued %s message", victim.get("kind"))
            self._queue.append(message)
            self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Stop accepting work and wait up to `timeout` s for the queue to drain."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while (self._queue or self._busy) and not self.disabled:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            drained = not self._queue and not self._busy
        self._abandon.set()
        self._thread.join(timeout=self._timeout + 1)
        if not drained:
            log.error("gave up delivering %d message(s) to the control plane", len(self._queue))
        return drained

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._abandon.is_set():
                    self._cond.wait(0.5)
                if self._abandon.is_set():
                    return
                message = self._queue.popleft()
                self._busy = True
            ok = self._deliver(message)
            with self._cond:
                self._busy = False
                if ok:
                    self.delivered += 1
                else:
                    self.dropped += 1
                if self.disabled:
                    self.dropped += len(self._queue)
                    self._queue.clear()
                self._cond.notify_all()

    def _deliver(self, message: Dict[str, object]) -> bool:
        body = json.dumps(message).encode()
        attempt = 0
        auth_failures = 0
        while not self._abandon.is_set():
            attempt += 1
            status, why = self._send_once(body)
            if status is not None and 200 <= status < 300:
                return True
            if status in (401, 403):
                auth_failures += 1
                if auth_failures > self._auth_retries:
                    log.error(
                        "the control plane refuses this job's token (HTTP %s): "
                        "no further messages will be sent",
                        status,
                    )
                    self.disabled = True
                    return False
            elif status is not None and 400 <= status < 500 and status not in (408, 429):
                log.error("the control plane rejected a %s message: %s", message["kind"], why)
                return False
            delay = min(self._retry_max, self._retry_base * (2 ** min(attempt - 1, 30)))
            delay *= random.uniform(0.5, 1.0)  # spread the retries of many runners
            log.warning(
                "posting a %s message failed (%s); retry %d in %.1f s",
                message["kind"],
                why,
                attempt,
                delay,
            )
            self._abandon.wait(delay)
        return False

    def _send_once(self, body: bytes) -> Tuple[Optional[int], str]:
        request = urllib.request.Request(
            self._url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": "Bearer " + self._token,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return response.status, f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            return err.code, f"HTTP {err.code} from {redacted_url(self._url)}"
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            return None, f"{redacted_url(self._url)} unreachable: {reason}"


class Reporter:
    """Builds the wire messages of domain/messages.py."""

    def __init__(self, job_name: str, sender: Sender) -> None:
        self.job_name = job_name
        self.sender = sender

    def _post(self, kind: str, **fields: object) -> None:
        message: Dict[str, object] = {"job_name": self.job_name, "kind": kind, "sent_at": now_iso()}
        message.update(fields)
        self.sender.post(message)

    def heartbeat(self) -> None:
        self._post("heartbeat")

    def task_result(self, result: Dict[str, object]) -> None:
        self._post("task_result", task_result=result)

    def failure(self, code: str, message: str, permanent: bool = False) -> None:
        self._post(
            "failure", failure={"code": code, "message": message[:4000], "permanent": permanent}
        )

    def finished(self, exit_code: int) -> None:
        self._post("finished", exit_code=exit_code)


class Heartbeat:
    def __init__(self, reporter: Reporter, interval: float) -> None:
        self._reporter = reporter
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._reporter.heartbeat()
            self._stop.wait(self._interval)


# --- Processes -------------------------------------------------------------------------------


# The setup and the tasks (agent code) have no business with the control plane's token.
_CHILD_HIDDEN = ("WAA_HEARTBEAT_TOKEN",)


def _child_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _CHILD_HIDDEN}


def _start(argv: Sequence[str], log_path: str, cwd: Optional[str]) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        # Own session, so the whole tree (e.g. the VM the setup starts) can be stopped at once.
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: str, limit: int = 600) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4 * limit))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    text = " ".join(text.split())
    return text[-limit:]


def wait_until_ready(
    url: str,
    deadline_seconds: float,
    poll_seconds: float,
    setup: Optional[subprocess.Popen],
    clock: Callable[[], float] = time.monotonic,
) -> Tuple[bool, str]:
    """Probe `url` until it answers 2xx. Returns (ready, why_not)."""
    deadline = clock() + deadline_seconds
    last = "no answer yet"
    while True:
        if setup is not None and setup.poll() not in (None, 0):
            return False, f"setup exited with code {setup.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=max(0.5, min(5.0, poll_seconds * 2))) as r:
                if 200 <= r.status < 300:
                    return True, ""
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            last = str(getattr(err, "reason", err))
        left = deadline - clock()
        if left <= 0:
            return False, f"not ready after {deadline_seconds:g} s (last probe: {last})"
        time.sleep(min(poll_seconds, left))


# --- Tasks -----------------------------------------------------------------------------------


def safe_name(task_id: str) -> str:
    if _SAFE_NAME.match(task_id):
        return task_id
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", task_id)[:80].lstrip("._-") or "task"
    return f"{cleaned}-{hashlib.sha256(task_id.encode()).hexdigest()[:10]}"


def load_catalog(path: str) -> Dict[str, str]:
    """task id -> domain, from a WAA test_all.json ({domain: [task ids]}); empty if absent."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(task): str(domain)
        for domain, tasks in data.items()
        if isinstance(tasks, list)
        for task in tasks
    }


def result_path(cfg: Config, task_dir: str, domain: str, task_id: str) -> str:
    """Where WAA's run.py writes the task's folder: `example_result_dir` in its `test()` is
    os.path.join(result_dir, action_space, observation_type, model, trial_id, domain,
    example_id), and lib_run_single.py writes result.txt there (see /work/shared/DESIGN.md,
    "WAA's launch contract"). `task_dir` is the --result_dir this runner passed."""
    return os.path.join(
        task_dir,
        cfg.action_space,
        cfg.observation_type,
        cfg.model,
        cfg.trial_id,
        domain,
        task_id,
    )


def read_score(example_dir: str, result_file: str) -> Optional[float]:
    """The score in `<example_dir>/<result_file>`: a float as text (as WAA writes it) or JSON
    with a "score". None when the file is missing or unreadable: WAA's show_azure.py counts a
    task without result.txt as not solved, and the control plane counts it as a task that did
    not complete (0 in the success rate over all tasks)."""
    try:
        with open(os.path.join(example_dir, result_file), encoding="utf-8") as f:
            text = f.read().strip()
    except OSError:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if isinstance(value, dict):
        value = value.get("score")
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return min(1.0, max(0.0, score)) if score == score else None


def waa_error(example_dir: str) -> str:
    """The exception run.py recorded for the task: when a task raises, its `test()` appends
    {"Error", "Exception", "Traceback"} to traj.jsonl in the task's folder and writes no
    result.txt."""
    try:
        with open(os.path.join(example_dir, "traj.jsonl"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "Error" in entry:
            return f"{entry.get('Error')}: {entry.get('Exception', '')}"
    return ""


def run_task(cfg: Config, task_id: str, domain: str, tasks_dir: str) -> Dict[str, object]:
    task_dir = os.path.join(tasks_dir, safe_name(task_id))
    os.makedirs(task_dir, exist_ok=True)
    meta_path = os.path.join(task_dir, "task_meta.json")
    with open(meta_path, "w", encoding="utf-8") as f:
        json.dump({domain: [task_id]}, f)
    values = {
        "task_id": task_id,
        "max_steps": cfg.max_steps,
        "agent": cfg.agent,
        "model": cfg.model,
        "output_dir": cfg.output_dir,
        "task_output_dir": task_dir,
        "task_meta_path": meta_path,
        "domain": domain,
        "som_origin": cfg.som_origin,
        "a11y_backend": cfg.a11y_backend,
        "action_space": cfg.action_space,
        "observation_type": cfg.observation_type,
        "trial_id": cfg.trial_id,
    }
    argv = render(cfg.task_command, values)
    log_path = os.path.join(task_dir, "task.log")
    started = time.monotonic()
    status, reason = "failed", ""
    try:
        proc = _start(argv, log_path, cfg.task_cwd)
    except OSError as err:
        reason = f"the task command could not start: {err}"
    else:
        try:
            code = proc.wait(timeout=cfg.task_timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            reason = f"timed out after {cfg.task_timeout:g} s"
        except BaseException:
            # Terminated while the task runs: the task (its own session) must not outlive us.
            _stop_group(proc, grace=2.0)
            raise
        else:
            if code != 0:
                reason = f"the task command exited with code {code}: {_tail(log_path)}"
    duration = round(time.monotonic() - started, 3)
    example_dir = result_path(cfg, task_dir, domain, task_id)
    score = read_score(example_dir, cfg.result_file) if not reason else None
    if not reason:
        if score is None:
            errors = (
                waa_error(example_dir)
                or _tail(os.path.join(task_dir, "error.txt"))
                or _tail(log_path)
            )
            where = os.path.relpath(os.path.join(example_dir, cfg.result_file), task_dir)
            reason = f"the task wrote no readable {where}: {errors}"
        else:
            status = "completed"
    if cfg.token:
        reason = reason.replace(cfg.token, "***")
    return {
        "task_id": task_id,
        "status": status,
        "score": score if score is not None else 0.0,
        "reason": reason[:_REASON_LIMIT],
        "duration_seconds": duration,
    }


def _write_json(path: str, data: object) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


# --- Main ------------------------------------------------------------------------------------


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, _frame: object) -> None:
    raise _Terminated(f"signal {signum}")


def run(cfg: Config) -> int:
    sender = Sender(
        cfg.heartbeat_url,
        cfg.token,
        retry_base=cfg.retry_base,
        retry_max=cfg.retry_max,
        auth_retries=cfg.auth_retries,
    )
    reporter = Reporter(cfg.job_name, sender)
    heartbeat = Heartbeat(reporter, cfg.heartbeat_interval)
    setup: Optional[subprocess.Popen] = None
    exit_code = EXIT_INTERNAL
    flush = cfg.final_flush
    try:
        if not os.path.exists(cfg.kvm_device) or not os.access(cfg.kvm_device, os.R_OK | os.W_OK):
            message = f"{cfg.kvm_device} is missing or not usable: no nested virtualization"
            log.error(message)
            reporter.failure("no_nested_virtualization", message, permanent=True)
            exit_code = EXIT_NO_KVM
            return exit_code
        heartbeat.start()
        os.makedirs(cfg.output_dir, exist_ok=True)
        tasks_dir = os.path.join(cfg.output_dir, "tasks")
        os.makedirs(tasks_dir, exist_ok=True)

        if cfg.setup_command:
            log.info("starting the WAA setup: %s", cfg.setup_command[0])
            try:
                setup = _start(cfg.setup_command, os.path.join(cfg.output_dir, "setup.log"), None)
            except OSError as err:
                reporter.failure("setup_failed", f"the setup command could not start: {err}")
                exit_code = EXIT_SETUP_FAILED
                return exit_code
        if cfg.ready_url:
            ready, why = wait_until_ready(cfg.ready_url, cfg.ready_timeout, cfg.ready_poll, setup)
            if not ready:
                setup_log = _tail(os.path.join(cfg.output_dir, "setup.log"))
                detail = f"{why}; setup output: {setup_log}" if setup_log else why
                code = "setup_failed" if why.startswith("setup exited") else "waa_not_ready"
                log.error("WAA is not ready: %s", why)
                reporter.failure(code, detail)
                exit_code = EXIT_SETUP_FAILED if code == "setup_failed" else EXIT_NOT_READY
                return exit_code
            log.info("the WAA server is ready")

        catalog = load_catalog(cfg.task_catalog)
        results: List[Dict[str, object]] = []
        for index, task_id in enumerate(cfg.task_ids, 1):
            log.info("task %d/%d: %s", index, len(cfg.task_ids), task_id)
            result = run_task(cfg, task_id, catalog.get(task_id, "unknown"), tasks_dir)
            results.append(result)
            _write_json(os.path.join(tasks_dir, safe_name(task_id) + ".json"), result)
            reporter.task_result(result)
            log.info("task %s %s %s", task_id, result["status"], result["reason"] or "")
        failed = [r for r in results if r["status"] != "completed"]
        exit_code = EXIT_TASKS_FAILED if failed else EXIT_OK
        _write_json(
            os.path.join(cfg.output_dir, "summary.json"),
            {
                "job_name": cfg.job_name,
                "finished_at": now_iso(),
                "exit_code": exit_code,
                "tasks": len(results),
                "completed": len(results) - len(failed),
                "failed": len(failed),
                "mean_score": (
                    sum(float(r["score"]) for r in results) / len(results)  # type: ignore[arg-type]
                    if results
                    else 0.0
                ),
                "results": results,
            },
        )
        return exit_code
    except _Terminated:
        log.error("terminated: stopping")
        exit_code = EXIT_TERMINATED
        flush = min(flush, 10.0)  # `timeout --kill-after` or `docker stop` is about to kill us
        return exit_code
    except Exception as err:  # last resort: report instead of dying silently
        log.exception("internal error")
        reporter.failure("internal", f"{type(err).__name__}: {err}")
        exit_code = EXIT_INTERNAL
        return exit_code
    finally:
        # Already shutting down: a second SIGTERM must not cut the final report short.
        # (ValueError: not the main thread, where no handler was installed either.)
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        heartbeat.stop()
        if setup is not None:
            _stop_group(setup)
        reporter.finished(exit_code)
        sender.close(flush)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s shard_runner %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg = Config(os.environ)
    except ConfigError as err:
        log.error("configuration error: %s", err)
        return EXIT_CONFIG
    signal.signal(signal.SIGTERM, _on_sigterm)
    log.info("job %s: %d task(s)", cfg.job_name, len(cfg.task_ids))
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
