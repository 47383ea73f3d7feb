{{/*
storegate.name is the chart's name, or nameOverride.
*/}}
{{- define "storegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
storegate.fullname names every object of the release: fullnameOverride, or
the release name when it already holds the chart's name, or release-chart.
*/}}
{{- define "storegate.fullname" -}}
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

{{- define "storegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
storegate.selectorLabels select the release's pods; they never change
across upgrades (a Deployment's selector is immutable).
*/}}
{{- define "storegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "storegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
storegate.labels are the Helm conventions' labels, on every object.
*/}}
{{- define "storegate.labels" -}}
helm.sh/chart: {{ include "storegate.chart" . }}
{{ include "storegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: storegate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "storegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "storegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "storegate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
storegate.terminationGracePeriodSeconds is how long Kubernetes waits between
starting a pod's stop (the preStop sleep runs inside this period) and
SIGKILL: above the preStop sleep plus the gateway's drain timeout, so that a
drain is never cut short. Unset, it is both plus 5 seconds for the process's
own exit; set too small, rendering fails.
*/}}
{{- define "storegate.terminationGracePeriodSeconds" -}}
{{- $floor := add .Values.drain.preStopSleepSeconds .Values.drain.timeoutSeconds }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $floor 5 }}
{{- else }}
{{- $set := int .Values.terminationGracePeriodSeconds }}
{{- if le $set (int $floor) }}
{{- fail (printf "terminationGracePeriodSeconds %d must be above drain.preStopSleepSeconds + drain.timeoutSeconds (%d): Kubernetes would kill replicas in the middle of their drain; raise it, or unset it to get %d" $set (int $floor) (add $floor 5 | int)) }}
{{- end }}
{{- $set }}
{{- end }}
{{- end }}

{{/*
storegate.replicas is the number of replicas the release runs at least:
autoscaling's minimum when it is on, else replicaCount.
*/}}
{{- define "storegate.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas %d is above autoscaling.maxReplicas %d" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- .Values.autoscaling.minReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/* Mount points inside the container. */}}
{{- define "storegate.configDir" -}}/etc/storegate/config{{- end }}
{{- define "storegate.policyDir" -}}/etc/storegate/policy{{- end }}
{{- define "storegate.bundleDir" -}}/var/lib/storegate/bundle{{- end }}
{{- define "storegate.etcdTLSDir" -}}/etc/storegate/etcd-tls{{- end }}
{{- define "storegate.consulTLSDir" -}}/etc/storegate/consul-tls{{- end }}
{{- define "storegate.secretsDir" -}}/etc/storegate/secrets{{- end }}

{{- define "storegate.listen" -}}
{{- $host := .root.Values.gateway.listenAddress }}
{{- if contains ":" $host }}{{ printf "[%s]:%d" $host (int .port) }}{{ else }}{{ printf "%s:%d" $host (int .port) }}{{ end }}
{{- end }}

{{/*
storegate.upstreamTLS is an upstream's tls block (config.TLSFiles): its
SPIFFE ID, or the files of a kubernetes.io/tls Secret mounted at dir.
*/}}
{{- define "storegate.upstreamTLS" -}}
{{- $tls := dict }}
{{- if and .tls.spiffe .tls.secretName }}
{{- fail (printf "gateway.%s.tls: set spiffe or secretName, not both (spiffe replaces the client certificate)" .name) }}
{{- end }}
{{- if .tls.spiffe }}{{ $_ := set $tls "spiffe" .tls.spiffe }}{{ end }}
{{- if .tls.secretName }}
{{- $_ := set $tls "cert" (printf "%s/tls.crt" .dir) }}
{{- $_ := set $tls "key" (printf "%s/tls.key" .dir) }}
{{- $_ := set $tls "ca" (printf "%s/ca.crt" .dir) }}
{{- end }}
{{- if .tls.serverName }}{{ $_ := set $tls "server_name" .tls.serverName }}{{ end }}
{{- toJson $tls }}
{{- end }}

