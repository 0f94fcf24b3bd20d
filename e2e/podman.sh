#!/usr/bin/env bash
# What `make test-podman` needs besides make test's: Debian's podman (4.3 on
# bookworm), its API service on the rootful socket, and the e2e images copied
# from Docker into Podman's store (no registry: they are built here). Run as
# root. Safe to run again.
set -euo pipefail
sock=/run/podman/podman.sock
if ! command -v podman >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "make test-podman needs podman: sudo apt-get install -y --no-install-recommends podman" >&2; exit 1; }
  echo "==> installing podman"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends podman >/dev/null
fi
# Podman gives containers rlimits above what a container that runs this
# suite may raise to (nofile 1048576, nproc 4194304): runc then fails with
# "error setting rlimit ... operation not permitted". Lower defaults, only
# where they fail and no configuration of the operator's is there.
probe=localhost/edgecert-testapp:e2e
copy() { # image: from Docker's store to Podman's
  docker image inspect "$1" >/dev/null 2>&1 || { echo "podman.sh: image $1 is missing (make test-images)" >&2; exit 1; }
  docker save "$1" | podman load -q >/dev/null
}
copy edgecert-testapp:e2e
if ! podman run --rm "$probe" /testapp sleep 0 >/dev/null 2>&1; then
  conf=/etc/containers/containers.conf
  if [ -e "$conf" ]; then
    echo "podman.sh: podman cannot start a container here and $conf exists; see: podman run --rm $probe /testapp sleep 0" >&2
    exit 1
  fi
  mkdir -p /etc/containers
  printf '[containers]\n# edgecert e2e (e2e/podman.sh): rlimits this machine lets a container have\ndefault_ulimits = ["nofile=%s:%s", "nproc=4096:4096"]\n' "$(ulimit -Hn)" "$(ulimit -Hn)" >"$conf"
  podman run --rm "$probe" /testapp sleep 0 >/dev/null
fi
if ! curl -s --max-time 5 --unix-socket "$sock" http://podman/_ping >/dev/null 2>&1; then
  mkdir -p "$(dirname "$sock")"
  rm -f "$sock"
  (setsid podman system service --time=0 "unix://$sock" >>/tmp/podman-service.log 2>&1 &)
  for _ in $(seq 1 50); do curl -s --max-time 2 --unix-socket "$sock" http://podman/_ping >/dev/null 2>&1 && break; sleep 0.2; done
  curl -s --max-time 5 --unix-socket "$sock" http://podman/_ping >/dev/null || { echo "podman.sh: podman system service did not answer on $sock; see /tmp/podman-service.log" >&2; exit 1; }
fi
for img in "${EDGECERT_E2E_IMAGE:-edgecert:local}" edgecert-nginx:e2e edgecert-apache:e2e edgecert-pebble:e2e edgecert-haproxy:e2e edgecert-etcd:e2e edgecert-bind:e2e; do
  copy "$img"
done
echo "podman $(podman --version | awk '{print $3}') serves the Docker API on $sock"
