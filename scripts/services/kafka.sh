#!/usr/bin/env bash
# Apache Kafka (KRaft mode, single node) on 127.0.0.1 for tributary's tests.
#
# Usage: scripts/services/kafka.sh {install|start|stop|status|reset|restart}
#
# Kafka comes from the official Maven Central artifact
# org.apache.kafka:kafka_2.13 plus its runtime dependencies, resolved by Maven
# into a cache directory, and runs as a plain `java -cp 'libs/*' kafka.Kafka`
# process. No download from anywhere but Maven Central.
#
# VERSION CHOICE: Kafka 4.4.0, the newest release on Maven Central when this
# was written. Kafka 4.0 removed old protocol API versions (KIP-896), so
# kafkajs 2.2.4 was tested against it for real with
# scripts/services/kafka-smoke.js: admin createTopics, an idempotent producer
# (10 messages), a consumer group consuming them and committing offsets, plus
# describeConfigs/alterConfigs, createPartitions, offsets by timestamp,
# list/describe/deleteGroups, setOffsets/resetOffsets, gzip, a transactional
# producer with sendOffsets, commit and abort, a read_committed consumer with
# seek, deleteTopicRecords and deleteTopics -- all pass, no kafkajs error.
# Every request version kafkajs sends (Produce v7, Fetch v11, ListOffsets v3,
# Metadata v6, OffsetCommit v5, OffsetFetch v4, FindCoordinator v2, JoinGroup
# v5, CreateTopics v3, DeleteTopics v1, DescribeConfigs v2, InitProducerId/
# AddPartitionsToTxn/EndTxn/TxnOffsetCommit v1) is still inside the ranges the
# 4.4.0 broker advertises in ApiVersions. Should a later kafkajs use hit a
# removed version (the broker answers UNSUPPORTED_VERSION), fall back with
# KAFKA_VERSION=3.9.2 (newest 3.9.x; it passes the same smoke test with this
# script).
#
# Environment:
#   KAFKA_VERSION            Kafka version (default 4.4.0)
#   KAFKA_PORT               broker (PLAINTEXT) port, default 19092
#   KAFKA_CONTROLLER_PORT    KRaft controller port, default 19093
#   KAFKA_HEAP_OPTS          JVM heap options, default "-Xms256m -Xmx512m"
#   KAFKA_START_TIMEOUT      seconds `start` waits for the broker, default 60
#   JAVA                     java binary (default: $JAVA_HOME/bin/java or java)
#   MVN                      maven binary (default: mvn)
#   KAFKA_MAVEN_ARGS         extra maven arguments (e.g. -Dmaven.repo.local=DIR)
#   TRIBUTARY_SERVICES_DIR   state root, default ${TMPDIR:-/tmp}/tributary-services
set -euo pipefail

SERVICE_NAME=kafka
# shellcheck source=_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_SCALA_VERSION="${KAFKA_SCALA_VERSION:-2.13}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
MVN="${MVN:-mvn}"
# Extra arguments for maven, e.g. KAFKA_MAVEN_ARGS="-Dmaven.repo.local=/some/dir"
KAFKA_MAVEN_ARGS="${KAFKA_MAVEN_ARGS:-}"
if [[ -z "${JAVA:-}" ]]; then
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi
fi

BASE="$TRIBUTARY_SERVICES_DIR/kafka"
DIST="$BASE/dist/$KAFKA_VERSION"          # libs/ + pom.xml (the install cache)
LIBS="$DIST/libs"
RUN="$BASE/run-$KAFKA_VERSION-$KAFKA_PORT"  # config, data, logs (per version and port)
DATA="$RUN/data"
CONF="$RUN/server.properties"
LOGDIR="$RUN/logs"
LOG="$LOGDIR/kafka.out"
PIDFILE="$RUN/kafka.pid"
MAJOR="${KAFKA_VERSION%%.*}"

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (need Java 17+); set JAVA or JAVA_HOME"
  local v
  v="$("$JAVA" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  local major="${v%%.*}"
  [[ "$major" =~ ^[0-9]+$ ]] || die "cannot parse java version from: $("$JAVA" -version 2>&1 | head -1)"
  ((major >= 17)) || die "java $v found, Kafka $KAFKA_VERSION needs Java 17+"
}