{{/*
storegate.config is the gateway's config file (config.Config), built key by
key from typed values, so that it holds only keys the gateway knows: it
decodes its file strictly.
*/}}
{{- define "storegate.config" -}}
{{- $v := .Values.gateway }}
{{- $cfg := dict }}
{{- if not $v.trustDomains }}
{{- fail "gateway.trustDomains: at least one SPIFFE trust domain is required (the callers' and the stores')" }}
{{- end }}
{{- if not (or $v.etcd.enabled $v.consul.enabled) }}
{{- fail "gateway: enable gateway.etcd, gateway.consul or both: with neither there is nothing to serve" }}
{{- end }}
{{- $listen := dict "admin" (include "storegate.listen" (dict "root" . "port" .Values.ports.admin)) }}
{{- $upstreams := dict }}
{{- if $v.etcd.enabled }}
{{- if not $v.etcd.endpoints }}
{{- fail "gateway.etcd.endpoints: the etcd cluster's client URLs are required while gateway.etcd.enabled" }}
{{- end }}
{{- $_ := set $listen "etcd" (include "storegate.listen" (dict "root" . "port" .Values.ports.etcd)) }}
{{- $advertise := $v.etcd.advertise }}
{{- if not $advertise }}
{{- $advertise = list (printf "https://%s.%s.svc:%d" (include "storegate.fullname" .) .Release.Namespace (int .Values.service.ports.etcd)) }}
{{- end }}
{{- $_ := set $listen "etcd_advertise" $advertise }}
{{- $etcd := dict "endpoints" $v.etcd.endpoints }}
{{- $tls := include "storegate.upstreamTLS" (dict "name" "etcd" "tls" $v.etcd.tls "dir" (include "storegate.etcdTLSDir" .)) | fromJson }}
{{- if $tls }}{{ $_ := set $etcd "tls" $tls }}{{ end }}
{{- if $v.etcd.username }}
{{- if not $v.etcd.passwordSecret.name }}
{{- fail "gateway.etcd.passwordSecret.name: required with gateway.etcd.username" }}
{{- end }}
{{- $_ := set $etcd "username" $v.etcd.username }}
{{- $_ := set $etcd "password_file" (printf "%s/upstreams/etcd-password" (include "storegate.secretsDir" .)) }}
{{- end }}
{{- if $v.etcd.requestTimeout }}{{ $_ := set $etcd "request_timeout" $v.etcd.requestTimeout }}{{ end }}
{{- if $v.etcd.dialTimeout }}{{ $_ := set $etcd "dial_timeout" $v.etcd.dialTimeout }}{{ end }}
{{- $_ := set $upstreams "etcd" $etcd }}
{{- end }}
{{- if $v.consul.enabled }}
{{- if not $v.consul.address }}
{{- fail "gateway.consul.address: the Consul agent's http(s):// address is required while gateway.consul.enabled" }}
{{- end }}
{{- $_ := set $listen "consul" (include "storegate.listen" (dict "root" . "port" .Values.ports.consul)) }}
{{- $consul := dict "address" $v.consul.address }}
{{- if $v.consul.tokenSecret.name }}
{{- $_ := set $consul "token_file" (printf "%s/upstreams/consul-token" (include "storegate.secretsDir" .)) }}
{{- end }}
{{- if $v.consul.forwardCallerTokens }}{{ $_ := set $consul "forward_caller_tokens" true }}{{ end }}
{{- $tls := include "storegate.upstreamTLS" (dict "name" "consul" "tls" $v.consul.tls "dir" (include "storegate.consulTLSDir" .)) | fromJson }}
{{- if $tls }}{{ $_ := set $consul "tls" $tls }}{{ end }}
{{- if $v.consul.requestTimeout }}{{ $_ := set $consul "request_timeout" $v.consul.requestTimeout }}{{ end }}
{{- $_ := set $upstreams "consul" $consul }}
{{- end }}
{{- $_ := set $cfg "listen" $listen }}
{{- $_ := set $cfg "upstreams" $upstreams }}
{{- $sock := printf "unix://%s/%s" .Values.spiffe.mountPath .Values.spiffe.socketName }}
{{- $_ := set $cfg "identity" (dict "workload_api" $sock "trust_domains" $v.trustDomains) }}
{{- $policy := dict "mode" .Values.policy.mode }}
{{- if .Values.policy.evalTimeout }}{{ $_ := set $policy "eval_timeout" .Values.policy.evalTimeout }}{{ end }}
{{- if hasKey .Values.policy "fastPath" }}{{ $_ := set $policy "fast_path" .Values.policy.fastPath }}{{ end }}
{{- if .Values.policy.cacheBytes }}{{ $_ := set $policy "cache_bytes" .Values.policy.cacheBytes }}{{ end }}
{{- if eq .Values.policy.source "bundle" }}
{{- $_ := set $policy "bundle" (include "storegate.bundle" . | fromJson) }}
{{- else }}
{{- $_ := set $policy "dir" (include "storegate.policyDir" .) }}
{{- end }}
{{- $_ := set $cfg "policy" $policy }}
{{- $traces := dict "exporter" $v.telemetry.exporter "sampling" $v.telemetry.sampling }}
{{- $_ := set $cfg "telemetry" (dict "traces" $traces) }}
{{- if $v.decisionLog.enabled }}
{{- $dl := dict "output" $v.decisionLog.output "on_error" $v.decisionLog.onError }}
{{- if $v.decisionLog.queueSize }}{{ $_ := set $dl "queue_size" $v.decisionLog.queueSize }}{{ end }}
{{- $_ := set $cfg "decision_log" $dl }}
{{- end }}
{{- $limits := dict }}
{{- with $v.limits }}
{{- if .streamsPerCaller }}{{ $_ := set $limits "streams_per_caller" .streamsPerCaller }}{{ end }}
{{- if .streams }}{{ $_ := set $limits "streams" .streams }}{{ end }}
{{- if .watchesPerCaller }}{{ $_ := set $limits "watches_per_caller" .watchesPerCaller }}{{ end }}
{{- if .watches }}{{ $_ := set $limits "watches" .watches }}{{ end }}
{{- if .refusedBytesPerSecond }}{{ $_ := set $limits "refused_bytes_per_second" .refusedBytesPerSecond }}{{ end }}
{{- if .refusedBurstBytes }}{{ $_ := set $limits "refused_burst_bytes" .refusedBurstBytes }}{{ end }}
{{- end }}
{{- if $limits }}{{ $_ := set $cfg "limits" $limits }}{{ end }}
{{- $_ := set $cfg "fleet" (dict "ttl" $v.fleetTTL) }}
{{- $_ := set $cfg "drain" (dict "timeout" (printf "%ds" (int .Values.drain.timeoutSeconds))) }}
{{- if $v.pprof }}{{ $_ := set $cfg "debug" (dict "pprof" true) }}{{ end }}
{{- /* No plugins in this chart: nothing to cache, and the root filesystem is read-only. */}}
{{- $_ := set $cfg "plugin_cache_dir" "none" }}
{{- toYaml $cfg }}
{{- end }}

