"""How the simulated Azure reaches the app: the runner's messages to the heartbeat endpoint and
Azure ML's Event Grid events to the app's webhook, over HTTP, with the retries both do.

Deliveries are built while the cloud's lock is held and posted after it is released: a post
reaches the app, which may call back into the cloud (status, cancel) from another thread.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from adapters.compute.simulated.artifacts import ArtifactUploader, RequestFn, http_request
from adapters.compute.simulated.faults import EventFault, MessageFault
from adapters.compute.simulated.jobs import Job
from adapters.compute.simulated.profiles import FaultProfile
from adapters.compute.simulated.timings import (
    EVENT_LATENCY_SECONDS,
    EVENT_RETRY_DELAYS,
    MESSAGE_RETRY_DELAYS,
)
from domain.clock import Scheduler
from domain.messages import (
    AML_RUN_STATUS_CHANGED,
    JobMessage,
    MessageKind,
    RunnerFailure,
    TaskResult,
    TaskRunStatus,
)

log = logging.getLogger("adapters.compute.simulated")

PostFn = Callable[[str, dict[str, str], bytes], int]
# What a queue job does with the answer to its `next_task` ask: (status, body); status 0 when
# no answer came (connection refused, timeout).
AnswerFn = Callable[[int, bytes], None]

# The app's Event Grid function for Azure ML job events, as `func start` exposes it.
AML_EVENTS_FUNCTION_NAME = "aml_job_events"
AML_TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/sim"
    "/providers/Microsoft.MachineLearningServices/workspaces/sim"
)
_ID_NAMESPACE = uuid.UUID("6f1c55a2-4d0e-4c59-9a55-1c0d1f9b2a10")


def eventgrid_url_for(base_url: str) -> str:
    return (
        f"{base_url.rstrip('/')}/runtime/webhooks/eventgrid?functionName={AML_EVENTS_FUNCTION_NAME}"
    )


def http_post(url: str, headers: dict[str, str], body: bytes) -> int:
    """POST over HTTP; the answer's status code. Connection errors raise (the caller retries)."""
    # requests comes with azure-core, a runtime dependency; imported late so that importing
    # this module stays cheap for the orchestrations that never post.
    import requests

    return requests.post(url, headers=headers, data=body, timeout=10).status_code


@dataclass
class Delivery:
    kind: Literal["message", "event", "artifacts", "ask"]
    url: str
    headers: dict[str, str]
    body: bytes
    delay_s: float = 0.0
    # kind "ask" (a request whose answer matters): called with the answer, without the lock.
    answer: AnswerFn | None = None


@dataclass
class EventShape:
    """What the network does to one Event Grid event (the profile's draw, then scripted faults)."""

    lost: bool
    copies: int
    extra_delay_s: float


