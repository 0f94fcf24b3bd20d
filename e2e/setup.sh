#!/usr/bin/env bash
# What `make test` needs besides Go and a Docker Engine: Debian's nginx, apache2,
# haproxy and BIND 9 (their binaries go into FROM scratch test images), busybox-static
# (the shell of the image's offline build stage), the CA bundle, ps (docker top), Chromium,
# and a Compose tool. Run as root, it installs what is missing; otherwise it
# prints the one command to run. Safe to run again.
set -euo pipefail
need=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
# apache2's mod_ssl is built against Debian's newest libssl3: both together.
[ -x /usr/sbin/apache2 ] || need+=(apache2-bin libssl3)
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
[ -x /usr/sbin/named ] || need+=(bind9)
{ [ -x /bin/busybox ] && ! { file /bin/busybox 2>/dev/null | grep -q 'dynamically linked'; }; } || need+=(busybox-static)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
command -v ps >/dev/null 2>&1 || need+=(procps)
# The status page's test drives a real browser (headless, through chromedp).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "make test needs Debian packages that are not installed; run:" >&2
    echo "  sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
    exit 1
  fi
  echo "==> installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Install the binaries only: no service (named, nginx, haproxy) starts on this host.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v go >/dev/null 2>&1 || { echo "make test needs Go 1.26 (https://go.dev/dl/) on PATH" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "make test needs a running Docker Engine that this user may use (docker info fails)" >&2; exit 1; }
