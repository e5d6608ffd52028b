{{/* Names and labels shared by every template. */}}
{{- define "fraud-detector.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
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
