# Depth-map studio: the web studio and the JSON API (gunicorn), CPU only. See docs/self-hosting.md.
#
#   docker build -t depthmap-studio .      (needs BuildKit: Docker 23+, or DOCKER_BUILDKIT=1)
#   docker run -d -p 127.0.0.1:8000:8000 -v depthmap-weights:/weights depthmap-studio
#
# Build arguments:
#   BASE_IMAGE        a Debian bookworm image with Python 3.11 (default python:3.11-slim-bookworm)
#   TORCH_SPEC        the PyTorch requirement (default torch==2.13.0)
#   TORCH_INDEX_URL   where PyTorch comes from (default https://download.pytorch.org/whl/cpu, the CPU-only
#                     builds; empty = the ordinary package index, e.g. with TORCH_FIND_LINKS)
#   TORCH_FIND_LINKS  a folder or URL of wheels pip also looks in for PyTorch (default none)
#   BAKE_WEIGHTS      true = copy weights/midas_v21_small_256.pt from the build context into the image
#
# An HTTPS proxy with its own certificate authority: pass its CA bundle as the build secret "pip_ca"
# (docker build --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt ...); it is used by pip and
# never stored in the image.

ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# pip's settings for the build only (ARGs are not kept in the image)
ARG PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

# the user the server runs as; the weights volume belongs to it
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/depthmap \
        --shell /usr/sbin/nologin depthmap \
    && install -d -o depthmap -g depthmap -m 0755 /weights \
    && install -d -o depthmap -g depthmap -m 0700 /data

# 1. PyTorch, alone in its layer (about 700 MB): changes to the project never reinstall it. A virtual
# environment, so this works the same on the official python image and on plain Debian. Dropped: the C++
# test programs, headers and protoc some torch wheels carry (about 180 MB), which only building C++
# extensions or torch.compile would use; TorchScript and eager inference do not.
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && python3 -m venv /opt/venv \
    && pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} "$TORCH_SPEC" \
    && cd /opt/venv/lib/python3.*/site-packages/torch \
    && rm -rf test include bin/*Test bin/test_* bin/protoc*

# 2. The project's other dependencies, read from pyproject.toml: a code change does not reinstall them.
COPY pyproject.toml /opt/depthmap/
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && python -c "import tomllib; p = tomllib.load(open('/opt/depthmap/pyproject.toml', 'rb')); \
print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -q -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && python -c "import torch; print('torch', torch.__version__); assert not torch.version.cuda, \
'a CUDA build of torch: the image is CPU-only (see TORCH_INDEX_URL)'"

# 3. Optional weights baked in (BAKE_WEIGHTS=true): used when neither MIDAS_WEIGHTS nor the volume has any.
ARG BAKE_WEIGHTS=false
RUN --mount=type=bind,source=weights,target=/tmp/weights \
    case "$BAKE_WEIGHTS" in \
        true|1|yes) if [ ! -f /tmp/weights/midas_v21_small_256.pt ]; then \
                        echo "BAKE_WEIGHTS=true needs weights/midas_v21_small_256.pt in the build context" >&2; \
                        exit 1; fi; \
                    install -D -m 0644 /tmp/weights/midas_v21_small_256.pt \
                        /opt/depthmap/weights/midas_v21_small_256.pt ;; \
        false|0|no|"") ;; \
        *) echo "BAKE_WEIGHTS must be true or false, not '$BAKE_WEIGHTS'" >&2; exit 1 ;; \
    esac

# 4. The project itself: small layers, the only ones a code change rebuilds. Installed editable because
# the app finds templates/ and static/ beside its package; the source stays root-owned and read-only.
COPY README.md wsgi.py /opt/depthmap/
COPY app /opt/depthmap/app
COPY templates /opt/depthmap/templates
COPY static /opt/depthmap/static
COPY docker /opt/depthmap/docker
RUN pip install -q --no-deps --no-build-isolation -e /opt/depthmap \
    && python -m compileall -q /opt/depthmap/app /opt/depthmap/docker \
    && depthmap --version \
    && if [ -f /opt/depthmap/weights/midas_v21_small_256.pt ]; then \
        python -c "from pathlib import Path; from app.depth.torch_engines import load_network; from app.depth.model import WEIGHTS_DIGEST, file_digest; \
p = Path('/opt/depthmap/weights/midas_v21_small_256.pt'); load_network(p); \
kind, _, want = WEIGHTS_DIGEST.partition(':'); \
print('baked weights: strict load ok, sha256', file_digest(p, 'sha256'), \
'(the official file)' if file_digest(p, kind) == want else '(NOT the official file)')"; fi

# Serving defaults (docs/self-hosting.md, "Configuration in the container"). DEPTHMAP_TORCH_THREADS is left unset: the app sets it
# to the CPUs the container may use (its CPU limit, app/depth/cpus.py) divided by the workers.
ENV DEPTHMAP_BIND=0.0.0.0:8000 \
    DEPTHMAP_WORKERS=1 \
    DEPTHMAP_WORKER_THREADS=4 \
    DEPTHMAP_TIMEOUT=120 \
    DEPTHMAP_MAX_CONTENT_LENGTH=20971520 \
    DEPTHMAP_CACHE=/weights \
    PYTHONUNBUFFERED=1 \
    TQDM_MININTERVAL=2

USER 10001:10001
WORKDIR /home/depthmap
# downloaded weights are kept here, never in the container's own layer
VOLUME ["/weights"]
EXPOSE 8000
# not healthy until the model is loaded and answers; the first start may download 82 MB of weights
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "/opt/depthmap/docker/healthcheck.py"]
ENTRYPOINT ["/opt/depthmap/docker/entrypoint.sh"]
CMD ["serve"]
