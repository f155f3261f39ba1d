#!/usr/bin/env bash
# A local stand-in for the Dockerfile's base image, for machines that cannot reach a container
# registry (these ones reach only the package registries): Debian bookworm made by debootstrap from
# Debian's mirror, with its Python 3.11 where python:3.11-slim keeps it, imported under the base image's
# name so the unchanged Dockerfile builds with --pull=never. Made once; later runs find it and return.
#
#   scripts/base-image.sh ENGINE [IMAGE]     ENGINE: docker or podman; IMAGE: python:3.11-slim
set -euo pipefail
engine=${1:?usage: base-image.sh docker|podman [image]}
image=${2:-python:3.11-slim}
if "$engine" image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "no $image here and none can be pulled; making the stand-in needs root (debootstrap)" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { echo "debootstrap missing: run scripts/system-deps.sh as root" >&2; exit 1; }
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/tabserve-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "making a stand-in for $image from $mirror (about a minute)" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$root" "$mirror" >/dev/null
# Where the official image has them: python and pip on PATH under those names, and pip allowed to
# install into the system Python (the official image's Python is not Debian's, so it has no such guard).
ln -s /usr/bin/python3 "$root/usr/local/bin/python"
ln -s /usr/bin/pip3 "$root/usr/local/bin/pip"
rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
# This machine's certificate bundle: the package registries may be reached through an intercepting proxy.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | "$engine" import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' \
  - "$image" >/dev/null
echo "stand-in $image: $("$engine" image inspect --format '{{.Size}}' "$image") bytes" >&2
