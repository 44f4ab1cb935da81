#!/usr/bin/env bash
# A single-node Ceph (one mon, one memstore OSD, one radosgw) on 127.0.0.1 for the tests: the S3 server
# behind Arbutus, with its real bucket notifications, which moto does not have.
#
#   bash scripts/ceph-rgw.sh install   Debian's Ceph 16.2 packages, when missing (needs root)
#   bash scripts/ceph-rgw.sh start     install, then start the cluster; a health check when its daemons run
#   bash scripts/ceph-rgw.sh stop      stop the three daemons (by their pid files)
#   bash scripts/ceph-rgw.sh status    daemons, cluster health, RGW's HTTP answer; exit 1 when not healthy
#   bash scripts/ceph-rgw.sh env       the endpoint and keys as shell assignments
#
# Every file (conf, keyrings, mon store, logs, pid files, admin sockets, crash dumps) lives under one state
# directory, $STACDROP_CEPH_DIR (default /var/lib/stacdrop-ceph). No systemd: the daemons daemonize
# themselves and write their pid files there. The OSD keeps its data in RAM (memstore, capped by
# $STACDROP_CEPH_MEMSTORE_BYTES, default 2 GiB), so after a machine restart nothing survives worth keeping:
# `start` then stops whatever is left, wipes the state directory and creates the cluster from nothing
# (about 20 s).
#
# Test user (fixed, so tests and humans need no lookup; tests/support/rgw.py carries the same values):
#   endpoint    http://127.0.0.1:7480   ($STACDROP_RGW_PORT)
#   user        stacdrop-test
#   access key  STACDROPTESTACCESSKEY
#   secret key  stacdrop-test-secret-key-0123456789abcdef
#
# Why the conf looks as it does: ../shared/reference/ceph-rgw.md (measured on these machines). In short:
# no mgr (not needed for S3 or notifications, ~300 MB); no rgw zone/zonegroup settings (RGW then fails with
# "failed reading zonegroup info"); `--no-mon-config` for the OSD's mkfs (it fails without); gc waits
# lowered to 30 s (deleted objects otherwise stay in RAM 2 h); civetweb, not beast (16.2.15's beast kills
# radosgw on a DeleteObjects to a bucket with a persistent topic); `rgw trust forwarded https` so a client
# can send a push endpoint with a password behind an `X-Forwarded-Proto: https` header.
set -euo pipefail

STATE="${STACDROP_CEPH_DIR:-/var/lib/stacdrop-ceph}"
RGW_PORT="${STACDROP_RGW_PORT:-7480}"
MEMSTORE_BYTES="${STACDROP_CEPH_MEMSTORE_BYTES:-2147483648}"
RGW_WAIT="${STACDROP_RGW_WAIT:-120}"   # seconds RGW gets to answer HTTP after it is started
CONF="$STATE/ceph.conf"
RGW_NAME=client.rgw.a
TEST_UID=stacdrop-test
TEST_ACCESS_KEY=STACDROPTESTACCESSKEY
TEST_SECRET_KEY=stacdrop-test-secret-key-0123456789abcdef
PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)
DAEMONS=(rgw osd mon)  # stop order; pid files $STATE/run/NAME.pid

