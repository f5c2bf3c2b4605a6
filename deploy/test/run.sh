#!/usr/bin/env bash
# Tests for deploy/: the Prometheus config, the alert rules and the Grafana dashboard.
#
#   static   promtool check config / check rules / test rules, dashboard lint (panel descriptions,
#            layout, every deimos_* name in the metric contract), every dashboard query parsed by
#            promtool, and the mutation test (each broken alert expression fails its unit tests)
#   fixture  a real Prometheus scraping deploy/test/fixture_exporter.py (a stand-in /metrics built
#            from metric-names.txt), every dashboard query must return data: checks the query
#            machinery without a server. DEIMOS_FIXTURE=0 skips it.
#   live     with DEIMOS_BIN: a real 3-node Deimos cluster on loopback, traffic, two faults (both
#            followers stopped and restarted, so the leader loses its lease; leader and one follower
#            paused, so a write to the lone follower fails), promtool check metrics on each node's
#            /metrics, the exported names/types/labels compared with metric-names.txt, a real
#            Prometheus scraping the cluster, every dashboard query must return data, and the
#            alert rules must evaluate without errors.
#
# Usage: DEIMOS_BIN=target/release/deimos deploy/test/run.sh
# Env:   DEIMOS_BIN (no live phase without it), DEIMOS_FIXTURE=0, PROM_PORT (9099), KEEP_TMP=1.
# Needs: bash, curl, python3, and promtool + prometheus (installed from Debian's `prometheus`
# package if promtool is missing; that needs root). Everything listens on 127.0.0.1 only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
deploy="$(cd "$here/.." && pwd)"
prom_dir="$deploy/prometheus"
dashboard="$deploy/grafana/deimos-dashboard.json"
contract="$here/metric-names.txt"
PROM_PORT="${PROM_PORT:-9099}"
PROM_URL="http://127.0.0.1:$PROM_PORT"
CLIENT_PORTS=(4001 4002 4003)
PEER_PORTS=(7001 7002 7003)
FIXTURE_PORTS=(19101 19102 19103)

work="$(mktemp -d "${TMPDIR:-/tmp}/deimos-deploy-test.XXXXXX")"
pids=()          # every background process this script started
declare -A node_pid=()
passed=0
failed=0
failures=()

cleanup() {
  local rc=$?
  set +e
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; kill -CONT "$pid" 2>/dev/null; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  wait 2>/dev/null
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n=== [%s] %s\n' "$(date -u +%T)" "$*"; }
pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); failures+=("$*"); echo "FAIL: $*"; }
# check NAME CMD...: run CMD, record pass/fail, keep going.
check() {
  local name="$1"; shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}
summary() {
  say "summary"
  for f in "${failures[@]}"; do echo "  failed: $f"; done
  echo "deploy: $passed passed, $failed failed"
  [ "$failed" = 0 ]
}
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
need_free_ports() {
  local p
  for p in "$@"; do
    if port_in_use "$p"; then echo "port 127.0.0.1:$p is already in use; stop whatever listens there" >&2; exit 1; fi
  done
}

# ------------------------------------------------------------------------------------ tools
install_promtool() {
  if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" != 0 ]; then
    echo "promtool/prometheus missing and not root: install Debian's 'prometheus' package" >&2
    exit 1
  fi
  say "installing Debian's prometheus package (provides prometheus and promtool)"
  export DEBIAN_FRONTEND=noninteractive
  local try
  for try in 1 2 3 4 5; do  # another apt may hold the lock
    if apt-get update -qq && apt-get install -y -qq --no-install-recommends \
         -o DPkg::Lock::Timeout=300 prometheus; then break; fi
    [ "$try" = 5 ] && { echo "apt-get install prometheus failed" >&2; exit 1; }
    sleep 10
  done
}
for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
install_promtool
promtool --version 2>&1 | head -1

