#!/usr/bin/env bash
# Install (when missing) and start the services the test suite talks to (PostgreSQL, RabbitMQ, Ceph RGW).
# Idempotent; needs root for installs. Every service is started the way the machine's own boot does, without Docker.
set -euo pipefail

need_apt=()
command -v rabbitmq-server >/dev/null 2>&1 || need_apt+=(rabbitmq-server)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
# Debian's chromium: the status page test drives it headless through playwright (no browser download).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "services: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# tests/e2e/test_deploy.py: `docker-compose config` validates docker-compose.yml (no Docker engine: without
# recommends, so no docker.io), and nginx runs the stack's template on a port the test picks. No service
# is started by the install (policy-rc.d 101): nginx would take port 80, prometheus 9090.
deploy_apt=()
command -v docker-compose >/dev/null 2>&1 || deploy_apt+=(docker-compose)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || deploy_apt+=(nginx)
# promtool (Debian's prometheus package) checks deploy/prometheus/alerts.yml and runs its rule unit tests.
command -v promtool >/dev/null 2>&1 || deploy_apt+=(prometheus)
if [ ${#deploy_apt[@]} -gt 0 ]; then
  echo "services: installing ${deploy_apt[*]} (no service started)"
  [ ${#need_apt[@]} -gt 0 ] || apt-get update -qq
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${deploy_apt[@]}" >/dev/null \
    || status=$?
  [ "$own_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
  [ "$status" = 0 ] || exit "$status"
fi

# PostGIS for the PostgreSQL major version installed (pgstac needs it; tests start stac-fastapi-pgstac).
pg_major="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
if [ -n "$pg_major" ] && [ ! -e "/usr/share/postgresql/$pg_major/extension/postgis.control" ]; then
  echo "services: installing postgresql-$pg_major-postgis-3"
  [ ${#need_apt[@]} -gt 0 ] || apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$pg_major-postgis-3" >/dev/null
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # name port seconds
  for _ in $(seq 1 "$3"); do port_open "$2" && return 0; sleep 1; done
  echo "services: $1 did not come up on port $2" >&2; return 1
}

if ! port_open 5432; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
fi
wait_port PostgreSQL 5432 60

if ! port_open 5672; then
  echo "services: starting RabbitMQ"
  # The management plugin gives `stacdrop queues` its rates and lets tests close connections server-side.
  rabbitmq-plugins enable --offline rabbitmq_management >/dev/null
  rabbitmq-server -detached
fi
wait_port RabbitMQ 5672 120
if ! port_open 15672; then
  echo "services: enabling the RabbitMQ management plugin"
  rabbitmq-plugins enable rabbitmq_management >/dev/null
fi
wait_port "RabbitMQ management" 15672 60

# Ceph RGW (issue 13): the S3 server behind Arbutus, with the bucket notifications moto lacks; one mon, one
# memstore OSD and one radosgw on 127.0.0.1:7480 (scripts/ceph-rgw.sh installs the packages when missing).
rgw_t0="$(date +%s.%N)"
bash "$(dirname "$0")/ceph-rgw.sh" start
echo "services: Ceph RGW up on 127.0.0.1:${STACDROP_RGW_PORT:-7480} after $(awk -v a="$rgw_t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
echo "services: PostgreSQL (with PostGIS), RabbitMQ (with management) and Ceph RGW are up"
