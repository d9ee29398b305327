"""gunicorn settings for ``depthmap serve``, read from the environment (``app.config``, the serving
settings; docs/configuration.md).

Each worker process loads its own copy of the model (about 80 MB of weights plus torch) when it starts;
threads within a worker share it, one forward pass at a time.
"""

import os

from app import config as settings  # not "config": gunicorn would read that name as its own setting

bind = settings.get("DEPTHMAP_BIND")
workers = settings.get("DEPTHMAP_WORKERS")
worker_class = "gthread"
# threads keep the page responsive (images, health checks) while a depth map is computed
threads = settings.get("DEPTHMAP_WORKER_THREADS")
timeout = settings.get("DEPTHMAP_TIMEOUT")
graceful_timeout = settings.get("DEPTHMAP_GRACEFUL_TIMEOUT")
keepalive = 5
# torch threads: the cores split between the workers, unless set explicitly
if not os.environ.get("DEPTHMAP_TORCH_THREADS"):
    os.environ["DEPTHMAP_TORCH_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // max(1, workers)))

# gunicorn's own log and the app's to stderr, the access log (never bodies) to stdout
accesslog = settings.get("DEPTHMAP_ACCESS_LOG")
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'
logconfig_dict = {
    "root": {"level": settings.get("DEPTHMAP_LOG_LEVEL").upper(), "handlers": ["error_console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
}
# gunicorn >= 24 opens a management socket in $HOME by default; the studio does not use it
control_socket_disable = True
