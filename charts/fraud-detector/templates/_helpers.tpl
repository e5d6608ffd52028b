{{/* Names and labels shared by every template. */}}
{{- define "fraud-detector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fraud-detector.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "fraud-detector.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* An image by digest when one is given (repository@sha256:...), else by tag. */}}
{{- define "fraud-detector.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .appVersion) -}}
{{- end -}}
{{- end -}}

{{- define "fraud-detector.operatorName" -}}
{{- printf "%s-operator" (include "fraud-detector.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fraud-detector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fraud-detector.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fraud-detector.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/part-of: fraud-detector
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "fraud-detector.selectorLabels" . }}
{{- end -}}

{{- define "fraud-detector.selectorLabels" -}}
app.kubernetes.io/name: fraud-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fraud-detector.peeringName" -}}
{{- include "fraud-detector.operatorName" . -}}
{{- end -}}
