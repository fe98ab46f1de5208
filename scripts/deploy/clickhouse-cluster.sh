#!/usr/bin/env bash
# A ClickHouse cluster on loopback for checking the cluster form of the migrations:
# Debian's ZooKeeper and two replicas of one shard of Debian's ClickHouse server (18.16),
# cluster name "tributary", macros {shard} = 01 and {replica} = r1 / r2.
#
# Usage: scripts/deploy/clickhouse-cluster.sh install|start|stop
#   Ports: ZOOKEEPER_PORT (42181); replica n listens on CLUSTER_HTTP_PORT+n-1 (HTTP, 48123),
#   CLUSTER_TCP_PORT+n-1 (native, 49000) and CLUSTER_INTERSERVER_PORT+n-1 (replication, 49009).
#   State under $TRIBUTARY_DEPLOY_DIR/clickhouse-cluster; start wipes it.
set -euo pipefail
# shellcheck source=scripts/deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
run="$TRIBUTARY_DEPLOY_DIR/clickhouse-cluster"
zk_port="${ZOOKEEPER_PORT:-42181}" http="${CLUSTER_HTTP_PORT:-48123}" tcp="${CLUSTER_TCP_PORT:-49000}" inter="${CLUSTER_INTERSERVER_PORT:-49009}"

install() {
  command -v clickhouse-server >/dev/null && [[ -f /usr/share/java/zookeeper.jar ]] && return 0
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clickhouse-server clickhouse-client zookeeper >/dev/null
}

stop() {
  local pidfile
  for pidfile in "$run"/*.pid; do
    [[ -s "$pidfile" ]] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

replica_config() { # N
  local n="$1" dir="$run/r$1"
  mkdir -p "$dir/data/tmp"
  cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>information</level><log>$dir/server.log</log><errorlog>$dir/server.err.log</errorlog></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$((http + n - 1))</http_port>
    <tcp_port>$((tcp + n - 1))</tcp_port>
    <interserver_http_port>$((inter + n - 1))</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <path>$dir/data/</path>
    <tmp_path>$dir/data/tmp/</tmp_path>
    <user_files_path>$dir/data/user_files/</user_files_path>
    <include_from>$run/no-substitutions.xml</include_from>
    <users_config>$run/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <mark_cache_size>268435456</mark_cache_size>
    <max_table_size_to_drop>0</max_table_size_to_drop>
    <zookeeper><node><host>127.0.0.1</host><port>$zk_port</port></node></zookeeper>
    <remote_servers>
        <tributary>
            <shard>
                <internal_replication>true</internal_replication>
                <replica><host>127.0.0.1</host><port>$tcp</port></replica>
                <replica><host>127.0.0.1</host><port>$((tcp + 1))</port></replica>
            </shard>
        </tributary>
    </remote_servers>
    <macros><shard>01</shard><replica>r$n</replica></macros>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
XML
}

start() {
  stop
  rm -rf "$run" && mkdir -p "$run/zk/data"
  printf 'tickTime=2000\ndataDir=%s\nclientPort=%s\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n' "$run/zk/data" "$zk_port" >"$run/zk/zoo.cfg"
  java -cp "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/*" -Dzookeeper.log.dir="$run/zk" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$run/zk/zoo.cfg" >"$run/zk/zookeeper.out" 2>&1 &
  echo $! >"$run/zookeeper.pid"
  echo '<?xml version="1.0"?><yandex></yandex>' >"$run/no-substitutions.xml"
  cat >"$run/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$zk_port") 2>/dev/null && break; sleep 0.2; done
  local n
  for n in 1 2; do
    replica_config "$n"
    (cd "$run/r$n" && exec clickhouse-server --config-file="$run/r$n/config.xml" >"$run/r$n/stdout.log" 2>&1 </dev/null) &
    echo $! >"$run/r$n.pid"
  done
  for n in 1 2; do
    for _ in $(seq 1 150); do
      [[ "$(curl -s "http://127.0.0.1:$((http + n - 1))/ping" 2>/dev/null)" == "Ok." ]] && break
      sleep 0.2
    done
    [[ "$(curl -s "http://127.0.0.1:$((http + n - 1))/ping")" == "Ok." ]] || { tail -n 20 "$run/r$n/server.err.log" >&2; stop; die "replica r$n did not start"; }
  done
  log "cluster tributary: replicas on http://127.0.0.1:$http and :$((http + 1)), ZooKeeper on $zk_port"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
