"""The shard runner: runs one shard's WAA tasks inside the windowsarena/winarena container.

Standard library only, Python 3.9+ (the image's interpreter), and self-contained: the SSH tier
uploads this single file to the VM and runs `python runner.py`; elsewhere `python -m
shard_runner` does the same. Configuration comes from environment variables (see README.md).

What it does, in order:
1. finds its heartbeat token (given, in a 0600 secrets file, or a Key Vault secret read with the
   job's managed identity); without one it cannot report anything (exit 2);
2. checks the KVM device: no nested virtualization is a permanent failure of the tier, reported
   at once (exit 3);
3. starts the heartbeat thread (the first heartbeat is the control plane's "container started");
4. reads the model's credentials from Key Vault (exit 2 when it cannot) and copies the prepared
   Windows image (the golden `storage` folder) to writable local disk, heartbeats going on;
5. starts the container's entry setup (which boots the Windows VM) and probes the WAA server's
   readiness URL until it answers, with its own deadline (exit 4 / 5);
6. runs the tasks one at a time, each with a timeout, and reports one `task_result` per task;
   a background uploader then sends that task's WAA folder to Blob Storage through the
   per-file SAS URLs the control plane mints (`artifact_urls` / `artifacts_uploaded`). The
   tasks are WAA_TASK_IDS (a static shard), or with WAA_TASK_SOURCE=queue whatever the control
   plane answers to `next_task`, asked after the setup and after each delivered result, until
   it says exit or the job's own deadline is within WAA_CLAIM_MARGIN_SECONDS (`TaskQueue`);
7. writes one JSON per task and a summary to the output folder, posts `finished`, exits 0 when
   every task completed and 1 when some failed (queue mode: 0 when it stopped asking normally).

Messages go through a background sender with a bounded queue that retries with exponential
backoff while the endpoint is unreachable or answers 5xx/429, so a slow or absent control plane
never blocks the tasks. The bearer token and every secret value are never logged (the log
formatter masks them), never put in a reason, and never handed to the setup; the task gets only
the model keys it needs.
"""
# ruff: noqa: UP017, UP035, UP006, UP045
# (Python 3.9 in the image: no datetime.UTC, no `X | Y` outside annotations.)

from __future__ import annotations

import collections
import contextlib
import hashlib
import http.client
import json
import logging
import mimetypes
import os
import queue
import random
import re
import shlex
import shutil
import signal
import stat
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
# A WAA_TASK_IDS item may carry a trial suffix, `<task_id>#<k>` with k = 0..9 (CONTRACT.md): that
# item runs as WAA's --trial_id k and is reported with the full item as its task id.
_TRIAL_ITEM = re.compile(r"^([^#]+)#([0-9])$")
# Key Vault secret names: 1-127 letters, digits and dashes (Key Vault's object naming rules).
_KV_SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# Runner failure codes of domain/messages.py's RunnerFailureCode (the control plane treats both
# as permanent for the tier: where its golden image is, and which identity its jobs have, are
# that tier's configuration). A copy that fails part-way is a setup failure, worth a retry.
FAILURE_STORAGE = "storage_missing"
FAILURE_SETUP = "setup_failed"
FAILURE_CREDENTIALS = "credentials_unavailable"


class ConfigError(ValueError):
    pass


def split_item(item: str) -> Tuple[str, Optional[str]]:
    """`<task_id>#<k>` -> (task_id, "k"); a plain task id -> (task_id, None)."""
    if "#" not in item:
        return item, None
    match = _TRIAL_ITEM.match(item)
    if not match:
        raise ValueError(f"task item {item!r}: a trial suffix is #0 to #9 after a task id")
    return match.group(1), match.group(2)


def _is_loopback(url: str) -> bool:
    return (urllib.parse.urlsplit(url).hostname or "") in _LOOPBACK_HOSTS


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
        # The token: the value itself, or where to read it (a Key Vault secret, a secrets file).
        self.token = env.get("WAA_HEARTBEAT_TOKEN", "").strip()
        self.heartbeat_token_secret = env.get("WAA_HEARTBEAT_TOKEN_SECRET", "").strip()
        self.secrets_file = env.get("WAA_SECRETS_FILE", "").strip()
        if not (self.token or self.heartbeat_token_secret or self.secrets_file):
            problems.append(
                "WAA_HEARTBEAT_TOKEN is required (or WAA_HEARTBEAT_TOKEN_SECRET with "
                "WAA_SECRETS_VAULT_URL, or WAA_SECRETS_FILE holding it)"
            )
        self.vault_url = env.get("WAA_SECRETS_VAULT_URL", "").strip().rstrip("/")
        self.secret_env = _secret_env(env.get("WAA_SECRETS", ""), problems)
        self.identity_client_id = env.get("WAA_IDENTITY_CLIENT_ID", "").strip()
        self.imds_url = env.get("WAA_IMDS_URL", "").strip() or IMDS_TOKEN_URL
        self.secrets_tries = int(number("WAA_SECRETS_TRIES", 5, 1))
        if (self.secret_env or self.heartbeat_token_secret) and not self.vault_url:
            problems.append(
                "WAA_SECRETS_VAULT_URL is required with WAA_SECRETS or WAA_HEARTBEAT_TOKEN_SECRET"
            )
        if self.vault_url:
            scheme = urllib.parse.urlsplit(self.vault_url).scheme
            if scheme != "https" and not (scheme == "http" and _is_loopback(self.vault_url)):
                problems.append("WAA_SECRETS_VAULT_URL must be an https URL")
        if self.heartbeat_token_secret and not _KV_SECRET_NAME.match(self.heartbeat_token_secret):
            problems.append("WAA_HEARTBEAT_TOKEN_SECRET must be a Key Vault secret name")
        if not self.imds_url.startswith(("http://", "https://")):
            problems.append("WAA_IMDS_URL must be an http(s) URL")

        # Where the tasks come from: WAA_TASK_IDS (a static shard), or the control plane's task
        # queue, asked for one task at a time (`next_task`, CONTRACT.md of issue 10).
        source = env.get("WAA_TASK_SOURCE", "").strip().lower() or "static"
        if source not in ("static", "queue"):
            problems.append(f"WAA_TASK_SOURCE must be static or queue, got {source!r}")
        self.queue = source == "queue"
        self.task_ids = [t.strip() for t in env.get("WAA_TASK_IDS", "").split(",") if t.strip()]
        if self.queue and self.task_ids:
            problems.append(
                "WAA_TASK_IDS must be empty with WAA_TASK_SOURCE=queue (the control plane hands "
                "out the tasks)"
            )
        elif not self.queue and not self.task_ids:
            problems.append("WAA_TASK_IDS must list at least one task id")
        # The job's own timeout (0: not known) and how much of it must be left to ask for another
        # task: the runner stops asking on its own below that margin.
        self.job_timeout = number("WAA_JOB_TIMEOUT_SECONDS", 0, 0)
        self.claim_margin = number("WAA_CLAIM_MARGIN_SECONDS", 1800, 0)
        self.next_task_tries = int(number("WAA_NEXT_TASK_TRIES", 12, 1))
        for item in self.task_ids:
            try:
                split_item(item)
            except ValueError as err:
                problems.append(f"WAA_TASK_IDS: {err}")
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
        # The golden image: WAA's prepared `storage` folder, read-only, copied before the setup.
        self.storage_source = env.get("WAA_STORAGE_SOURCE", "").strip()
        self.storage_dir = env.get("WAA_STORAGE_DIR", "").strip() or "/storage"
        self.storage_rate = number("WAA_STORAGE_COPY_RATE_BYTES", 0, 0)
        if self.storage_source and (
            os.path.abspath(self.storage_source) == os.path.abspath(self.storage_dir)
        ):
            problems.append("WAA_STORAGE_DIR must differ from WAA_STORAGE_SOURCE")
        # Artifacts: the task's WAA folder, uploaded after its result was sent.
        self.artifacts = env.get("WAA_ARTIFACTS", "").strip().lower() not in ("0", "false", "no")
        self.artifact_tries = int(number("WAA_ARTIFACT_TRIES", 4, 1))
        self.artifact_retry_base = number("WAA_ARTIFACT_RETRY_BASE_SECONDS", 1, 0.001)
        self.artifact_drain = number("WAA_ARTIFACT_DRAIN_SECONDS", 600, 0)
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
        tasks = "queue" if self.queue else len(self.task_ids)
        return f"Config(job_name={self.job_name!r}, tasks={tasks})"


