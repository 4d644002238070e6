#!/usr/bin/env bash
# Bring up N pods (network namespaces with real erl nodes, dnsmasq as the
# cluster DNS) by hand, and tear them down on Enter / Ctrl-C. Needs root.
#   scripts/testbed.sh up 5 --form dns_a
#   scripts/testbed.sh up 3 --naming hostname --form dns_srv
#   scripts/testbed.sh cleanup        # remove leftovers of dead beds
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p erlkube-testbed --bin testbed
exec "${CARGO_TARGET_DIR:-target}/debug/testbed" "$@"
