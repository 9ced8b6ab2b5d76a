{{/*
One named template per Kubernetes kind. The kind files (deployments.yaml,
services.yaml, ...) range over services/workers and colours and call these.

Common argument: dict
  root      the chart root ($)
  name      workload name: the service (diag) or <worker>-worker
  component server | worker
  settings  merged settings (blueprint.settings; for a Deployment, the colour's:
            blueprint.colorSettings)
*/}}

{{/*
Deployment <name>-<color>. Its pods render from the colour's settings (`settings`),
its replica count from the release's (`shared`: replicas, hpa). Replicas:
  - idle colour: `idleReplicas` (previewReplicas; for workers their replicas while
    previewReplicas > 0, paused until live, else 0);
  - active colour without HPA: `replicas`;
  - active colour with HPA: the count the cluster runs now, raised to
    hpa.minReplicas (capped at maxReplicas). Re-applying the live count never
    undoes the HPA's work on an upgrade (and shares the field with it under
    server-side apply), and at a cut-over the colour turning active keeps the
    pods it was previewing with: dropping the field instead would default it to
    1, and an HPA never scales a Deployment up from 0. Without a cluster
    (helm template, k8s/) the count is hpa.minReplicas.
*/}}
{{- define "blueprint.deployment" -}}
{{- $root := .root -}}
{{- $s := .shared -}}
{{- $active := eq .color $root.Values.activeColor -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}-{{ .color }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "color" .color "component" .component) | nindent 4 }}
  annotations:
    {{- include "blueprint.checkovSkips" (include "blueprint.blueprintPodSkips" . | fromYamlArray) | trim | nindent 4 }}
spec:
  {{- if not $active }}
  replicas: {{ .idleReplicas | int }}
  {{- else if not .autoscaled }}
  replicas: {{ $s.replicas | int }}
  {{- else }}
  {{- $live := lookup "apps/v1" "Deployment" $root.Release.Namespace (printf "%s-%s" .name .color) }}
  {{- $current := 0 }}
  {{- if $live }}{{ $current = int ($live.spec.replicas | default 0) }}{{ end }}
  replicas: {{ min (max $current (int $s.hpa.minReplicas)) (int $s.hpa.maxReplicas) }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "blueprint.selectorLabels" (dict "root" $root "name" .name "color" .color) | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # Never below the wanted count: a new pod must be ready before an old one drains.
      maxUnavailable: 0
      maxSurge: 25%
  template:
    {{- include "blueprint.podTemplate" . | nindent 4 }}
{{- end -}}

{{/*
Service: the live one (<svc>, selecting activeColor) or the preview one
(<svc>-preview, the idle colour). Bare names: discovery maps a service name to
the Service of that name, and clients outside the mesh dial it as <svc>:50051.
*/}}
{{- define "blueprint.service" -}}
{{- $root := .root -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .serviceName }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "component" "server") | nindent 4 }}
    blueprint.io/role: {{ .role }}
spec:
  type: ClusterIP
  selector:
    {{- include "blueprint.selectorLabels" (dict "root" $root "name" .name "color" .color) | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $root.Values.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ $root.Values.ports.metrics }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- end -}}

{{- define "blueprint.workerService" -}}
{{- $root := .root -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "component" "worker") | nindent 4 }}
    blueprint.io/role: worker
spec:
  type: ClusterIP
  clusterIP: None
  selector:
    {{- include "blueprint.selectorLabels" (dict "root" $root "name" .name) | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $root.Values.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ $root.Values.ports.metrics }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- end -}}