installed() {
  [[ -f "$DIST/.installed" ]] && compgen -G "$LIBS/kafka_${KAFKA_SCALA_VERSION}-${KAFKA_VERSION}.jar" >/dev/null
}

cmd_install() {
  check_java
  if installed; then
    log "Kafka $KAFKA_VERSION already installed in $LIBS ($(find "$LIBS" -name "*.jar" | wc -l) jars)"
    return 0
  fi
  command -v "$MVN" >/dev/null 2>&1 || die "maven ('$MVN') not found; it is needed to fetch Kafka from Maven Central"
  log "resolving org.apache.kafka:kafka_${KAFKA_SCALA_VERSION}:${KAFKA_VERSION} and its runtime dependencies with Maven"
  rm -rf "$DIST"
  mkdir -p "$DIST"
  # Logging backend: the kafka_2.13 pom brings only slf4j-api 1.7.36 and no
  # binding, so the broker would log nothing. Kafka 4.x's own distribution
  # uses log4j2 (log4j-slf4j-impl, the binding for slf4j 1.x), Kafka 3.x uses
  # reload4j (slf4j-reload4j); add the matching one explicitly.
  local logging_deps
  if ((MAJOR >= 4)); then
    logging_deps='
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>'
  else
    logging_deps='
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>'
  fi
  cat >"$DIST/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tributary.services</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_${KAFKA_SCALA_VERSION}</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>${logging_deps}
  </dependencies>
</project>
POM
  local mvnlog="$DIST/mvn.log"
  # shellcheck disable=SC2086
  if ! (cd "$DIST" && "$MVN" -B -q $KAFKA_MAVEN_ARGS \
      org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIBS") >"$mvnlog" 2>&1; then
    show_log_tail "$mvnlog" 60
    die "maven could not resolve Kafka $KAFKA_VERSION (full log: $mvnlog)"
  fi
  compgen -G "$LIBS/kafka_${KAFKA_SCALA_VERSION}-${KAFKA_VERSION}.jar" >/dev/null \
    || die "maven ran but $LIBS/kafka_${KAFKA_SCALA_VERSION}-${KAFKA_VERSION}.jar is missing"
  touch "$DIST/.installed"
  log "installed Kafka $KAFKA_VERSION: $(find "$LIBS" -name "*.jar" | wc -l) jars in $LIBS"
}

write_config() {
  mkdir -p "$RUN" "$DATA" "$LOGDIR"
  cat >"$CONF" <<PROPS
# Generated by scripts/services/kafka.sh -- single node KRaft broker+controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORT},CONTROLLER://127.0.0.1:${KAFKA_CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORT}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=${DATA}
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.retention.hours=24
log.segment.bytes=104857600
PROPS
  if ((MAJOR >= 4)); then
    cat >"$RUN/log4j2.properties" <<L4J
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${LOGDIR}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
L4J
  else
    cat >"$RUN/log4j.properties" <<L4J
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=${LOGDIR}/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
L4J
  fi
}

log_opts() {
  if ((MAJOR >= 4)); then
    echo "-Dlog4j2.configurationFile=$RUN/log4j2.properties"
  else
    echo "-Dlog4j.configuration=file:$RUN/log4j.properties"
  fi
}

format_storage() {
  if [[ -f "$DATA/meta.properties" ]]; then
    return 0
  fi
  log "formatting KRaft storage in $DATA"
  local cluster_id fmtlog="$LOGDIR/format.out"
  # kafka.tools.StorageTool is the main class behind bin/kafka-storage.sh in
  # both Kafka 3.x and 4.x.
  # shellcheck disable=SC2046
  cluster_id="$("$JAVA" $(log_opts) -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>>"$fmtlog" | tail -n 1)" \
    || { show_log_tail "$fmtlog"; die "kafka.tools.StorageTool random-uuid failed (log: $fmtlog)"; }
  [[ -n "$cluster_id" ]] || { show_log_tail "$fmtlog"; die "StorageTool random-uuid printed no id (log: $fmtlog)"; }
  # shellcheck disable=SC2046
  if ! "$JAVA" $(log_opts) -cp "$LIBS/*" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$CONF" >>"$fmtlog" 2>&1; then
    show_log_tail "$fmtlog"
    die "formatting storage failed (log: $fmtlog)"
  fi
}

cmd_start() {
  installed || die "Kafka $KAFKA_VERSION is not installed; run: $0 install"
  check_java
  if pid_alive "$PIDFILE"; then
    if port_open "$KAFKA_PORT"; then
      log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$KAFKA_PORT"
      return 0
    fi
  elif port_open "$KAFKA_PORT"; then
    die "127.0.0.1:$KAFKA_PORT is already in use by another process"
  elif port_open "$KAFKA_CONTROLLER_PORT"; then
    die "127.0.0.1:$KAFKA_CONTROLLER_PORT (controller) is already in use by another process"
  fi
  write_config
  format_storage
  if ! pid_alive "$PIDFILE"; then
    log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (log: $LOG)"
    # Fresh log files for this run (the previous run's are kept as *.1), so
    # the readiness check below never matches an old "started" line.
    [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
    [[ -f "$LOGDIR/server.log" ]] && mv -f "$LOGDIR/server.log" "$LOGDIR/server.log.1"
    : >"$LOG"
    # shellcheck disable=SC2086,SC2046
    nohup "$JAVA" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
      $(log_opts) -Dkafka.logs.dir="$LOGDIR" \
      -cp "$LIBS/*" kafka.Kafka "$CONF" >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
  fi
  local i
  for ((i = 0; i < KAFKA_START_TIMEOUT * 5; i++)); do
    if ! pid_alive "$PIDFILE"; then
      show_log_tail "$LOG"
      show_log_tail "$LOGDIR/server.log"
      die "Kafka exited during startup (logs: $LOG, $LOGDIR/server.log)"
    fi
    if port_open "$KAFKA_PORT" && grep -q 'Kafka Server started' "$LOGDIR/server.log" 2>/dev/null; then
      log "ready on 127.0.0.1:$KAFKA_PORT (pid $(cat "$PIDFILE"), took $((i / 5))s; logs in $LOGDIR)"
      return 0
    fi
    sleep 0.2
  done
  show_log_tail "$LOG"
  show_log_tail "$LOGDIR/server.log"
  stop_pidfile "$PIDFILE" "$KAFKA_PORT" 10 || true
  die "Kafka did not accept connections on 127.0.0.1:$KAFKA_PORT within ${KAFKA_START_TIMEOUT}s (logs: $LOG, $LOGDIR/server.log); the process was stopped"
}

cmd_stop() {
  stop_pidfile "$PIDFILE" "$KAFKA_PORT" 30
}

cmd_status() {
  if pid_alive "$PIDFILE" && port_open "$KAFKA_PORT"; then
    log "running: Kafka $KAFKA_VERSION pid $(cat "$PIDFILE") on 127.0.0.1:$KAFKA_PORT (logs in $LOGDIR)"
    return 0
  fi
  if pid_alive "$PIDFILE"; then
    log "process $(cat "$PIDFILE") alive but 127.0.0.1:$KAFKA_PORT not accepting connections (logs in $LOGDIR)"
    return 1
  fi
  log "not running (Kafka $KAFKA_VERSION, port $KAFKA_PORT)"
  return 3
}

cmd_reset() {
  if pid_alive "$PIDFILE"; then die "Kafka is running; stop it first"; fi
  log "removing data and logs in $RUN"
  rm -rf "$RUN"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  *) echo "usage: $0 {install|start|stop|status|restart|reset}" >&2; exit 2 ;;
esac
