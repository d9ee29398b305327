"""The serving state: the result store (files or Redis), the video job system on Huey, the inference gate and
its fair line, the depth service that the web layer calls, and the gunicorn settings and worker that
``depthmap serve`` runs.

May import ``app.imaging``, ``app.depth``, ``app.options``, ``app.config`` and ``app.errors``; never Flask
or ``app.web``.
"""
