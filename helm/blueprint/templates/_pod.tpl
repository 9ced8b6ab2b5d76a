{{/*
The pod every Blueprint workload runs: servers (`serve NAME`), workers
(`work NAME`), cron jobs and migration hooks (`migrate NAME`) share it, so
security, env and shutdown are the same everywhere.

Arguments: dict
  root      the chart root ($)
  name      workload name (diag, notify-worker, ...): label app.kubernetes.io/name
  component server | worker | cronjob | migration
  color     blue | green (the image, and for servers and workers the pod's colour)
  settings  the merged settings as this colour renders them (blueprint.colorSettings)
  args      container args
  healthName  the grpc.health.v1 name readiness asks (servers and workers)
  config    the workload's ConfigMap name, one per colour (not for migration)

A migration pod runs as a helm hook, before this release's ConfigMaps exist or
while they still hold the previous release's settings: its settings are inline
env instead, it reads only the database Secret, and it runs under the hook's own
ServiceAccount with no API token. It carries no colour label: it belongs to
neither colour, only runs one's image.
*/}}

{{/* Where a service's shared blob volume (services.<name>.blobs) is mounted. */}}
{{- define "blueprint.blobMountPath" -}}/var/lib/blueprint/blobs{{- end -}}

{{/*
Where a worker finds the live colour (blueprint.liveColorConfigMap, key activeColor).
A whole-directory ConfigMap volume, not a subPath: the kubelet swaps its content in
place when activeColor changes (within its sync period, about a minute), so a worker
learns it went live or idle without a restart. The idle colour's workers run with the
preview, paused; they consume only while the file names their colour.
*/}}
{{- define "blueprint.liveColorMountPath" -}}/etc/blueprint/live{{- end -}}

