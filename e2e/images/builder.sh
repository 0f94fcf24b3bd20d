#!/usr/bin/env bash
# Builds edgecert-builder:local: the Dockerfile's build stage (GO_IMAGE) made
# from this machine's Go toolchain and module cache, for a machine that
# reaches no container registry. FROM scratch: Go, busybox for the stage's
# shell, the CA bundle the final image takes, the go.mod files of the module
# graph and the modules the build of DNS_PROVIDERS (all or minimal, as the
# Dockerfile's argument) compiles (GOPROXY=off inside). Rebuilt only when Go,
# go.sum or the set change (a builder for all serves minimal too).
#   make image    docker build --build-arg GO_IMAGE=edgecert-builder:local .
set -euo pipefail
export DOCKER_BUILDKIT=0
cd "$(dirname "$0")/../.."
set=${DNS_PROVIDERS:-all}
case "$set" in all) tags=dnsall ;; minimal) tags= ;; *) echo "builder.sh: DNS_PROVIDERS=$set: want all or minimal" >&2; exit 1 ;; esac
tag=edgecert-builder:local
key=$( (go version; cat go.mod go.sum) | sha256sum | cut -c1-16)
have=$(docker image inspect -f '{{index .Config.Labels "edgecert.builder"}}' "$tag" 2>/dev/null || true)
if [ "$have" = "$key-$set" ] || [ "$have" = "$key-all" ]; then
  exit 0
fi
busybox=$(command -v busybox || echo /bin/busybox)
[ -x "$busybox" ] || { echo "builder.sh: busybox is not installed (apt-get install busybox-static)" >&2; exit 1; }
file "$busybox" 2>/dev/null | grep -q 'dynamically linked' && { echo "builder.sh: $busybox is dynamically linked; install busybox-static" >&2; exit 1; }
[ -f /etc/ssl/certs/ca-certificates.crt ] || { echo "builder.sh: no CA bundle (apt-get install ca-certificates)" >&2; exit 1; }

# Staged outside the module, so that no go command here sees its modules.
dir=$(mktemp -d /tmp/edgecert-builder.XXXXXX)
trap 'rm -rf "$dir"' EXIT
root=$dir/root
mkdir -p "$root"/{usr/local,bin,etc/ssl/certs,go/pkg/mod,tmp,src}
chmod 1777 "$root/tmp"
# Go, without what a build does not read (its own tests, docs, other platforms' tools).
goroot=$(go env GOROOT)
tar -C "$goroot/.." --exclude='go/test' --exclude='go/doc' --exclude='go/api' --exclude='go/misc' \
  --exclude='go/pkg/tool/*/api' --exclude='go/lib/wasm' -cf - "$(basename "$goroot")" | tar -C "$root/usr/local" -xf -
[ "$(basename "$goroot")" = go ] || mv "$root/usr/local/$(basename "$goroot")" "$root/usr/local/go"
cp "$busybox" "$root/bin/busybox"
for applet in sh mkdir cp mv rm ls cat env chmod chown ln; do ln -s busybox "$root/bin/$applet"; done
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
# The modules, taken from this machine's module cache (no network): the go.mod
# files of the whole graph (a build loads them all), and the source of the
# modules whose packages the build compiles. Into this machine's cache first
# (from the Go module proxy, where it lacks them).
# A module is needed when it provides an imported package, and also when its
# path is a prefix of one (go must look inside it to rule it out: e.g.
# github.com/Azure/go-autorest for github.com/Azure/go-autorest/autorest).
pkgs=$(go list -deps -tags "$tags" -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./cmd/edgecert)
mods=$(go list -m -f '{{if not .Main}}{{.Path}} {{.Version}}{{end}}' all | awk -v pkgs="$pkgs" '
  BEGIN { n = split(pkgs, p, "\n") }
  { for (i = 1; i <= n; i++) if (p[i] == $1 || index(p[i], $1 "/") == 1) { print $1 "@" $2; break } }')
go list -m all >/dev/null
# shellcheck disable=SC2086 # one argument per module
go mod download $mods
hostcache=$(go env GOMODCACHE)
export GOMODCACHE="$root/go/pkg/mod" GOPROXY="file://$hostcache/cache/download" GOSUMDB=off
go list -m all >/dev/null
# shellcheck disable=SC2086 # one argument per module
go mod download $mods
unset GOMODCACHE GOPROXY GOSUMDB
chmod -R u+w "$root/go/pkg/mod"
cat > "$dir/Dockerfile" <<DOCKERFILE
FROM scratch
COPY root/ /
ENV PATH=/usr/local/go/bin:/bin GOROOT=/usr/local/go GOPATH=/go GOMODCACHE=/go/pkg/mod GOCACHE=/tmp/go-build \
    GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local HOME=/tmp
LABEL edgecert.builder=$key-$set
CMD ["go", "version"]
DOCKERFILE
docker build -q -t "$tag" "$dir" >/dev/null
echo "built $tag ($(go env GOVERSION), the modules of DNS_PROVIDERS=$set: $(du -sh "$root/go/pkg/mod" | cut -f1))"