def _secret_env(raw: str, problems: List[str]) -> Dict[str, str]:
    """WAA_SECRETS: "ENV=secret-name,..." -> {ENV: secret-name} (names only, never values)."""
    mapping: Dict[str, str] = {}
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, secret = (x.strip() for x in part.partition("="))
        if not sep or not _ENV_NAME.match(name) or not _KV_SECRET_NAME.match(secret):
            problems.append(f"WAA_SECRETS item {part!r} must be ENV_NAME=key-vault-secret-name")
            continue
        if name in _CHILD_HIDDEN:
            problems.append(f"WAA_SECRETS must not set {name}")
            continue
        mapping[name] = secret
    return mapping


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


class Ticket:
    """Tells whether one queued message was delivered (settled once: delivered or dropped)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.ok = False

    def settle(self, ok: bool) -> None:
        if not self._event.is_set():
            self.ok = ok
            self._event.set()

    def wait(self, timeout: float) -> bool:
        """True once settled."""
        return self._event.wait(timeout)


# The longest answer read back (a next_task answer is a few hundred bytes).
_ANSWER_LIMIT = 64 * 1024


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
        self._tickets: Dict[int, Ticket] = {}  # id(message) -> its ticket, while queued
        self._cond = threading.Condition()
        self._closing = False
        self._abandon = threading.Event()
        self._busy = False
        self.disabled = False
        self.delivered = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="sender", daemon=True)
        self._thread.start()

    def post(self, message: Dict[str, object]) -> Ticket:
        """Queue a message; never blocks. The ticket settles when it is delivered or dropped."""
        ticket = Ticket()
        with self._cond:
            if self.disabled:
                self.dropped += 1
                ticket.settle(False)
                return ticket
            is_beat = message.get("kind") == "heartbeat"
            if is_beat:
                waiting = [m for m in self._queue if m.get("kind") == "heartbeat"]
                if waiting:
                    # One waiting heartbeat is enough; the newest one (fresher storage progress)
                    # takes its place.
                    index = self._queue.index(waiting[0])
                    old = self._queue[index]
                    self._queue[index] = message
                    moved = self._tickets.pop(id(old), None)
                    if moved is not None:
                        self._tickets[id(message)] = moved
                    return moved or ticket
            if len(self._queue) >= self._max_queue:
                beats = [m for m in self._queue if m.get("kind") == "heartbeat"]
                if is_beat:
                    self.dropped += 1
                    ticket.settle(False)
                    return ticket
                victim = beats[0] if beats else self._queue[0]
                self._queue.remove(victim)
                self._settle(victim, False)
                self.dropped += 1
                log.warning("message queue full: dropped a queued %s message", victim.get("kind"))
            self._queue.append(message)
            self._tickets[id(message)] = ticket
            self._cond.notify_all()
        return ticket

    def _settle(self, message: Dict[str, object], ok: bool) -> None:
        ticket = self._tickets.pop(id(message), None)
        if ticket is not None:
            ticket.settle(ok)

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
        with self._cond:
            for message in self._queue:
                self._settle(message, False)
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
                self._settle(message, ok)
                if ok:
                    self.delivered += 1
                else:
                    self.dropped += 1
                if self.disabled:
                    self.dropped += len(self._queue)
                    for waiting in self._queue:
                        self._settle(waiting, False)
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
            delay = _backoff(attempt, self._retry_base, self._retry_max)
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
        status, why, _answer = self._exchange(body)
        return status, why

    def _exchange(
        self,
        body: bytes,
        read: bool = False,
        timeout: Optional[float] = None,
        limit: Optional[int] = _ANSWER_LIMIT,
    ) -> Tuple[Optional[int], str, bytes]:
        """One POST: (HTTP status or None when no answer came, why, the answer's body, at most
        `limit` bytes, when `read`). Never raises for the network: a reset, a timeout (the
        sender's own unless `timeout`) or a truncated answer is "no answer" (status None),
        which the callers retry."""
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
            with urllib.request.urlopen(
                request, timeout=self._timeout if timeout is None else timeout
            ) as response:
                answer = b""
                if read:
                    answer = response.read() if limit is None else response.read(limit)
                return response.status, f"HTTP {response.status}", answer
        except urllib.error.HTTPError as err:
            detail = _error_text(err) if read else ""
            return err.code, f"HTTP {err.code} from {redacted_url(self._url)}{detail}", b""
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            return None, f"{redacted_url(self._url)} unreachable: {reason}", b""
        except http.client.HTTPException as err:  # e.g. IncompleteRead: the answer was cut off
            return None, f"no complete answer from {redacted_url(self._url)}: {err!r}", b""

    def ask(
        self,
        message: Dict[str, object],
        tries: int,
        stop: Optional[Callable[[], bool]] = None,
    ) -> Reply:
        """Send `message` now, in the caller's thread, and return the control plane's JSON
        answer: for requests whose answer matters (`next_task`). The same rules as the queued
        messages: no answer, 5xx, 408 and 429 are retried with the same backoff (at most
        `tries` times in all; an answer that is not a JSON object counts as no answer), 401/403
        `auth_retries` times, any other 4xx is final. `stop()` is asked before each retry."""
        kind = message.get("kind")
        body = json.dumps(message).encode()
        auth_failures = 0
        why = ""
        for attempt in range(1, tries + 1):
            if self.disabled:  # the queued messages already found the token refused
                return Reply(Reply.AUTH, why="the control plane refuses this job's token")
            if attempt > 1 and stop is not None and stop():
                return Reply(Reply.STOPPED, why=why)
            status, why, answer = self._exchange(body, read=True)
            if status is not None and 200 <= status < 300:
                try:
                    data = json.loads(answer.decode("utf-8"))
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    return Reply(Reply.OK, status, data)
                why = f"HTTP {status} with an answer that is not a JSON object"
            elif status in (401, 403):
                auth_failures += 1
                if auth_failures > self._auth_retries:
                    return Reply(Reply.AUTH, status, why=why)
            elif status is not None and 400 <= status < 500 and status not in (408, 429):
                return Reply(Reply.REFUSED, status, why=why)
            if attempt == tries:
                break
            delay = _backoff(attempt, self._retry_base, self._retry_max)
            log.warning(
                "%s request failed (%s); retry %d of %d in %.1f s",
                kind,
                why,
                attempt,
                tries - 1,
                delay,
            )
            time.sleep(delay)
        return Reply(Reply.GAVE_UP, why=why)


def _error_text(err: urllib.error.HTTPError) -> str:
    """The "error" text of the control plane's own error body ({"error": "...", "field"}),
    short and masked, for the log line of a refusal."""
    try:
        body = json.loads(err.read(4096) or b"{}")
    except (ValueError, OSError, http.client.HTTPException):
        return ""
    text = body.get("error") if isinstance(body, dict) else None
    return f": {mask(text[:300])}" if isinstance(text, str) and text else ""


class Reply:
    """How a synchronous request (`Sender.ask`) ended."""

    OK = "ok"  # a 2xx with a JSON object: `data`
    REFUSED = "refused"  # a 4xx that will not change (409: not a queue job)
    AUTH = "auth"  # the token is refused (401/403 after the retries)
    GAVE_UP = "gave_up"  # no usable answer after every try
    STOPPED = "stopped"  # the caller's stop() said so between two tries

    def __init__(
        self,
        outcome: str,
        status: Optional[int] = None,
        data: Optional[Dict[str, object]] = None,
        why: str = "",
    ) -> None:
        self.outcome = outcome
        self.status = status
        self.data = data if data is not None else {}
        self.why = why


class Reporter:
    """Builds the wire messages of domain/messages.py."""

    def __init__(self, job_name: str, sender: Sender) -> None:
        self.job_name = job_name
        self.sender = sender
        self.storage: Optional[CopyProgress] = None  # set while/after the golden image copy

    def message(self, kind: str, **fields: object) -> Dict[str, object]:
        message: Dict[str, object] = {"job_name": self.job_name, "kind": kind, "sent_at": now_iso()}
        message.update(fields)
        return message

    def _post(self, kind: str, **fields: object) -> Ticket:
        return self.sender.post(self.message(kind, **fields))

    def heartbeat(self) -> None:
        if self.storage is not None:
            self._post("heartbeat", storage=self.storage.snapshot())
        else:
            self._post("heartbeat")

    def task_result(self, result: Dict[str, object]) -> Ticket:
        return self._post("task_result", task_result=result)

    def artifacts_uploaded(
        self, task_id: str, files: List[Dict[str, object]], failed: List[str]
    ) -> None:
        self._post(
            "artifacts_uploaded",
            artifacts={"task_id": task_id, "files": files, "failed": failed},
        )

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


# --- Secrets ---------------------------------------------------------------------------------

# Every secret value this process learns (the heartbeat token, model keys, identity tokens):
# the log formatter and every reason replace them with ***.
_SECRET_VALUES: List[str] = []
_SECRETS_LOCK = threading.Lock()


def register_secret(value: str) -> None:
    if value and len(value) >= 4:  # masking a 1-3 character "secret" would garble every line
        with _SECRETS_LOCK:
            if value not in _SECRET_VALUES:
                _SECRET_VALUES.append(value)
                _SECRET_VALUES.sort(key=len, reverse=True)


def mask(text: str) -> str:
    with _SECRETS_LOCK:
        values = list(_SECRET_VALUES)
    for value in values:
        text = text.replace(value, "***")
    return text


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


class CredentialError(Exception):
    """Could not get a credential; the message names what and where, never a value."""


# Managed identity token endpoints, as azure-identity (1.27, azure/identity/_credentials/) calls
# them: App Service-style IDENTITY_ENDPOINT + IDENTITY_HEADER (app_service.py: api-version
# 2019-08-01, header X-IDENTITY-HEADER, `client_id` for a user-assigned identity); Azure ML
# compute's MSI_ENDPOINT + MSI_SECRET (azure_ml.py: api-version 2017-09-01, header `secret`,
# `clientid`); else the VM's instance metadata service (imds.py: api-version 2018-02-01, header
# Metadata: true, `client_id`; it retries 404, 410, 429 and 5xx). The resource is Key Vault's.
IMDS_TOKEN_URL = "http://169.254.169.254/metadata/identity/oauth2/token"
VAULT_RESOURCE = "https://vault.azure.net"
# Key Vault "Get Secret": GET {vaultBaseUrl}/secrets/{secret-name}?api-version=7.4 answers
# {"value": ..., "id": ..., "attributes": ...} (learn.microsoft.com/rest/api/keyvault/secrets/
# get-secret/get-secret).
VAULT_API_VERSION = "7.4"
_TOKEN_RETRY = (404, 410, 429)
_VAULT_RETRY = (408, 429)
# The identity endpoints are link-local or loopback: never through an HTTP(S)_PROXY.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _error_code(err: urllib.error.HTTPError) -> str:
    """The error code of an Azure error body ({"error": {"code"}} or {"error": "..."}), if any.
    Only the code: messages may quote more than we want in a log."""
    try:
        body = json.loads(err.read(4096) or b"{}")
    except (ValueError, OSError):
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("code")
    return f" ({error})" if isinstance(error, str) and _ENV_NAME.match(error) else ""


def _get_json(
    opener: urllib.request.OpenerDirector,
    url: str,
    headers: Mapping[str, str],
    *,
    what: str,
    retry_statuses: Sequence[int],
    tries: int,
    retry_base: float,
) -> Dict[str, object]:
    last = ""
    for attempt in range(1, tries + 1):
        try:
            with opener.open(urllib.request.Request(url, headers=dict(headers)), timeout=15) as r:
                data = json.loads(r.read())
            if not isinstance(data, dict):
                raise CredentialError(f"{what}: the answer is not a JSON object")
            return data
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}{_error_code(err)}"
            if err.code not in retry_statuses and err.code < 500:
                raise CredentialError(f"{what}: {last}") from None
        except (urllib.error.URLError, OSError) as err:
            last = f"unreachable: {getattr(err, 'reason', err)}"
        except ValueError:
            raise CredentialError(f"{what}: the answer is not JSON") from None
        if attempt < tries:
            delay = min(30.0, retry_base * (2 ** (attempt - 1))) * random.uniform(0.5, 1.0)
            log.warning("%s failed (%s); retry %d in %.1f s", what, last, attempt, delay)
            time.sleep(delay)
    raise CredentialError(f"{what}: gave up after {tries} tries ({last})")


class ManagedIdentity:
    """An access token for Key Vault from the job's managed identity (fetched once)."""

    def __init__(self, env: Mapping[str, str], cfg: Config) -> None:
        self._env = env
        self._cfg = cfg
        self._token = ""

    def _endpoint(self) -> Tuple[str, str, Dict[str, str], Dict[str, str]]:
        """(which, url, query, headers)."""
        env, client_id = self._env, self._cfg.identity_client_id
        query = {"resource": VAULT_RESOURCE}
        if env.get("IDENTITY_ENDPOINT") and env.get("IDENTITY_HEADER"):
            query["api-version"] = "2019-08-01"
            if client_id:
                query["client_id"] = client_id
            register_secret(env["IDENTITY_HEADER"])
            headers = {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]}
            return "IDENTITY_ENDPOINT", env["IDENTITY_ENDPOINT"], query, headers
        if env.get("MSI_ENDPOINT") and env.get("MSI_SECRET"):
            query["api-version"] = "2017-09-01"
            if client_id:
                query["clientid"] = client_id
            register_secret(env["MSI_SECRET"])
            return "MSI_ENDPOINT", env["MSI_ENDPOINT"], query, {"secret": env["MSI_SECRET"]}
        query["api-version"] = "2018-02-01"
        if client_id:
            query["client_id"] = client_id
        return "the instance metadata service", self._cfg.imds_url, query, {"Metadata": "true"}

    def token(self) -> str:
        if self._token:
            return self._token
        which, url, query, headers = self._endpoint()
        full = url + ("&" if "?" in url else "?") + urllib.parse.urlencode(query)
        data = _get_json(
            _DIRECT,
            full,
            headers,
            what=f"getting a managed identity token from {which}",
            retry_statuses=_TOKEN_RETRY,
            tries=self._cfg.secrets_tries,
            retry_base=self._cfg.retry_base,
        )
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise CredentialError(f"the managed identity token from {which} has no access_token")
        register_secret(token)
        self._token = token
        return token