{{/*
HorizontalPodAutoscaler <svc>: one per service, targeting the active colour.
The idle colour has none: it runs previewReplicas, often 0, and an HPA can
neither hold 0 (minReplicas >= 1) nor scale up from it. Keeping the HPA's name
across a cut-over keeps its history; only scaleTargetRef moves.
*/}}
{{- define "blueprint.hpa" -}}
{{- $root := .root -}}
{{- $hpa := .settings.hpa -}}
{{- if gt (int $hpa.minReplicas) (int $hpa.maxReplicas) -}}
{{- fail (printf "%s: hpa.minReplicas (%v) must not exceed hpa.maxReplicas (%v)" .where $hpa.minReplicas $hpa.maxReplicas) -}}
{{- end -}}
{{- if and (kindIs "invalid" $hpa.targetCPUUtilizationPercentage) (not $hpa.requestsPerSecond.enabled) -}}
{{- fail (printf "%s: hpa needs a metric: set hpa.targetCPUUtilizationPercentage or hpa.requestsPerSecond.enabled" .where) -}}
{{- end -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}-{{ $root.Values.activeColor }}
  minReplicas: {{ $hpa.minReplicas | int }}
  maxReplicas: {{ $hpa.maxReplicas | int }}
  metrics:
    {{- if not (kindIs "invalid" $hpa.targetCPUUtilizationPercentage) }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $hpa.targetCPUUtilizationPercentage | int }}
    {{- end }}
    {{- if $hpa.requestsPerSecond.enabled }}
    # Served by prometheus-adapter (k8s/prometheus-adapter-rules.yaml).
    - type: Pods
      pods:
        metric:
          name: blueprint_rpc_requests_per_second
        target:
          type: AverageValue
          averageValue: {{ $hpa.requestsPerSecond.averageValue | quote }}
    {{- end }}
  {{- with $hpa.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/*
The budget of one workload: dict "settings" "override" "minimum" (the fewest pods it
runs: hpa.minReplicas, or replicas) -> `minAvailable: N` or `maxUnavailable: N`, or
nothing when that budget would refuse every eviction at `minimum` pods (a node drain
would wait for ever): minAvailable 1 of 1, maxUnavailable 0. Percentages round up,
as the disruption controller rounds them. When the merge leaves both keys set, the
workload's own choice wins; set in defaults alone, one must be null.
*/}}
{{- define "blueprint.pdbBudget" -}}
{{- $pdb := .settings.pdb | default dict -}}
{{- $own := get (.override | default dict) "pdb" | default dict -}}
{{- $useMin := and (hasKey $pdb "minAvailable") (not (kindIs "invalid" (index $pdb "minAvailable"))) -}}
{{- $useMax := and (hasKey $pdb "maxUnavailable") (not (kindIs "invalid" (index $pdb "maxUnavailable"))) -}}
{{- $n := int .minimum -}}
{{- if and $useMin $useMax -}}
{{- if hasKey $own "minAvailable" -}}{{- $useMax = false -}}
{{- else if hasKey $own "maxUnavailable" -}}{{- $useMin = false -}}
{{- else -}}
{{- fail (printf "%s: pdb sets both minAvailable (%v) and maxUnavailable (%v): set one of them to null" .where $pdb.minAvailable $pdb.maxUnavailable) -}}
{{- end -}}
{{- end -}}
{{- if $useMax -}}
{{- $max := $pdb.maxUnavailable -}}
{{- $unavailable := int $max -}}
{{- if kindIs "string" $max -}}{{- $unavailable = div (add (mul (trimSuffix "%" $max | atoi) $n) 99) 100 -}}{{- end -}}
{{- if gt $unavailable 0 }}maxUnavailable: {{ $max }}{{ end -}}
{{- else if $useMin -}}
{{- $min := $pdb.minAvailable -}}
{{- $available := int $min -}}
{{- if kindIs "string" $min -}}{{- $available = div (add (mul (trimSuffix "%" $min | atoi) $n) 99) 100 -}}{{- end -}}
{{- if lt $available $n }}minAvailable: {{ $min }}{{ end -}}
{{- end -}}
{{- end -}}