# ------------------------------------------------------------------------------- static phase
say "static checks"
check "promtool check config prometheus.yml" promtool check config "$prom_dir/prometheus.yml"
check "promtool check rules deimos-rules.yml" promtool check rules "$prom_dir/deimos-rules.yml"
check "promtool test rules deimos-rules.test.yml" \
  bash -c "cd '$prom_dir' && promtool test rules deimos-rules.test.yml"
check "dashboard lint" python3 "$here/dashboard.py" lint "$dashboard" "$prom_dir/deimos-rules.yml" "$contract"
python3 "$here/dashboard.py" promql-rules "$dashboard" "$work/dashboard-queries.yml"
check "every dashboard query parses (promtool check rules)" promtool check rules "$work/dashboard-queries.yml"

say "mutation test: every broken alert expression must fail its unit tests"
check "mutation test" "$here/mutation.sh"

# ------------------------------------------------------------------------------ shared helpers
# derive_config OUT TARGET_PORT...: prometheus.yml with 1s intervals, the rules beside it, and the
# given scrape targets.
derive_config() {
  local out="$1"; shift
  mkdir -p "$(dirname "$out")"
  cp "$prom_dir/deimos-rules.yml" "$(dirname "$out")/deimos-rules.yml"
  local sed_args=(-e 's/scrape_interval: 5s/scrape_interval: 1s/' -e 's/scrape_timeout: 4s/scrape_timeout: 1s/'
                  -e 's/evaluation_interval: 5s/evaluation_interval: 1s/')
  local i=0 p
  for p in "$@"; do
    sed_args+=(-e "s/127\.0\.0\.1:${CLIENT_PORTS[$i]}\$/127.0.0.1:$p/")
    i=$((i + 1))
  done
  sed "${sed_args[@]}" "$prom_dir/prometheus.yml" > "$out"
  grep -q 'scrape_interval: 1s' "$out" && grep -q 'evaluation_interval: 1s' "$out" || {
    echo "could not derive a 1s config from prometheus.yml" >&2; return 1; }
  for p in "$@"; do grep -q "127.0.0.1:$p\$" "$out" || { echo "target $p missing in $out" >&2; return 1; }; done
  promtool check config "$out" >/dev/null
}

