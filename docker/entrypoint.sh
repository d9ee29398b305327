#!/bin/sh
# The image's entry point: `depthmap` with the container's arguments (default `serve`), after the one
# setting only the image can know (its baked weights). A shell: --entrypoint sh. The CPU limit
# (--cpus, compose `cpus:`) is read by the app itself (app/depth/cpus.py) for workers and torch threads.
set -eu

# weights baked into the image (BAKE_WEIGHTS=true) serve when neither MIDAS_WEIGHTS nor the weights
# volume has any; a file in the volume wins, so a volume can replace baked weights without a rebuild
baked=/opt/depthmap/weights/midas_v21_small_256.pt
if [ -z "${MIDAS_WEIGHTS:-}" ] && [ -f "$baked" ] \
        && [ ! -f "${DEPTHMAP_CACHE:-/weights}/midas_v21_small_256.pt" ]; then
    export MIDAS_WEIGHTS="$baked"
fi

exec depthmap "$@"
