#!/usr/bin/env bash
# Builds build/bin/etcd, the etcd server the cluster tests run, from its Go
# module source at the version edgecert's client has (no registry, no
# download site: the Go module proxy only). The server module replaces its
# sibling modules with ../ paths, which a module download does not have:
# those replaces are dropped, so the siblings come from the proxy at the
# versions the server requires. Skipped when the binary is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."
v=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/client/v3)
out=build/bin/etcd
if [ -x "$out" ] && [ "$(cat "$out.version" 2>/dev/null)" = "$v" ]; then
  exit 0
fi
mkdir -p build/bin
dir=$(mktemp -d /tmp/edgecert-etcd.XXXXXX)
trap 'chmod -R u+w "$dir" 2>/dev/null; rm -rf "$dir"' EXIT
src=$(cd "$dir" && go mod download -json "go.etcd.io/etcd/server/v3@$v" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -n "$src" ] || { echo "etcd.sh: cannot download go.etcd.io/etcd/server/v3@$v" >&2; exit 1; }
cp -r "$src" "$dir/server"
chmod -R u+w "$dir/server"
(
  cd "$dir/server"
  for m in go.etcd.io/etcd/api/v3 go.etcd.io/etcd/client/pkg/v3 go.etcd.io/etcd/client/v3 go.etcd.io/etcd/pkg/v3; do
    go mod edit -dropreplace "$m"
  done
  GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -o etcd .
)
cp "$dir/server/etcd" "$out"
echo "$v" > "$out.version"
echo "built $out (etcd $v)"
