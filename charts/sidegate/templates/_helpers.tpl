{{/* Chart name. */}}
{{- define "sidegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release name, plus the chart name unless the release name contains it. */}}
{{- define "sidegate.fullname" -}}
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

{{- define "sidegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sidegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sidegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sidegate.labels" -}}
helm.sh/chart: {{ include "sidegate.chart" . }}
{{ include "sidegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sidegate
{{- end }}

{{- define "sidegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sidegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference: digest wins, then tag, then appVersion. */}}
{{- define "sidegate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* sidegate's configuration as rendered into the ConfigMap: .Values.config,
with jwks.snapshot_dir pointed at the snapshot volume when snapshots are on and
the key is unset. */}}
{{- define "sidegate.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- if .Values.snapshots.enabled }}
{{- $jwks := get $cfg "jwks" | default dict }}
{{- if not (get $jwks "snapshot_dir") }}
{{- $_ := set $jwks "snapshot_dir" .Values.snapshots.mountPath }}
{{- end }}
{{- $_ := set $cfg "jwks" $jwks }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Directory the ConfigMap is mounted at, and sidegate's --config in it. */}}
{{- define "sidegate.configDir" -}}
/etc/sidegate/config
{{- end }}

{{- define "sidegate.configPath" -}}
{{ include "sidegate.configDir" . }}/sidegate.yaml
{{- end }}

{{/*
sidegate.checkMounts: fails when two of the directories the sidegate
container mounts (the ConfigMap, secret, ca, snapshots) are the same or one
is inside another: a volume cannot be mounted inside a read-only ConfigMap
or Secret volume, and one hiding another would hide the configuration.
*/}}
{{- define "sidegate.checkMounts" -}}
{{- $mounts := dict "the ConfigMap" (include "sidegate.configDir" .) }}
{{- if include "sidegate.hasSecret" . }}{{ $_ := set $mounts "secret.mountPath" .Values.secret.mountPath }}{{ end }}
{{- if include "sidegate.hasCA" . }}{{ $_ := set $mounts "ca.mountPath" .Values.ca.mountPath }}{{ end }}
{{- if .Values.snapshots.enabled }}{{ $_ := set $mounts "snapshots.mountPath" .Values.snapshots.mountPath }}{{ end }}
{{- range $a, $pa := $mounts }}
{{- range $b, $pb := $mounts }}
{{- $da := printf "%s/" (trimSuffix "/" $pa) }}
{{- $db := printf "%s/" (trimSuffix "/" $pb) }}
{{- if and (lt $a $b) (or (hasPrefix $da $db) (hasPrefix $db $da)) }}
{{- fail (printf "%s (%s) and %s (%s) overlap: give each its own directory" $a $pa $b $pb) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Port of a listen address ("0.0.0.0:9191" → 9191); second arg is the default. */}}
{{- define "sidegate.port" -}}
{{- $addr := index . 0 | default "" | toString }}
{{- $p := regexFind "[0-9]+$" $addr }}
{{- if $p }}{{ $p }}{{ else }}{{ index . 1 }}{{ end }}
{{- end }}

{{/* Whole seconds (rounded up) of a Go duration string such as 5s, 1m30s, 500ms. */}}
{{- define "sidegate.durationSeconds" -}}
{{- $total := 0.0 }}
{{- range $part := regexFindAll "[0-9.]+(ns|us|µs|ms|h|m|s)" (toString .) -1 }}
{{- $n := regexFind "^[0-9.]+" $part | float64 }}
{{- $unit := trimPrefix (regexFind "^[0-9.]+" $part) $part }}
{{- if eq $unit "h" }}{{ $total = addf $total (mulf $n 3600) }}
{{- else if eq $unit "m" }}{{ $total = addf $total (mulf $n 60) }}
{{- else if eq $unit "s" }}{{ $total = addf $total $n }}
{{- else if eq $unit "ms" }}{{ $total = addf $total (divf $n 1000) }}
{{- else }}{{ $total = addf $total (divf $n 1000000) }}
{{- end }}
{{- end }}
{{- ceil $total | int }}
{{- end }}

{{/* terminationGracePeriodSeconds: must exceed shutdown_delay + shutdown_timeout. */}}
{{- define "sidegate.terminationGracePeriodSeconds" -}}
{{- $listen := .Values.config.listen | default dict }}
{{- $delay := include "sidegate.durationSeconds" ($listen.shutdown_delay | default "0s") | int }}
{{- $timeout := include "sidegate.durationSeconds" ($listen.shutdown_timeout | default "15s") | int }}
{{- $need := add $delay $timeout }}
{{- $set := .Values.terminationGracePeriodSeconds | default 0 | int }}
{{- if eq $set 0 }}
{{- add $need 5 }}
{{- else if le $set $need }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed listen.shutdown_delay + listen.shutdown_timeout (%ds)" $set $need) }}
{{- else }}
{{- $set }}
{{- end }}
{{- end }}

{{- define "sidegate.secretName" -}}
{{- .Values.secret.existingSecret | default (printf "%s-secret" (include "sidegate.fullname" .)) }}
{{- end }}

{{- define "sidegate.caSecretName" -}}
{{- .Values.ca.existingSecret | default (printf "%s-ca" (include "sidegate.fullname" .)) }}
{{- end }}

{{- define "sidegate.hasSecret" -}}
{{- if or .Values.secret.existingSecret .Values.secret.create }}true{{ end }}
{{- end }}

{{- define "sidegate.hasCA" -}}
{{- if or .Values.ca.existingSecret .Values.ca.create }}true{{ end }}
{{- end }}

{{/*
sidegate.volumes: the pod volumes the sidegate container mounts. Use together
with sidegate.sidecarContainer in a pod of your own.
*/}}
{{- define "sidegate.volumes" -}}
- name: sidegate-config
  configMap:
    name: {{ include "sidegate.fullname" . }}
{{- if include "sidegate.hasSecret" . }}
- name: sidegate-secret
  secret:
    secretName: {{ include "sidegate.secretName" . }}
    defaultMode: 0440
{{- end }}
{{- if include "sidegate.hasCA" . }}
- name: sidegate-ca
  secret:
    secretName: {{ include "sidegate.caSecretName" . }}
    defaultMode: 0444
{{- end }}
{{- if .Values.snapshots.enabled }}
- name: sidegate-snapshots
  emptyDir:
    sizeLimit: {{ .Values.snapshots.sizeLimit }}
{{- end }}
{{- end }}

{{/*
sidegate.sidecarContainer: sidegate as one container, to place beside an
application (sidecar mode) or alone (standalone mode). Takes a context with
.Values (this chart's values), .Chart and .Release; from a parent chart pass
e.g. (dict "Values" .Values.sidegate "Chart" (dict "Name" "sidegate" "Version" "0.1.0" "AppVersion" "0.1.0") "Release" .Release).
Pair it with sidegate.volumes and the ConfigMap this chart renders.
*/}}
{{- define "sidegate.sidecarContainer" -}}
{{- include "sidegate.checkMounts" . }}
{{- $listen := .Values.config.listen | default dict -}}
- name: sidegate
  image: {{ include "sidegate.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - serve
    - --config
    - {{ include "sidegate.configPath" . }}
    - --log-format
    - {{ .Values.logFormat | quote }}
    {{- range .Values.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- with .Values.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: grpc
      containerPort: {{ include "sidegate.port" (list $listen.grpc 9191) }}
      protocol: TCP
    - name: http
      containerPort: {{ include "sidegate.port" (list $listen.http 9192) }}
      protocol: TCP
    - name: admin
      containerPort: {{ include "sidegate.port" (list $listen.admin 9090) }}
      protocol: TCP
  {{- with .Values.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.startupProbe }}
  startupProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- /* The whole ConfigMap as a directory, never a subPath: the kubelet
    updates a ConfigMap volume in place (an atomic symlink swap), which a
    subPath mount never sees, and sidegate reloads the file it points at. */}}
    - name: sidegate-config
      mountPath: {{ include "sidegate.configDir" . }}
      readOnly: true
    {{- if include "sidegate.hasSecret" . }}
    - name: sidegate-secret
      mountPath: {{ .Values.secret.mountPath }}
      readOnly: true
    {{- end }}
    {{- if include "sidegate.hasCA" . }}
    - name: sidegate-ca
      mountPath: {{ .Values.ca.mountPath }}
      readOnly: true
    {{- end }}
    {{- if .Values.snapshots.enabled }}
    - name: sidegate-snapshots
      mountPath: {{ .Values.snapshots.mountPath }}
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
