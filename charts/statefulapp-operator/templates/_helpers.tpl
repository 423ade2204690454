{{- define "statefulapp.name" -}}statefulapp-operator{{- end -}}

{{- define "statefulapp.fullname" -}}
{{- if contains "statefulapp-operator" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-statefulapp-operator" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "statefulapp.labels" -}}
app.kubernetes.io/name: {{ include "statefulapp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "statefulapp.selector" -}}
app.kubernetes.io/name: {{ include "statefulapp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "statefulapp.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "statefulapp.controllerAccount" -}}{{ include "statefulapp.fullname" . }}-controller{{- end -}}
{{- define "statefulapp.agentAccount" -}}{{ include "statefulapp.fullname" . }}-agent{{- end -}}

{{- /* Whether capacity is published and checked; a CSIDriver name (the
provisioner's) may not contain '/'. */ -}}
{{- define "statefulapp.capacity" -}}
{{- if .Values.capacity.enabled -}}
{{- if contains "/" .Values.storageClass.provisioner -}}
{{- fail (printf "capacity.enabled needs a storageClass.provisioner without '/' (it names the CSIDriver object kube-scheduler reads capacity through): %q; use local.statefulapp.io, or set capacity.enabled=false" .Values.storageClass.provisioner) -}}
{{- end -}}
true
{{- end -}}
{{- end -}}
