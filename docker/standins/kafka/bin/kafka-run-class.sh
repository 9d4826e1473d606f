#!/bin/sh
# kafka-run-class.sh CLASS [ARGS]: what the distribution's script does, for
# the stand-in's layout (every jar in /opt/kafka/libs). The tools get a small
# heap and the tools' log4j2 configuration unless the caller sets its own.
set -eu
base=/opt/kafka
: "${KAFKA_HEAP_OPTS:=-Xmx256M}"
: "${KAFKA_LOG4J_OPTS:=-Dlog4j2.configurationFile=$base/config/tools-log4j2.properties}"
# shellcheck disable=SC2086 # the *_OPTS variables are lists of JVM options
exec java $KAFKA_HEAP_OPTS ${KAFKA_JVM_PERFORMANCE_OPTS:-} $KAFKA_LOG4J_OPTS ${KAFKA_OPTS:-} \
    -cp "$base/libs/*" "$@"