# start_prometheus CONFIG DATADIR: prints nothing, waits for /-/ready.
prom_pid=""
start_prometheus() {
  need_free_ports "$PROM_PORT"
  prometheus --config.file="$1" --storage.tsdb.path="$2" --storage.tsdb.retention.time=1h \
    --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn > "$2.log" 2>&1 &
  prom_pid=$!
  pids+=("$prom_pid")
  local _
  for _ in $(seq 1 60); do
    curl -fsS -m 2 "$PROM_URL/-/ready" >/dev/null 2>&1 && return 0
    kill -0 "$prom_pid" 2>/dev/null || break
    sleep 0.5
  done
  echo "prometheus did not become ready; its log:" >&2
  cat "$2.log" >&2
  return 1
}
stop_pid() {
  local pid="$1" _
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# prom_instant EXPR: the instant-query result as "labels value" lines.
prom_instant() {
  curl -fsS -m 5 --get "$PROM_URL/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json,sys; d=json.load(sys.stdin)
for s in d["data"]["result"]: print(json.dumps(s["metric"], sort_keys=True), s["value"][1])'
}

# wait_up N: until N targets of job deimos are up.
wait_up() {
  local want="$1" _
  for _ in $(seq 1 60); do
    [ "$(prom_instant 'count(up{job="deimos"} == 1)' 2>/dev/null | awk '{print $NF}')" = "$want" ] && return 0
    sleep 1
  done
  echo "Prometheus does not see $want deimos targets up:" >&2
  curl -s "$PROM_URL/api/v1/targets" >&2 || true
  return 1
}

# wait_samples N: until every deimos target has at least N scrapes in the last minute (rate() needs 2).
wait_samples() {
  local want="$1" _ got
  for _ in $(seq 1 60); do
    got="$(prom_instant 'min(count_over_time(up{job="deimos"}[1m]))' 2>/dev/null | awk '{print $NF}')"
    [ -n "$got" ] && [ "${got%.*}" -ge "$want" ] && return 0
    sleep 0.5
  done
  echo "targets have only ${got:-no} samples in the last minute" >&2
  return 1
}

rules_healthy() {
  curl -fsS -m 5 "$PROM_URL/api/v1/rules" | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [r for r in rules if r.get("health") != "ok"]
for r in rules:
    print("  %-32s health=%s state=%s %s" % (r["name"], r.get("health"), r.get("state", "-"), r.get("lastError", "")))
sys.exit(1 if bad or len(rules) != 6 else 0)'
}

# ------------------------------------------------------------------------------ fixture phase
if [ "${DEIMOS_FIXTURE:-1}" != 0 ]; then
  say "fixture phase: real Prometheus, stand-in /metrics from the metric contract"
  need_free_ports "${FIXTURE_PORTS[@]}"
  python3 "$here/fixture_exporter.py" "$contract" "${FIXTURE_PORTS[@]}" > "$work/fixture.log" 2>&1 &
  fixture_pid=$!
  pids+=("$fixture_pid")
  for _ in $(seq 1 50); do curl -fsS -m 1 "http://127.0.0.1:${FIXTURE_PORTS[0]}/health" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:${FIXTURE_PORTS[0]}/metrics" > "$work/fixture.prom"
  check "fixture: promtool check metrics" bash -c "promtool check metrics < '$work/fixture.prom'"
  derive_config "$work/fixture-prom/prometheus.yml" "${FIXTURE_PORTS[@]}"
  start_prometheus "$work/fixture-prom/prometheus.yml" "$work/fixture-prom/data"
  check "fixture: 3 targets up" wait_up 3
  check "fixture: 4 scrapes of every target" wait_samples 4
  check "fixture: every dashboard query returns data" \
    python3 "$here/dashboard.py" query "$dashboard" "$PROM_URL"
  check "fixture: alert rules evaluate" rules_healthy
  stop_pid "$prom_pid"
  stop_pid "$fixture_pid"
fi

# --------------------------------------------------------------------------------- live phase
if [ -z "${DEIMOS_BIN:-}" ] || [ ! -x "${DEIMOS_BIN:-}" ]; then
  if [ -n "${DEIMOS_BIN:-}" ]; then echo "note: DEIMOS_BIN=$DEIMOS_BIN is not an executable file"; fi
  echo "SKIP live phase: DEIMOS_BIN not set"
  summary
  exit $?
fi
DEIMOS_BIN="$(cd "$(dirname "$DEIMOS_BIN")" && pwd)/$(basename "$DEIMOS_BIN")"

say "live phase: 3-node Deimos cluster from $DEIMOS_BIN"
need_free_ports "${CLIENT_PORTS[@]}" "${PEER_PORTS[@]}" "$PROM_PORT"
bootstrap="n1=http://127.0.0.1:${PEER_PORTS[0]},n2=http://127.0.0.1:${PEER_PORTS[1]},n3=http://127.0.0.1:${PEER_PORTS[2]}"

start_node() {  # start_node INDEX (0..2)
  local i="$1" name="n$(( $1 + 1 ))"
  local c="http://127.0.0.1:${CLIENT_PORTS[$i]}" p="http://127.0.0.1:${PEER_PORTS[$i]}"
  mkdir -p "$work/$name"
  "$DEIMOS_BIN" --name "$name" --data-dir "$work/$name/data" \
    --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --advertise-peer-urls "$p" \
    --bootstrap-config "$bootstrap" >> "$work/$name/log" 2>&1 &
  node_pid[$i]=$!
  pids+=("$!")
}
healthy() {  # healthy PORT
  curl -sS -m 2 "http://127.0.0.1:$1/health" 2>/dev/null |
    python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("health") == "true" else 1)' 2>/dev/null
}
wait_healthy() {  # wait_healthy SECONDS INDEX...
  local secs="$1" i _; shift
  for _ in $(seq 1 $((secs * 2))); do
    local all=1
    for i in "$@"; do healthy "${CLIENT_PORTS[$i]}" || all=0; done
    [ "$all" = 1 ] && return 0
    for i in "$@"; do
      kill -0 "${node_pid[$i]}" 2>/dev/null || { echo "node n$((i + 1)) exited; its log:" >&2; tail -30 "$work/n$((i + 1))/log" >&2; return 1; }
    done
    sleep 0.5
  done
  for i in "$@"; do
    echo "n$((i + 1)) /health: $(curl -sS -m 2 "http://127.0.0.1:${CLIENT_PORTS[$i]}/health" 2>&1)" >&2
    tail -20 "$work/n$((i + 1))/log" >&2
  done
  return 1
}
metric_value() {  # metric_value PORT NAME: value of an unlabelled sample, empty if absent
  curl -sS -m 2 "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v n="$2" '$1 == n {print $2; exit}'
}
leader_index() {
  local i
  for i in 0 1 2; do
    [ "$(metric_value "${CLIENT_PORTS[$i]}" deimos_server_is_leader)" = 1 ] && { echo "$i"; return 0; }
  done
  return 1
}
# traffic ROUNDS: PUTs and the three kinds of GET against every node; checks the answers.
traffic() {
  local rounds="$1" r i port base bad=0
  for r in $(seq 1 "$rounds"); do
    for i in 0 1 2; do
      port="${CLIENT_PORTS[$i]}"; base="http://127.0.0.1:$port/v2/keys"
      curl -fsS -L -m 5 -X PUT "$base/foo" -d value=bar >/dev/null || { echo "PUT via :$port failed"; bad=1; }
      curl -fsS -L -m 5 -X PUT "$base/traffic/$i" -d "value=$r" >/dev/null || { echo "PUT traffic via :$port failed"; bad=1; }
      curl -fsS -L -m 5 "$base/foo" | grep -q '"value":"bar"' || { echo "GET via :$port did not return bar"; bad=1; }
      curl -fsS -L -m 5 "$base/foo?quorum=true" | grep -q '"value":"bar"' || { echo "GET ?quorum=true via :$port did not return bar"; bad=1; }
      curl -fsS -L -m 5 "$base/foo?consistency=local" >/dev/null || { echo "GET ?consistency=local via :$port failed"; bad=1; }
    done
  done
  return "$bad"
}

