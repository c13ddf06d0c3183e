{{/* Chart name, overridable with nameOverride. */}}
{{- define "podgraft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name, the prefix of every resource. Truncated at 63 characters (some Kubernetes name fields
are limited to that by the DNS label rules); a release name that already contains the chart name
is used as is.
*/}}
{{- define "podgraft.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "podgraft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "podgraft.labels" -}}
helm.sh/chart: {{ include "podgraft.chart" . }}
{{ include "podgraft.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: podgraft
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the webhook server pods (Deployment, Service, PDB, NetworkPolicy). */}}
{{- define "podgraft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podgraft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{/* Name of the ServiceAccount the server runs as. */}}
{{- define "podgraft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "podgraft.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: repository@digest when a digest is given, else repository:tag (tag defaults to appVersion). */}}
{{- define "podgraft.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding tls.crt and tls.key (and ca.crt, except maybe in secret mode). */}}
{{- define "podgraft.tlsSecretName" -}}
{{- if eq .Values.tls.mode "secret" }}
{{- required "tls.secret.name is required when tls.mode is secret" .Values.tls.secret.name }}
{{- else }}
{{- printf "%s-tls" (include "podgraft.fullname" .) }}
{{- end }}
{{- end }}

{{/* DNS names the API server may use for the Service, as a JSON list (the serving certificate's SANs). */}}
{{- define "podgraft.dnsNames" -}}
{{- $svc := include "podgraft.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) | toJson }}
{{- end }}

{{/* Namespaces watched for policy ConfigMaps, as a JSON list: the release namespace first, then policies.watchNamespaces. */}}
{{- define "podgraft.policyNamespaces" -}}
{{- prepend .Values.policies.watchNamespaces .Release.Namespace | uniq | toJson }}
{{- end }}

{{/* Namespaces the webhook never sees, as a JSON list: the system ones, the release namespace, config.excludedNamespaces. */}}
{{- define "podgraft.excludedNamespaces" -}}
{{- concat (list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace) .Values.config.excludedNamespaces | uniq | toJson }}
{{- end }}

{{/* Label put on Podgraft's own pods so that the webhook's objectSelector skips them. */}}
{{- define "podgraft.skipLabel" -}}
{{ .Values.config.namespaceLabel }}: disabled
{{- end }}

{{/* Refuses values that the schema cannot check across keys. Included by the Deployment. */}}
{{- define "podgraft.validate" -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) (float64 .Values.config.drainSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than config.drainSeconds (%v): the server drains for that long after SIGTERM" .Values.terminationGracePeriodSeconds .Values.config.drainSeconds) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas" }}
{{- end }}
{{- if eq .Values.tls.mode "secret" }}
{{- $_ := required "tls.secret.name is required when tls.mode is secret" .Values.tls.secret.name }}
{{- $_ := required "tls.secret.caBundle (base64 PEM of the CA) is required when tls.mode is secret" .Values.tls.secret.caBundle }}
{{- end }}
{{- end }}

{{/* Replicas the Deployment runs at least: the HPA minimum or replicaCount. */}}
{{- define "podgraft.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}
