"""The job state machine: a simulated job's life from submission to its end, step by step.

queued → (node allocated) preparing → (provisioned, image pulled) container created →
(booted) running: heartbeats and one result per task → finished → completed; or it ends early:
a run fault's hook takes over a step (`faults.RunFault`), the job's own timeout fires, the node
is evicted, or someone cancels it. Each step runs under the cloud's lock and returns the
deliveries it caused; `at` posts them once the lock is released.

A static job runs its `spec.task_ids`. A queue job (`spec.queue`) has none: after booting and
after each task's result it asks the app for its next task (`next_task`, answered with a
`domain.messages.NextTask`), and runs what it is told (a task, drawn when handed out:
`jobs.draw_task`) or finishes (exit), as the shard runner does in queue mode
(shard_runner/runner.py `TaskQueue`). The ask is built under the lock and posted after it, like
every delivery; its answer is read under the lock again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.compute import runner_exit_codes
from adapters.compute.simulated.delivery import Courier, Delivery
from adapters.compute.simulated.jobs import Job, Node, draw_task
from adapters.compute.simulated.timings import (
    EXIT_SECONDS,
    FINISH_SECONDS,
    MESSAGE_RETRY_DELAYS,
)
from domain.clock import CallHandle, Scheduler
from domain.jobs import FailureKind, JobSpec, JobState
from domain.messages import (
    AML_RUN_COMPLETED,
    MessageKind,
    NextTask,
    RunnerFailure,
    RunnerFailureCode,
    TaskResult,
    TaskRunStatus,
)

log = logging.getLogger("adapters.compute.simulated")

Step = Callable[[Job], list[Delivery]]


class NodePool:
    """Batch-like nodes that stay after a job completed, until their pool's idle time passes."""

    def __init__(self, idle_seconds: Callable[[JobSpec], float]) -> None:
        self._idle: list[Node] = []
        self._idle_seconds = idle_seconds

    @staticmethod
    def key(spec: JobSpec) -> tuple[str, bool, str]:
        return (spec.vm_size, spec.spot, spec.image)

    def new_node(self, spec: JobSpec) -> Node:
        return Node(pool=self.key(spec), busy=True, idle_seconds=self._idle_seconds(spec))

    def take(self, spec: JobSpec, now: datetime) -> Node | None:
        key = self.key(spec)
        # Nodes idle for longer than the pool's scale-down time are gone.
        self._idle = [
            n
            for n in self._idle
            if n.idle_since is not None and (now - n.idle_since).total_seconds() < n.idle_seconds
        ]
        for node in self._idle:
            if node.pool == key:
                self._idle.remove(node)
                node.busy = True
                node.idle_since = None
                return node
        return None

    def release(self, node: Node, now: datetime) -> None:
        node.busy = False
        node.idle_since = now
        self._idle.append(node)