def vault_secret(cfg: Config, identity: ManagedIdentity, name: str) -> str:
    url = (
        f"{cfg.vault_url}/secrets/{urllib.parse.quote(name, safe='')}"
        f"?api-version={VAULT_API_VERSION}"
    )
    where = f"Key Vault secret {name!r} in {cfg.vault_url}"
    data = _get_json(
        urllib.request.build_opener(),
        url,
        {"Authorization": "Bearer " + identity.token()},
        what=f"reading {where}",
        retry_statuses=_VAULT_RETRY,
        tries=cfg.secrets_tries,
        retry_base=cfg.retry_base,
    )
    value = data.get("value")
    if not isinstance(value, str) or not value:
        raise CredentialError(f"{where} has no value")
    register_secret(value)
    return value


def read_secrets_file(path: str) -> Dict[str, str]:
    """KEY=VALUE lines ('#' comments, blank lines); the file must be private to its owner (the
    VM tier copies it over SFTP with mode 0600)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise CredentialError(f"WAA_SECRETS_FILE {path}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CredentialError(f"WAA_SECRETS_FILE {path} is not a regular file")
        if st.st_mode & 0o077:
            raise CredentialError(
                f"WAA_SECRETS_FILE {path} is readable or writable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}): refused; it must be mode 0600"
            )
        text = f.read().decode("utf-8", errors="replace")
    values: Dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if not sep or not _ENV_NAME.match(key):
            # The line itself may be a secret: only its number goes into the error.
            raise CredentialError(f"WAA_SECRETS_FILE {path} line {number}: expected KEY=VALUE")
        register_secret(value)
        values[key] = value
    return values


class Credentials:
    """The heartbeat token and the model keys the task gets in its environment."""

    def __init__(self, cfg: Config, env: Mapping[str, str]) -> None:
        self.cfg = cfg
        self.identity = ManagedIdentity(env, cfg)
        self.token = cfg.token
        self.task_env: Dict[str, str] = {}

    def load_token(self) -> None:
        """Before anything is posted: the secrets file, then the token's Key Vault secret."""
        register_secret(self.token)
        if self.cfg.secrets_file:
            values = read_secrets_file(self.cfg.secrets_file)
            file_token = values.pop("WAA_HEARTBEAT_TOKEN", "")
            self.token = self.token or file_token
            self.task_env.update({k: v for k, v in values.items() if k not in _CHILD_HIDDEN})
        if self.cfg.heartbeat_token_secret and not self.token:
            self.token = vault_secret(self.cfg, self.identity, self.cfg.heartbeat_token_secret)
        if not self.token:
            raise CredentialError(
                f"WAA_SECRETS_FILE {self.cfg.secrets_file} has no WAA_HEARTBEAT_TOKEN"
            )

    def load_model_keys(self) -> None:
        for env_name, secret_name in self.cfg.secret_env.items():
            self.task_env[env_name] = vault_secret(self.cfg, self.identity, secret_name)
        if self.cfg.secret_env:
            log.info(
                "read %d model credential(s) from Key Vault: %s",
                len(self.cfg.secret_env),
                ", ".join(self.cfg.secret_env),
            )


