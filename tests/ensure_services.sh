#!/usr/bin/env bash
# Makes sure the services the tests start for themselves are installed: Mosquitto 2 and a PostgreSQL server (Debian's
# packages), and for the report test pdftoppm (poppler-utils: renders the PDF) and chromium (opens the HTML headless).
# Quick when they are there; as root it installs what is missing with apt-get; otherwise it says exactly what to
# install and fails. `ensure_services.sh demo`: only what `make demo` needs (Mosquitto).
set -euo pipefail
for_what="make test"
[ "${1:-}" = demo ] && for_what="make demo"

have_mosquitto() { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; }
have_postgres() { command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }

missing=()
have_mosquitto || missing+=(mosquitto)
if [ "$for_what" = "make test" ]; then
    have_postgres || missing+=(postgresql)
    command -v pdftoppm >/dev/null 2>&1 || missing+=(poppler-utils)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "$for_what needs ${missing[*]}: install with" >&2
    echo "    sudo apt-get install -y ${missing[*]}" >&2
    exit 2
fi
echo "installing ${missing[*]} (Debian packages) for $for_what..." >&2
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 -q -y "$@"; }
# A fresh machine may have no package lists yet: update once only if the install cannot find the packages.
apt_get install --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    apt_get update >/dev/null
    apt_get install --no-install-recommends "${missing[@]}" >/dev/null
}
echo "installed ${missing[*]} in $(( $(date +%s) - start )) s" >&2
# The packages may start their own daemons where an init system runs; the tests start their own on free ports.