{{/*
storegate.bundle is policy.bundle (config.BundleConfig) as JSON.
*/}}
{{- define "storegate.bundle" -}}
{{- $b := .Values.policy.bundle }}
{{- if not $b.url }}
{{- fail "policy.bundle.url: the bundle's http(s):// address is required with policy.source: bundle" }}
{{- end }}
{{- $key := $b.verification.publicKeySecret }}
{{- if not $key.name }}
{{- fail "policy.bundle.verification.publicKeySecret.name: the Secret with the bundles' verification key is required with policy.source: bundle (every bundle is verified)" }}
{{- end }}
{{- $ver := dict "public_key" (printf "%s/bundle-key/%s" (include "storegate.secretsDir" .) $key.key) }}
{{- with $b.verification.keyId }}{{ $_ := set $ver "key_id" . }}{{ end }}
{{- with $b.verification.algorithm }}{{ $_ := set $ver "algorithm" . }}{{ end }}
{{- with $b.verification.scope }}{{ $_ := set $ver "scope" . }}{{ end }}
{{- $out := dict "url" $b.url "verification" $ver }}
{{- $poll := dict }}
{{- with $b.polling.minDelay }}{{ $_ := set $poll "min_delay" . }}{{ end }}
{{- with $b.polling.maxDelay }}{{ $_ := set $poll "max_delay" . }}{{ end }}
{{- if $poll }}{{ $_ := set $out "polling" $poll }}{{ end }}
{{- with $b.timeout }}{{ $_ := set $out "timeout" . }}{{ end }}
{{- with $b.sizeLimit }}{{ $_ := set $out "size_limit" . }}{{ end }}
{{- if and $b.tls.spiffe $b.tls.caSecret }}
{{- fail "policy.bundle.tls: set spiffe or caSecret, not both (spiffe replaces the CA)" }}
{{- end }}
{{- with $b.tls.spiffe }}{{ $_ := set $out "tls" (dict "spiffe" .) }}{{ end }}
{{- with $b.tls.caSecret }}{{ $_ := set $out "tls" (dict "ca" (printf "%s/bundle-ca/ca.crt" (include "storegate.secretsDir" $))) }}{{ end }}
{{- /* The default, the user's cache directory, is on the read-only root. */}}
{{- $_ := set $out "persist_dir" (ternary (include "storegate.bundleDir" .) "none" (eq $b.persist true)) }}
{{- toJson $out }}
{{- end }}

{{/*
storegate.policyConfigMapName is the ConfigMap mounted as the policy
directory.
*/}}
{{- define "storegate.policyConfigMapName" -}}
{{- default (printf "%s-policy" (include "storegate.fullname" .)) .Values.policy.configMap.existingName }}
{{- end }}