# --- Processes -------------------------------------------------------------------------------


# The setup and the tasks (agent code) have no business with the control plane's token, nor with
# what lets this process get managed-identity tokens (App Service / Azure ML identity endpoint
# secrets), nor with where the secrets file is. The task gets the model keys it needs (from Key
# Vault or the secrets file) added to its environment; the setup gets none of them.
_CHILD_HIDDEN = (
    "WAA_HEARTBEAT_TOKEN",
    "WAA_SECRETS_FILE",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


def _child_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_HIDDEN}
    env.update(extra or {})
    return env


def _start(
    argv: Sequence[str],
    log_path: str,
    cwd: Optional[str],
    extra_env: Optional[Mapping[str, str]] = None,
) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        # Own session, so the whole tree (e.g. the VM the setup starts) can be stopped at once.
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=_child_env(extra_env),
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


def result_path(
    cfg: Config, task_dir: str, domain: str, task_id: str, trial_id: Optional[str] = None
) -> str:
    """Where WAA's run.py writes the task's folder: `example_result_dir` in its `test()` is
    os.path.join(result_dir, action_space, observation_type, model, trial_id, domain,
    example_id), and lib_run_single.py writes result.txt there (see /work/shared/DESIGN.md,
    "WAA's launch contract"). `task_dir` is the --result_dir this runner passed; `trial_id` is
    the item's trial suffix, else WAA_TRIAL_ID."""
    return os.path.join(
        task_dir,
        cfg.action_space,
        cfg.observation_type,
        cfg.model,
        trial_id if trial_id is not None else cfg.trial_id,
        domain,
        task_id,
    )


def item_dir_name(item: str) -> str:
    """The folder (and JSON file) name of one WAA_TASK_IDS item; `<name>#<k>` for a trial."""
    task_id, trial = split_item(item)
    return safe_name(task_id) + (f"#{trial}" if trial is not None else "")


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


def run_task(
    cfg: Config,
    item: str,
    domain: str,
    tasks_dir: str,
    task_env: Optional[Mapping[str, str]] = None,
) -> Tuple[Dict[str, object], str]:
    """Run one WAA_TASK_IDS item; returns its task_result and its WAA result folder."""
    task_id, trial = split_item(item)
    trial_id = trial if trial is not None else cfg.trial_id
    task_dir = os.path.join(tasks_dir, item_dir_name(item))
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
        "trial_id": trial_id,
    }
    argv = render(cfg.task_command, values)
    log_path = os.path.join(task_dir, "task.log")
    started = time.monotonic()
    status, reason = "failed", ""
    try:
        proc = _start(argv, log_path, cfg.task_cwd, task_env)
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
    example_dir = result_path(cfg, task_dir, domain, task_id, trial_id)
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
    reason = mask(reason)  # the token, model keys: whatever the task printed
    result = {
        "task_id": item,
        "status": status,
        "score": score if score is not None else 0.0,
        "reason": reason[:_REASON_LIMIT],
        "duration_seconds": duration,
    }
    return result, example_dir


def _write_json(path: str, data: object) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


# --- The golden image ------------------------------------------------------------------------


