{{/* Names: <release>-tributary, or the release name when it already says tributary. */}}
{{- define "tributary.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tributary.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "tributary.releaseLabels" . }}
{{- end -}}

{{- define "tributary.releaseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one stage; call with (dict "root" $ "stage" "normalize"). */}}
{{- define "tributary.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .stage }}
{{- end -}}

{{- define "tributary.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- include "tributary.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "tributary.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The consumer group and input topic of a stage, as the example's processes name them. */}}
{{- define "tributary.group" -}}
{{- printf "%s.%s" .root.Values.kafka.prefix .stage -}}
{{- end -}}

{{/*
Pod template shared by every stage. Call with
(dict "root" $ "stage" "normalize" "args" (list ...) "resources" {...} "probes" true "dataClaim" "").
*/}}
{{- define "tributary.podTemplate" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "tributary.selectorLabels" . | nindent 4 }}
    {{- include "tributary.releaseLabels" $root | nindent 4 }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- if $root.Values.secrets.create }}
    checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    {{- end }}
    {{- if and $root.Values.metrics.scrapeAnnotations .probes }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $root.Values.config.metricsPort | quote }}
    prometheus.io/path: /metrics
    {{- end }}
spec:
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ add (div $root.Values.config.drainMs 1000) 10 }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- if .restartPolicy }}
  restartPolicy: {{ .restartPolicy }}
  {{- end }}
  containers:
    - name: {{ .stage }}
      image: {{ include "tributary.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      # The example's stage scripts; the image's entrypoint is the tributary CLI.
      command: ["/usr/bin/tini", "--", "node"]
      args:
        {{- toYaml .args | nindent 8 }}
      envFrom:
        - configMapRef:
            name: {{ include "tributary.fullname" $root }}
        - secretRef:
            name: {{ include "tributary.secretName" $root }}
      {{- if .probes }}
      ports:
        - name: metrics
          containerPort: {{ $root.Values.config.metricsPort }}
          protocol: TCP
      startupProbe:
        httpGet: {path: /health, port: metrics}
        periodSeconds: 2
        failureThreshold: 60
      livenessProbe:
        httpGet: {path: /health, port: metrics}
        periodSeconds: 10
        failureThreshold: 3
      readinessProbe:
        httpGet: {path: /ready, port: metrics}
        periodSeconds: 5
        failureThreshold: 2
      {{- end }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: data
          mountPath: /data
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 1Gi
    {{- if not .dataClaim }}
    - name: data
      emptyDir:
        sizeLimit: 1Gi
    {{- end }}
  {{- with $root.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
