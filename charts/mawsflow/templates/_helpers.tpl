{{/* The chart name, as resources are named. */}}
{{- define "mawsflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every resource name: the release name, extended by the chart name unless it
already contains it. Truncated to 63 characters, the limit of a DNS label. */}}
{{- define "mawsflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "mawsflow.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mawsflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mawsflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mawsflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mawsflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mawsflow
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "mawsflow.serviceAccountName" -}}
{{- default (include "mawsflow.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The Secret the object-store credentials come from: an existing one, or the one the chart
creates from the given keys. Refuses a half-given or contradictory setting. */}}
{{- define "mawsflow.s3.createSecret" -}}
{{- $c := .Values.objectStore.credentials -}}
{{- $given := or $c.accessKeyId $c.secretAccessKey -}}
{{- if and $given $c.existingSecret -}}
{{- fail "objectStore.credentials: give either existingSecret or accessKeyId and secretAccessKey, not both (set existingSecret to \"\" to have the chart create the Secret)" -}}
{{- end -}}
{{- if and $given (not (and $c.accessKeyId $c.secretAccessKey)) -}}
{{- fail "objectStore.credentials: accessKeyId and secretAccessKey must be given together" -}}
{{- end -}}
{{- if not (or $given $c.existingSecret) -}}
{{- fail "objectStore.credentials: name an existingSecret, or give accessKeyId and secretAccessKey" -}}
{{- end -}}
{{- if $given }}true{{ end -}}
{{- end -}}

{{- define "mawsflow.s3.secretName" -}}
{{- if include "mawsflow.s3.createSecret" . -}}
{{- printf "%s-s3" (include "mawsflow.fullname" .) -}}
{{- else -}}
{{- .Values.objectStore.credentials.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "mawsflow.s3.accessKeyIdKey" -}}
{{- if include "mawsflow.s3.createSecret" . }}AWS_ACCESS_KEY_ID{{ else }}{{ .Values.objectStore.credentials.accessKeyIdKey }}{{ end -}}
{{- end -}}

{{- define "mawsflow.s3.secretAccessKeyKey" -}}
{{- if include "mawsflow.s3.createSecret" . }}AWS_SECRET_ACCESS_KEY{{ else }}{{ .Values.objectStore.credentials.secretAccessKeyKey }}{{ end -}}
{{- end -}}

{{/* The bootstrap image: repository:tag, or repository@digest when a digest pins it. */}}
{{- define "mawsflow.recurringRun.image" -}}
{{- $image := .Values.recurringRun.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The recurring run's pipeline parameters (JSON): recurringRun.parameters, and with
recurringRun.retraining.enabled the retraining pipeline's own (pipelines/maws.py --retrain).
Called with .Values.recurringRun as the context.
*/}}
{{- define "mawsflow.recurringRun.parameters" -}}
{{- $parameters := deepCopy .parameters -}}
{{- with .retraining -}}
{{- if .enabled -}}
{{- $registry := required "recurringRun.retraining.registry: give the model registry's root URI (s3://…)" .registry -}}
{{- $_ := set $parameters "registry" $registry -}}
{{- $_ := set $parameters "mae_warm_start" .warmStart.mae -}}
{{- $_ := set $parameters "wsp_warm_start" .warmStart.wsp -}}
{{- $_ := set $parameters "wsp_continue_samples" (int .warmStart.wspSamples) -}}
{{- $_ := set $parameters "gate_headline" .gate.headline -}}
{{- $_ := set $parameters "gate_max_drop" (float64 .gate.maxDrop) -}}
{{- $_ := set $parameters "gate_min_gain" (float64 .gate.minGain) -}}
{{- $_ := set $parameters "pushgateway" .pushgateway -}}
{{- end -}}
{{- end -}}
{{- $parameters | toJson -}}
{{- end }}
