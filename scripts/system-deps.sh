#!/usr/bin/env bash
# Debian packages the tests drive for real: Chromium for the playground test, Node.js + npm for the
# Node example, Debian's prometheus package (promtool for the alerting rules, the server for the
# dashboard's queries), wrk for overload, openssl for TLS; and, to build and run the image, podman
# with runc and debootstrap (for the stand-in base image) where no docker daemon answers. Installed
# only when missing; needs root (CI and these machines run as root). Without root the image packages
# are only reported: the image test then skips and says why.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)           # the overload test and the benchmark
command -v openssl >/dev/null 2>&1 || missing+=(openssl)   # the TLS test's self-signed certificate
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus) # rules, dashboard
image=()
if ! { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }; then
  command -v podman >/dev/null 2>&1 || image+=(podman)
  command -v runc >/dev/null 2>&1 || image+=(runc)              # crun, podman's default, fails here
  command -v debootstrap >/dev/null 2>&1 || image+=(debootstrap)
fi
if [ "$(id -u)" -ne 0 ]; then
  [ ${#image[@]} -eq 0 ] || echo "not root: not installing ${image[*]} (make image and the image test need them)" >&2
  if [ ${#missing[@]} -ne 0 ]; then
    echo "missing ${missing[*]}: run 'sudo apt-get install ${missing[*]}' (the tests and the benchmark need them)" >&2
    exit 1
  fi
  exit 0
fi
missing+=("${image[@]}")
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]} from Debian's packages" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
