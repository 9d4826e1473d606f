#!/usr/bin/env bash
# Build the project's Dockerfile without a Docker engine or an image registry.
#
#   docker/build-local.sh [IMAGE]          (default: localhost/maskstream:local)
#   docker/build-local.sh --base-only      (make the base if missing, print its name;
#                                           docker/standins/build.sh builds on it)
#
# buildah runs the Dockerfile's steps unchanged (chroot isolation, no daemon).
# The one thing it cannot do here is pull python:3.11-slim, so this script
# first makes a stand-in for it from Debian's own packages and passes it as
# the Dockerfile's BASE_IMAGE:
#
#   debootstrap --variant=minbase bookworm + python3.11 + python3.11-venv
#   + ca-certificates, with `python` and `python3` in /usr/local/bin, PATH and
#   LANG as the official image sets them, apt lists, docs and locales removed.
#
# What differs from the official image: Python is Debian's 3.11.2 build in
# /usr/bin (the official one is the newest 3.11 built from source into
# /usr/local), and the system pip is absent (the Dockerfile uses the venv's).
# The stand-in is built once and kept in buildah's storage under a tag that
# names its recipe's revision; bump BASE_REVISION when the recipe changes.
#
# The builder stage's pip trusts the host's CA bundle (mounted read-only for
# the build, never copied into a layer), so builds behind a TLS-intercepting
# proxy work; PIP_INDEX_URL, if set, is passed on the same way.
#
# Needs root, buildah and debootstrap (apt-get install buildah debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_ONLY=false
if [ "${1:-}" = --base-only ]; then
    BASE_ONLY=true
    shift
fi
IMAGE=${1:-localhost/maskstream:local}
BASE_REVISION=1
BASE_IMAGE=localhost/maskstream-python-base:3.11-slim-bookworm-r${BASE_REVISION}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
export BUILDAH_ISOLATION=chroot

for tool in buildah debootstrap; do
    command -v "$tool" > /dev/null || {
        echo "build-local: $tool is missing (apt-get install buildah debootstrap)" >&2
        exit 2
    }
done
[ "$(id -u)" -eq 0 ] || { echo "build-local: run as root (buildah's chroot isolation)" >&2; exit 2; }

base_ctr=
# The working container of the base, removed however the script ends.
trap '[ -z "$base_ctr" ] || buildah rm "$base_ctr" > /dev/null 2>&1 || true' EXIT

make_base() {
    local started=$SECONDS ctr mnt
    ctr=$(buildah from scratch)
    base_ctr=$ctr
    mnt=$(buildah mount "$ctr")
    debootstrap --variant=minbase bookworm "$mnt" "$DEBIAN_MIRROR" > /dev/null
    chroot "$mnt" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends python3.11 python3.11-venv ca-certificates \
        > /dev/null
    chroot "$mnt" sh -c '
        ln -s /usr/bin/python3.11 /usr/local/bin/python
        ln -s /usr/bin/python3.11 /usr/local/bin/python3
        apt-get clean
        rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/locale/* \
            /var/log/*.log /var/cache/debconf/*-old
    '
    buildah umount "$ctr" > /dev/null
    buildah config \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 \
        --cmd python3 \
        --label org.opencontainers.image.description="stand-in for python:3.11-slim (debootstrap bookworm + Debian's python3.11)" \
        "$ctr"
    buildah commit --quiet "$ctr" "$BASE_IMAGE" > /dev/null
    echo "build-local: made the base $BASE_IMAGE in $((SECONDS - started)) s" >&2
}

if buildah inspect --type image "$BASE_IMAGE" > /dev/null 2>&1; then
    echo "build-local: base $BASE_IMAGE is cached" >&2
else
    make_base
fi
if $BASE_ONLY; then
    echo "$BASE_IMAGE"
    exit 0
fi

build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
mounts=()
if [ -f "$HOST_CA" ]; then
    mounts+=(--volume "$HOST_CA:/run/build-ca.crt:ro")
    build_args+=(--build-arg PIP_CERT=/run/build-ca.crt)
fi
if [ -n "${PIP_INDEX_URL:-}" ]; then
    build_args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
fi

previous=$(buildah images --quiet --no-trunc "$IMAGE" 2> /dev/null || true)
started=$SECONDS
buildah build --pull=never --layers=false --tag "$IMAGE" \
    "${build_args[@]}" "${mounts[@]}" --file Dockerfile .
# The image this build replaced keeps no name: remove it rather than let
# every rebuild leave one behind.
if [ -n "$previous" ] && [ "$previous" != "$(buildah images --quiet --no-trunc "$IMAGE")" ]; then
    buildah rmi "$previous" > /dev/null 2>&1 || true
fi
size=$(buildah images --format '{{.Size}}' "$IMAGE")
echo "build-local: built $IMAGE in $((SECONDS - started)) s, $size"
