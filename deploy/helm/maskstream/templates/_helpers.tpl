{{/* Names and labels, the Kubernetes conventions (app.kubernetes.io/*). */}}
{{- define "maskstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "maskstream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "maskstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "maskstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component (bridge or worker): (dict "root" $ "component" "bridge"). */}}
{{- define "maskstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "maskstream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "maskstream.componentLabels" -}}
{{ include "maskstream.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "maskstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "maskstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "maskstream.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The worker cap: the raw topic's partitions, or a lower maxReplicaCount. */}}
{{- define "maskstream.workerMaxReplicas" -}}
{{- $partitions := int .Values.topics.partitions }}
{{- $max := default $partitions .Values.keda.worker.maxReplicaCount | int }}
{{- if gt $max $partitions }}
{{- fail (printf "keda.worker.maxReplicaCount (%d) exceeds topics.partitions (%d): a partition is processed by one worker at a time" $max $partitions) }}
{{- end }}
{{- $max }}
{{- end }}

{{/*
The environment both components share: connections, topics, and every
setting of .Values.config, by name. Secrets stay in Secrets (secretKeyRef).
*/}}
{{- define "maskstream.commonEnv" -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers is required (the Kafka brokers, host:port,...)" .Values.kafka.bootstrapServers | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
- name: KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.saslMechanism | quote }}
{{- with .Values.kafka.sasl.existingSecret }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.kafka.sasl.usernameKey }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.kafka.sasl.passwordKey }}
{{- end }}
{{- with .Values.kafka.tls.existingSecret }}
- name: KAFKA_SSL_CAFILE
  value: /etc/maskstream/kafka-tls/{{ $.Values.kafka.tls.caKey }}
{{- if $.Values.kafka.tls.certKey }}
- name: KAFKA_SSL_CERTFILE
  value: /etc/maskstream/kafka-tls/{{ $.Values.kafka.tls.certKey }}
- name: KAFKA_SSL_KEYFILE
  value: /etc/maskstream/kafka-tls/{{ required "kafka.tls.keyKey is required with kafka.tls.certKey" $.Values.kafka.tls.keyKey }}
{{- end }}
{{- end }}
- name: MASKSTREAM_APP_ID
  value: {{ .Values.appId | quote }}
- name: MASKSTREAM_TOPIC_RAW
  value: {{ .Values.topics.raw | quote }}
- name: MASKSTREAM_TOPIC_MASKED
  value: {{ .Values.topics.masked | quote }}
- name: MASKSTREAM_TOPIC_REJECTED
  value: {{ .Values.topics.rejected | quote }}
- name: MASKSTREAM_PARTITIONS
  value: {{ .Values.topics.partitions | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.aws.region | quote }}
{{- range $name, $value := .Values.config }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Volumes and mounts both components need: /tmp on a read-only root, Kafka's TLS files. */}}
{{- define "maskstream.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "maskstream.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/maskstream/kafka-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* prometheus.io/* annotations for a Prometheus that discovers pods. */}}
{{- define "maskstream.scrapeAnnotations" -}}
{{- if .root.Values.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}