@dataclass
class JobLifecycle:
    scheduler: Scheduler
    lock: threading.RLock
    courier: Courier
    nodes: NodePool
    seed: int
    heartbeat_interval_seconds: float

    def now(self) -> datetime:
        return self.scheduler.now()

    def at(self, delay_s: float, job: Job, step: Step) -> CallHandle:
        """Run `step` on the job `delay_s` from now, unless the job has ended by then."""
        when = self.now() + timedelta(seconds=delay_s)

        def fire() -> None:
            with self.lock:
                if job.ended:
                    return
                deliveries = step(job)
            self.courier.send(job, deliveries)

        return self.scheduler.call_at(when, fire)

    # ---- the steps ---------------------------------------------------------------------------

    def submitted(self, job: Job) -> list[Delivery]:
        job.raw = job.behaviour.status(JobState.QUEUED)
        out = self.courier.event(job, job.raw)
        job.timers["timeout"] = self.at(job.spec.timeout_seconds, job, self._on_timeout)
        job.timers["step"] = self.at(job.plan.queue_s, job, self._on_allocate)
        return out

    def _on_allocate(self, job: Job) -> list[Delivery]:
        now = self.now()
        plan = job.plan
        tier = job.behaviour
        if tier.image_on_machine:
            job.node_allocated_at = now
            return self._container_created(job)
        fresh = plan.run_fault is not None and plan.run_fault.needs_fresh_node
        if tier.reuses_nodes and not fresh:
            node = self.nodes.take(job.spec, now)
            if node is not None:
                job.node = node
                job.node_allocated_at = now
                return self._container_created(job)
        if tier.reuses_nodes:
            job.node = self.nodes.new_node(job.spec)
        job.node_allocated_at = now
        out = self.set_state(job, JobState.PREPARING)
        job.timers["step"] = self.at(plan.provision_s, job, self._on_provisioned)
        return out

    def _on_provisioned(self, job: Job) -> list[Delivery]:
        fault = job.plan.run_fault
        taken = fault.on_provisioned(self, job) if fault is not None else None
        if taken is not None:
            return taken
        job.timers["step"] = self.at(job.plan.pull_s, job, self._container_created)
        return []

    def _container_created(self, job: Job) -> list[Delivery]:
        fault = job.plan.run_fault
        taken = fault.on_container_created(self, job) if fault is not None else None
        if taken is not None:
            return taken
        out = self.set_state(job, JobState.RUNNING)
        job.runner_started_at = self.now()
        job.timers["step"] = self.at(job.plan.boot_s, job, self._on_booted)
        return out

    def _on_booted(self, job: Job) -> list[Delivery]:
        job.started_at = self.now()
        fault = job.plan.run_fault
        taken = fault.on_booted(self, job) if fault is not None else None
        if taken is not None:
            return taken
        out = self.courier.message(job, MessageKind.HEARTBEAT)
        job.timers["heartbeat"] = self.at(self.heartbeat_interval_seconds, job, self._on_heartbeat)
        out += self._start_task(job)
        return out

    def _on_heartbeat(self, job: Job) -> list[Delivery]:
        job.timers["heartbeat"] = self.at(self.heartbeat_interval_seconds, job, self._on_heartbeat)
        return self.courier.message(job, MessageKind.HEARTBEAT)

    def _start_task(self, job: Job) -> list[Delivery]:
        if job.spec.queue:
            return self._ask(job, 0)
        if job.next_task >= len(job.plan.task_seconds):
            job.timers["step"] = self.at(FINISH_SECONDS, job, self._on_all_done)
            return []
        return self._begin_task(job)

    def _begin_task(self, job: Job) -> list[Delivery]:
        """Task number `job.next_task` (its duration and outcome drawn) starts now, unless the
        run fault takes over."""
        plan = job.plan
        i = job.next_task
        job.task_started_at = self.now()
        fault = plan.run_fault
        taken = fault.before_task(self, job, i) if fault is not None else None
        if taken is not None:
            return taken
        job.timers["step"] = self.at(plan.task_seconds[i], job, self._on_task_done)
        return []

    def _on_task_done(self, job: Job) -> list[Delivery]:
        i = job.next_task
        status, score, reason = job.plan.task_outcomes[i]
        task_id = job.task_id(i)
        result = TaskResult(
            task_id=task_id,
            status=status,
            score=score,
            reason=reason,
            duration_seconds=round(job.plan.task_seconds[i], 3),
        )
        job.tasks_run += 1
        if status is TaskRunStatus.COMPLETED:
            job.tasks_completed += 1
        job.next_task += 1
        if job.task_started_at is not None:
            job.task_spans.append((task_id, job.task_started_at, self.now()))
        job.task_started_at = None
        out = self.courier.message(job, MessageKind.TASK_RESULT, task_result=result)
        out += self.courier.artifacts(job, result)  # after the score, never before
        return out + self._start_task(job)

    # ---- a queue job asks for its next task -------------------------------------------------

    def _ask(self, job: Job, tries: int) -> list[Delivery]:
        """Ask `next_task` (try number `tries`, from 0). A lost ask is asked again after the
        runner's retry delay; a stopped or hung runner asks nothing."""
        if job.silenced or job.hung:
            return []
        if self._claim_margin_reached(job):
            # The runner stops asking near its own deadline and ends normally (runner.py
            # `TaskQueue.margin_reached`): a task it could not finish would only be released
            # when the tier stops it at its timeout.
            job.timers["step"] = self.at(FINISH_SECONDS, job, self._on_all_done)
            return []

        def answered(status: int, body: bytes) -> None:  # without the lock (the courier)
            with self.lock:
                if job.ended:
                    return
                deliveries = self._on_answer(job, tries, status, body)
            self.courier.send(job, deliveries)

        ask = self.courier.ask(job, answered)
        if ask is None:
            return self._ask_again(job, tries, "the ask was lost")
        return [ask]

    def _claim_margin_reached(self, job: Job) -> bool:
        """Less than WAA_CLAIM_MARGIN_SECONDS (default 1800) of the job's WAA_JOB_TIMEOUT_SECONDS
        left, counted from the runner's start (the container's); never without a timeout."""
        env = job.spec.environment
        try:
            timeout = float(env.get("WAA_JOB_TIMEOUT_SECONDS") or 0)
            margin = float(env.get("WAA_CLAIM_MARGIN_SECONDS") or 1800)
        except ValueError:
            return False
        if timeout <= 0 or job.runner_started_at is None:
            return False
        ran = (self.now() - job.runner_started_at).total_seconds()
        return timeout - ran < margin

    def _ask_again(self, job: Job, tries: int, why: str) -> list[Delivery]:
        # The runner retries with the back-off of its messages, then gives up (EXIT_INTERNAL).
        if tries >= len(MESSAGE_RETRY_DELAYS):
            return self._runner_stops(
                job, runner_exit_codes.INTERNAL, f"next_task: no answer after {tries + 1} tries"
            )
        delay = MESSAGE_RETRY_DELAYS[tries]
        log.debug("simulated next_task of job %s: %s; again in %s s", job.spec.job_name, why, delay)
        job.timers["step"] = self.at(delay, job, lambda j: self._ask(j, tries + 1))
        return []

    def _on_answer(self, job: Job, tries: int, status: int, body: bytes) -> list[Delivery]:
        """The app's answer to an ask, read as the shard runner reads it (runner.py
        `Sender.ask` and `TaskQueue.next`): 2xx with a NextTask; 0, 5xx, 408, 429 or an answer
        that is no NextTask are retried; 409 (not a queue job) and 401/403 (the token refused)
        end the runner with its config exit code; any other 4xx with an internal failure."""
        if job.silenced or job.hung:
            return []
        if 200 <= status < 300:
            try:
                data = json.loads(body)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                fields = {k: v for k, v in data.items() if k in NextTask.model_fields}
                answer = NextTask.model_validate(fields)
            except ValueError:
                return self._ask_again(job, tries, f"HTTP {status} without a NextTask")
            return self._told(job, answer)
        if status in (401, 403):
            return self._runner_stops(job, runner_exit_codes.CONFIG, "")
        if status == 409:
            why = "configuration error: the control plane answers next_task with HTTP 409"
            return self._runner_stops(job, runner_exit_codes.CONFIG, why)
        if status == 0 or status >= 500 or status in (408, 429):
            return self._ask_again(job, tries, f"HTTP {status}")
        return self._runner_stops(
            job, runner_exit_codes.INTERNAL, f"next_task was refused: HTTP {status}"
        )

    def _told(self, job: Job, answer: NextTask) -> list[Delivery]:
        if answer.exit:
            job.timers["step"] = self.at(FINISH_SECONDS, job, self._on_all_done)
            return []
        task_id = answer.task_id
        if task_id is None:
            why = "next_task answered neither exit nor a valid task id"
            return self._runner_stops(job, runner_exit_codes.INTERNAL, why)
        if task_id in job.claimed:
            # Its result was sent: the runner never runs a task twice. Handed again as a tail
            # copy it ends normally (giving the copy claim back); otherwise it is a failure.
            if answer.duplicate:
                job.timers["step"] = self.at(FINISH_SECONDS, job, self._on_all_done)
                return []
            why = f"next_task handed task {task_id} again after this job ran it"
            return self._runner_stops(job, runner_exit_codes.INTERNAL, why)
        tf = self.courier.profile.for_tier(job.tier)
        seconds, outcome = draw_task(
            self.seed, job.tier, job.spec.job_name, task_id, answer.domain, tf
        )
        job.claimed.append(task_id)
        job.plan.task_seconds.append(seconds)
        job.plan.task_outcomes.append(outcome)
        return self._begin_task(job)

    def _runner_stops(self, job: Job, exit_code: int, failure: str) -> list[Delivery]:
        """The runner stops asking and exits with `exit_code` (not 0), reporting `failure`
        first when there is one."""
        out: list[Delivery] = []
        if failure:
            report = RunnerFailure(code=RunnerFailureCode.INTERNAL, message=failure)
            out = self.courier.message(job, MessageKind.FAILURE, failure=report)
        self.cancel_timer(job, "heartbeat")
        job.hung = True  # it sends nothing any more

        def exited(j: Job) -> list[Delivery]:
            return self.end(
                j,
                JobState.FAILED,
                f"container exited with code {exit_code}",
                FailureKind.JOB_FAILED,
            )

        job.timers["step"] = self.at(EXIT_SECONDS, job, exited)
        return out

    def _on_all_done(self, job: Job) -> list[Delivery]:
        out = self.courier.message(job, MessageKind.FINISHED, exit_code=runner_exit_codes.OK)
        self.cancel_timer(job, "heartbeat")
        job.timers["step"] = self.at(EXIT_SECONDS, job, self._on_exit)
        return out

    def _on_exit(self, job: Job) -> list[Delivery]:
        return self.end(job, JobState.COMPLETED, "")

    # ---- what can stop a job (the faults' hooks and `SimulatedCloud.inject` call these) -------

    def hang(self, job: Job) -> None:
        """The runner hangs: no message any more, while the tier still says Running."""
        job.fault_at = job.fault_at or self.now()
        job.hung = True
        self.cancel_timer(job, "heartbeat")

    def crash(self, job: Job, code: RunnerFailureCode) -> list[Delivery]:
        job.fault_at = job.fault_at or self.now()
        out: list[Delivery] = []
        if job.started_at is not None:  # a runner that never started cannot report anything
            failure = RunnerFailure(code=code, message=f"shard runner failed: {code.value}")
            out = self.courier.message(job, MessageKind.FAILURE, failure=failure)
        # The runner exits: no heartbeat, no message any more.
        self.hang(job)
        job.timers["step"] = self.at(EXIT_SECONDS, job, self._on_crash_exit)
        return out

    def _on_crash_exit(self, job: Job) -> list[Delivery]:
        return self.end(
            job,
            JobState.FAILED,
            "container exited with code 1",
            FailureKind.JOB_FAILED,
        )

    def evicted(self, job: Job) -> list[Delivery]:
        job.fault_at = job.fault_at or self.now()
        job.node = None
        return self.end(
            job,
            JobState.FAILED,
            "preempted: the low-priority node was evicted",
            FailureKind.TRANSIENT,
        )

    def _on_timeout(self, job: Job) -> list[Delivery]:
        return self.end(
            job,
            JobState.FAILED,
            f"job exceeded its timeout of {job.spec.timeout_seconds} s and was stopped",
            FailureKind.JOB_FAILED,
        )

    # ---- state ------------------------------------------------------------------------------

    def set_state(self, job: Job, state: JobState) -> list[Delivery]:
        """Move the job forward (never back) and tell Event Grid, as the tier would."""
        if state.rank < job.state.rank or state == job.state:
            return []
        job.state = state
        job.raw = job.behaviour.status(state)
        return self.courier.event(job, job.raw)

    def end(
        self,
        job: Job,
        state: JobState,
        detail: str,
        failure_kind: FailureKind | None = None,
    ) -> list[Delivery]:
        if job.ended:
            return []
        now = self.now()
        if state is not JobState.COMPLETED:
            job.silenced = True
        for handle in job.timers.values():
            handle.cancel()
        job.timers.clear()
        job.state = state
        job.detail = detail
        job.failure_kind = failure_kind
        job.ended_at = now
        job.raw = job.behaviour.status(state)
        if job.node is not None and job.behaviour.reuses_nodes and state is JobState.COMPLETED:
            self.nodes.release(job.node, now)
        job.node = None
        out = self.courier.event(job, job.behaviour.statuses[state])
        if state is JobState.COMPLETED:
            out += self.courier.event(job, "Completed", event_type=AML_RUN_COMPLETED)
        return out

    def cancel_timer(self, job: Job, name: str) -> None:
        handle = job.timers.pop(name, None)
        if handle is not None:
            handle.cancel()
