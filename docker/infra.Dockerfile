# The scaled deployment's two helpers, from Debian's packages on the studio's own base image (so a
# machine that can build the studio can build these, with no other registry): `--target redis` and
# `--target proxy` (nginx). Any official redis or nginx image does the same job; see compose.scale.yaml.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS redis
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        redis-server >/dev/null && rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
# the settings are the command's (compose.scale.yaml): a password, a memory bound, no disk
CMD ["redis-server", "--protected-mode", "no"]

# nginx as an unprivileged user (it only listens on 8080), with a read-only root: docker/nginx.conf is
# its whole configuration and writes only to /tmp
FROM ${BASE_IMAGE} AS proxy
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        nginx-light >/dev/null && rm -rf /var/lib/apt/lists/* \
    && rm -f /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stderr /var/log/nginx/error.log
COPY docker/nginx.conf /etc/nginx/nginx.conf
USER www-data
EXPOSE 8080
CMD ["nginx", "-g", "daemon off;"]
