#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run them.
#   Debian: dnsmasq-base (the real DNS server of the routing tests), swaks (a real SMTP client),
#           postfix (smtp-sink/smtp-source, and the benchmark yardstick; never started as a service)
#   Python: the project with its [test] extras
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
command -v swaks >/dev/null || need+=(swaks)
[ -x /usr/sbin/smtp-sink ] || need+=(postfix)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
python3 -m pip install -q -e '.[test]'
exec python3 -m pytest -q -p no:cacheprovider "$@"
