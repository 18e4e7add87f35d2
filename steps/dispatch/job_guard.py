"""Waiting for a SageMaker job so that it never outlives the step that started it.

The job is a sagemaker-core `TrainingJob` resource (SageMaker Python SDK v3). We
wait with our own loop over `TrainingJob.refresh()` rather than the SDK's
`TrainingJob.wait()` (sagemaker-core 2.27.0) because that one cannot do three things
we need: stop the job when the wait is interrupted (it just propagates), turn a
Stopped job into our error with the failure reason (it only raises for Failed), and
print each host's log lines to plain stdout for Metaflow's log capture (it draws a
`rich` live panel and logs through the SDK's logger). The log lines themselves come
from the SDK's `MultiLogStreamHandler`, one stream per host.

Transient errors while waiting (throttling, connection resets) are retried with
backoff by the SDK's SageMaker client (botocore "standard" retries, 10 attempts), so
one throttled DescribeTrainingJob is not a failed step.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sagemaker.core.resources import TrainingJob
from sagemaker.core.utils.logs import MultiLogStreamHandler

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")
RUNNING = ("InProgress", "Stopping")


class TrainingJobError(RuntimeError):
    """The SageMaker job did not complete."""


class StepInterrupted(BaseException):
    """SIGTERM reached the step (Metaflow kills a task that way); a BaseException like KeyboardInterrupt."""


def _echo_logs(handler: MultiLogStreamHandler, name: str, echo: Callable[[str], None]) -> None:
    if handler.ready():
        for stream, event in handler.get_latest_log_events():
            echo(f"[{stream.removeprefix(name + '/')}] {event['message']}")


def _instance_count(job: TrainingJob) -> int:
    count = getattr(job.resource_config, "instance_count", 1)
    return count if isinstance(count, int) else 1


def wait_for_job(
    job: TrainingJob, poll_s: float = 30.0, echo: Callable[[str], None] = print, timeout_s: float | None = None
) -> TrainingJob:
    """Wait for a terminal status while echoing every host's log lines; the job, once Completed.

    Raises `TrainingJobError` (with SageMaker's failure reason) for Failed/Stopped, and when
    `timeout_s` passes first; `stopped_on_exit` around this call then stops the job.
    """
    name = job.training_job_name
    logs = MultiLogStreamHandler(LOG_GROUP, name, _instance_count(job))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_status = None
    while True:
        job.refresh()
        _echo_logs(logs, name, echo)
        status = (job.training_job_status, job.secondary_status)
        if status != last_status:
            echo(f"SageMaker job {name}: {status[0]} ({status[1]})")
            last_status = status
        if status[0] in TERMINAL:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise TrainingJobError(f"SageMaker job {name} still {status[0]} after {timeout_s:.0f} s of waiting")
        time.sleep(poll_s)
    _echo_logs(logs, name, echo)  # the last lines often arrive after the status changes
    if job.training_job_status != "Completed":
        reason = job.failure_reason if isinstance(job.failure_reason, str) and job.failure_reason else None
        raise TrainingJobError(
            f"SageMaker job {name} ended {job.training_job_status}: {reason or 'SageMaker gave no failure reason'} "
            f"(logs: CloudWatch {LOG_GROUP}/{name}/*)"
        )
    return job


def stop_job(job: TrainingJob, echo: Callable[[str], None] = print, poll_s: float = 5.0, wait_s: float = 0.0) -> None:
    """Stop `job` unless it already ended; with `wait_s`, wait up to that long for it to reach Stopped."""
    job.refresh()
    if job.training_job_status in TERMINAL:
        return
    if job.training_job_status != "Stopping":
        echo(f"stopping SageMaker job {job.training_job_name}")
        job.stop()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        job.refresh()
        if job.training_job_status in TERMINAL:
            return
        time.sleep(poll_s)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into `StepInterrupted` while the block runs (main thread only: signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum, frame):
        raise StepInterrupted(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def stopped_on_exit(job: TrainingJob, echo: Callable[[str], None] = print) -> Iterator[TrainingJob]:
    """Stop `job` if the block leaves by any exception, KeyboardInterrupt or SIGTERM included."""
    try:
        with _sigterm_raises():
            yield job
    except BaseException:
        try:
            stop_job(job, echo)
        except Exception as stop_error:  # noqa: BLE001 - the original failure is the one to report
            echo(f"could not stop SageMaker job {job.training_job_name}: {type(stop_error).__name__}: {stop_error}")
        raise


def stop_predecessors(prefix: str, session, echo: Callable[[str], None] = print, poll_s: float = 5.0) -> list[str]:
    """Stop every still-running job whose name starts with `prefix` (an earlier @retry attempt's), and wait
    until each has stopped, so that two attempts never train side by side. Returns their names."""
    stopped = []
    for status in RUNNING:
        for summary in TrainingJob.get_all(name_contains=prefix, status_equals=status, session=session):
            if not summary.training_job_name.startswith(prefix):
                continue
            job = TrainingJob.get(summary.training_job_name, session=session)
            echo(f"an earlier attempt's SageMaker job {job.training_job_name} is still {job.training_job_status}")
            stop_job(job, echo, poll_s=poll_s, wait_s=3600.0)
            stopped.append(job.training_job_name)
    return stopped
