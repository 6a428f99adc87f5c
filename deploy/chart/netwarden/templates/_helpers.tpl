{{/*
Names, labels and the pieces several templates share. Object names are "<fullname>-<part>";
the fullname is cut to 40 characters so that the longest name built from it
("<fullname>-detector-headless", and the StatefulSet's pod names with their revision hash)
stays within Kubernetes' 63.
*/}}

{{- define "netwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "netwarden.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; "part" is the component (detector, agent, ...). */}}
{{- define "netwarden.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "netwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: netwarden
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The labels a selector matches: stable across upgrades (no version in them). */}}
{{- define "netwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "netwarden.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .part }}
{{- end -}}

{{- define "netwarden.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "netwarden.detectorName" -}}
{{- printf "%s-detector" (include "netwarden.fullname" .) -}}
{{- end -}}

{{- define "netwarden.apiName" -}}
{{- printf "%s-api" (include "netwarden.fullname" .) -}}
{{- end -}}

{{/*
The workload running `netwarden serve` (the API, the alerter): the detector StatefulSet, or in
cluster mode the API Deployment (the shards detect). Its ConfigMap and ServiceAccount share its
name, and "netwarden.serverPart" is its component label.
*/}}
{{- define "netwarden.serverName" -}}
{{- if .Values.cluster.enabled -}}
{{- include "netwarden.apiName" . -}}
{{- else -}}
{{- include "netwarden.detectorName" . -}}
{{- end -}}
{{- end -}}

{{- define "netwarden.serverPart" -}}
{{- ternary "api" "detector" .Values.cluster.enabled -}}
{{- end -}}

{{- define "netwarden.agentName" -}}
{{- printf "%s-agent" (include "netwarden.fullname" .) -}}
{{- end -}}

{{- define "netwarden.partialsName" -}}
{{- printf "%s-partials" (include "netwarden.fullname" .) -}}
{{- end -}}

{{- define "netwarden.shardName" -}}
{{- printf "%s-shard" (include "netwarden.fullname" .) -}}
{{- end -}}

{{/*
Cluster mode needs what several machines share: NATS, the store (PostgreSQL), the key model
versions are signed with, and the model versions themselves. Rendered by every cluster-mode
template; fails the install with what is missing.
*/}}
{{- define "netwarden.clusterChecks" -}}
{{- $v := .Values -}}
{{- if not $v.nats.url -}}
{{- fail "cluster.enabled needs nats.url: the NATS JetStream server(s) the agents and shards use" -}}
{{- end -}}
{{- if not $v.store.existingSecret -}}
{{- fail "cluster.enabled needs store.existingSecret: the shards and the API share one store (PostgreSQL)" -}}
{{- end -}}
{{- if not $v.models.signingKey.existingSecret -}}
{{- fail "cluster.enabled needs models.signingKey.existingSecret: the shards verify model versions with it" -}}
{{- end -}}
{{- if not $v.cluster.models.existingClaim -}}
{{- fail "cluster.enabled needs cluster.models.existingClaim: a ReadWriteMany claim with the model versions the shards score with (the API and the retraining job write to it)" -}}
{{- end -}}
{{- if gt (int $v.cluster.shards) (int $v.cluster.partitions) -}}
{{- fail (printf "cluster.shards (%d) is more than cluster.partitions (%d): some shards would own nothing" (int $v.cluster.shards) (int $v.cluster.partitions)) -}}
{{- end -}}
{{- if eq $v.flows.source "generator" -}}
{{- fail "cluster.enabled reads each node's own flows (flows.source hubble-relay, hubble-socket or ebpf), not the generator" -}}
{{- end -}}
{{- end -}}

{{/* The first detector pod's volume claim, named by the StatefulSet's volumeClaimTemplate. */}}
{{- define "netwarden.dataClaim" -}}
{{- printf "data-%s-0" (include "netwarden.detectorName" .) -}}
{{- end -}}

{{/* Where the model signing key is read: a mounted Secret, or the data volume's own file. */}}
{{- define "netwarden.signingKeyPath" -}}
{{- if .Values.models.signingKey.existingSecret -}}
{{- printf "/etc/netwarden/signing-key/%s" .Values.models.signingKey.key -}}
{{- else -}}
/data/model-signing.key
{{- end -}}
{{- end -}}

{{/*
The detector's configuration file (netwarden serve --config): the user's detector.config under
what the chart decides (the data folder, the flow source, the API's address, applying policies).
Secrets are not in it: they arrive as NETWARDEN_* variables from Secrets (detector.env).
*/}}
{{- define "netwarden.config" -}}
{{- $v := .Values -}}
{{- $hubble := dict -}}
{{- $source := dict "spec" "hubble" -}}
{{- if $v.cluster.enabled -}}
{{- /* the shards score the flows (as the nodes' partials); the API Deployment only serves
the API over the shared store: its source is a file that never grows (always up, never a flow) */ -}}
{{- $_ := set $source "spec" "file:/dev/null" -}}
{{- else if eq $v.flows.source "hubble-relay" -}}
{{- $_ := set $hubble "server" $v.flows.hubbleRelay.address -}}
{{- if $v.flows.hubbleRelay.tls.enabled -}}
{{- $_ := set $hubble "tls" true -}}
{{- if $v.flows.hubbleRelay.tls.existingSecret -}}
{{- $_ := set $hubble "tls_ca" "/etc/netwarden/hubble-tls/ca.crt" -}}
{{- if $v.flows.hubbleRelay.tls.clientCertificate -}}
{{- $_ := set $hubble "tls_cert" "/etc/netwarden/hubble-tls/tls.crt" -}}
{{- $_ := set $hubble "tls_key" "/etc/netwarden/hubble-tls/tls.key" -}}
{{- end -}}
{{- end -}}
{{- with $v.flows.hubbleRelay.tls.serverName -}}
{{- $_ := set $hubble "tls_server_name" . -}}
{{- end -}}
{{- end -}}
{{- else if eq $v.flows.source "hubble-socket" -}}
{{- $_ := set $hubble "server" (printf "unix://%s" $v.flows.hubbleSocket.path) -}}
{{- else if eq $v.flows.source "generator" -}}
{{- $_ := set $source "spec" "generator" -}}
{{- end -}}
{{- if not $v.cluster.enabled -}}
{{- with $v.flows.namespaces -}}
{{- $_ := set $hubble "namespaces" . -}}
{{- end -}}
{{- end -}}
{{- $api := dict "host" "0.0.0.0" "port" (int $v.api.port) -}}
{{- $url := printf "http://%s.%s.svc:%d" (include "netwarden.apiName" .) .Release.Namespace (int $v.api.port) -}}
{{- $_ := set $api "public_url" (default $url $v.api.publicUrl) -}}
{{- $models := dict "dir" "/data/models" "signing_key_file" (include "netwarden.signingKeyPath" .) -}}
{{- $remediation := dict "kubernetes" (ternary "in-cluster" "off" $v.remediation.apply) -}}
{{- $chart := dict "data_dir" "/data" "source" $source "api" $api "models" $models "remediation" $remediation -}}
{{- if $hubble -}}
{{- $_ := set $chart "hubble" $hubble -}}
{{- end -}}
{{- $config := mergeOverwrite (deepCopy $v.detector.config) $chart -}}
{{- if $v.cluster.enabled -}}
{{- /* cluster.api.replicas processes run this file over one store and one models claim: what
one of them would do on its own is set here after the merge (mergeOverwrite never writes a false
over a true). Retraining is the CronJob's: retrain.schedule would retrain in every replica, into
the shared claim; a first model is never bootstrapped into the shared claim (the source is no
generator anyway); and no admin token is made in the pod's scratch /data (each replica would make
its own): the tokens are api.tokens.existingSecret's, or none. The window history is the shards'
(history.retention_days reaches them as --history-days). */ -}}
{{- if dig "retrain" "schedule" "" $config -}}
{{- fail "cluster.enabled retrains with the CronJob (retrain.*): detector.config.retrain.schedule would retrain in every API replica, into the shared models claim" -}}
{{- end -}}
{{- $_ := set $config.models "bootstrap" false -}}
{{- /* the shards keep the window history (cluster.history); the API replicas read no flows */ -}}
{{- $history := dict -}}
{{- if hasKey $config "history" -}}
{{- $history = $config.history -}}
{{- end -}}
{{- $_ := set $history "enabled" false -}}
{{- $_ := set $config "history" $history -}}
{{- if not (dig "api" "tokens_file" "" $config) -}}
{{- $_ := set $config.api "tokens_file" "/dev/null" -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The pod security context of the detector and the retraining job (the image's user). */}}
{{- define "netwarden.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The container security context of the detector and the retraining job. */}}
{{- define "netwarden.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* The store URL from its Secret (store.existingSecret), for the detector and the retraining job. */}}
{{- define "netwarden.storeEnv" -}}
{{- if .Values.store.existingSecret }}
- name: NETWARDEN_STORE__URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.store.existingSecret }}
      key: {{ .Values.store.key }}
{{- end }}
{{- end -}}

{{/* NETWARDEN_* variables from Secrets: the store URL and the API tokens. */}}
{{- define "netwarden.secretEnv" -}}
{{- include "netwarden.storeEnv" . }}
{{- if .Values.api.tokens.existingSecret }}
- name: NETWARDEN_API_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.api.tokens.existingSecret }}
      key: {{ .Values.api.tokens.key }}
{{- end }}
{{- end -}}

{{/* The detector's environment: its node's agent (eBPF), the secrets, detector.extraEnv. */}}
{{- define "netwarden.detectorEnv" -}}
{{- if and (eq .Values.flows.source "ebpf") (not .Values.cluster.enabled) }}
# the eBPF agent of this node: hostNetwork, its Observer API on the node's address
- name: HOST_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
- name: NETWARDEN_HUBBLE__SERVER
  value: "$(HOST_IP):{{ .Values.agent.observerPort }}"
{{- end }}
{{- include "netwarden.secretEnv" . }}
{{- with .Values.detector.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
