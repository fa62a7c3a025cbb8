{{/*
The objects of one service, each called from templates/<service>/<kind>.yaml as
  {{ include "lhcie.deployment" (list . "intake") }}
All five services run the same way (`lhcie serve <service>`); they differ only by their values block.
*/}}

{{- define "lhcie.deployment" -}}
{{- $root := index . 0 }}
{{- $c := dict }}
{{- include "lhcie.resolve" (list $root (index . 1) $c) }}
{{- if $c.enabled }}
{{- $name := include "lhcie.componentName" (list $root $c.name) }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lhcie.labels" (list $root $c.name) | nindent 4 }}
spec:
  {{- if not $c.autoscaling.enabled }}
  replicas: {{ $c.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "lhcie.selectorLabels" (list $root $c.name) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "lhcie.labels" (list $root $c.name) | nindent 8 }}
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "lhcie.configEnv" $root | sha256sum }}
        {{- with $c.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "lhcie.serviceAccountName" (list $root $c) }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      securityContext:
        {{- include "lhcie.podSecurityContext" $root | nindent 8 }}
      containers:
        - name: {{ $c.name }}
          image: {{ include "lhcie.image" (list $root $c.name $c.image) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["lhcie"]
          args: ["serve", {{ $c.name | quote }}]
          ports:
            - name: http
              containerPort: 8080
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "lhcie.configMapName" $root }}
          env:
            {{- include "lhcie.secretEnv" $root | nindent 12 }}
            {{- include "lhcie.otelEnv" (list $root) | nindent 12 }}
            {{- if and (eq $c.name "audit") $root.Values.auditSigningKey.existingSecret }}
            - name: LHCIE_AUDIT_SIGNING_KEY_FILE
              value: {{ printf "%s/audit-signing-key.pem" (include "lhcie.auditKeyDir" $root) }}
            {{- end }}
            {{- with $c.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 2
            failureThreshold: 30
            timeoutSeconds: 3
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          lifecycle:
            preStop:
              exec:
                command: ["sleep", {{ $c.preStopSleepSeconds | toString | quote }}]
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- include "lhcie.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            {{- include "lhcie.volumeMounts" (list $root $c.name) | nindent 12 }}
      volumes:
        {{- include "lhcie.volumes" (list $root $c) | nindent 8 }}
      {{- if or $c.topologySpread.enabled $c.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- if $c.topologySpread.enabled }}
        {{- range $c.topologySpread.topologyKeys }}
        - maxSkew: {{ $c.topologySpread.maxSkew }}
          topologyKey: {{ . }}
          whenUnsatisfiable: {{ $c.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "lhcie.selectorLabels" (list $root $c.name) | nindent 14 }}
          matchLabelKeys:
            - pod-template-hash
        {{- end }}
        {{- end }}
        {{- with $c.topologySpreadConstraints }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end }}

{{- define "lhcie.service" -}}
{{- $root := index . 0 }}
{{- $c := dict }}
{{- include "lhcie.resolve" (list $root (index . 1) $c) }}
{{- if $c.enabled }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "lhcie.componentName" (list $root $c.name) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lhcie.labels" (list $root $c.name) | nindent 4 }}
  {{- with $c.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $c.service.type }}
  selector:
    {{- include "lhcie.selectorLabels" (list $root $c.name) | nindent 4 }}
  ports:
    - name: http
      port: {{ $c.service.port }}
      targetPort: http
      protocol: TCP
      appProtocol: http
{{- end }}
{{- end }}

{{- define "lhcie.serviceAccount" -}}
{{- $root := index . 0 }}
{{- $c := dict }}
{{- include "lhcie.resolve" (list $root (index . 1) $c) }}
{{- if and $c.enabled $c.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "lhcie.serviceAccountName" (list $root $c) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lhcie.labels" (list $root $c.name) | nindent 4 }}
  {{- with $c.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end }}
{{- end }}

{{- define "lhcie.pdb" -}}
{{- $root := index . 0 }}
{{- $c := dict }}
{{- include "lhcie.resolve" (list $root (index . 1) $c) }}
{{- if and $c.enabled $c.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "lhcie.componentName" (list $root $c.name) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lhcie.labels" (list $root $c.name) | nindent 4 }}
spec:
  {{- if hasKey $c.pdb "minAvailable" }}
  minAvailable: {{ $c.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $c.pdb.maxUnavailable | default 1 }}
  {{- end }}
  # Pods that are not ready may be evicted, so a broken rollout never blocks a node drain.
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "lhcie.selectorLabels" (list $root $c.name) | nindent 6 }}
{{- end }}
{{- end }}

{{- define "lhcie.hpa" -}}
{{- $root := index . 0 }}
{{- $c := dict }}
{{- include "lhcie.resolve" (list $root (index . 1) $c) }}
{{- if and $c.enabled $c.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "lhcie.componentName" (list $root $c.name) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lhcie.labels" (list $root $c.name) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "lhcie.componentName" (list $root $c.name) }}
  minReplicas: {{ $c.autoscaling.minReplicas }}
  maxReplicas: {{ $c.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $c.autoscaling.targetCPUUtilizationPercentage }}
    {{- with $c.autoscaling.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
  behavior:
    scaleDown:
      # Scale in slowly: each removed pod drains its consumers first.
      stabilizationWindowSeconds: 300
      policies:
        - type: Pods
          value: 1
          periodSeconds: 60
{{- end }}
{{- end }}

{{- define "lhcie.networkPolicy" -}}
{{- $root := index . 0 }}
{{- $c := dict }}
{{- include "lhcie.resolve" (list $root (index . 1) $c) }}
{{- if and $c.enabled $c.networkPolicy.enabled }}
{{- $np := $root.Values.networkPolicy }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "lhcie.componentName" (list $root $c.name) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lhcie.labels" (list $root $c.name) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "lhcie.selectorLabels" (list $root $c.name) | nindent 6 }}
  policyTypes:
    - Ingress
    {{- if $np.egress.enabled }}
    - Egress
    {{- end }}
  ingress:
    # The ingress controller, Prometheus, and pods of this release (the helm test pod).
    - from:
        - podSelector:
            matchLabels:
              app.kubernetes.io/instance: {{ $root.Release.Name }}
        {{- with $np.ingressFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $np.metricsFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - port: http
          protocol: TCP
  {{- if $np.egress.enabled }}
  egress:
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    {{- toYaml $np.egress.rules | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "lhcie.serviceMonitor" -}}
{{- $root := index . 0 }}
{{- $c := dict }}
{{- include "lhcie.resolve" (list $root (index . 1) $c) }}
{{- if and $c.enabled $root.Values.serviceMonitor.enabled }}
{{- $sm := $root.Values.serviceMonitor }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "lhcie.componentName" (list $root $c.name) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lhcie.labels" (list $root $c.name) | nindent 4 }}
    {{- with $sm.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "lhcie.selectorLabels" (list $root $c.name) | nindent 6 }}
  namespaceSelector:
    matchNames:
      - {{ $root.Release.Namespace }}
  endpoints:
    - port: http
      path: /metrics
      interval: {{ $sm.interval }}
      scrapeTimeout: {{ $sm.scrapeTimeout }}
{{- end }}
{{- end }}
