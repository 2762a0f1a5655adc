{{- define "squeeze.name" -}}{{ .Release.Name }}-squeeze{{- end -}}
{{- define "squeeze.labels" -}}
app.kubernetes.io/name: squeeze
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "squeeze.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}
{{- define "squeeze.serviceAccountName" -}}
{{- if .Values.serviceAccount.name }}{{ .Values.serviceAccount.name }}{{ else }}{{ include "squeeze.name" . }}{{ end -}}
{{- end -}}
{{- /* An image reference from values: (dict "image" .Values.image.worker "root" .) */ -}}
{{- define "squeeze.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $ref := printf "%s%s" (ternary (printf "%s/" $registry) "" (ne $registry "")) .image.repository -}}
{{- if .image.digest -}}
{{ $ref }}@{{ .image.digest }}
{{- else -}}
{{ $ref }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end -}}
