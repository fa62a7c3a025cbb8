{{/*
Consistency checks the schema cannot express. Each problem is one line saying what is wrong and what to
set; the install fails listing all of them.
*/}}
{{- define "lhcie.validate" -}}
{{- $v := .Values }}
{{- $errors := list }}

{{- if not $v.rabbitmq.existingSecret }}
{{- $errors = append $errors "rabbitmq.existingSecret is empty: every service needs RabbitMQ. Create a Secret with the AMQP URL (kubectl create secret generic lhcie-rabbitmq --from-literal=amqp-url='amqps://user:pass@host:5671/lhcie') and set rabbitmq.existingSecret to its name." }}
{{- end }}

{{- if and (eq $v.config.docStore "mongodb") (not $v.mongodb.existingSecret) }}
{{- $errors = append $errors "config.docStore is mongodb but mongodb.existingSecret is empty. Create a Secret with the connection string (kubectl create secret generic lhcie-mongodb --from-literal=mongodb-url='mongodb+srv://...') and set mongodb.existingSecret to its name." }}
{{- end }}

{{- $keySources := list }}
{{- if $v.auth.jwksUrl }}{{ $keySources = append $keySources "auth.jwksUrl" }}{{ end }}
{{- if $v.auth.jwks.existingSecret }}{{ $keySources = append $keySources "auth.jwks.existingSecret" }}{{ end }}
{{- if $v.auth.signingKey.existingSecret }}{{ $keySources = append $keySources "auth.signingKey.existingSecret" }}{{ end }}
{{- if eq (len $keySources) 0 }}
{{- $errors = append $errors "No token verification keys: set auth.jwksUrl to your identity provider's JWKS endpoint (or auth.jwks.existingSecret, or auth.signingKey.existingSecret for a test cluster). Without them every pod would mint its own key and reject the others' tokens." }}
{{- else if gt (len $keySources) 1 }}
{{- $errors = append $errors (printf "Token keys are configured twice (%s): keep exactly one and set the others to \"\"." (join ", " $keySources)) }}
{{- end }}

{{- if and $v.auth.jwksUrl (not (or (hasPrefix "https://" $v.auth.jwksUrl) (hasPrefix "http://" $v.auth.jwksUrl))) }}
{{- $errors = append $errors (printf "auth.jwksUrl %q must be an http(s) URL; to use a JWKS document kept in a Secret set auth.jwks.existingSecret instead." $v.auth.jwksUrl) }}
{{- end }}

{{- if and $v.s3.endpointUrl (not (hasPrefix "http" $v.s3.endpointUrl)) }}
{{- $errors = append $errors (printf "s3.endpointUrl %q must start with http:// or https://." $v.s3.endpointUrl) }}
{{- end }}

{{- if and $v.s3.kmsKeyId (ne $v.s3.sse "aws:kms") }}
{{- $errors = append $errors (printf "s3.kmsKeyId is set but s3.sse is %s: set s3.sse=aws:kms to encrypt with that key, or clear s3.kmsKeyId." $v.s3.sse) }}
{{- end }}

{{- $audit := dict }}
{{- include "lhcie.resolve" (list $ "audit" $audit) }}
{{- if and $audit.enabled (eq $v.config.docStore "mongodb") (not $v.auditSigningKey.existingSecret) }}
{{- $errors = append $errors "auditSigningKey.existingSecret is empty: every audit replica must sign the chain's checkpoints with the same key, and it must outlive the pods. Create one (openssl genpkey -algorithm ed25519 -out audit-signing-key.pem; kubectl create secret generic lhcie-audit-signing-key --from-file=audit-signing-key.pem) and set auditSigningKey.existingSecret to its name." }}
{{- end }}

{{- if and $v.networkPolicy.egress.enabled (empty $v.networkPolicy.egress.rules) }}
{{- $errors = append $errors "networkPolicy.egress.enabled is true but networkPolicy.egress.rules is empty: the pods could reach only DNS. Add rules for RabbitMQ, MongoDB, S3 and the OTLP collector, or set networkPolicy.egress.enabled=false." }}
{{- end }}

{{- $enabled := 0 }}
{{- range $name := splitList " " (include "lhcie.services" .) }}
{{- $c := dict }}
{{- include "lhcie.resolve" (list $ $name $c) }}
{{- if $c.enabled }}
{{- $enabled = add1 $enabled }}
{{- $replicas := ternary (int $c.autoscaling.minReplicas) (int $c.replicaCount) (and $c.autoscaling.enabled true) }}
{{- if and $c.autoscaling.enabled (gt (int $c.autoscaling.minReplicas) (int $c.autoscaling.maxReplicas)) }}
{{- $errors = append $errors (printf "%s.autoscaling.minReplicas (%d) is greater than maxReplicas (%d)." $name (int $c.autoscaling.minReplicas) (int $c.autoscaling.maxReplicas)) }}
{{- end }}
{{- if $c.pdb.enabled }}
{{- if and (hasKey $c.pdb "minAvailable") (hasKey $c.pdb "maxUnavailable") (not (kindIs "invalid" $c.pdb.minAvailable)) (not (kindIs "invalid" $c.pdb.maxUnavailable)) }}
{{- $errors = append $errors (printf "%s.pdb sets both minAvailable and maxUnavailable: keep one (set the other to null)." $name) }}
{{- else if and (hasKey $c.pdb "minAvailable") (not (kindIs "string" $c.pdb.minAvailable)) (ge (int $c.pdb.minAvailable) $replicas) }}
{{- $errors = append $errors (printf "%s.pdb.minAvailable (%d) is not below its replica count (%d), so no pod could ever be evicted and node drains would hang. Lower minAvailable, raise the replicas, or use pdb.maxUnavailable." $name (int $c.pdb.minAvailable) $replicas) }}
{{- else if and (hasKey $c.pdb "maxUnavailable") (not (kindIs "string" $c.pdb.maxUnavailable)) (eq (int $c.pdb.maxUnavailable) 0) }}
{{- $errors = append $errors (printf "%s.pdb.maxUnavailable is 0, so no pod could ever be evicted and node drains would hang. Use 1 or more." $name) }}
{{- end }}
{{- end }}
{{- $needed := add (int $c.preStopSleepSeconds) (int $v.config.drainSeconds) 5 }}
{{- if lt (int $c.terminationGracePeriodSeconds) (int $needed) }}
{{- $errors = append $errors (printf "%s.terminationGracePeriodSeconds (%d) leaves no time to drain: it must be at least preStopSleepSeconds (%d) + config.drainSeconds (%d) + 5 s to close, so %d, or SIGKILL cuts the drain short." $name (int $c.terminationGracePeriodSeconds) (int $c.preStopSleepSeconds) (int $v.config.drainSeconds) $needed) }}
{{- end }}
{{- if and (eq $v.config.docStore "sqlite") (or $c.autoscaling.enabled (gt (int $c.replicaCount) 1)) }}
{{- $errors = append $errors (printf "config.docStore is sqlite, which keeps each pod's data in its own emptyDir, but %s may run more than one pod. Use config.docStore=mongodb, or set %s.replicaCount=1 and %s.autoscaling.enabled=false." $name $name $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq $enabled 0 }}
{{- $errors = append $errors "Every service is disabled: enable at least one of intake, storage, notification, audit, agreements, care." }}
{{- end }}

{{- if $errors }}
{{- fail (printf "\n\nThe LHCIE chart values are inconsistent:\n  - %s\n" (join "\n  - " $errors)) }}
{{- end }}
{{- end }}