{{/*
PodDisruptionBudget <name>: guards the live colour's pods, the ones serving; the
idle colour's are previews (or none), and a budget on them would only block drains.
Extra argument: budget (blueprint.pdbBudget, not empty).
*/}}
{{- define "blueprint.pdb" -}}
{{- $root := .root -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "component" .component) | nindent 4 }}
spec:
  {{- .budget | nindent 2 }}
  # Pods that never got ready may be evicted: they protect nothing.
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "blueprint.selectorLabels" (dict "root" $root "name" .name "color" $root.Values.activeColor) | nindent 6 }}
{{- end -}}

{{/*
CronJob <name>: runs with the live colour's image (a batch job should run the
code that is serving), once at a time, bounded by activeDeadlineSeconds.
*/}}
{{- define "blueprint.cronJob" -}}
{{- $root := .root -}}
{{- $s := .settings -}}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "component" "cronjob") | nindent 4 }}
  annotations:
    {{- include "blueprint.checkovSkips" (include "blueprint.blueprintPodSkips" . | fromYamlArray) | trim | nindent 4 }}
spec:
  schedule: {{ $s.schedule | quote }}
  {{- with $s.timeZone }}
  timeZone: {{ . | quote }}
  {{- end }}
  suspend: {{ $s.suspend | default false }}
  concurrencyPolicy: {{ $s.concurrencyPolicy | default "Forbid" }}
  startingDeadlineSeconds: 300
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 3
  jobTemplate:
    spec:
      backoffLimit: {{ $s.backoffLimit | default 2 | int }}
      activeDeadlineSeconds: {{ $s.activeDeadlineSeconds | default 3600 | int }}
      ttlSecondsAfterFinished: 86400
      template:
        {{- include "blueprint.podTemplate" . | nindent 8 }}
{{- end -}}

{{/*
Job <svc>-migrate: `blueprint migrate <svc>` as a helm hook, so the schema is at this
release's head before its pods start (blueprint.migrationHooks says when, and
blueprint.migrationColor whose image). A database that is not up yet (the in-chart
one starting next to a post-install Job, a failover) fails the attempt and the Job
retries after the Job controller's back-off (10 s, 20 s, 40 s, ... up to backoffLimit),
for at most activeDeadlineSeconds; concurrent migrators queue on an advisory lock.
Extra argument: hooks (the helm.sh/hook value).
*/}}
{{- define "blueprint.migrationJob" -}}
{{- $root := .root -}}
{{- $job := $root.Values.migrationJob -}}
{{- $skips := list -}}
{{- range include "blueprint.blueprintPodSkips" . | fromYamlArray -}}
{{- if not (hasPrefix "CKV_K8S_38=" .) -}}{{- $skips = append $skips . -}}{{- end -}}
{{- end -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "component" .component) | nindent 4 }}
  annotations:
    helm.sh/hook: {{ .hooks }}
    # After the hook ServiceAccount (-10); below 0 so that hooks added at the default
    # weight (seeding, say) find the schema migrated.
    helm.sh/hook-weight: "-5"
    # A failed Job stays for its logs until the next attempt replaces it.
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
    {{- include "blueprint.checkovSkips" $skips | trim | nindent 4 }}
spec:
  backoffLimit: {{ $job.backoffLimit | int }}
  activeDeadlineSeconds: {{ $job.activeDeadlineSeconds | int }}
  template:
    {{- include "blueprint.podTemplate" . | nindent 4 }}
{{- end -}}

{{/*
PersistentVolumeClaim <svc>-blobs: the service's blob store, one volume mounted by
every pod of both colours (ReadWriteMany), so a blob written by one pod is read by
any other. Kept on uninstall like the data stores' volumes: it holds user data.
*/}}
{{- define "blueprint.blobsClaim" -}}
{{- $root := .root -}}
{{- $blobs := .settings.blobs -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .name }}-blobs
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "component" "blobs") | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
spec:
  accessModes: ["ReadWriteMany"]
  {{- with $blobs.storageClass }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ $blobs.size }}
{{- end -}}