for i in 0 1 2; do start_node "$i"; done
check "live: all three nodes answer /health {\"health\":\"true\"}" wait_healthy 60 0 1 2
check "live: PUT and GET (plain, ?quorum=true, ?consistency=local) on every node" traffic 10

say "live: fault: stop both followers, let the leader lose its lease, restart them"
if leader="$(leader_index)"; then
  echo "leader is n$((leader + 1))"
  followers=()
  for i in 0 1 2; do [ "$i" != "$leader" ] && followers+=("$i"); done
  for i in "${followers[@]}"; do stop_pid "${node_pid[$i]}"; done
  lp="${CLIENT_PORTS[$leader]}"
  curl -sS -L -m 3 -X PUT "http://127.0.0.1:$lp/v2/keys/during-outage" -d value=x >/dev/null 2>&1 || true
  curl -sS -L -m 3 "http://127.0.0.1:$lp/v2/keys/foo?quorum=true" >/dev/null 2>&1 || true
  lost=0
  for _ in $(seq 1 30); do
    [ "$(metric_value "$lp" deimos_lease_valid)" = 0 ] && { lost=1; break; }
    sleep 0.5
  done
  if [ "$lost" = 1 ]; then echo "leader's lease is no longer valid (deimos_lease_valid 0)"; else echo "note: leader still reports a valid lease 15s after losing both followers"; fi
  sleep 2
  for i in "${followers[@]}"; do start_node "$i"; done
  check "live: cluster healthy again after the followers restart" wait_healthy 60 0 1 2
else
  fail "live: no node reports deimos_server_is_leader 1; fault step skipped"
fi

