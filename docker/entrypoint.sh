#!/bin/sh
# One image, every role: the first argument chooses what the container runs.
#   bridge [ARGS]  -> python -m bridge [ARGS]             (SQS -> Kafka)
#   worker [ARGS]  -> faust -A stream.app worker -l info [ARGS]
#   anything else  -> maskstream ARGS                    (status, keygen, unmask, ...)
# `exec` replaces this shell, so the program itself receives the SIGTERM of
# `docker stop` (from tini under `init: true`, or as PID 1 without it) and
# the bridge and workers shut down gracefully.
set -eu

case "${1:-}" in
    bridge)
        shift
        exec python -m bridge "$@"
        ;;
    worker)
        shift
        exec faust -A stream.app worker -l info "$@"
        ;;
    *)
        exec maskstream "$@"
        ;;
esac