{{/* BLUEPRINT_* settings of one workload: the ConfigMap's data. */}}
{{- define "blueprint.configData" -}}
{{- $root := .root -}}
{{- $s := .settings -}}
{{- $data := dict
  "BLUEPRINT_DISCOVERY" $root.Values.discovery
  "BLUEPRINT_KUBERNETES_PORT_NAME" "grpc"
  "BLUEPRINT_BIND_HOST" "0.0.0.0"
  "BLUEPRINT_PORT" (toString $root.Values.ports.grpc)
  "BLUEPRINT_METRICS_PORT" (toString $root.Values.ports.metrics)
  "BLUEPRINT_STATE_DIR" "/tmp/blueprint"
  "BLUEPRINT_BALANCER" $s.balancer
  "BLUEPRINT_DRAIN_GRACE_SECONDS" (toString $s.drainGraceSeconds)
  "BLUEPRINT_PROPAGATION_SECONDS" (toString $s.propagationSeconds)
-}}
{{- if $s.balancers -}}
{{- $_ := set $data "BLUEPRINT_BALANCERS" (toJson $s.balancers) -}}
{{- end -}}
{{- if eq .component "worker" -}}
{{- $_ := set $data "BLUEPRINT_WORKER_COLOR" .color -}}
{{- $_ := set $data "BLUEPRINT_WORKER_LIVE_COLOR_FILE" (printf "%s/activeColor" (include "blueprint.liveColorMountPath" .)) -}}
{{- end -}}
{{- range $key, $value := $s.env -}}
{{- $_ := set $data $key (toString $value) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{- define "blueprint.configMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .config }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "blueprint.labels" (dict "root" .root "name" .name "color" .color "component" .component) | nindent 4 }}
data:
  {{- include "blueprint.configData" . | nindent 2 }}
{{- end -}}

{{- define "blueprint.podTemplate" -}}
{{- $root := .root -}}
{{- $s := .settings -}}
{{- $migration := eq .component "migration" -}}
{{- $longRunning := not (has .component (list "cronjob" "migration")) -}}
{{- $blobs := and (eq .component "server") $s.blobs -}}
{{- $worker := eq .component "worker" -}}
metadata:
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "color" (ternary "" .color $migration) "component" .component) | nindent 4 }}
    {{- include "blueprint.meshClientLabel" . | nindent 4 }}
    app.kubernetes.io/version: {{ (index $root.Values.colors .color).tag | quote }}
    {{- with $s.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if or (not $migration) $s.podAnnotations }}
  annotations:
    {{- if not $migration }}
    # A settings change rolls the pods (ConfigMaps are not watched).
    checksum/config: {{ include "blueprint.configData" . | sha256sum }}
    {{- end }}
    {{- if $longRunning }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $root.Values.ports.metrics | quote }}
    {{- end }}
    {{- with $s.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  {{- if $migration }}
  serviceAccountName: {{ include "blueprint.fullname" $root }}-migrate
  automountServiceAccountToken: false
  {{- else }}
  serviceAccountName: {{ include "blueprint.fullname" $root }}
  automountServiceAccountToken: {{ eq $root.Values.discovery "kubernetes" }}
  {{- end }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "blueprint.podSecurityContext" $root | nindent 4 }}
  {{- if $longRunning }}
  terminationGracePeriodSeconds: {{ $s.terminationGracePeriodSeconds | int }}
  {{- else }}
  restartPolicy: Never
  {{- end }}
  {{- if and $longRunning $s.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range $s.topologySpreadConstraints }}
    - topologyKey: {{ .topologyKey }}
      maxSkew: {{ .maxSkew | int }}
      whenUnsatisfiable: {{ .whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "blueprint.selectorLabels" (dict "root" $root "name" $.name "color" $.color) | nindent 10 }}
      # Count only the current ReplicaSet's pods, so a rolling update spreads too.
      matchLabelKeys: [pod-template-hash]
    {{- end }}
  {{- end }}
  {{- with $s.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $s.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $s.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .name }}
      image: {{ include "blueprint.image" . }}
      imagePullPolicy: {{ include "blueprint.pullPolicy" . }}
      args:
        {{- toYaml .args | nindent 8 }}
      {{- if $longRunning }}
      ports:
        - name: grpc
          containerPort: {{ $root.Values.ports.grpc }}
          protocol: TCP
        - name: metrics
          containerPort: {{ $root.Values.ports.metrics }}
          protocol: TCP
      {{- end }}
      {{- if not $migration }}
      envFrom:
        - configMapRef:
            name: {{ .config }}
      {{- end }}
      env:
        {{- if $migration }}
        {{- range $key, $value := include "blueprint.configData" . | fromYaml }}
        - name: {{ $key }}
          value: {{ $value | quote }}
        {{- end }}
        {{- end }}
        # Each pod is its own instance, dialled at its pod IP.
        - name: BLUEPRINT_INSTANCE_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: BLUEPRINT_ADVERTISE_HOST
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- if $migration }}
        {{- include "blueprint.databaseSecretEnv" $root | nindent 8 }}
        {{- else }}
        {{- include "blueprint.secretEnv" $root | nindent 8 }}
        {{- end }}
        {{- if $blobs }}
        # Set here, beside its mount, so no env override can point it elsewhere.
        - name: {{ printf "BLUEPRINT_%s_BLOB_DIR" (.name | upper | replace "-" "_") }}
          value: {{ include "blueprint.blobMountPath" . }}
        {{- end }}
      {{- if $longRunning }}
      # Native gRPC probes ask grpc.health.v1 on the serving port (mesh/health.py).
      # Readiness asks the workload's name, NOT_SERVING while it drains or a hard
      # dependency is down, so the pod leaves its Service's endpoints. Startup and
      # liveness ask "liveness", SERVING from start to shutdown whatever the
      # dependencies do: a database outage must not restart (or never start) pods.
      startupProbe:
        grpc:
          port: {{ $root.Values.ports.grpc }}
          service: liveness
        periodSeconds: {{ $s.probes.startup.periodSeconds | int }}
        failureThreshold: {{ $s.probes.startup.failureThreshold | int }}
        timeoutSeconds: {{ $s.probes.startup.timeoutSeconds | int }}
      readinessProbe:
        grpc:
          port: {{ $root.Values.ports.grpc }}
          service: {{ .healthName | quote }}
        periodSeconds: {{ $s.probes.readiness.periodSeconds | int }}
        failureThreshold: {{ $s.probes.readiness.failureThreshold | int }}
        timeoutSeconds: {{ $s.probes.readiness.timeoutSeconds | int }}
      livenessProbe:
        grpc:
          port: {{ $root.Values.ports.grpc }}
          service: liveness
        periodSeconds: {{ $s.probes.liveness.periodSeconds | int }}
        failureThreshold: {{ $s.probes.liveness.failureThreshold | int }}
        timeoutSeconds: {{ $s.probes.liveness.timeoutSeconds | int }}
      lifecycle:
        # Keep serving while endpoint watchers drop this pod (see values.yaml).
        preStop:
          sleep:
            seconds: {{ $s.preStopSleepSeconds | int }}
      {{- end }}
      resources:
        {{- toYaml $s.resources | nindent 8 }}
      securityContext:
        {{- include "blueprint.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if $blobs }}
        - name: blobs
          mountPath: {{ include "blueprint.blobMountPath" . }}
        {{- end }}
        {{- if $worker }}
        - name: live-color
          mountPath: {{ include "blueprint.liveColorMountPath" . }}
          readOnly: true
        {{- end }}
  volumes:
    # Scratch space: the root filesystem is read-only.
    - name: tmp
      emptyDir:
        sizeLimit: 256Mi
    {{- if $worker }}
    - name: live-color
      configMap:
        name: {{ include "blueprint.liveColorConfigMap" $root }}
    {{- end }}
    {{- if $blobs }}
    {{- if $s.blobs.enabled }}
    # Shared by every pod of the service, both colours (blobs.yaml).
    - name: blobs
      persistentVolumeClaim:
        claimName: {{ .name }}-blobs
    {{- else }}
    # blobs.enabled=false: this pod's own blobs, gone with it (NOTES.txt warns).
    - name: blobs
      emptyDir:
        sizeLimit: {{ $s.blobs.size }}
    {{- end }}
    {{- end }}
{{- end -}}
