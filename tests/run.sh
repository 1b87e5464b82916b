#!/usr/bin/env bash
# The README's test command: installs what the tests need (Debian packages, Python clients),
# then runs every test. Arguments are passed to `cargo test` (e.g. `bash tests/run.sh --test demo`).
#
# What the tests use from outside the project, and why:
#   xmllint (libxml2-utils)       validates the LIMS examples against schemas/*.xsd
#   openssl                       a third-party TLS client against the MLLP/TLS listener
#   systemd-analyze (systemd)     `verify` and `security` of systemd/custodian.service
#   promtool (prometheus)         `check metrics` on a live scrape, `check rules` on config/alerts.yml
#   python-hl7 (PyPI hl7)         a third-party MLLP client (mllp_send)
#   jwcrypto (PyPI)               verifies the signed reports as an MRO would
#   chromium, chromium-driver     the review console in a real browser (headless, WebDriver)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "tests/run.sh: need root (or sudo) to install: $*" >&2; return 1; fi
}

need_apt=()
command -v xmllint >/dev/null 2>&1 || need_apt+=(libxml2-utils)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } \
  || need_apt+=(chromium chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import hl7, jwcrypto' >/dev/null 2>&1; then
  echo "tests/run.sh: installing python-hl7 and jwcrypto"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore hl7 jwcrypto \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages hl7 jwcrypto
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi

command -v cargo >/dev/null 2>&1 || { echo "tests/run.sh: cargo is required (https://rustup.rs)" >&2; exit 1; }
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
exec cargo test --locked "$@"