log() { echo "ceph-rgw: $*"; }
die() { echo "ceph-rgw: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

ceph_() { timeout 30 ceph -c "$CONF" --connect-timeout 10 "$@"; }

installed() {
  command -v ceph-mon >/dev/null 2>&1 && command -v ceph-osd >/dev/null 2>&1 \
    && command -v radosgw >/dev/null 2>&1 && command -v ceph >/dev/null 2>&1 \
    && command -v radosgw-admin >/dev/null 2>&1 && command -v monmaptool >/dev/null 2>&1
}

cmd_install() {
  installed && return 0
  [ "$(id -u)" = 0 ] || die "Ceph is not installed and installing it needs root: apt-get install ${PACKAGES[*]}"
  log "installing ${PACKAGES[*]} (Debian's Ceph 16.2, ~290 MB, ~2 min)"
  local t0 apt_opts=(-y -qq --no-install-recommends -o DPkg::Lock::Timeout=600)
  t0="$(now)"
  apt-cache show ceph-mon >/dev/null 2>&1 || apt-get update -qq
  if ! DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "${PACKAGES[@]}" >/dev/null; then
    # Stale package lists (a version no longer on the mirror): refresh once and try again.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "${PACKAGES[@]}" >/dev/null
  fi
  installed || die "the packages installed but ceph-mon/ceph-osd/radosgw/ceph are not on PATH"
  log "installed in $(since "$t0") s"
}

# -- daemons ------------------------------------------------------------------------------------------

# The pid of a daemon of THIS cluster (its pid file names a live process started with our conf), or nothing.
daemon_pid() {
  local file="$STATE/run/$1.pid" pid
  [ -s "$file" ] || return 1
  pid="$(cat "$file")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CONF" || return 1
  echo "$pid"
}

rgw_answers() {  # RGW's anonymous bucket list: HTTP 200 with an XML body
  curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$RGW_PORT/" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

all_running() {
  local d
  [ -f "$CONF" ] || return 1
  for d in "${DAEMONS[@]}"; do daemon_pid "$d" >/dev/null || return 1; done
}

healthy() { all_running && rgw_answers && ceph_ osd stat -f json 2>/dev/null | grep -q '"num_up_osds":1'; }

stop_daemon() {  # name
  local pid
  pid="$(daemon_pid "$1")" || { rm -f "$STATE/run/$1.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  if [ -d "/proc/$pid" ]; then
    log "$1 (pid $pid) did not stop within 10 s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  fi
  rm -f "$STATE/run/$1.pid"
}

cmd_stop() {
  local d
  for d in "${DAEMONS[@]}"; do stop_daemon "$d"; done
  log "stopped"
}

log_tail() {  # name of a log under $STATE/log, and a hint
  echo "---- last lines of $STATE/log/$1.log ----" >&2
  tail -n 40 "$STATE/log/$1.log" >&2 2>/dev/null || echo "(no log)" >&2
  if [ -n "$(ls -A "$STATE/crash" 2>/dev/null)" ]; then echo "crash dumps: $STATE/crash" >&2; fi
}

write_conf() {  # fsid
  cat >"$CONF" <<EOF
# Written by scripts/ceph-rgw.sh: a single-node test cluster on 127.0.0.1, everything under $STATE.
[global]
fsid = $1
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
mon initial members = a
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = true
mon warn on insecure global id reclaim allowed = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
mon allow pool delete = true
# The mon warns below 30 % free disk (this machine has ~28 %); it still stops below 5 % (mon data avail crit).
mon data avail warn = 10
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
osd crush chooseleaf type = 0
run dir = $STATE/run
log file = $STATE/log/\$type.log
crash dir = $STATE/crash
mon data = $STATE/mon/\$cluster-\$id
osd data = $STATE/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES

[mon]
pid file = $STATE/run/mon.pid

[osd]
pid file = $STATE/run/osd.pid

[client]
keyring = $STATE/keyring/\$cluster.\$name.keyring
log file = $STATE/log/client.log

[$RGW_NAME]
pid file = $STATE/run/rgw.pid
log file = $STATE/log/rgw.log
rgw data = $STATE/rgw
rgw frontends = civetweb port=127.0.0.1:$RGW_PORT
rgw trust forwarded https = true
rgw gc obj min wait = 30
rgw gc processor period = 30
rgw gc processor max time = 30
EOF
}

create_cluster() {
  local t0 t fsid osd_uuid osd_id
  t0="$(now)"
  rm -rf "$STATE"
  mkdir -p "$STATE"/{run,log,crash,keyring,mon,osd,rgw,tmp}
  fsid="$(cat /proc/sys/kernel/random/uuid)"
  write_conf "$fsid"

  # mon
  t="$(now)"
  ceph-authtool --create-keyring "$STATE/tmp/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$STATE/keyring/ceph.client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$STATE/tmp/mon.keyring" --import-keyring "$STATE/keyring/ceph.client.admin.keyring" >/dev/null
  monmaptool --create --fsid "$fsid" --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' \
    "$STATE/tmp/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$STATE/tmp/monmap" --keyring "$STATE/tmp/mon.keyring" \
    || { log_tail mon; die "ceph-mon --mkfs failed"; }
  # A daemon's own stderr (before it detaches) goes to NAME-start.log, after that to its log file; it must
  # not inherit the start lock (fd 9), or the next start would wait for it.
  ceph-mon -c "$CONF" -i a >"$STATE/log/mon-start.log" 2>&1 9>&- \
    || { cat "$STATE/log/mon-start.log" >&2; log_tail mon; die "ceph-mon did not start"; }
  for _ in $(seq 1 60); do ceph_ mon stat >/dev/null 2>&1 && break; sleep 0.5; done
  ceph_ mon stat >/dev/null 2>&1 || { log_tail mon; die "the mon did not answer within 30 s"; }
  log "mon up in $(since "$t") s"

  # OSD (memstore: its data is RAM, its mkfs needs --no-mon-config)
  t="$(now)"
  osd_uuid="$(cat /proc/sys/kernel/random/uuid)"
  osd_id="$(ceph_ osd new "$osd_uuid")"
  [ "$osd_id" = 0 ] || die "expected osd id 0, got '$osd_id'"
  mkdir -p "$STATE/osd/ceph-0"
  ceph-osd -c "$CONF" -i 0 --mkfs --mkkey --no-mon-config --osd-uuid "$osd_uuid" >"$STATE/log/osd-mkfs.log" 2>&1 \
    || { cat "$STATE/log/osd-mkfs.log" >&2; log_tail osd; die "ceph-osd --mkfs failed"; }
  ceph_ auth add osd.0 osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' \
    -i "$STATE/osd/ceph-0/keyring" >/dev/null 2>&1
  ceph-osd -c "$CONF" -i 0 >"$STATE/log/osd-start.log" 2>&1 9>&- \
    || { cat "$STATE/log/osd-start.log" >&2; log_tail osd; die "ceph-osd did not start"; }
  for _ in $(seq 1 120); do
    ceph_ osd stat -f json 2>/dev/null | grep -q '"num_up_osds":1' && break; sleep 0.5
  done
  ceph_ osd stat -f json 2>/dev/null | grep -q '"num_up_osds":1' || { log_tail osd; die "the OSD did not come up within 60 s"; }
  log "OSD up in $(since "$t") s"

  # radosgw: its first start creates the default zone and its pools.
  t="$(now)"
  ceph_ auth get-or-create "$RGW_NAME" mon 'allow rw' osd 'allow rwx' \
    -o "$STATE/keyring/ceph.$RGW_NAME.keyring" >/dev/null
  port_open "$RGW_PORT" && die "port $RGW_PORT is taken by another process: cannot start radosgw there"
  radosgw -c "$CONF" -n "$RGW_NAME" >"$STATE/log/rgw-start.log" 2>&1 9>&- \
    || { cat "$STATE/log/rgw-start.log" >&2; log_tail rgw; die "radosgw did not start"; }
  local answered=0
  for _ in $(seq 1 $((RGW_WAIT * 2))); do
    if rgw_answers; then answered=1; break; fi
    daemon_pid rgw >/dev/null || [ ! -s "$STATE/run/rgw.pid" ] || break  # died: no use waiting
    sleep 0.5
  done
  if [ "$answered" != 1 ]; then
    log_tail rgw
    daemon_pid rgw >/dev/null || die "radosgw exited before it answered HTTP on 127.0.0.1:$RGW_PORT"
    die "radosgw did not answer HTTP on 127.0.0.1:$RGW_PORT within $RGW_WAIT s"
  fi
  log "RGW answering in $(since "$t") s"

  radosgw-admin -c "$CONF" -n client.admin user create --uid "$TEST_UID" --display-name "stacdrop tests" \
    --access-key "$TEST_ACCESS_KEY" --secret-key "$TEST_SECRET_KEY" >/dev/null \
    || die "radosgw-admin user create failed"
  rm -rf "$STATE/tmp"
  log "cluster created in $(since "$t0") s (state: $STATE)"
}

cmd_start() {
  cmd_install
  # One start at a time (two test sessions, or services.sh and a fixture): the loser waits, then finds the
  # cluster running. The lock sits beside the state directory, which a re-create removes.
  mkdir -p "$(dirname "$STATE")"
  exec 9>"$STATE.lock"
  flock -w 300 9 || die "another start has held $STATE.lock for 5 min"
  if all_running; then
    # Never wipe a cluster whose daemons all run (other sessions may be using it): a busy RGW gets time.
    local d
    for _ in $(seq 1 60); do healthy && break; sleep 1; done
    if ! healthy; then
      for d in mon osd rgw; do log_tail "$d"; done
      die "the daemons run but RGW does not answer on 127.0.0.1:$RGW_PORT or the OSD is down; '$0 stop' then '$0 start' re-creates the cluster"
    fi
    local health
    health="$(ceph_ health 2>/dev/null || echo 'health unknown')"
    if ! grep -q "full osd" <<<"$health"; then
      log "already running (RGW http://127.0.0.1:$RGW_PORT, $health)"
      return 0
    fi
    # A full memstore OSD refuses every write (deleted objects wait for RGW's gc, and big benches fill the
    # RAM cap): nothing on it is worth keeping, and no test can pass on it. Start from nothing.
    log "the OSD is full ($health): re-creating the cluster"
    cmd_stop >/dev/null
    create_cluster
    return 0
  fi
  if [ -f "$CONF" ]; then
    # Daemons gone (a machine restart) or some of them dead: memstore lost the data anyway, start from nothing.
    log "state in $STATE but not every daemon runs: re-creating the cluster"
    cmd_stop >/dev/null
  fi
  create_cluster
}

cmd_status() {
  local d pid ok=0
  [ -f "$CONF" ] || { log "no cluster in $STATE"; return 1; }
  for d in mon osd rgw; do
    if pid="$(daemon_pid "$d")"; then
      log "$d: pid $pid, RSS $(awk '/^VmRSS/ { printf "%d MB", $2 / 1024 }' "/proc/$pid/status")"
    else
      log "$d: not running"; ok=1
    fi
  done
  if rgw_answers; then log "RGW answers on http://127.0.0.1:$RGW_PORT"; else log "RGW does not answer"; ok=1; fi
  if daemon_pid mon >/dev/null; then ceph_ -s 2>&1 | sed 's/^/  /' || ok=1; fi
  return "$ok"
}

cmd_env() {
  echo "STACDROP_TEST_RGW=http://127.0.0.1:$RGW_PORT"
  echo "STACDROP_TEST_RGW_ACCESS_KEY=$TEST_ACCESS_KEY"
  echo "STACDROP_TEST_RGW_SECRET_KEY=$TEST_SECRET_KEY"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 install | start | stop | status | env" >&2; exit 2 ;;
esac
