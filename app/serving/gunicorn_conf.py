"""gunicorn settings for ``depthmap serve``, read from the environment (``app.config``, the serving
settings; docs/configuration.md).

Each worker process loads its own copy of the model (about 80 MB of weights plus torch) when it starts;
threads within a worker share it, one forward pass at a time. Workers and torch threads default to the
rule of ``app.depth.cpus.plan`` on the CPUs the process may really use (cgroup quota included).
"""

import os
from typing import Any

from app import config as settings  # not "config": gunicorn would read that name as its own setting
from app.depth.cpus import plan, usable_cpus

bind = settings.get("DEPTHMAP_BIND")
workers, _torch_threads = plan(usable_cpus(), settings.get("DEPTHMAP_WORKERS"),
                               settings.get("DEPTHMAP_TORCH_THREADS"))
# gthread, with each request received whole by the event loop before a thread runs it: a slow or idle
# client never holds a request thread (app/serving/gunicorn_worker.py)
worker_class = "app.serving.gunicorn_worker.WholeRequestWorker"
# threads keep the page responsive (images, health checks) while a depth map is computed
threads = settings.get("DEPTHMAP_WORKER_THREADS")
# connections per worker, most of them idle or still sending: the oldest of those makes room for a new one
worker_connections = 1000
timeout = settings.get("DEPTHMAP_TIMEOUT")
graceful_timeout = settings.get("DEPTHMAP_GRACEFUL_TIMEOUT")
keepalive = 5
# torch threads: the usable CPUs split between the workers, unless set explicitly (the app reads the variable)
os.environ["DEPTHMAP_TORCH_THREADS"] = str(_torch_threads)

# gunicorn's own log and the app's to stderr, the access log (never bodies) to stdout
accesslog = settings.get("DEPTHMAP_ACCESS_LOG")
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'
logconfig_dict = {
    "root": {"level": settings.get("DEPTHMAP_LOG_LEVEL").upper(), "handlers": ["error_console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        # the task queue logs every task it runs (the minute's sweep too); the app logs each job itself
        "huey": {"level": "WARNING", "handlers": [], "propagate": True},
    },
}
# gunicorn >= 24 opens a management socket in $HOME by default; the studio does not use it
control_socket_disable = True


def post_worker_init(worker: Any) -> None:
    """The embedded video job consumer: started at boot by the one worker on this host that gets its lock
    (the others try again when they serve a job request, so a restarted holder is replaced)."""
    app = worker.wsgi
    if app.config["EMBEDDED_WORKER"]:
        app.extensions["video_jobs"].start_embedded()


def worker_exit(server: Any, worker: Any) -> None:
    """A worker that stops puts the video job it was running back in the queue."""
    app = getattr(worker, "wsgi", None)
    if app is not None and "video_jobs" in getattr(app, "extensions", {}):
        app.extensions["video_jobs"].shutdown()
