{{- define "payoff.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "payoff.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "payoff.selectorLabels" -}}
app.kubernetes.io/name: {{ include "payoff.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "payoff.labels" -}}
{{ include "payoff.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "payoff.secretName" -}}
{{- default (printf "%s-api-keys" (include "payoff.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{- define "payoff.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "payoff.fullname" .) -}}
{{- else -}}
{{- required "redis.externalUrl is required when redis.enabled=false" .Values.redis.externalUrl -}}
{{- end -}}
{{- end -}}

{{/* Redis of the learner RayJob's private gateway: its own database, so the two job runners never compete
for the runner lease (a Redis-wide key) and a job submitted to one is never started by the other. */}}
{{- define "payoff.learnerJobRedisUrl" -}}
{{- if .Values.learnerJob.redisUrl -}}
{{- .Values.learnerJob.redisUrl -}}
{{- else if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/%d" (include "payoff.fullname" .) (int .Values.learnerJob.redisDb) -}}
{{- else -}}
{{- required "learnerJob.redisUrl is required with an external Redis (a database the RayService's gateway does not use)" .Values.learnerJob.redisUrl -}}
{{- end -}}
{{- end -}}

{{/* Container env shared by every Ray pod: Redis, secrets from the Secret, metrics export.
Args: dict "root" $ "redisUrl" <url> */}}
{{- define "payoff.rayEnv" -}}
{{- $root := .root -}}
- name: REDIS_URL
  value: {{ .redisUrl | quote }}
- name: PAYOFF_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "payoff.secretName" $root }}
      key: PAYOFF_ADMIN_KEY
- name: PAYOFF_API_KEY_PEPPER
  valueFrom:
    secretKeyRef:
      name: {{ include "payoff.secretName" $root }}
      key: PAYOFF_API_KEY_PEPPER
# the data plane's HTTP routes (rollout, judge) need it; tenants never see it (services/internal_auth.py)
- name: PAYOFF_INTERNAL_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "payoff.secretName" $root }}
      key: PAYOFF_INTERNAL_TOKEN
# the scrape credential of the gateways' GET /metrics (the monitors send it; the admin key works too). Optional:
# an apiKeys.existingSecret without it leaves /metrics to the admin key (and the monitors without a credential)
- name: PAYOFF_METRICS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "payoff.secretName" $root }}
      key: PAYOFF_METRICS_TOKEN
      optional: true
- name: PAYOFF_DATA_DIR
  value: /data/payoff
{{- if $root.Values.metrics.exportToRay }}
# every Ray actor (Serve replica, learner worker, job driver) mirrors its payoff_* series to Ray's metrics agent
- name: PAYOFF_METRICS_TO_RAY
  value: "1"
{{- end }}
{{- end -}}

{{/* Pod template of a Ray node. Args: dict "root" $ "group" <values> "nodeType" head|worker "gpus" int,
optional "component" (label app.kubernetes.io/component, default ray-<nodeType>), "redisUrl" (default the
release's Redis), "extraPorts", "extraMounts", "extraVolumes" (lists). */}}
{{- define "payoff.rayPodTemplate" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "payoff.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component | default (printf "ray-%s" .nodeType) }}
spec:
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: ray-{{ .nodeType }}
      image: "{{ $root.Values.image.repository }}:{{ $root.Values.image.tag }}"
      imagePullPolicy: {{ $root.Values.image.pullPolicy | default "IfNotPresent" }}
      env:
        {{- include "payoff.rayEnv" (dict "root" $root "redisUrl" (.redisUrl | default (include "payoff.redisUrl" $root))) | nindent 8 }}
      ports:
        {{- if eq .nodeType "head" }}
        - {containerPort: 6379, name: gcs}
        - {containerPort: 8265, name: dashboard}
        - {containerPort: 10001, name: client}
        {{- end }}
        - {containerPort: 8000, name: serve}
        # Ray's metrics agent (rayStartParams metrics-export-port): ray_*, ray_serve_*, mirrored payoff_*
        - {containerPort: 8080, name: metrics}
        {{- with .extraPorts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- $res := deepCopy (default dict .group.resources) }}
      {{- if gt (int .gpus) 0 }}
      {{- $_ := set $res "requests" (merge (dict "nvidia.com/gpu" (int .gpus)) (default dict $res.requests)) }}
      {{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" (int .gpus)) (default dict $res.limits)) }}
      {{- end }}
      {{- with $res }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - {name: payoff-data, mountPath: /data/payoff}
        - {name: dshm, mountPath: /dev/shm}
        {{- with .extraMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: payoff-data
      emptyDir: {}
    - name: dshm
      emptyDir: {medium: Memory}
    {{- with .extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