class CopyProgress:
    """What the heartbeats carry while (and after) the golden image is copied."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.copied_bytes = 0
        self.total_bytes = 0
        self.files = 0
        self._started = time.monotonic()
        self._seconds: Optional[float] = None

    def start(self, total_bytes: int, files: int) -> None:
        with self._lock:
            self.total_bytes, self.files = total_bytes, files
            self._started = time.monotonic()

    def add(self, n: int) -> None:
        with self._lock:
            self.copied_bytes += n

    def finish(self) -> None:
        with self._lock:
            self._seconds = time.monotonic() - self._started

    @property
    def done(self) -> bool:
        return self._seconds is not None

    def snapshot(self) -> Dict[str, object]:
        with self._lock:
            seconds = self._seconds
            if seconds is None:
                seconds = time.monotonic() - self._started
            return {
                "copied_bytes": self.copied_bytes,
                "total_bytes": self.total_bytes,
                "seconds": round(seconds, 3),
                "done": self._seconds is not None,
            }


class StorageError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


_COPY_CHUNK = 4 * 1024 * 1024  # bounded buffer: the image is ~30 GB


def _make_removable(path: str) -> None:
    """Owner rwx on every folder under `path`, so leftovers with read-only folders (a copy of a
    read-only mount keeps its modes) can be removed without root."""
    for root, _dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(root, stat.S_IMODE(os.lstat(root).st_mode) | stat.S_IRWXU)


def clear_folder(path: str) -> int:
    """Remove everything inside `path` (kept itself: it may be a mount point or WAA's symlink to
    the real folder). Returns the number of entries removed."""
    removed = 0
    for name in os.listdir(path):
        entry = os.path.join(path, name)
        if os.path.isdir(entry) and not os.path.islink(entry):
            _make_removable(entry)
            shutil.rmtree(entry)
        else:
            os.unlink(entry)
        removed += 1
    return removed


def copy_storage(
    source: str,
    dest: str,
    progress: CopyProgress,
    rate: float = 0.0,
    on_start: Optional[Callable[[], None]] = None,
) -> Tuple[int, int, int]:
    """Copy the read-only golden image folder `source` to `dest`, replacing whatever `dest`
    holds. WAA's own Azure entry (scripts/azure_files/run_entry.py of microsoft/
    WindowsAgentArena, read in the fork amittal2001/attacking-vlm-agents) does the same with
    `cp -r <mounted storage>/* /tmp/storage_tmp` behind a /storage symlink, timed, before
    /entry_setup.sh. Here: streamed through a bounded buffer, file modes and times kept, the
    source only ever read. Returns (files, bytes, leftover entries removed)."""
    if not os.path.isdir(source):
        raise StorageError(
            f"the golden image folder WAA_STORAGE_SOURCE={source} does not exist or is not a "
            "folder (the prepared WAA storage must be mounted there)",
            EXIT_CONFIG,
        )
    src_real, dst_real = os.path.realpath(source), os.path.realpath(dest)
    if (
        src_real == dst_real
        or dst_real.startswith(src_real.rstrip(os.sep) + os.sep)
        or src_real.startswith(dst_real.rstrip(os.sep) + os.sep)
    ):
        raise StorageError(
            f"WAA_STORAGE_DIR={dest} and WAA_STORAGE_SOURCE={source} overlap: the source is "
            "never written to",
            EXIT_CONFIG,
        )
    dirs: List[Tuple[str, os.stat_result]] = []
    files: List[Tuple[str, os.stat_result]] = []
    links: List[str] = []
    try:
        for root, dirnames, filenames in os.walk(source):
            rel_root = os.path.relpath(root, source)
            for name in sorted(dirnames):
                rel = os.path.normpath(os.path.join(rel_root, name))
                full = os.path.join(source, rel)
                if os.path.islink(full):
                    links.append(rel)
                else:
                    dirs.append((rel, os.lstat(full)))
            for name in sorted(filenames):
                rel = os.path.normpath(os.path.join(rel_root, name))
                st = os.lstat(os.path.join(source, rel))
                if stat.S_ISLNK(st.st_mode):
                    links.append(rel)
                elif stat.S_ISREG(st.st_mode):
                    files.append((rel, st))
    except OSError as err:
        raise StorageError(
            f"cannot read the golden image folder {source}: {err}", EXIT_CONFIG
        ) from err
    if not files:
        raise StorageError(
            f"the golden image folder WAA_STORAGE_SOURCE={source} is empty (no files): the "
            "prepared WAA storage is missing",
            EXIT_CONFIG,
        )
    total = sum(st.st_size for _rel, st in files)
    progress.start(total, len(files))
    if on_start is not None:
        on_start()
    try:
        os.makedirs(dest, exist_ok=True)
        removed = clear_folder(dest)
        if removed:
            log.info("removed %d leftover entr(ies) from %s", removed, dest)
        vfs = os.statvfs(dest)
        free = vfs.f_bavail * vfs.f_frsize
        if free < total:  # say so now, not with ENOSPC after copying for minutes
            raise StorageError(
                f"{dest} has {free} bytes free; the golden image from {source} needs {total}",
                EXIT_SETUP_FAILED,
            )
        for rel, _st in dirs:
            os.makedirs(os.path.join(dest, rel), exist_ok=True)
        for rel in links:
            os.symlink(os.readlink(os.path.join(source, rel)), os.path.join(dest, rel))
        chunk = _COPY_CHUNK if not rate else int(min(_COPY_CHUNK, max(4096, rate / 20)))
        buf = bytearray(chunk)
        view = memoryview(buf)
        started = time.monotonic()
        copied = 0
        for rel, st in files:
            target = os.path.join(dest, rel)
            with open(os.path.join(source, rel), "rb") as fin, open(target, "xb") as fout:
                while True:
                    n = fin.readinto(buf)
                    if not n:
                        break
                    fout.write(view[:n])
                    progress.add(n)
                    copied += n
                    if rate:  # throttled copy: never faster than `rate` bytes/s
                        ahead = copied / rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
            os.chmod(target, stat.S_IMODE(st.st_mode))
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        for rel, st in reversed(dirs):  # deepest first: a read-only folder is closed last
            os.chmod(os.path.join(dest, rel), stat.S_IMODE(st.st_mode))
    except OSError as err:
        raise StorageError(
            f"copying the golden image from {source} to {dest} failed: {err}", EXIT_SETUP_FAILED
        ) from err
    progress.finish()
    return len(files), total, removed


# --- Artifacts -------------------------------------------------------------------------------

MAX_ARTIFACT_FILES = 1000  # CONTRACT.md: <= 1000 files, each path <= 512 characters
MAX_ARTIFACT_PATH = 512


def list_artifacts(folder: str) -> Tuple[List[Dict[str, object]], int]:
    """The regular files under `folder` as relative POSIX paths with sizes (symlinks skipped),
    at most MAX_ARTIFACT_FILES of them; and how many were left out."""
    found: List[Dict[str, object]] = []
    if not os.path.isdir(folder) or os.path.islink(folder):
        return found, 0
    left_out = 0
    for root, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(root, d)))
        for name in sorted(filenames):
            full = os.path.join(root, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            if len(rel) > MAX_ARTIFACT_PATH:
                left_out += 1
                continue
            found.append({"path": rel, "size": st.st_size})
    found.sort(key=lambda entry: str(entry["path"]))
    left_out += max(0, len(found) - MAX_ARTIFACT_FILES)
    return found[:MAX_ARTIFACT_FILES], left_out


def _backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter (spreads the retries of many runners)."""
    return min(cap, base * (2 ** min(attempt - 1, 30))) * random.uniform(0.5, 1.0)


