#!/usr/bin/env bash
# Installs the peers `npm run bench` compares sluice against (Squid, tinyproxy, Dante,
# microsocks), the nginx origin and the wrk load generator, from Debian packages.
# Root only (it uses apt-get); anything missing from the archive is skipped with a note,
# since the bench itself skips any peer it cannot find.
set -u

# package -> binary the bench looks for
PACKAGES="squid:squid tinyproxy:tinyproxy dante-server:danted microsocks:microsocks nginx:nginx wrk:wrk curl:curl"

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-peers: not root; install these Debian packages yourself: squid tinyproxy dante-server microsocks nginx wrk" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-peers: no apt-get on this system; skipping (the bench skips missing peers)" >&2
  exit 0
fi

missing=()
for entry in $PACKAGES; do
  pkg=${entry%%:*}
  bin=${entry##*:}
  if command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ]; then
    echo "setup-peers: $bin already installed"
  else
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || echo "setup-peers: apt-get update failed; trying with the package lists on disk" >&2

installable=()
for pkg in "${missing[@]}"; do
  if apt-cache show "$pkg" >/dev/null 2>&1; then
    installable+=("$pkg")
  else
    echo "setup-peers: note: package $pkg is not in the archive; skipping it" >&2
  fi
done
[ ${#installable[@]} -eq 0 ] && exit 0

# The packages start their daemons on install (squid on :3128, danted, nginx on :80).
# The bench runs its own copies in the foreground on its own ports, so forbid service
# starts for the duration of the install (the standard Debian policy-rc.d mechanism),
# unless the host already has a policy of its own.
own_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  own_policy=1
fi
cleanup() { [ "$own_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d; }
trap cleanup EXIT

# One package at a time, so one failure does not cost the others.
for pkg in "${installable[@]}"; do
  if apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null; then
    echo "setup-peers: installed $pkg"
  else
    echo "setup-peers: note: installing $pkg failed; the bench will skip it" >&2
  fi
done
exit 0
