#!/usr/bin/env bash
# System packages the test suite needs beyond pip, installed when missing (Debian/Ubuntu apt).
#
#   * headless Chromium (`chromium`): tests/cli/test_cli_report.py renders the HTML report in it;
#   * the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`; package `postgresql`):
#     tests/_postgres.py starts a throwaway server to run the ExperimentDB and registry suites on;
#   * the HTTP load generator `wrk`: benchmarks/serve_load.py measures `trainengine serve` with it;
#   * `promtool` (package `prometheus`): tests/export/test_prometheus_rules.py checks and unit-tests the
#     Prometheus alerting rules every export bundle ships (promtool check rules / test rules).
#
# A skip that CI would take counts as a missing test, so this script never lets one slide:
#   * everything present           -> prints nothing, exits 0 at once (no apt-get update);
#   * missing and running as root  -> apt-get update once, apt-get install, exits 0 (1 on failure);
#   * missing and not root         -> prints the one command to run (with sudo) and exits 1.
# Idempotent; `make test` runs it first. SYSTEM_DEPS_DRY_RUN=1 prints what it would do.
set -euo pipefail

missing=()

have_chromium() {
    command -v chromium >/dev/null 2>&1
}

have_postgres() {
    # tests/_postgres.py looks in the same places: PATH first, then Debian's versioned folders.
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        return 0
    fi
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        [[ -x "$bin/initdb" && -x "$bin/pg_ctl" && -x "$bin/postgres" ]] && return 0
    done
    return 1
}

have_wrk() {
    command -v wrk >/dev/null 2>&1
}

have_promtool() {
    command -v promtool >/dev/null 2>&1
}

have_chromium || missing+=(chromium)
have_postgres || missing+=(postgresql)
have_wrk || missing+=(wrk)
have_promtool || missing+=(prometheus)

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

install_cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${missing[*]} and no apt-get on this machine; install them with the system's package manager" >&2
    echo "  (Chromium as 'chromium' on PATH; PostgreSQL's server binaries initdb/pg_ctl/postgres; 'wrk' and" >&2
    echo "   'promtool' on PATH)" >&2
    exit 1
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "system-deps: the tests need ${missing[*]} (not installed); run once:" >&2
    echo "  sudo sh -c '$install_cmd'" >&2
    exit 1
fi

if [[ "${SYSTEM_DEPS_DRY_RUN:-0}" == "1" ]]; then
    echo "system-deps: would run: $install_cmd"
    exit 0
fi

echo "system-deps: installing ${missing[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Check the result rather than trusting apt's exit status (e.g. a package that does not provide
# the binary under the expected name).
still=()
have_chromium || still+=(chromium)
have_postgres || still+=(postgresql)
have_wrk || still+=(wrk)
have_promtool || still+=(prometheus)
if [[ ${#still[@]} -ne 0 ]]; then
    echo "system-deps: installed ${missing[*]} but still cannot find ${still[*]}" >&2
    exit 1
fi
echo "system-deps: installed ${missing[*]}" >&2
