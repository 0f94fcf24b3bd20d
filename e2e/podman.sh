#!/usr/bin/env bash
# What `make test-podman` needs besides make test's: Debian's podman (4.3 on
# bookworm) with netavark and aardvark-dns (containers find each other by
# name, as on Docker's user networks), its Docker-compatible API service on
# the rootful socket, and the e2e images copied from Docker's store into
# Podman's (no registry: they are built here). Run as root. Safe to run
# again; it changes Podman's configuration only where none of the
# operator's is, and resets Podman's store only when it holds no container.
set -euo pipefail
sock=/run/podman/podman.sock
conf=/etc/containers/containers.conf
need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -x /usr/lib/podman/netavark ] || command -v netavark >/dev/null 2>&1 || need+=(netavark)
[ -x /usr/lib/podman/aardvark-dns ] || command -v aardvark-dns >/dev/null 2>&1 || need+=(aardvark-dns)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "make test-podman needs: sudo apt-get install -y --no-install-recommends ${need[*]}" >&2; exit 1; }
  echo "==> installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Podman's default rlimits (nofile 1048576, nproc 4194304) are above what a
# container that runs this suite may raise them to: runc then fails with
# "error setting rlimit ... operation not permitted". And netavark, not CNI:
# Debian's CNI set-up has no DNS for container names.
if [ ! -e "$conf" ]; then
  mkdir -p "$(dirname "$conf")"
  printf '%s\n' '# edgecert e2e (e2e/podman.sh)' '[containers]' \
    "default_ulimits = [\"nofile=$(ulimit -Hn):$(ulimit -Hn)\", \"nproc=4096:4096\"]" '' \
    '[network]' 'network_backend = "netavark"' >"$conf"
fi
if [ "$(podman info --format '{{.Host.NetworkBackend}}')" != netavark ]; then
  if [ -n "$(podman ps -aq)" ]; then
    echo "podman.sh: Podman uses $(podman info --format '{{.Host.NetworkBackend}}') and holds containers; set network_backend = \"netavark\" in $conf and run podman system reset yourself" >&2
    exit 1
  fi
  grep -q netavark "$conf" || { echo "podman.sh: $conf is yours and does not choose netavark" >&2; exit 1; }
  podman system reset --force >/dev/null 2>&1 # a store with no container: its network backend changes
fi
if ! curl -s --max-time 5 --unix-socket "$sock" http://podman/_ping >/dev/null 2>&1; then
  mkdir -p "$(dirname "$sock")"
  rm -f "$sock"
  (setsid podman system service --time=0 "unix://$sock" >>/tmp/podman-service.log 2>&1 &)
  for _ in $(seq 1 50); do curl -s --max-time 2 --unix-socket "$sock" http://podman/_ping >/dev/null 2>&1 && break; sleep 0.2; done
  curl -s --max-time 5 --unix-socket "$sock" http://podman/_ping >/dev/null || { echo "podman.sh: podman system service did not answer on $sock; see /tmp/podman-service.log" >&2; exit 1; }
fi
for img in "${EDGECERT_E2E_IMAGE:-edgecert:local}" edgecert-nginx:e2e edgecert-apache:e2e edgecert-pebble:e2e edgecert-testapp:e2e edgecert-haproxy:e2e edgecert-etcd:e2e edgecert-bind:e2e; do
  docker image inspect "$img" >/dev/null 2>&1 || { echo "podman.sh: image $img is missing (make test-images)" >&2; exit 1; }
  docker save "$img" | podman load -q >/dev/null
done
podman run --rm edgecert-testapp:e2e /testapp sleep 0 >/dev/null || { echo "podman.sh: podman cannot start a container here" >&2; exit 1; }
echo "podman $(podman --version | awk '{print $3}') ($(podman info --format '{{.Host.NetworkBackend}}')) serves the Docker API on $sock"