say "live: fault: pause the leader and one follower, write to the follower left without a leader"
# SIGSTOP keeps every process (and its counters) alive, unlike a restart.
if leader="$(leader_index)"; then
  others=()
  for i in 0 1 2; do [ "$i" != "$leader" ] && others+=("$i"); done
  paused=("$leader" "${others[0]}")
  lone="${others[1]}"
  echo "pausing n$((leader + 1)) (leader) and n$((${others[0]} + 1)); n$((lone + 1)) is left alone"
  for i in "${paused[@]}"; do kill -STOP "${node_pid[$i]}"; done
  lp="${CLIENT_PORTS[$lone]}"
  leaderless=0
  for _ in $(seq 1 30); do
    [ "$(metric_value "$lp" deimos_server_has_leader)" = 0 ] && { leaderless=1; break; }
    sleep 0.5
  done
  if [ "$leaderless" = 1 ]; then echo "n$((lone + 1)) reports deimos_server_has_leader 0"; else echo "note: n$((lone + 1)) still reports a leader after 15s"; fi
  echo "PUT via n$((lone + 1)) without a leader: $(curl -sS -L -m 5 -X PUT "http://127.0.0.1:$lp/v2/keys/no-leader" -d value=x 2>&1 | head -c 300)"
  for i in "${paused[@]}"; do kill -CONT "${node_pid[$i]}"; done
  check "live: cluster healthy again after the paused nodes resume" wait_healthy 60 0 1 2
else
  fail "live: no node reports deimos_server_is_leader 1; pause step skipped"
fi
check "live: traffic after recovery" traffic 5

say "live: /metrics of every node"
for i in 0 1 2; do
  port="${CLIENT_PORTS[$i]}"
  curl -fsS -m 5 "http://127.0.0.1:$port/metrics" > "$work/n$((i + 1)).prom" || true
  echo "--- promtool check metrics < curl -s http://127.0.0.1:$port/metrics"
  check "live: promtool check metrics on :$port/metrics" bash -c "promtool check metrics < '$work/n$((i + 1)).prom'"
done
check "live: exported metrics match the contract (names, types, labels)" \
  python3 "$here/dashboard.py" exposition "$contract" "$work/n1.prom" "$work/n2.prom" "$work/n3.prom"

say "live: real Prometheus on $PROM_URL scraping the cluster every 1s"
derive_config "$work/prom/prometheus.yml" "${CLIENT_PORTS[@]}"
start_prometheus "$work/prom/prometheus.yml" "$work/prom/data"
# background traffic so rates and histogram quantiles have fresh observations; bounded, stops itself
( for _ in $(seq 1 150); do traffic 1 >/dev/null 2>&1 || true; sleep 0.2; done ) &
pids+=("$!")
nodes_running() {
  local i ok=0
  for i in 0 1 2; do
    if ! kill -0 "${node_pid[$i]}" 2>/dev/null; then
      echo "n$((i + 1)) (pid ${node_pid[$i]}) is no longer running; the end of its log:"
      sed 's/\x1b\[[0-9;]*m//g' "$work/n$((i + 1))/log" | tail -5
      ok=1
    fi
  done
  return "$ok"
}
check "live: Prometheus sees 3 deimos targets up" wait_up 3
check "live: 4 scrapes of every target" wait_samples 4
sleep 10   # more scrapes while the background traffic runs, so the latency quantiles have fresh data
check "live: every dashboard query returns data" python3 "$here/dashboard.py" query "$dashboard" "$PROM_URL"
check "live: all 6 alert rules evaluate without errors" rules_healthy
check "live: all three nodes still running" nodes_running
echo "--- alerts active now (expected: none, or DeimosPeerUnreachable pending right after the fault)"
curl -fsS -m 5 "$PROM_URL/api/v1/alerts" | python3 -c '
import json, sys
for a in json.load(sys.stdin)["data"]["alerts"]:
    print("  %s %s %s" % (a["labels"]["alertname"], a["state"], a["labels"].get("instance", "")))'

summary
