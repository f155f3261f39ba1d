#!/usr/bin/env bash
# `make image`: build tabserve:latest (and tabserve:VERSION, the tag the manifests name) with docker when
# a daemon answers, else with podman; when the base image cannot be pulled, build on the local stand-in
# that scripts/base-image.sh makes. Prints the engine used on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(awk -F'"' '/^version = / {print $2; exit}' pyproject.toml)
base=$(awk '/^FROM / && !/ AS / {print $2; exit}' Dockerfile)
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  engine=docker
elif command -v podman >/dev/null; then
  engine=podman
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/docker/containers.conf}
else
  echo "neither a docker daemon nor podman here: scripts/system-deps.sh installs podman when run as root" >&2
  exit 1
fi
pull=()
if ! "$engine" image inspect "$base" >/dev/null 2>&1 && ! "$engine" pull "$base" >/dev/null 2>&1; then
  ./scripts/base-image.sh "$engine" "$base"
  pull=(--pull=never)
fi
# --format docker: podman's default OCI format has no HEALTHCHECK and drops it without a word.
# --network host: the build's pip reaches the package registries the way this machine does.
format=()
[ "$engine" = podman ] && format=(--format docker)
"$engine" build "${format[@]}" "${pull[@]}" --network host -t tabserve:latest -t "tabserve:$version" . >&2
echo "built tabserve:latest = tabserve:$version, $("$engine" image inspect --format '{{.Size}}' tabserve:latest) bytes" >&2
echo "$engine"
