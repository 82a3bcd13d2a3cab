{{/* The release's full name, cut to 63 characters as labels require. */}}
{{- define "dledger-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dledger-operator.selectorLabels" -}}
app.kubernetes.io/name: dledger-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dledger-operator.labels" -}}
{{ include "dledger-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "dledger-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dledger-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
