{{- define "kallm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kallm.fullname" -}}
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

{{- define "kallm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kallm.labels" -}}
helm.sh/chart: {{ include "kallm.chart" . }}
{{ include "kallm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kallm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kallm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kallm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kallm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the chart creates: only when a value is given and no existing Secret named. */}}
{{- define "kallm.secretName" -}}
{{- include "kallm.fullname" . }}
{{- end }}

{{- define "kallm.createSecret" -}}
{{- if or (and .Values.openai.apiKey (not .Values.openai.existingSecret)) (and .Values.anthropic.apiKey (not .Values.anthropic.existingSecret)) (and .Values.gemini.apiKey (not .Values.gemini.existingSecret)) (and .Values.adminToken.value (not .Values.adminToken.existingSecret)) (and .Values.clientAuth.keys (not .Values.clientAuth.existingSecret)) (and .Values.backendSecret.url (not .Values.backendSecret.existingSecret)) -}}
true
{{- end }}
{{- end }}

{{/* KALLM_BACKEND from values: persistence turns "memory" into SQLite on the volume. */}}
{{- define "kallm.backend" -}}
{{- if and .Values.persistence.enabled (eq (toString .Values.config.backend) "memory") -}}
sqlite:////data/kallm.db
{{- else -}}
{{- .Values.config.backend -}}
{{- end }}
{{- end }}

{{- define "kallm.usesSqlite" -}}
{{- if and (not .Values.backendSecret.url) (not .Values.backendSecret.existingSecret) (hasPrefix "sqlite:" (include "kallm.backend" .)) -}}
true
{{- end }}
{{- end }}

{{/* KALLM_SHUTDOWN_GRACE: set, or what the pod's grace period leaves after the delay and 5 s. */}}
{{- define "kallm.shutdownGrace" -}}
{{- $period := int .Values.terminationGracePeriodSeconds }}
{{- $delay := int .Values.shutdown.delaySeconds }}
{{- $grace := 0 }}
{{- if ne (toString .Values.shutdown.graceSeconds) "" }}
{{- $grace = int .Values.shutdown.graceSeconds }}
{{- else }}
{{- $grace = max 0 (sub (sub $period $delay) 5) }}
{{- end }}
{{- if ge (add $delay $grace) $period }}
{{- fail (printf "shutdown.delaySeconds + shutdown.graceSeconds (%d) must be below terminationGracePeriodSeconds (%d)" (add $delay $grace) $period) }}
{{- end }}
{{- $grace }}
{{- end }}

{{/* Whether kallm holds a provider key of its own (which callers then spend). */}}
{{- define "kallm.ownKeys" -}}
{{- if or .Values.openai.apiKey .Values.openai.existingSecret .Values.anthropic.apiKey .Values.anthropic.existingSecret .Values.gemini.apiKey .Values.gemini.existingSecret -}}
true
{{- end }}
{{- end }}

{{/* Whether callers are identified: client keys, a client keys file, or their pod's IP. */}}
{{- define "kallm.callersIdentified" -}}
{{- if or .Values.clientAuth.keys .Values.clientAuth.existingSecret .Values.clientAuth.keysFileSecret.name .Values.policies.namespaceFromPodIP -}}
true
{{- end }}
{{- end }}
