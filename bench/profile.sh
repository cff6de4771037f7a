#!/usr/bin/env bash
# Where one gateway scenario's CPU goes: runs the scenario (keybound-bench on CPU 1, its Envoy on
# CPU 0), waits until Envoy is busy, samples the Envoy process with `perf record` for 3 seconds,
# and prints the share of its samples (its CPU time) by binary: `envoy` (Envoy itself, with BoringSSL), `[JIT]` (code V8 generated:
# the filter's wasm), `[kernel.kallsyms]` (system calls, network), libc.
#
# Usage: bench/profile.sh SCENARIO [SECONDS_BEFORE_SAMPLING]
#   SCENARIO is a `--only` pattern of keybound-bench (e.g. 5-keybound-dpop, 4-keybound-mtls).
#   Build first with `cargo xtask bench --no-micro --only SCENARIO` (or any `cargo xtask bench`).
# Needs perf (Debian: linux-perf) and permission to sample the CPU (root, or
# kernel.perf_event_paranoid <= 0). The scenario runs slower while sampled: compare shares, not
# the CPU per request it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?usage: bench/profile.sh SCENARIO [SECONDS_BEFORE_SAMPLING]}
delay=${2:-0}
bench=${CARGO_TARGET_DIR:-target}/release/keybound-bench
[ -x "$bench" ] || { echo "profile: $bench is missing: run cargo xtask bench --no-micro --only $scenario first" >&2; exit 2; }
command -v perf > /dev/null || { echo "profile: perf is missing (Debian: apt-get install linux-perf)" >&2; exit 2; }
out=${CARGO_TARGET_DIR:-target}/bench/profile-$scenario
mkdir -p "$(dirname "$out")"
taskset -c 1 "$bench" --only "$scenario" --runs 1 --seconds 8 > "$out.log" 2>&1 &
bench_pid=$!
trap 'kill $bench_pid 2> /dev/null || true' EXIT
sleep "$delay"
# Envoy is busy when it used >= 70% of a core in each of four half-second windows in a row (its
# start-up, and the generator signing proofs, leave it idle in between).
busy=0
for _ in $(seq 1 600); do
  pid=$(pgrep -f "envoy.yaml --concurrency" | head -1 || true)
  if [ -z "$pid" ]; then sleep 0.5; continue; fi
  a=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2> /dev/null || echo 0)
  sleep 0.5
  b=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2> /dev/null || echo 0)
  if [ $((b - a)) -ge 35 ]; then busy=$((busy + 1)); else busy=0; fi
  [ "$busy" -ge 4 ] && break
done
[ "$busy" -ge 4 ] || { echo "profile: Envoy never got busy; see $out.log" >&2; exit 1; }
perf record -p "$pid" -g -o "$out.data" -- sleep 3 > /dev/null 2>&1
wait $bench_pid || { echo "profile: the scenario failed; see $out.log" >&2; exit 1; }
trap - EXIT
grep "µs/req" "$out.log" || true
echo "Envoy's samples by binary ($out.data):"
perf report -i "$out.data" --no-children --sort dso --stdio -g none 2> /dev/null | grep -E '^ +[0-9]' | head -8
