"""Support code for the tests (the fixtures in tests/conftest.py and the test modules), the benchmarks and
scripts/docker-smoke, each module by what it helps with:

- ``samples``: the committed sample photos and the official implementations' reference arrays
- ``synthetic``: weights in the official formats, regenerated from a manifest by the documented rule
- ``images``: image bytes made by hand (PNG chunks, bombs' headers, truncated files)
- ``hostile``: the corpus of hostile and odd image files, each with the answer a user should get
- ``clips``: test videos; ``scenes``: scenes of planes at known depths (the stereo geometry)
- ``forms``: multipart bodies for Flask's test client
- ``servers``: the studio's own processes (``depthmap serve``, ``depthmap worker``, the CLI) and a plain
  file server
- ``video_jobs``: a real server's video job API (send a clip, wait for its job)
- ``holds``: work held in progress for a test (a gated model, a gate slot held by a thread)
- ``redis_servers``: Debian's ``redis-server``, plain or TLS only, and the certificates for it
- ``browser``: headless Chromium through Selenium
- ``docs``: the generated parts of the documentation

pytest puts tests/ on ``sys.path`` (``pythonpath`` in pyproject.toml), so tests import ``support.servers``
and so on; the benchmarks and scripts/docker-smoke put tests/ there themselves. Importing the package
loads nothing: each module imports what it needs.
"""
