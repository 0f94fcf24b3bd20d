#!/usr/bin/env bash
# make flake: the unit suite, -race, FLAKE_COUNT times (default 20) under
# -cpu 1,2, with a CPU burner on every core beside it, as CI's loaded
# 2-core machine would run it (FLAKE_BURNERS=N for another number, 0 when
# the machine is loaded otherwise). Prints each package's result and, for a
# failure, the failing tests; exits non-zero if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
count=${FLAKE_COUNT:-20}
pkgs=$(go list ./... | grep -v /e2e)
burners=()
for _ in $(seq 1 "${FLAKE_BURNERS:-$(nproc)}"); do
  timeout 3h sh -c 'while :; do :; done' &
  burners+=($!)
done
trap 'kill "${burners[@]}" 2>/dev/null' EXIT
start=$(date +%s)
out=build/flake.log
mkdir -p build
status=0
go test -race -count="$count" -cpu 1,2 -timeout 150m $pkgs >"$out" 2>&1 || status=$?
grep -E '^(ok|FAIL|---)' "$out" | grep -v -- '--- PASS' | sort | uniq -c
echo "flake: -race -count=$count -cpu 1,2 with ${FLAKE_BURNERS:-$(nproc)} CPU burners: exit $status in $(( $(date +%s) - start )) s (full log: $out)"
exit "$status"
