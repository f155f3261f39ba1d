#!/usr/bin/env bash
# Debian packages the tests drive for real: Chromium for the playground test, Node.js + npm for the
# Node example, wrk for overload, openssl for TLS. Installed only when missing; needs root (CI and these machines run as root).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)           # the overload test and the benchmark
command -v openssl >/dev/null 2>&1 || missing+=(openssl)   # the TLS test's self-signed certificate
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing ${missing[*]}: run 'sudo apt-get install ${missing[*]}' (the tests and the benchmark need them)" >&2
  exit 1
fi
echo "installing ${missing[*]} from Debian's packages" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