class ArtifactUploader:
    """Uploads each task's WAA folder after its task_result was delivered, in a thread of its
    own: tasks never wait for uploads, heartbeats never wait for anything.

    Per task: POST kind "artifact_urls" (synchronous: the answer carries one SAS URL per file;
    bounded retries), PUT each file to its URL as a block blob (Put Blob: `x-ms-blob-type:
    BlockBlob` and Content-Length, learn.microsoft.com/rest/api/storageservices/put-blob), each
    retried with backoff, then post "artifacts_uploaded" with what went up and what failed.
    A 409 (no artifact storage configured) or any other refusal skips uploads for the job.
    SAS URLs are never logged. Nothing here changes a task's outcome: the score was sent first.
    """

    def __init__(self, cfg: Config, reporter: Reporter) -> None:
        self._cfg = cfg
        self._reporter = reporter
        self._jobs: queue.Queue[Optional[Tuple[str, str, Ticket]]] = queue.Queue()
        self._abandon = threading.Event()
        self._closing_since: Optional[float] = None
        self.disabled = not cfg.artifacts
        self.uploaded = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._loop, name="artifacts", daemon=True)
        self._started = False

    def submit(self, task_id: str, folder: str, ticket: Ticket) -> None:
        if self.disabled:
            return
        if not self._started:
            self._started = True
            self._thread.start()
        self._jobs.put((task_id, folder, ticket))

    def close(self, timeout: float) -> None:
        """Finish the queued uploads for at most `timeout` s, then abandon the rest."""
        if not self._started:
            return
        self._closing_since = time.monotonic()
        self._jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("artifact uploads still running after %.0f s: abandoned", timeout)
            self._abandon.set()
            self._thread.join(5)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._abandon.is_set():
                return
            try:
                self._upload_task(*job)
            except Exception:  # an upload bug must not end the uploads of the next tasks
                log.exception("uploading the artifacts of %s failed", job[0])

    def _upload_task(self, task_id: str, folder: str, ticket: Ticket) -> None:
        # CONTRACT.md: artifact_urls comes after the task's task_result was sent. Once the run
        # is over, waiting for an unreachable control plane is bounded like the final flush.
        while not ticket.wait(0.5):
            closing = self._closing_since
            if self._abandon.is_set() or (
                closing is not None and time.monotonic() - closing > self._cfg.final_flush
            ):
                log.warning("task %s: its result was not delivered: no artifact upload", task_id)
                return
        if not ticket.ok or self.disabled:
            return
        files, left_out = list_artifacts(folder)
        if left_out:
            log.warning(
                "task %s: %d file(s) beyond the first %d (or with paths over %d characters) "
                "are not uploaded",
                task_id,
                left_out,
                MAX_ARTIFACT_FILES,
                MAX_ARTIFACT_PATH,
            )
        if not files:
            return
        answer = self._request_urls(task_id, files)
        if answer is None:
            return
        urls = answer.get("urls")
        urls = urls if isinstance(urls, dict) else {}
        uploaded: List[Dict[str, object]] = []
        failed: List[str] = []
        for entry in files:
            path = str(entry["path"])
            url = urls.get(path)
            if self._abandon.is_set():
                failed.append(path)
            elif isinstance(url, str) and url.startswith(("http://", "https://")):
                if self._put(task_id, os.path.join(folder, *path.split("/")), path, url):
                    uploaded.append(entry)
                else:
                    failed.append(path)
            else:
                log.warning("task %s: no upload URL for %s", task_id, path)
                failed.append(path)
        self.uploaded += len(uploaded)
        self.failed += len(failed)
        self._reporter.artifacts_uploaded(task_id, uploaded, failed)
        prefix = answer.get("prefix")
        log.info(
            "task %s: uploaded %d artifact file(s), %d byte(s)%s; %d failed",
            task_id,
            len(uploaded),
            sum(int(str(e["size"])) for e in uploaded),
            f" to {redacted_url(prefix)}" if isinstance(prefix, str) else "",
            len(failed),
        )

    def _request_urls(
        self, task_id: str, files: List[Dict[str, object]]
    ) -> Optional[Dict[str, object]]:
        message = self._reporter.message(
            "artifact_urls", artifacts={"task_id": task_id, "files": files}
        )
        body = json.dumps(message).encode()
        last = ""
        for attempt in range(1, self._cfg.artifact_tries + 1):
            if self._abandon.is_set() or self._reporter.sender.disabled:
                return None
            # The sender's one POST; an answer holds a SAS URL per file, so it is read whole.
            status, why, answer = self._reporter.sender._exchange(
                body, read=True, timeout=30, limit=None
            )
            if status is None:
                last = why
            elif status >= 400:
                last = f"HTTP {status}"
                if status < 500 and status not in (408, 429):
                    why = (
                        "artifact storage is not configured"
                        if status == 409
                        else f"the control plane refused the request for upload URLs ({last})"
                    )
                    log.warning("%s: no artifacts are uploaded for this job", why)
                    self.disabled = True
                    return None
            else:
                try:
                    data = json.loads(answer)
                except ValueError:
                    data = None
                    last = "an answer that is not JSON"
                if isinstance(data, dict) and isinstance(data.get("urls"), dict):
                    return data
                if data is not None:
                    last = "an answer without upload URLs"
            if attempt < self._cfg.artifact_tries:
                delay = _backoff(attempt, self._cfg.retry_base, self._cfg.retry_max)
                self._abandon.wait(delay)
        log.warning("task %s: no upload URLs (%s): its artifacts are not uploaded", task_id, last)
        return None

    def _put(self, task_id: str, full: str, path: str, url: str) -> bool:
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        last = ""
        for attempt in range(1, self._cfg.artifact_tries + 1):
            try:
                with open(full, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    request = urllib.request.Request(
                        url,
                        data=f if size else b"",  # streamed from the file, never read whole
                        method="PUT",
                        headers={
                            "x-ms-blob-type": "BlockBlob",
                            "Content-Length": str(size),
                            "Content-Type": content_type,
                        },
                    )
                    with urllib.request.urlopen(request, timeout=60) as response:
                        response.read()
                return True
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
                if err.code < 500 and err.code not in (408, 429):
                    break  # e.g. 403: the SAS is refused, it will stay refused
            except (urllib.error.URLError, OSError) as err:
                last = f"{getattr(err, 'reason', err)}"
                if isinstance(err, FileNotFoundError):
                    break
            if attempt < self._cfg.artifact_tries:
                delay = _backoff(attempt, self._cfg.artifact_retry_base, 30.0)
                log.info(
                    "task %s: upload of %s failed (%s); retry in %.1f s", task_id, path, last, delay
                )
                if self._abandon.wait(delay):
                    break
        log.warning("task %s: upload of %s failed (%s)", task_id, path, last)
        return False


# --- The task queue --------------------------------------------------------------------------

# domain/messages.py's TASK_ID_PATTERN (a WAA task id with an optional trial suffix), which a
# next_task answer's task_id must match; tests/shard_runner keeps the two equal.
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(#[0-9])?$")


class Assignment:
    """What one `next_task` ask ended with: a task to run (`item`), or why the runner stops
    asking, with the exit code that says how (and a failure to report when it is not normal)."""

    def __init__(
        self,
        item: Optional[str] = None,
        domain: str = "",
        duplicate: bool = False,
        stop: str = "",
        exit_code: int = EXIT_OK,
        failure: str = "",
        resend: Optional[Dict[str, object]] = None,
    ) -> None:
        self.item = item
        self.domain = domain
        self.duplicate = duplicate
        self.stop = stop
        self.exit_code = exit_code
        self.failure = failure
        # A task this job ran whose result the control plane never got: send it again.
        self.resend = resend


class TaskQueue:
    """The control plane's task queue, seen from the job (WAA_TASK_SOURCE=queue).

    `next()` POSTs kind `next_task` and reads the answer, domain/messages.py's `NextTask`
    inside `{"accepted": true, "kind": "next_task", ...}`: a task id (with its domain, maybe a
    trial suffix, maybe a tail copy) or `exit: true` with a reason. The control plane hands a
    job the same task again while it holds it without a result, so an ask whose answer was lost
    is simply asked again; the runner asks only once the last task's `task_result` was
    delivered (`wait_delivered`), else it would be handed that task again.

    It stops asking on its own when less than WAA_CLAIM_MARGIN_SECONDS of WAA_JOB_TIMEOUT_SECONDS
    (counted from the runner's start) is left: a task it cannot finish would only be released
    again when the job is stopped at its timeout.
    """

    def __init__(
        self,
        cfg: Config,
        reporter: Reporter,
        catalog: Mapping[str, str],
        started: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = cfg
        self._reporter = reporter
        self._catalog = catalog
        self._started = started
        self._clock = clock
        self.asks = 0
        self.handed: List[str] = []
        self.duplicates: List[str] = []
        # The result of each task this job ran, and the tasks whose result was sent again.
        self.results: Dict[str, Dict[str, object]] = {}
        self.resent: List[str] = []

    def ran(self, item: str, result: Dict[str, object]) -> None:
        self.results[item] = result

    def time_left(self) -> Optional[float]:
        """Seconds left of the job's timeout (None: no timeout given)."""
        if not self._cfg.job_timeout:
            return None
        return self._cfg.job_timeout - (self._clock() - self._started)

    def margin_reached(self) -> bool:
        left = self.time_left()
        return left is not None and left < self._cfg.claim_margin

    def _margin_stop(self) -> Assignment:
        left = self.time_left()
        return Assignment(
            stop=(
                f"{max(0.0, left or 0.0):.0f} s left of the job's {self._cfg.job_timeout:g} s "
                f"timeout, under the claim margin of {self._cfg.claim_margin:g} s"
            )
        )

    def wait_delivered(self, ticket: Ticket, item: str) -> None:
        """Until the task's result is delivered or dropped (the sender retries it with backoff),
        or the claim margin is reached."""
        while not ticket.wait(0.5):
            if self.margin_reached():
                return
        if not ticket.ok:
            log.warning("the result of task %s was not delivered", item)

    def next(self) -> Assignment:
        if self.margin_reached():
            return self._margin_stop()
        self.asks += 1
        reply = self._reporter.sender.ask(
            self._reporter.message("next_task"),
            tries=self._cfg.next_task_tries,
            stop=self.margin_reached,
        )
        if reply.outcome == Reply.STOPPED:
            return self._margin_stop()
        if reply.outcome == Reply.REFUSED and reply.status == 409:
            why = (
                f"configuration error: the control plane answers next_task with {reply.why}; "
                f"job {self._cfg.job_name} is not a queue job, yet it runs with "
                "WAA_TASK_SOURCE=queue (a static shard's job gets its WAA_TASK_IDS)"
            )
            return Assignment(stop=why, exit_code=EXIT_CONFIG, failure=why)
        if reply.outcome == Reply.AUTH:
            return Assignment(
                stop=f"next_task: the control plane refuses this job's token ({reply.why})",
                exit_code=EXIT_CONFIG,
            )
        if reply.outcome == Reply.REFUSED:
            return Assignment(
                stop=f"next_task: {reply.why}",
                exit_code=EXIT_INTERNAL,
                failure=f"next_task was refused: {reply.why}",
            )
        if reply.outcome == Reply.GAVE_UP:
            return Assignment(
                stop=f"next_task: no answer after {self._cfg.next_task_tries} tries",
                exit_code=EXIT_INTERNAL,
                failure=(
                    f"next_task: no answer after {self._cfg.next_task_tries} tries "
                    f"(last: {reply.why})"
                ),
            )
        return self._read(reply.data)

    def _read(self, answer: Mapping[str, object]) -> Assignment:
        reason = answer.get("reason")
        reason = mask(reason[:_REASON_LIMIT]) if isinstance(reason, str) else ""
        if answer.get("exit") is True:
            return Assignment(stop=f"the control plane says exit: {reason or 'no reason given'}")
        item = answer.get("task_id")
        if not isinstance(item, str) or not _TASK_ID.match(item):
            shown = mask(repr(item)[:200])
            return Assignment(
                stop="next_task: an answer without a valid task id",
                exit_code=EXIT_INTERNAL,
                failure=f"next_task answered neither exit nor a valid task id (task_id={shown})",
            )
        if item in self.handed:
            # Its result was sent (or dropped): running it again would report it twice.
            if answer.get("duplicate") is True:
                # A second copy of a task that failed here and now runs long elsewhere: not
                # this job's to run again; ending normally gives the copy claim back.
                return Assignment(stop=f"next_task: handed task {item} again, as a copy")
            if item in self.results and item not in self.resent:
                # The control plane hands a job the task it holds without a result: this job's
                # result was dropped on the way (every retry failed). Send it once more rather
                # than run the task twice or fail the job, which would lose the run.
                self.resent.append(item)
                return Assignment(item=item, resend=self.results[item])
            return Assignment(
                stop=f"next_task: handed task {item} again",
                exit_code=EXIT_INTERNAL,
                failure=f"next_task handed task {item} again after this job ran it",
            )
        self.handed.append(item)
        domain = answer.get("domain")
        if isinstance(domain, str) and domain and not _SAFE_NAME.match(domain):
            log.warning("task %s: the answer's domain %r is not a folder name", item, domain)
            domain = ""
        if not isinstance(domain, str) or not domain:
            domain = self._catalog.get(split_item(item)[0], "unknown")
        duplicate = answer.get("duplicate") is True
        if duplicate:
            self.duplicates.append(item)
        return Assignment(item=item, domain=domain, duplicate=duplicate)


# --- Main ------------------------------------------------------------------------------------


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, _frame: object) -> None:
    raise _Terminated(f"signal {signum}")


def run(
    cfg: Config, env: Optional[Mapping[str, str]] = None, started: Optional[float] = None
) -> int:
    """`started`: when the job's clock started (time.monotonic()), for the claim margin."""
    started = time.monotonic() if started is None else started
    credentials = Credentials(cfg, os.environ if env is None else env)
    credential_problem = ""
    try:
        credentials.load_token()
    except _Terminated:
        log.error("terminated while reading the heartbeat token")
        return EXIT_TERMINATED
    except CredentialError as err:
        credential_problem = mask(str(err))
        if not credentials.token:
            # No token, no report: the control plane sees a job that never started.
            log.error("no heartbeat token: %s", credential_problem)
            return EXIT_CONFIG
    sender = Sender(
        cfg.heartbeat_url,
        credentials.token,
        retry_base=cfg.retry_base,
        retry_max=cfg.retry_max,
        auth_retries=cfg.auth_retries,
    )
    reporter = Reporter(cfg.job_name, sender)
    heartbeat = Heartbeat(reporter, cfg.heartbeat_interval)
    uploader = ArtifactUploader(cfg, reporter)
    setup: Optional[subprocess.Popen] = None
    exit_code = EXIT_INTERNAL
    flush = cfg.final_flush
    drain = cfg.artifact_drain
    summary_extra: Dict[str, object] = {}
    try:
        if credential_problem:
            log.error("credentials: %s", credential_problem)
            reporter.failure(FAILURE_CREDENTIALS, f"credentials: {credential_problem}")
            exit_code = EXIT_CONFIG
            return exit_code
        if not os.path.exists(cfg.kvm_device) or not os.access(cfg.kvm_device, os.R_OK | os.W_OK):
            message = f"{cfg.kvm_device} is missing or not usable: no nested virtualization"
            log.error(message)
            reporter.failure("no_nested_virtualization", message, permanent=True)
            exit_code = EXIT_NO_KVM
            return exit_code
        heartbeat.start()
        try:
            credentials.load_model_keys()
        except CredentialError as err:
            message = mask(str(err))
            log.error("model credentials: %s", message)
            reporter.failure(FAILURE_CREDENTIALS, f"model credentials: {message}")
            exit_code = EXIT_CONFIG
            return exit_code
        os.makedirs(cfg.output_dir, exist_ok=True)
        tasks_dir = os.path.join(cfg.output_dir, "tasks")
        os.makedirs(tasks_dir, exist_ok=True)

        if cfg.storage_source:
            progress = CopyProgress()
            reporter.storage = progress
            log.info("copying the golden image %s to %s", cfg.storage_source, cfg.storage_dir)
            try:
                files, size, _removed = copy_storage(
                    cfg.storage_source,
                    cfg.storage_dir,
                    progress,
                    cfg.storage_rate,
                    # The copy starts now: say so (with its size) without waiting for the beat.
                    on_start=reporter.heartbeat,
                )
            except StorageError as err:
                log.error("golden image: %s", err)
                code = FAILURE_STORAGE if err.exit_code == EXIT_CONFIG else FAILURE_SETUP
                reporter.failure(code, str(err))
                exit_code = err.exit_code
                return exit_code
            took = progress.snapshot()["seconds"]
            log.info(
                "copied the golden image: %d file(s), %d bytes (%.2f GiB) in %.1f s (%.1f MB/s)",
                files,
                size,
                size / 2**30,
                took,
                size / 1e6 / max(float(took), 1e-6),  # type: ignore[arg-type]
            )
            summary_extra["storage"] = {**progress.snapshot(), "files": files}
            reporter.heartbeat()  # done: the control plane learns the copy's time at once

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
                detail = mask(f"{why}; setup output: {setup_log}" if setup_log else why)
                code = "setup_failed" if why.startswith("setup exited") else "waa_not_ready"
                log.error("WAA is not ready: %s", why)
                reporter.failure(code, detail)
                exit_code = EXIT_SETUP_FAILED if code == "setup_failed" else EXIT_NOT_READY
                return exit_code
            log.info("the WAA server is ready")

        catalog = load_catalog(cfg.task_catalog)
        results: List[Dict[str, object]] = []

        def run_one(item: str, domain: str) -> Ticket:
            result, folder = run_task(cfg, item, domain, tasks_dir, credentials.task_env)
            results.append(result)
            _write_json(os.path.join(tasks_dir, item_dir_name(item) + ".json"), result)
            ticket = reporter.task_result(result)
            uploader.submit(item, folder, ticket)
            log.info("task %s %s %s", item, result["status"], result["reason"] or "")
            return ticket

        if cfg.queue:
            tasks = TaskQueue(cfg, reporter, catalog, started)
            while True:
                assignment = tasks.next()
                if assignment.item is None:
                    break
                if assignment.resend is not None:
                    log.warning("task %s: handed again; sending its result again", assignment.item)
                    ticket = reporter.task_result(assignment.resend)
                    tasks.wait_delivered(ticket, assignment.item)
                    continue
                log.info(
                    "task %d (from the queue%s): %s in %s",
                    len(results) + 1,
                    ", a second copy of a task another job runs" if assignment.duplicate else "",
                    assignment.item,
                    assignment.domain,
                )
                ticket = run_one(assignment.item, assignment.domain)
                tasks.ran(assignment.item, results[-1])
                tasks.wait_delivered(ticket, assignment.item)
            # Each task's failure is in its task_result: the job itself ends well (0) unless
            # asking failed; a failed job would count against its worker slot.
            exit_code = assignment.exit_code
            if exit_code == EXIT_OK:
                log.info("stopped asking for tasks after %d: %s", len(results), assignment.stop)
            else:
                log.error("stopped asking for tasks after %d: %s", len(results), assignment.stop)
            if assignment.failure:
                reporter.failure("internal", assignment.failure)
            summary_extra["queue"] = {
                "asks": tasks.asks,
                "stopped": assignment.stop,
                "duplicates": tasks.duplicates,
                "resent": tasks.resent,
            }
        else:
            for index, item in enumerate(cfg.task_ids, 1):
                log.info("task %d/%d: %s", index, len(cfg.task_ids), item)
                run_one(item, catalog.get(split_item(item)[0], "unknown"))
        failed = [r for r in results if r["status"] != "completed"]
        if not cfg.queue:
            exit_code = EXIT_TASKS_FAILED if failed else EXIT_OK
        _write_json(
            os.path.join(cfg.output_dir, "summary.json"),
            {
                "job_name": cfg.job_name,
                "finished_at": now_iso(),
                "exit_code": exit_code,
                "task_source": "queue" if cfg.queue else "static",
                "tasks": len(results),
                "completed": len(results) - len(failed),
                "failed": len(failed),
                "mean_score": (
                    sum(float(r["score"]) for r in results) / len(results)  # type: ignore[arg-type]
                    if results
                    else 0.0
                ),
                "results": results,
                **summary_extra,
            },
        )
        return exit_code
    except _Terminated:
        log.error("terminated: stopping")
        exit_code = EXIT_TERMINATED
        flush = min(flush, 10.0)  # `timeout --kill-after` or `docker stop` is about to kill us
        drain = min(drain, 5.0)
        return exit_code
    except Exception as err:  # last resort: report instead of dying silently
        log.exception("internal error")
        reporter.failure("internal", mask(f"{type(err).__name__}: {err}"))
        exit_code = EXIT_INTERNAL
        return exit_code
    finally:
        # Already shutting down: a second SIGTERM must not cut the final report short.
        # (ValueError: not the main thread, where no handler was installed either.)
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if setup is not None:
            _stop_group(setup)
        # The last task's uploads finish (bounded) before `finished` ends the attempt.
        uploader.close(drain)
        heartbeat.stop()
        reporter.finished(exit_code)
        sender.close(flush)


def main(argv: Optional[Sequence[str]] = None) -> int:
    started = time.monotonic()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MaskingFormatter("%(asctime)s shard_runner %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        cfg = Config(os.environ)
    except ConfigError as err:
        log.error("configuration error: %s", err)
        return EXIT_CONFIG
    signal.signal(signal.SIGTERM, _on_sigterm)
    if cfg.queue:
        log.info(
            "job %s: tasks from the control plane's queue (%s, claim margin %g s)",
            cfg.job_name,
            f"job timeout {cfg.job_timeout:g} s"
            if cfg.job_timeout
            else "no WAA_JOB_TIMEOUT_SECONDS: asks until told to exit",
            cfg.claim_margin,
        )
    else:
        log.info("job %s: %d task(s)", cfg.job_name, len(cfg.task_ids))
    return run(cfg, started=started)


if __name__ == "__main__":
    sys.exit(main())
