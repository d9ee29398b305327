#!/bin/sh
# The image's entry point: `depthmap` with the container's arguments (default `serve`), after two
# settings only the container can know. A shell: --entrypoint sh.
set -eu

# torch's threads: the cores this container may use, split between the workers. A CPU limit (docker run
# --cpus, compose `cpus:`) is a CFS quota, which the cores the app counts (sched_getaffinity) do not
# show: without this, torch would start a thread per host core and the quota would throttle them all.
if [ -z "${DEPTHMAP_TORCH_THREADS:-}" ]; then
    cores=$(nproc)
    quota=max period=100000
    if [ -r /sys/fs/cgroup/cpu.max ]; then                      # cgroup v2
        read -r quota period < /sys/fs/cgroup/cpu.max
    elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then       # cgroup v1
        quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
        period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
    fi
    case $quota in
        max | -1) ;;
        *) limit=$(( (quota + period - 1) / period ))
           if [ "$limit" -lt "$cores" ]; then cores=$limit; fi ;;
    esac
    workers=${DEPTHMAP_WORKERS:-1}
    prev=
    for arg in "$@"; do   # `serve --workers N` given as arguments rather than DEPTHMAP_WORKERS
        case $arg in --workers=*) workers=${arg#--workers=} ;; esac
        if [ "$prev" = --workers ]; then workers=$arg; fi
        prev=$arg
    done
    case $workers in '' | *[!0-9]* | 0) workers=1 ;; esac   # a bad value is the CLI's to report
    threads=$(( cores / workers ))
    if [ "$threads" -lt 1 ]; then threads=1; fi
    export DEPTHMAP_TORCH_THREADS="$threads"
fi

# weights baked into the image (BAKE_WEIGHTS=true) serve when neither MIDAS_WEIGHTS nor the weights
# volume has any; a file in the volume wins, so a volume can replace baked weights without a rebuild
baked=/opt/depthmap/weights/midas_v21_small_256.pt
if [ -z "${MIDAS_WEIGHTS:-}" ] && [ -f "$baked" ] \
        && [ ! -f "${DEPTHMAP_CACHE:-/weights}/midas_v21_small_256.pt" ]; then
    export MIDAS_WEIGHTS="$baked"
fi

exec depthmap "$@"
