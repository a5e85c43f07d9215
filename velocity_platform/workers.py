"""Steps on Celery workers (VELOCITY_EXECUTOR=celery): the executor a run hands its steps to, and
the Celery app `velocity-platform worker` runs them with.

A run's orchestrator (the run worker the code server launches, or any process executing the job)
puts each step on the broker as one `execute_plan` task; a worker on any host with the code and
the same environment takes it, rebuilds the definitions from its own environment, executes the
step against the instance the task names (PostgreSQL) and the shared lake, and answers with the
step's events. Both ends build their Celery app from `celery_config`, so they agree on how a
message is acknowledged.

The broker URL holds the broker's password: the executor reads it from VELOCITY_CELERY_BROKER_URL
when the run starts (config `env:`, never stored with the run), the worker from the same
variable; it is printed only masked.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any

import dagster as dg

from velocity_platform.settings import CELERY_BROKER_ENV, Settings

# Results travel back to the orchestrator over the broker itself (no result store to run).
RESULT_BACKEND = "rpc://"
PR_SET_PDEATHSIG = 1


def celery_config(queue: str) -> dict[str, Any]:
    """The Celery settings both the orchestrator and the workers use."""
    return {
        # A step's message is acknowledged once the step has finished, not when a worker takes it:
        # a worker killed mid-step (kill -9, a lost host) leaves it unacknowledged, and the broker
        # hands it to another worker when the dead one's connection drops. Without it the message
        # is gone with the worker and the orchestrator waits for its result for ever.
        "task_acks_late": True,
        # The same when only a pool process dies under a living worker (out of memory): the
        # message is requeued instead of failing the step with WorkerLostError.
        "task_reject_on_worker_lost": True,
        # A worker reserves no more steps than it runs: a reserved step would wait behind a long
        # one while another worker is idle (and die with the worker before it started).
        "worker_prefetch_multiplier": 1,
        # Every step goes to this queue unless its asset names another (`dagster-celery/queue` in
        # op_tags); a job-level tag does not route a step.
        "task_default_queue": queue,
        "broker_connection_retry_on_startup": True,
    }


def celery_executor_of(settings: Settings) -> dg.ExecutorDefinition:
    """dagster-celery's executor, configured for this deployment's broker and queue."""
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {
            "broker": {"env": CELERY_BROKER_ENV},
            "backend": RESULT_BACKEND,
            "config_source": celery_config(settings.celery_queue),
        },
        name="celery",
    )


def executor_of(settings: Settings) -> dg.ExecutorDefinition:
    """The executor of every job: in one process (one machine, today's default), or on Celery workers."""
    return celery_executor_of(settings) if settings.executor == "celery" else dg.in_process_executor


def _die_with_the_worker() -> None:
    """A pool process is killed when its worker process dies (Linux), so a step never runs on
    after its worker was killed while the broker hands the same step to another worker."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the pool process notices its worker is gone when it next reads a task


def celery_app(queue: str):
    """The workers' Celery app: the broker from VELOCITY_CELERY_BROKER_URL, dagster-celery's step task."""
    from celery.signals import worker_process_init
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    broker = os.environ.get(CELERY_BROKER_ENV)
    executor = CeleryExecutor.for_cli(broker=broker, backend=RESULT_BACKEND, config_source=celery_config(queue))
    app = make_app(executor.app_args())
    create_task(app)
    worker_process_init.connect(lambda **_: _die_with_the_worker(), weak=False)
    return app


def masked(url: str | None) -> str:
    """A broker URL fit to print: its password replaced by ***."""
    if not url:
        return "none"
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url, mask="***")


CELERY_WORKER_KEY = "Celery worker"  # dagster-celery's engine event names the worker under this key


def step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[str]]:
    """Each step's workers, in the order they took it up (from dagster-celery's engine events)."""
    taken: dict[str, list[str]] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event and event.is_engine_event and record.step_key:
            metadata = event.engine_event_data.metadata or {}
            if CELERY_WORKER_KEY in metadata:
                taken.setdefault(record.step_key, []).append(metadata[CELERY_WORKER_KEY].value)
    return taken
