#!/usr/bin/env bash
# Runs every benchmark on this machine: bootstrap (what is missing), build, then
# bench/datapath.ts (BPF_PROG_TEST_RUN ns/packet), bench/apply.ts (kpr apply vs iptables /
# nftables) and bench/throughput.ts (iperf3). Each prints its own table; see bench/README.md. Needs root.
#   scripts/bench.sh            10,000 services × 10 endpoints (the iptables-nft baseline hits
#                               its timeout at this size: BENCH_TIMEOUT, default 300 s)
#   scripts/bench.sh --quick    1,000 services × 10 endpoints
# Environment: BENCH_SERVICES, BENCH_ENDPOINTS, BENCH_TIMEOUT (seconds), BENCH_RUNS,
# BENCH_PACKETS (datapath packets per case), BENCH_SECONDS (iperf3 run length).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "bench: run as root (network namespaces, bpffs, iptables)" >&2; exit 1; }
services=${BENCH_SERVICES:-10000}
if [ "${1:-}" = --quick ]; then services=${BENCH_SERVICES:-1000}; fi
endpoints=${BENCH_ENDPOINTS:-10}

bash scripts/bootstrap.sh
export PATH="$PWD/node_modules/.bin:$PATH"
bun build.ts

printf '\n\033[1m== datapath: tc program ns/packet (1 and %s services)\033[0m\n' "$services"
bun bench/datapath.ts --services "1,$services" --endpoints "$endpoints" --packets "${BENCH_PACKETS:-100000}"

printf '\n\033[1m== apply: %s services × %s endpoints, kpr vs iptables vs nft\033[0m\n' "$services" "$endpoints"
bun bench/apply.ts --services "$services" --endpoints "$endpoints" \
  --timeout "${BENCH_TIMEOUT:-300}" --runs "${BENCH_RUNS:-5}"

printf '\n\033[1m== throughput: iperf3 through a NodePort (direct vs kpr vs iptables DNAT)\033[0m\n'
bun bench/throughput.ts --seconds "${BENCH_SECONDS:-5}" --repeat 3