@dataclass
class Courier:
    """Builds the deliveries of a job and posts them, retrying like the runner and Event Grid."""

    scheduler: Scheduler
    profile: FaultProfile
    eventgrid_url: str | None
    post: PostFn
    # Uploads a completed task's artifacts after its result (None: no uploads).
    uploader: ArtifactUploader | None = None
    # Request/response over HTTP, for a queue job's `next_task` asks.
    request: RequestFn = http_request

    def _now(self) -> datetime:
        return self.scheduler.now()

    # ---- building (called with the cloud's lock held) ----------------------------------------

    def message(
        self,
        job: Job,
        kind: MessageKind,
        *,
        task_result: TaskResult | None = None,
        failure: RunnerFailure | None = None,
        exit_code: int | None = None,
    ) -> list[Delivery]:
        """A runner message to the heartbeat endpoint (none from a runner stopped or hung)."""
        if job.silenced or job.hung:
            return []
        msg = JobMessage(
            job_name=job.spec.job_name,
            kind=kind,
            sent_at=self._now(),
            task_result=task_result,
            failure=failure,
            exit_code=exit_code,
        )
        if self._lost(job, kind):
            return []
        body = msg.model_dump_json(exclude_none=True).encode()
        return [Delivery("message", job.spec.heartbeat_url, self._auth(job), body)]

    def ask(self, job: Job, answer: AnswerFn) -> Delivery | None:
        """A queue job's `next_task` ask: a request whose answer goes to `answer`. None when the
        network loses it (the profile's message loss or a `MessageFault`, as for every
        message): the runner then hears nothing and asks again after its retry delay."""
        kind = MessageKind.NEXT_TASK
        msg = JobMessage(job_name=job.spec.job_name, kind=kind, sent_at=self._now())
        if self._lost(job, kind):
            return None
        body = msg.model_dump_json(exclude_none=True).encode()
        return Delivery("ask", job.spec.heartbeat_url, self._auth(job), body, answer=answer)

    def _lost(self, job: Job, kind: MessageKind) -> bool:
        """Counts a message sent and draws whether the network loses it."""
        job.messages_sent += 1
        lost = job.net_rng.random() < self.profile.for_tier(job.tier).message_loss
        lost = lost or any(
            isinstance(f, MessageFault) and f.loses(kind) for f in job.plan.net_faults
        )
        if lost:
            job.messages_lost += 1
        return lost

    @staticmethod
    def _auth(job: Job) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {job.spec.heartbeat_token}",
            "Content-Type": "application/json",
        }

    def artifacts(self, job: Job, result: TaskResult) -> list[Delivery]:
        """The runner's upload of a completed task's folder, after its result (none when
        uploads are off). Draws no random number: the world is the same with or without."""
        if self.uploader is None or job.silenced or job.hung:
            return []
        if result.status is not TaskRunStatus.COMPLETED:
            return []
        body = result.model_dump_json().encode()
        return [Delivery("artifacts", job.spec.heartbeat_url, {}, body)]

    def event(
        self, job: Job, status: str, *, event_type: str = AML_RUN_STATUS_CHANGED
    ) -> list[Delivery]:
        """Event Grid's event for an Azure ML run status (none from the other tiers)."""
        if not job.behaviour.sends_events or self.eventgrid_url is None:
            return []
        spec = job.spec
        job.event_seq += 1
        tf = self.profile.for_tier(job.tier)
        rng = job.net_rng
        # Always draw the same numbers, so a scripted fault does not shift later draws.
        lose, dup, late = rng.random(), rng.random(), rng.random()
        latency = rng.uniform(*EVENT_LATENCY_SECONDS)
        late_s = rng.uniform(*tf.event_late_seconds)
        job.events_sent += 1
        shape = EventShape(
            lost=lose < tf.event_loss,
            copies=2 if dup < tf.event_duplicate else 1,
            extra_delay_s=late_s if late < tf.event_late else 0.0,
        )
        for f in job.plan.net_faults:
            if isinstance(f, EventFault) and f.applies_to(status):
                f.shape(shape)
        if shape.lost:
            job.events_lost += 1
            return []
        experiment = spec.experiment_name or spec.evaluation_id
        tags = {
            **spec.tags,
            "waa_evaluation": spec.evaluation_id,
            "waa_shard": str(spec.shard_index),
            "waa_attempt": str(spec.attempt),
        }
        event = {
            "id": str(uuid.uuid5(_ID_NAMESPACE, f"{spec.job_name}/{job.event_seq}")),
            "topic": AML_TOPIC,
            "subject": f"experiments/{uuid.uuid5(_ID_NAMESPACE, experiment)}/runs/{spec.job_name}",
            "eventType": event_type,
            "eventTime": self._now().isoformat(),
            "dataVersion": "2",
            "metadataVersion": "1",
            "data": {
                "experimentId": str(uuid.uuid5(_ID_NAMESPACE, experiment)),
                "experimentName": experiment,
                "runId": spec.job_name,
                "runType": "azureml.CommandJob",
                "runTags": tags,
                "runProperties": {},
                "runStatus": status,
            },
        }
        headers = {"aeg-event-type": "Notification", "Content-Type": "application/json"}
        body = json.dumps([event]).encode()
        delay = latency + shape.extra_delay_s
        url = self.eventgrid_url
        return [Delivery("event", url, headers, body, delay) for _ in range(shape.copies)]

    # ---- posting (called WITHOUT the lock: posts reach the app, which may call back in) -------

    def send(self, job: Job, deliveries: Iterable[Delivery]) -> None:
        for d in deliveries:
            if d.delay_s > 0:
                when = self._now() + timedelta(seconds=d.delay_s)
                self.scheduler.call_at(when, lambda d=d: self._attempt(job, d, 0))
            else:
                self._attempt(job, d, 0)

    def _attempt(self, job: Job, d: Delivery, tries: int) -> None:
        if d.kind != "event" and job.silenced:
            return
        if d.kind == "artifacts":
            if self.uploader is not None:
                self.uploader.upload(job, TaskResult.model_validate_json(d.body))
            return
        if d.kind == "ask":
            # One try; the job's state machine reads the answer and retries (it draws each
            # retry's loss under the lock).
            try:
                status, answer = self.request("POST", d.url, d.headers, d.body)
            except Exception as err:  # connection refused, timeout: the app is not there (yet)
                log.debug("simulated next_task ask failed: %s", type(err).__name__)
                status, answer = 0, b""
            if d.answer is not None:
                d.answer(status, answer)
            return
        headers = d.headers
        if d.kind == "event":
            headers = {**headers, "aeg-delivery-count": str(tries)}
        try:
            code = self.post(d.url, headers, d.body)
        except Exception as err:  # connection refused, timeout: the app is not there (yet)
            log.debug("simulated %s post failed: %s", d.kind, type(err).__name__)
            code = 0
        if 200 <= code < 300:
            return
        retryable = code == 0 or code >= 500 or code in (408, 429)
        delays = MESSAGE_RETRY_DELAYS if d.kind == "message" else EVENT_RETRY_DELAYS
        if not retryable or tries >= len(delays):
            log.info("simulated %s for job %s dropped (status %s)", d.kind, job.spec.job_name, code)
            return
        when = self._now() + timedelta(seconds=delays[tries])
        self.scheduler.call_at(when, lambda: self._attempt(job, d, tries + 1))
