{{/*
The pod every Blueprint workload runs: servers (`serve NAME`), workers
(`work NAME`) and cron jobs share it, so security, env and shutdown are the
same everywhere.

Arguments: dict
  root      the chart root ($)
  name      workload name (diag, notify-worker, ...): label app.kubernetes.io/name
  component server | worker | cronjob
  color     blue | green (the image tag)
  settings  the merged settings (blueprint.settings)
  args      container args
  config    the workload's ConfigMap name
*/}}

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
    {{- include "blueprint.labels" (dict "root" .root "name" .name "component" .component) | nindent 4 }}
data:
  {{- include "blueprint.configData" . | nindent 2 }}
{{- end -}}

{{- define "blueprint.podTemplate" -}}
{{- $root := .root -}}
{{- $s := .settings -}}
{{- $longRunning := ne .component "cronjob" -}}
metadata:
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "color" .color "component" .component) | nindent 4 }}
    {{- include "blueprint.meshClientLabel" . | nindent 4 }}
    app.kubernetes.io/version: {{ (index $root.Values.colors .color).tag | quote }}
    {{- with $s.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A settings change rolls the pods (ConfigMaps are not watched).
    checksum/config: {{ include "blueprint.configData" . | sha256sum }}
    {{- if $longRunning }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $root.Values.ports.metrics | quote }}
    {{- end }}
    {{- with $s.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "blueprint.fullname" $root }}
  automountServiceAccountToken: {{ eq $root.Values.discovery "kubernetes" }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "blueprint.podSecurityContext" . | nindent 4 }}
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
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
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
      envFrom:
        - configMapRef:
            name: {{ .config }}
      env:
        # Each pod is its own instance, dialled at its pod IP.
        - name: BLUEPRINT_INSTANCE_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: BLUEPRINT_ADVERTISE_HOST
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- include "blueprint.secretEnv" $root | nindent 8 }}
      {{- if $longRunning }}
      # Native gRPC probes ask grpc.health.v1 on the serving port.
      startupProbe:
        grpc:
          port: {{ $root.Values.ports.grpc }}
        periodSeconds: {{ $s.probes.startup.periodSeconds | int }}
        failureThreshold: {{ $s.probes.startup.failureThreshold | int }}
        timeoutSeconds: {{ $s.probes.startup.timeoutSeconds | int }}
      readinessProbe:
        grpc:
          port: {{ $root.Values.ports.grpc }}
        periodSeconds: {{ $s.probes.readiness.periodSeconds | int }}
        failureThreshold: {{ $s.probes.readiness.failureThreshold | int }}
        timeoutSeconds: {{ $s.probes.readiness.timeoutSeconds | int }}
      livenessProbe:
        grpc:
          port: {{ $root.Values.ports.grpc }}
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
        {{- include "blueprint.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    # The only writable path under the read-only root filesystem.
    - name: tmp
      emptyDir:
        sizeLimit: 256Mi
{{- end -}}
