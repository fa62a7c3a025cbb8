{{/*
Names, labels and the per-service settings every template shares.
*/}}

{{/* The services, in the order of docs/architecture.md. */}}
{{- define "lhcie.services" -}}
intake storage notification audit agreements care
{{- end }}

{{- define "lhcie.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name alone when it already contains the chart name. */}}
{{- define "lhcie.fullname" -}}
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

{{/* Object name of one component: (list $ "intake") -> <fullname>-intake */}}
{{- define "lhcie.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "lhcie.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) }}
{{- end }}

{{- define "lhcie.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object: (list $ "intake"). */}}
{{- define "lhcie.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "lhcie.chart" $root }}
{{ include "lhcie.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: lhcie
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "lhcie.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "lhcie.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
A service's settings: serviceDefaults overridden by the service's own block. Called as
  {{- $c := dict }}{{- include "lhcie.resolve" (list $ "intake" $c) }}
so that values keep their types. Explicit `false` and `0` override (sprig's merge would drop them);
maps in $merged are merged key by key, everything else is replaced whole. A service that sets either
pdb.minAvailable or pdb.maxUnavailable replaces both.
*/}}
{{- define "lhcie.resolve" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 }}
{{- $out := index . 2 }}
{{- $defaults := $root.Values.serviceDefaults }}
{{- $own := index $root.Values $name | default dict }}
{{- $merged := list "autoscaling" "pdb" "networkPolicy" "serviceAccount" "service" "topologySpread" }}
{{- range $key, $value := $defaults }}
{{- if and (hasKey $own $key) (has $key $merged) (kindIs "map" (index $own $key)) }}
{{- $ownMap := index $own $key }}
{{- $map := deepCopy $value }}
{{- if and (eq $key "pdb") (or (hasKey $ownMap "minAvailable") (hasKey $ownMap "maxUnavailable")) }}
{{- $_ := unset $map "minAvailable" }}
{{- $_ := unset $map "maxUnavailable" }}
{{- end }}
{{- range $k, $v := $ownMap }}
{{- $_ := set $map $k $v }}
{{- end }}
{{- $_ := set $out $key $map }}
{{- else if hasKey $own $key }}
{{- $_ := set $out $key (index $own $key) }}
{{- else }}
{{- $_ := set $out $key (deepCopy $value) }}
{{- end }}
{{- end }}
{{- $_ := set $out "image" (get $own "image" | default dict) }}
{{- $_ := set $out "name" $name }}
{{- end }}

{{/* Image reference: (list $ "<image suffix>" <override map>) */}}
{{- define "lhcie.image" -}}
{{- $root := index . 0 -}}
{{- $override := index . 2 }}
{{- $registry := $root.Values.image.registry }}
{{- $repository := get $override "repository" | default (printf "%s-%s" $root.Values.image.repository (index . 1)) }}
{{- $ref := ternary $repository (printf "%s/%s" $registry $repository) (empty $registry) }}
{{- if get $override "digest" }}
{{- printf "%s@%s" $ref (get $override "digest") }}
{{- else }}
{{- printf "%s:%s" $ref (get $override "tag" | default $root.Values.image.tag | default $root.Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Name of a service's ServiceAccount. */}}
{{- define "lhcie.serviceAccountName" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- if $c.serviceAccount.name }}
{{- $c.serviceAccount.name }}
{{- else if $c.serviceAccount.create }}
{{- include "lhcie.componentName" (list $root $c.name) }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{- define "lhcie.configMapName" -}}
{{- printf "%s-config" (include "lhcie.fullname" .) }}
{{- end }}

{{/* Where the pods keep their writable data (an emptyDir) and where the auth material is mounted. */}}
{{- define "lhcie.dataDir" -}}/var/lib/lhcie{{- end }}
{{- define "lhcie.jwksDir" -}}/etc/lhcie/jwks{{- end }}
{{- define "lhcie.auditKeyDir" -}}/etc/lhcie/audit-signing{{- end }}

{{/*
The non-secret settings of every service, as a YAML map of environment variables. The ConfigMap holds
them for the Deployments; the pre-install Job (which runs before the ConfigMap exists) sets them inline.
*/}}
{{- define "lhcie.configEnv" -}}
{{- $v := .Values -}}
LHCIE_HTTP_HOST: "0.0.0.0"
LHCIE_HTTP_PORT: "8080"
LHCIE_DATA_DIR: {{ include "lhcie.dataDir" . | quote }}
LHCIE_BUS: "amqp"
LHCIE_OBJECT_STORE: "s3"
LHCIE_S3_BUCKET: {{ $v.s3.bucket | quote }}
LHCIE_S3_REGION: {{ $v.s3.region | quote }}
{{- with $v.s3.endpointUrl }}
LHCIE_S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
LHCIE_S3_PATH_STYLE: {{ $v.s3.pathStyle | toString | quote }}
LHCIE_S3_SSE: {{ $v.s3.sse | quote }}
{{- with $v.s3.kmsKeyId }}
LHCIE_S3_KMS_KEY_ID: {{ . | quote }}
{{- end }}
LHCIE_DOC_STORE: {{ $v.config.docStore | quote }}
LHCIE_DEMO: {{ $v.config.demo | toString | quote }}
LHCIE_DRAIN_SECONDS: {{ $v.config.drainSeconds | toString | quote }}
LHCIE_JWT_ISSUER: {{ $v.auth.jwtIssuer | quote }}
LHCIE_JWT_AUDIENCE: {{ $v.auth.jwtAudience | quote }}
{{- if $v.auth.jwksUrl }}
LHCIE_JWKS_URL: {{ $v.auth.jwksUrl | quote }}
{{- else if $v.auth.jwks.existingSecret }}
LHCIE_JWKS_URL: {{ printf "file://%s/jwks.json" (include "lhcie.jwksDir" .) | quote }}
{{- else if $v.auth.signingKey.existingSecret }}
{{- /* a test cluster: the embedded issuer, its key from the Secret (lhcie serve refuses it unless asked) */}}
LHCIE_EMBEDDED_ISSUER: "true"
{{- end }}
{{- with $v.telemetry.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf"
OTEL_TRACES_SAMPLER: {{ $v.telemetry.sampler | quote }}
OTEL_TRACES_SAMPLER_ARG: {{ $v.telemetry.samplerArg | quote }}
{{- end }}
{{- range $name, $value := $v.config.extraEnv }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Secrets, by reference only: env entries with secretKeyRef. */}}
{{- define "lhcie.secretEnv" -}}
{{- $v := .Values -}}
- name: LHCIE_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.rabbitmq.existingSecret }}
      key: {{ $v.rabbitmq.urlKey }}
{{- if eq $v.config.docStore "mongodb" }}
- name: LHCIE_MONGODB_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.mongodb.existingSecret }}
      key: {{ $v.mongodb.urlKey }}
{{- end }}
{{- with $v.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.s3.secretAccessKeyKey }}
{{- end }}
{{- end }}

{{/* OpenTelemetry resource attributes naming the pod (downward API) for a component. */}}
{{- define "lhcie.otelEnv" -}}
{{- $root := index . 0 -}}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.namespace=lhcie,service.version=%s,k8s.pod.name=$(K8S_POD_NAME),k8s.namespace.name=$(K8S_NAMESPACE_NAME)%s" $root.Chart.AppVersion (ternary "" (printf ",%s" $root.Values.telemetry.resourceAttributes) (empty $root.Values.telemetry.resourceAttributes)) | quote }}
{{- end }}

{{/* Pod and container security contexts: the Kubernetes "restricted" Pod Security Standard. */}}
{{- define "lhcie.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "lhcie.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Writable volumes (the root filesystem is read-only) and the auth material: (list $ $c). */}}
{{- define "lhcie.volumes" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
- name: data
  emptyDir:
    sizeLimit: {{ $c.dataDirSizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: {{ $c.tmpDirSizeLimit }}
{{- with $root.Values.auth.jwks.existingSecret }}
- name: jwks
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: {{ $root.Values.auth.jwks.key }}
        path: jwks.json
{{- end }}
{{- if and (eq (get $c "name" | default "") "audit") $root.Values.auditSigningKey.existingSecret }}
- name: audit-signing-key
  secret:
    secretName: {{ $root.Values.auditSigningKey.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $root.Values.auditSigningKey.key }}
        path: audit-signing-key.pem
{{- end }}
{{- with $root.Values.auth.signingKey.existingSecret }}
- name: signing-key
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: {{ $root.Values.auth.signingKey.key }}
        path: signing-key.pem
{{- end }}
{{- end }}

{{/* Volume mounts: (list $ "<component>"). */}}
{{- define "lhcie.volumeMounts" -}}
{{- $root := index . 0 -}}
{{- $v := $root.Values -}}
- name: data
  mountPath: {{ include "lhcie.dataDir" $root }}
- name: tmp
  mountPath: /tmp
{{- if $v.auth.jwks.existingSecret }}
- name: jwks
  mountPath: {{ include "lhcie.jwksDir" $root }}
  readOnly: true
{{- end }}
{{- if $v.auth.signingKey.existingSecret }}
{{- /* the embedded issuer reads <data dir>/issuer/signing-key.pem */}}
- name: signing-key
  mountPath: {{ printf "%s/issuer" (include "lhcie.dataDir" $root) }}
  readOnly: true
{{- end }}
{{- if and (eq (index . 1) "audit") $v.auditSigningKey.existingSecret }}
- name: audit-signing-key
  mountPath: {{ include "lhcie.auditKeyDir" $root }}
  readOnly: true
{{- end }}
{{- end }}
