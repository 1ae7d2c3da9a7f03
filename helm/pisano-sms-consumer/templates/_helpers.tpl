{{/*
Names and labels.
*/}}
{{- define "pisano-sms.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pisano-sms.fullname" -}}
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

{{- define "pisano-sms.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pisano-sms.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pisano-sms.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pisano-sms.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: consumer
{{- end }}

{{- define "pisano-sms.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pisano-sms.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pisano-sms.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Where the files go inside the container. The consumer reads these paths from the env names the
ConfigMap sets (MAPPING_FILE, AVRO_SCHEMA_FILE, PISANO_API_TOKEN_FILE, KAFKA_CONFIG_SSL_*).
Each volume gets its own directory: a mount nested in a ConfigMap or Secret volume breaks when
the kubelet rewrites that volume.
*/}}
{{- define "pisano-sms.filesDir" -}}/etc/pisano-sms{{- end }}
{{- define "pisano-sms.tokenDir" -}}/var/run/secrets/pisano-sms{{- end }}
{{- define "pisano-sms.kafkaTlsDir" -}}/var/run/secrets/kafka-tls{{- end }}
{{- define "pisano-sms.registryTlsDir" -}}/var/run/secrets/schema-registry-tls{{- end }}

{{/* "true" when the Secret holds the schema registry's password (wired as a file). */}}
{{- define "pisano-sms.hasRegistryPassword" -}}
{{- if .Values.secrets.existingSecret }}{{ if .Values.secrets.hasSchemaRegistryPassword }}true{{ end }}
{{- else if .Values.secrets.schemaRegistryPassword }}true{{ end }}
{{- end }}

{{/* "true" when the Secret holds the replay signing key (wired as a file). */}}
{{- define "pisano-sms.hasReplayKey" -}}
{{- if .Values.secrets.existingSecret }}{{ if .Values.secrets.hasReplaySigningKey }}true{{ end }}
{{- else if .Values.secrets.replaySigningKey }}true{{ end }}
{{- end }}

{{/* "true" when the Secret holds the receipts' phone salt (wired as a file). */}}
{{- define "pisano-sms.hasOutcomeSalt" -}}
{{- if .Values.secrets.existingSecret }}{{ if .Values.secrets.hasOutcomePhoneSalt }}true{{ end }}
{{- else if .Values.secrets.outcomePhoneSalt }}true{{ end }}
{{- end }}

{{/* "true" when the Secret holds the opt-out list's key (wired as a file). */}}
{{- define "pisano-sms.hasSuppressionKey" -}}
{{- if .Values.secrets.existingSecret }}{{ if .Values.secrets.hasSuppressionKey }}true{{ end }}
{{- else if .Values.secrets.suppressionKey }}true{{ end }}
{{- end }}

{{/* "true" when the Secret has files to mount: the token (unless a token provider gives it), the
registry password, the replay signing key, the opt-out list's key. */}}
{{- define "pisano-sms.hasSecretFiles" -}}
{{- if or (not .Values.tokens.provider) (include "pisano-sms.hasRegistryPassword" .) (include "pisano-sms.hasReplayKey" .) (include "pisano-sms.hasSuppressionKey" .) (include "pisano-sms.hasOutcomeSalt" .) }}true{{ end }}
{{- end }}

{{- define "pisano-sms.secretName" -}}
{{- default (include "pisano-sms.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
"true" when the consumer talks SASL to Kafka (KAFKA_CONFIG_SECURITY_PROTOCOL SASL_PLAINTEXT or
SASL_SSL): only then is the SASL password wired from the Secret.
*/}}
{{- define "pisano-sms.kafkaSasl" -}}
{{- if hasPrefix "SASL_" (upper (toString (default "" .Values.config.KAFKA_CONFIG_SECURITY_PROTOCOL))) }}true{{ end }}
{{- end }}

{{/* "true" when the Kafka connection is TLS (SSL or SASL_SSL). */}}
{{- define "pisano-sms.kafkaTlsOn" -}}
{{- if hasSuffix "SSL" (upper (toString (default "" .Values.config.KAFKA_CONFIG_SECURITY_PROTOCOL))) }}true{{ end }}
{{- end }}

{{/*
A config value as the string the consumer parses. Helm reads YAML numbers as float64, and
`quote` alone would turn 1000000 into "1e+06", which no integer setting accepts.
*/}}
{{- define "pisano-sms.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . | toString }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
The settings the chart derives from other values, as YAML (env name: value).
*/}}
{{- define "pisano-sms.managedEnv" -}}
HTTP_PORT: {{ .Values.httpPort | int64 | quote }}
HTTP_BIND_ADDRESS: {{ .Values.httpBindAddress | quote }}
SHUTDOWN_GRACE_MS: {{ .Values.shutdownGraceMs | int64 | quote }}
MAX_BUFFERED_BYTES: {{ .Values.maxBufferedBytes | int64 | quote }}
{{- if .Values.tokens.provider }}
PISANO_TOKEN_PROVIDER: {{ .Values.tokens.provider | quote }}
{{- else }}
PISANO_API_TOKEN_FILE: {{ printf "%s/token" (include "pisano-sms.tokenDir" .) | quote }}
{{- end }}
PISANO_TOKEN_REFRESH_MS: {{ .Values.tokens.refreshMs | int64 | quote }}
{{- with .Values.tracing }}
{{- if .endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ .endpoint | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf"
{{- with .serviceName }}
OTEL_SERVICE_NAME: {{ . | quote }}
{{- end }}
{{- with .sampler }}
OTEL_TRACES_SAMPLER: {{ . | quote }}
{{- end }}
{{- with .samplerArg }}
OTEL_TRACES_SAMPLER_ARG: {{ . | quote }}
{{- end }}
{{- if .linkCountLimit }}
OTEL_SPAN_LINK_COUNT_LIMIT: {{ .linkCountLimit | int64 | quote }}
{{- end }}
{{- with .resourceAttributes }}
OTEL_RESOURCE_ATTRIBUTES: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if include "pisano-sms.hasRegistryPassword" . }}
SCHEMA_REGISTRY_PASSWORD_FILE: {{ printf "%s/schema-registry-password" (include "pisano-sms.tokenDir" .) | quote }}
{{- end }}
{{- if include "pisano-sms.hasReplayKey" . }}
REPLAY_SIGNING_KEY_FILE: {{ printf "%s/replay-signing-key" (include "pisano-sms.tokenDir" .) | quote }}
{{- end }}
{{- if include "pisano-sms.hasSuppressionKey" . }}
SUPPRESSION_KEY_FILE: {{ printf "%s/suppression-key" (include "pisano-sms.tokenDir" .) | quote }}
{{- end }}
{{- if include "pisano-sms.hasOutcomeSalt" . }}
OUTCOME_PHONE_SALT_FILE: {{ printf "%s/outcome-phone-salt" (include "pisano-sms.tokenDir" .) | quote }}
{{- end }}
{{- with .Values.schemaRegistryTls }}
{{- if .secretName }}
{{- if .caKey }}
SCHEMA_REGISTRY_CA_FILE: {{ printf "%s/%s" (include "pisano-sms.registryTlsDir" $) .caKey | quote }}
{{- end }}
{{- if .certKey }}
SCHEMA_REGISTRY_CERT_FILE: {{ printf "%s/%s" (include "pisano-sms.registryTlsDir" $) .certKey | quote }}
SCHEMA_REGISTRY_KEY_FILE: {{ printf "%s/%s" (include "pisano-sms.registryTlsDir" $) .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.mapping }}
MAPPING_FILE: {{ printf "%s/mapping.yaml" (include "pisano-sms.filesDir" .) | quote }}
{{- end }}
{{- if .Values.avroSchema }}
AVRO_SCHEMA_FILE: {{ printf "%s/schema.avsc" (include "pisano-sms.filesDir" .) | quote }}
{{- end }}
{{- with .Values.kafkaTls }}
{{- if .secretName }}
{{- if .caKey }}
KAFKA_CONFIG_SSL_CA_LOCATION: {{ printf "%s/%s" (include "pisano-sms.kafkaTlsDir" $) .caKey | quote }}
{{- end }}
{{- if .certKey }}
KAFKA_CONFIG_SSL_CERTIFICATE_LOCATION: {{ printf "%s/%s" (include "pisano-sms.kafkaTlsDir" $) .certKey | quote }}
KAFKA_CONFIG_SSL_KEY_LOCATION: {{ printf "%s/%s" (include "pisano-sms.kafkaTlsDir" $) .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Env names that carry secrets: they must come from the Secret, never from the ConfigMap.
*/}}
{{- define "pisano-sms.isSecretName" -}}
{{- if or (has . (list "REDIS_URL" "PISANO_API_TOKEN")) (regexMatch "PASSWORD|SECRET|TOKEN|KEY_PEM|_KEY$|SALT" .) }}true{{ end }}
{{- end }}

{{/*
The ConfigMap's environment entries: `config` (empty values dropped) plus the managed ones.
Fails the render on a key the chart manages or one that would put a secret in the ConfigMap.
*/}}
{{- define "pisano-sms.env" -}}
{{- $managed := include "pisano-sms.managedEnv" . | fromYaml }}
{{- $env := dict }}
{{- $owned := dict "PISANO_TOKEN_PROVIDER" "tokens.provider" "PISANO_TOKEN_REFRESH_MS" "tokens.refreshMs" "OTEL_EXPORTER_OTLP_ENDPOINT" "tracing.endpoint" "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" "tracing.endpoint" "OTEL_EXPORTER_OTLP_HEADERS" "tracing.headersSecret" "OTEL_EXPORTER_OTLP_TRACES_HEADERS" "tracing.headersSecret" }}
{{- range $name, $value := .Values.config }}
{{- if hasKey $owned $name }}
{{- fail (printf "config.%s is set by the chart from %s (the NetworkPolicy and the Secret follow it there); remove it from `config`" $name (get $owned $name)) }}
{{- end }}
{{- if hasKey $managed $name }}
{{- fail (printf "config.%s is set by the chart; remove it from `config` (see the comment above `config` in values.yaml for the value that sets it)" $name) }}
{{- end }}
{{- if include "pisano-sms.isSecretName" $name }}
{{- fail (printf "config.%s looks like a secret and `config` becomes a plain ConfigMap; put it in a Secret and pass it with `secrets` or `extraEnv` (secretKeyRef)" $name) }}
{{- end }}
{{- if regexMatch "://[^/@ ]*@|(?i)[?&][^=&]*(password|secret|token|key)[^=&]*=" (toString $value) }}
{{- fail (printf "config.%s holds a credential (user:password@ or a secret query parameter) and `config` becomes a plain ConfigMap; put the credential in a Secret (secrets.*, e.g. secrets.schemaRegistryPassword with config.SCHEMA_REGISTRY_USER)" $name) }}
{{- end }}
{{- if not (or (kindIs "invalid" $value) (eq (toString $value) "")) }}
{{- $_ := set $env $name (include "pisano-sms.envValue" $value) }}
{{- end }}
{{- end }}
{{- toYaml (merge $env $managed) }}
{{- end }}

{{- define "pisano-sms.mappingFile" -}}
{{- if kindIs "string" .Values.mapping }}{{ .Values.mapping }}{{ else }}{{ toYaml .Values.mapping }}{{ end }}
{{- end }}

{{- define "pisano-sms.avroSchemaFile" -}}
{{- if kindIs "string" .Values.avroSchema }}{{ .Values.avroSchema }}{{ else }}{{ toPrettyJson .Values.avroSchema }}{{ end }}
{{- end }}

{{/*
The pod's grace period: the consumer's own shutdown grace, rounded up to whole seconds, plus a
margin for the flush's last request and the group leave. Kubernetes sends SIGKILL when it runs
out, so it must always outlast SHUTDOWN_GRACE_MS.
*/}}
{{- define "pisano-sms.terminationGracePeriodSeconds" -}}
{{- add (div (add (int64 .Values.shutdownGraceMs) 999) 1000) (int64 .Values.terminationGraceMarginSeconds) }}
{{- end }}

{{/*
The replay Job's grace period. On SIGTERM (the Job deleted, activeDeadlineSeconds) `replay`
still waits up to 60 s for Kafka to acknowledge what it published (ACK_TIMEOUT_S in
consumer/sre/replay.py; a chart test pins the two), so that the commit keeps what Kafka has and
the next run does not publish it again; then it commits, releases its lock and prints its
summary (replay.terminationGraceMarginSeconds). Kubernetes' default of 30 s cut the wait.
*/}}
{{- define "pisano-sms.replayTerminationGracePeriodSeconds" -}}
{{- add 60 (int64 .Values.replay.terminationGraceMarginSeconds) }}
{{- end }}

{{/*
The consumer group and topics KEDA measures: the consumer's own (its default group when unset).
*/}}
{{- define "pisano-sms.groupId" -}}
{{- default "pisano-sms-consumer" .Values.config.KAFKA_GROUP_ID }}
{{- end }}

{{/*
KEDA's offsetResetPolicy must agree with what the consumer does for a group without commits:
librdkafka's auto.offset.reset, "earliest" by default in this consumer (consumer/kafka.py).
*/}}
{{- define "pisano-sms.offsetResetPolicy" -}}
{{- $reset := lower (toString (default "earliest" .Values.config.KAFKA_CONFIG_AUTO_OFFSET_RESET)) }}
{{- if has $reset (list "latest" "largest" "end") }}latest{{ else }}earliest{{ end }}
{{- end }}

{{/* KEDA's name for the SASL mechanism in KAFKA_CONFIG_SASL_MECHANISM(S). */}}
{{- define "pisano-sms.kedaSasl" -}}
{{- $mechanism := upper (toString (coalesce .Values.config.KAFKA_CONFIG_SASL_MECHANISM .Values.config.KAFKA_CONFIG_SASL_MECHANISMS "GSSAPI")) }}
{{- $known := dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512" }}
{{- if not (hasKey $known $mechanism) }}
{{- fail (printf "keda.enabled: SASL mechanism %s is not wired by the chart (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 are); set KAFKA_CONFIG_SASL_MECHANISM or scale with `autoscaling`" $mechanism) }}
{{- end }}
{{- get $known $mechanism }}
{{- end }}

{{/* PromQL label matchers for this release's series in the alert rules. */}}
{{- define "pisano-sms.alertSelector" -}}
{{- default (printf "job=%q,namespace=%q" (include "pisano-sms.fullname" .) .Release.Namespace) .Values.prometheusRule.selector }}
{{- end }}

{{/*
Checks across values that the schema cannot express. Included by the Deployment, which is
always rendered.
*/}}
{{- define "pisano-sms.validate" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are mutually exclusive: KEDA creates its own HorizontalPodAutoscaler for the Deployment, and two would fight over the replica count; turn one off" }}
{{- end }}
{{- if and .Values.kafkaTls.secretName (ne (empty .Values.kafkaTls.certKey) (empty .Values.kafkaTls.keyKey)) }}
{{- fail "kafkaTls.certKey and kafkaTls.keyKey go together: set both for mutual TLS, or neither" }}
{{- end }}
{{- if and .Values.schemaRegistryTls.secretName (ne (empty .Values.schemaRegistryTls.certKey) (empty .Values.schemaRegistryTls.keyKey)) }}
{{- fail "schemaRegistryTls.certKey and schemaRegistryTls.keyKey go together: set both for mutual TLS, or neither" }}
{{- end }}
{{- if and .Values.config.OUTCOME_TOPIC (not (include "pisano-sms.hasOutcomeSalt" .)) }}
{{- fail "config.OUTCOME_TOPIC needs the salt of the receipts' phone hashes: set secrets.outcomePhoneSalt (16+ characters, e.g. `openssl rand -hex 32`), or secrets.hasOutcomePhoneSalt with existingSecret" }}
{{- end }}
{{- if and (include "pisano-sms.hasRegistryPassword" .) (not .Values.config.SCHEMA_REGISTRY_USER) }}
{{- fail "the schema registry password is wired but config.SCHEMA_REGISTRY_USER is empty: set the user it belongs to" }}
{{- end }}
{{- if .Values.keda.enabled }}
{{- if not (and .Values.config.KAFKA_BOOTSTRAP_SERVERS .Values.config.KAFKA_TOPICS) }}
{{- fail "keda.enabled needs config.KAFKA_BOOTSTRAP_SERVERS and config.KAFKA_TOPICS: KEDA measures the lag of those topics" }}
{{- end }}
{{- if and (include "pisano-sms.kafkaSasl" .) (not .Values.config.KAFKA_CONFIG_SASL_USERNAME) }}
{{- fail "keda.enabled with SASL needs config.KAFKA_CONFIG_SASL_USERNAME: KEDA logs in as the consumer does" }}
{{- end }}
{{- end }}
{{- if regexMatch "^(127\\.|::1$|::ffff:127\\.)|^localhost$" (toString .Values.httpBindAddress) }}
{{- fail (printf "httpBindAddress %s is a loopback address: the kubelet's probes and Prometheus come in on the pod's IP and would never reach it; use 0.0.0.0, or :: on IPv6" .Values.httpBindAddress) }}
{{- end }}
{{- $_ := include "pisano-sms.env" . }}
{{- end }}

{{/*
The pods the chart runs besides the consumer's (the replay Job, the `helm test` check): labels
without app.kubernetes.io/name, so the Deployment's selector, the Service, the PodDisruptionBudget
and the consumer's NetworkPolicy never pick them up. Call with (dict "root" $ "component" "replay").
*/}}
{{- define "pisano-sms.toolSelectorLabels" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: {{ include "pisano-sms.name" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "pisano-sms.toolLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pisano-sms.toolSelectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* The components of the tool pods, for the NetworkPolicy that selects them. */}}
{{- define "pisano-sms.toolComponents" -}}
{{- list "replay" "check" | toJson }}
{{- end }}

{{/*
The container's env: each ConfigMap key by name (not envFrom: the same ConfigMap holds the
files), the secrets by secretKeyRef, then extraEnv. Shared by the Deployment, the replay Job
and the test Pod, so all three run with the same settings.
*/}}
{{- define "pisano-sms.containerEnv" -}}
{{- $fullname := include "pisano-sms.fullname" . }}
{{- $secretName := include "pisano-sms.secretName" . }}
{{- range $name, $_ := include "pisano-sms.env" . | fromYaml }}
- name: {{ $name }}
  valueFrom:
    configMapKeyRef:
      name: {{ $fullname }}
      key: {{ $name }}
{{- end }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secretName }}
      key: {{ .Values.secrets.keys.redisUrl }}
{{- if include "pisano-sms.kafkaSasl" . }}
- name: KAFKA_CONFIG_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secretName }}
      key: {{ .Values.secrets.keys.kafkaSaslPassword }}
{{- end }}
{{- with .Values.tracing }}
{{- if and .endpoint .headersSecret.name }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ .headersSecret.name }}
      key: {{ required "tracing.headersSecret.key: the key of the Secret that holds OTEL_EXPORTER_OTLP_HEADERS" .headersSecret.key }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The container's mounts: /tmp, the secret files, the mapping and schema, TLS files, extras. */}}
{{- define "pisano-sms.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if include "pisano-sms.hasSecretFiles" . }}
- name: pisano-token
  mountPath: {{ include "pisano-sms.tokenDir" . }}
  readOnly: true
{{- end }}
{{- if or .Values.mapping .Values.avroSchema }}
- name: files
  mountPath: {{ include "pisano-sms.filesDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.kafkaTls.secretName }}
- name: kafka-tls
  mountPath: {{ include "pisano-sms.kafkaTlsDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.schemaRegistryTls.secretName }}
- name: schema-registry-tls
  mountPath: {{ include "pisano-sms.registryTlsDir" . }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod's volumes, matching pisano-sms.volumeMounts. */}}
{{- define "pisano-sms.volumes" -}}
# The root filesystem is read-only; /tmp is the one writable place (Python's tempfile).
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
# A file rather than an env var: it stays out of `kubectl describe`, /proc/<pid>/environ
# and crash dumps. 0440 with fsGroup 10001: readable by the consumer's group only.
{{- if include "pisano-sms.hasSecretFiles" . }}
- name: pisano-token
  secret:
    secretName: {{ include "pisano-sms.secretName" . }}
    defaultMode: 0440
    items:
      {{- if not .Values.tokens.provider }}
      - key: {{ .Values.secrets.keys.pisanoApiToken }}
        path: token
      {{- end }}
      {{- if include "pisano-sms.hasRegistryPassword" . }}
      - key: {{ .Values.secrets.keys.schemaRegistryPassword }}
        path: schema-registry-password
      {{- end }}
      {{- if include "pisano-sms.hasReplayKey" . }}
      - key: {{ .Values.secrets.keys.replaySigningKey }}
        path: replay-signing-key
      {{- end }}
      {{- if include "pisano-sms.hasSuppressionKey" . }}
      - key: {{ .Values.secrets.keys.suppressionKey }}
        path: suppression-key
      {{- end }}
      {{- if include "pisano-sms.hasOutcomeSalt" . }}
      - key: {{ .Values.secrets.keys.outcomePhoneSalt }}
        path: outcome-phone-salt
      {{- end }}
{{- end }}
{{- if or .Values.mapping .Values.avroSchema }}
- name: files
  configMap:
    name: {{ include "pisano-sms.fullname" . }}
    items:
      {{- if .Values.mapping }}
      - key: mapping.yaml
        path: mapping.yaml
      {{- end }}
      {{- if .Values.avroSchema }}
      - key: schema.avsc
        path: schema.avsc
      {{- end }}
{{- end }}
{{- with .Values.kafkaTls }}
{{- if .secretName }}
- name: kafka-tls
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      {{- range compact (list .caKey .certKey .keyKey) }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}
{{- end }}
{{- with .Values.schemaRegistryTls }}
{{- if .secretName }}
- name: schema-registry-tls
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      {{- range compact (list .caKey .certKey .keyKey) }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod-level fields every pod of the chart shares: the service account without a token, no
service links, the pull secrets, the pod security context, and where it may be scheduled.
*/}}
{{- define "pisano-sms.podCommon" -}}
serviceAccountName: {{ include "pisano-sms.serviceAccountName" . }}
# The consumer never calls the Kubernetes API, so it gets no token to lose.
automountServiceAccountToken: false
# Kubernetes would otherwise inject <SERVICE>_PORT-style variables for every Service in
# the namespace; a Service called "kafka" or "redis" would then pollute the environment
# that the consumer reads its settings from.
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The consumer's affinity: `affinity` as given, or else the podAntiAffinity preset that keeps
replicas on different nodes ("soft": preferred; "hard": required).
*/}}
{{- define "pisano-sms.affinity" -}}
{{- if .Values.affinity }}
{{- toYaml .Values.affinity }}
{{- else if eq .Values.podAntiAffinity "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "pisano-sms.selectorLabels" . | nindent 12 }}
{{- else if eq .Values.podAntiAffinity "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "pisano-sms.selectorLabels" . | nindent 10 }}
{{- end }}
{{- end }}

{{/* The port of a URL: the explicit one, else the scheme's default (https 443, redis 6379). */}}
{{- define "pisano-sms.urlPort" -}}
{{- $url := urlParse . }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- if $port }}{{ $port }}
{{- else }}{{ get (dict "http" "80" "https" "443" "redis" "6379" "rediss" "6379") $url.scheme | default "443" }}
{{- end }}
{{- end }}

{{/*
The NetworkPolicy's egress rules, as YAML: for each dependency the ports (given, or read from
the URL the chart knows) and the optional peers; DNS; then networkPolicy.egress.extra. Shared by
the consumer's policy and the tools' one: the replay Job and the check talk to the same places.
*/}}
{{- define "pisano-sms.egressRules" -}}
{{- $egress := .Values.networkPolicy.egress }}
{{- $targets := list }}
{{- /* Kafka: the bootstrap servers' ports (brokers usually advertise the same listener port). */}}
{{- $kafkaPorts := $egress.kafka.ports }}
{{- if not $kafkaPorts }}
{{- range splitList "," (toString (default "" .Values.config.KAFKA_BOOTSTRAP_SERVERS)) }}
{{- $port := regexFind ":[0-9]+$" (trim .) | trimPrefix ":" }}
{{- if $port }}{{ $kafkaPorts = append $kafkaPorts (int $port) }}{{ end }}
{{- end }}
{{- $kafkaPorts = default (list 9092) (uniq $kafkaPorts) }}
{{- end }}
{{- $targets = append $targets (dict "ports" $kafkaPorts "to" $egress.kafka.to) }}
{{- /* Redis: the port of secrets.redisUrl when the chart creates the Secret, else 6379. */}}
{{- $redisPorts := $egress.redis.ports }}
{{- if not $redisPorts }}
{{- $redisPorts = list (int (include "pisano-sms.urlPort" (default "redis://redis" (ternary "" .Values.secrets.redisUrl (not (empty .Values.secrets.existingSecret)))))) }}
{{- end }}
{{- $targets = append $targets (dict "ports" $redisPorts "to" $egress.redis.to) }}
{{- $pisanoPorts := $egress.pisano.ports }}
{{- if not $pisanoPorts }}
{{- $pisanoPorts = list (int (include "pisano-sms.urlPort" (default "https://api.pisano.co" .Values.config.PISANO_URL))) }}
{{- end }}
{{- $targets = append $targets (dict "ports" $pisanoPorts "to" $egress.pisano.to) }}
{{- $registryPorts := $egress.schemaRegistry.ports }}
{{- if and (not $registryPorts) .Values.config.SCHEMA_REGISTRY_URL }}
{{- $registryPorts = list (int (include "pisano-sms.urlPort" .Values.config.SCHEMA_REGISTRY_URL)) }}
{{- end }}
{{- if $registryPorts }}
{{- $targets = append $targets (dict "ports" $registryPorts "to" $egress.schemaRegistry.to) }}
{{- end }}
{{- /* The OpenTelemetry collector, when tracing is on: a blocked export would lose every span. */}}
{{- with .Values.tracing }}
{{- if .endpoint }}
{{- $targets = append $targets (dict "ports" (default (list (int (include "pisano-sms.urlPort" .endpoint))) .egress.ports) "to" .egress.to) }}
{{- end }}
{{- end }}
{{- range $targets }}
- ports:
    {{- range .ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
- ports:
    {{- range $egress.dns.ports }}
    - protocol: UDP
      port: {{ . }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with $egress.dns.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- with $egress.extra }}
{{ toYaml . }}
{{- end }}
{{- end }}
