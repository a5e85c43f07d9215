"""The Celery app a worker runs (`celery -A velocity_platform.worker_app`, which `velocity-platform
worker` execs): this module exists to be that target, as dagster_celery.app is for its own app, and
so builds the app from the environment when it is imported."""

from velocity_platform.settings import Settings
from velocity_platform.workers import celery_app

app = celery_app(Settings.from_env().celery_queue)
