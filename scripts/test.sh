#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, check that each tool works, then
# run the tests. Every Debian package a test uses is named here: `--no-install-recommends` is kept
# (a lean, repeatable install), so what a package only *recommends* (swaks' Perl TLS modules) must
# be listed by name.
#   dnsmasq-base            the real DNS server of the routing tests
#   swaks                   a real SMTP client
#   libnet-ssleay-perl,     swaks --tls (STARTTLS); only recommended by swaks
#   libio-socket-ssl-perl
#   libio-socket-inet6-perl swaks over IPv6; only recommended by swaks
#   postfix                 smtp-sink/smtp-source and the benchmark yardstick (never started)
#   iproute2, util-linux    ip (loopback aliases), mount/umount (a small tmpfs is a real full disk)
#   systemd                 systemd-analyze verify of deploy/systemd/mailgate.service
#   haproxy                 the real load balancer (PROXY v2) in front of two gateways (never
#                           started as a service: tests/e2e/test_haproxy.py runs its own)
#   chromium                the real browser of the webmail tests, driven by pip playwright through
#                           /usr/bin/chromium (Playwright's own browser download cannot run here)
#   postgresql-15           initdb/pg_ctl of the PostgreSQL spool tests (tests/support/postgres.py
#                           starts a throwaway cluster; the packaged cluster is never used)
# Python: the project with its [test] extras. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(dnsmasq-base swaks libnet-ssleay-perl libio-socket-ssl-perl
                 libio-socket-inet6-perl postfix iproute2 util-linux systemd chromium haproxy
                 postgresql-15)

need=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  # Output captured first, never piped into `grep -q`: grep exits at its first match, the writer
  # may then die of SIGPIPE, and under pipefail the check fails though the package is there.
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  [[ "$status" == *"install ok installed"* ]] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  echo "test.sh: installing Debian packages: ${need[*]}"
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

python3 -m pip install -q -e '.[test,fast]'   # fast: uvloop, the e2e tests run on both loops

# Preflight: each tool the tests use must work, or the run stops here with the reason.
fail() { echo "test.sh: preflight failed: $*" >&2; exit 3; }
[ -x /usr/sbin/dnsmasq ] || command -v dnsmasq >/dev/null || fail "dnsmasq not found (dnsmasq-base)"
/usr/sbin/dnsmasq --version >/dev/null 2>&1 || dnsmasq --version >/dev/null 2>&1 \
  || fail "dnsmasq does not run"
command -v swaks >/dev/null || fail "swaks not found"
support="$(swaks --support 2>&1 || true)"
grep -q "=== TLS supported" <<<"$support" \
  || fail "swaks has no TLS: $(grep TLS <<<"$support") (install libnet-ssleay-perl libio-socket-ssl-perl)"
[ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/smtp-source ] || fail "smtp-sink/smtp-source not found (postfix)"
haproxy_version="$(/usr/sbin/haproxy -v 2>/dev/null || true)"   # captured: see dpkg-query above
grep -Eq "^HAProxy version (2\.[6-9]|[3-9]\.)" <<<"$haproxy_version" \
  || fail "HAProxy >= 2.6 not found at /usr/sbin/haproxy (haproxy; tests/e2e/test_haproxy.py)"
python3 - <<'EOF' || fail "Python test dependencies do not import"
import aiosmtpd, aiosmtplib, dns.asyncresolver, pytest, pytest_asyncio, trustme  # noqa: F401
import nh3, argon2, pyotp, dkim, nacl, jinja2, multipart, yaml, playwright.sync_api  # noqa: F401
import psycopg, psycopg_pool, pytest_timeout  # noqa: F401
EOF
timeout 120 python3 - <<'EOF' || fail "PostgreSQL 15 cannot initdb and start (postgresql-15; as root it runs as user postgres or nobody)"
from tests.support.postgres import PgCluster, available
assert available(), "initdb/pg_ctl not found in /usr/lib/postgresql/15/bin"
c = PgCluster()
try:
    c.init()
    c.start()
    c.sql("SELECT 1")
finally:
    c.destroy()
EOF
timeout 120 python3 - <<'EOF' || fail "Playwright cannot drive /usr/bin/chromium headless"
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu",
                          "--disable-background-networking", "--disable-component-update"])
    page = b.new_page()
    page.set_content("<title>ok</title>")
    assert page.title() == "ok"
    b.close()
EOF

python3 -m pytest -q -p no:cacheprovider "$@"
