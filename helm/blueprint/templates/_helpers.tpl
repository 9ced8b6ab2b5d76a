{{/*
Names, labels and the values merge every kind's template shares.
*/}}

{{/* Prefix of the chart-wide objects (ServiceAccount, ConfigMaps of the data stores, ...). */}}
{{- define "blueprint.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Labels of every object: dict "root" ["name"] ["color"] ["component"]; the
selector labels (blueprint.selectorLabels) are a subset of them.
*/}}
{{- define "blueprint.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: blueprint
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- if .name }}
{{ include "blueprint.selectorLabels" . }}
{{- else }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Pods that call the mesh: NetworkPolicies let them reach the gRPC servers. */}}
{{- define "blueprint.meshClientLabel" -}}
blueprint.io/mesh-client: "true"
{{- end -}}

{{/*
Selector of one workload's pods: dict "root" "name" ["color"].
Without color it selects both colours.
*/}}
{{- define "blueprint.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .color }}
color: {{ . }}
{{- end }}
{{- end -}}

{{- define "blueprint.idleColor" -}}
{{- if eq .Values.activeColor "blue" }}green{{ else }}blue{{ end -}}
{{- end -}}

{{/* The image of a colour: repository:TAG, or repository:TAG@sha256:DIGEST. */}}
{{- define "blueprint.image" -}}
{{- printf "%s:%s" .root.Values.image.repository (index .root.Values.colors .color).tag -}}
{{- end -}}

{{/*
Pull policy for a colour's image: image.pullPolicy when set, else IfNotPresent for
a digest (its content cannot change) and Always for a bare tag (a registry can
move it, and Always makes every node see the same content).
*/}}
{{- define "blueprint.pullPolicy" -}}
{{- if .root.Values.image.pullPolicy -}}
{{- .root.Values.image.pullPolicy -}}
{{- else if contains "@sha256:" (index .root.Values.colors .color).tag -}}
IfNotPresent
{{- else -}}
Always
{{- end -}}
{{- end -}}

{{/*
Deep merge: dict "base" "override" -> JSON. Maps merge key by key, everything else
(lists, scalars, false, 0) replaces. Sprig's mergeOverwrite cannot be used: it
skips "empty" values, so `hpa: {enabled: false}` would not override `true`.
*/}}
{{- define "blueprint.deepMerge" -}}
{{- $out := deepCopy .base -}}
{{- range $key, $value := .override -}}
{{- $current := get $out $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $current) -}}
{{- $_ := set $out $key (include "blueprint.deepMerge" (dict "base" $current "override" $value) | fromJson) -}}
{{- else -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* One workload's settings: dict "root" "override" -> JSON of defaults merged with override. */}}
{{- define "blueprint.settings" -}}
{{- include "blueprint.deepMerge" (dict "base" .root.Values.defaults "override" (.override | default dict)) -}}
{{- end -}}

{{/*
One workload's settings as one colour renders its pods: dict "root" "color" "kind"
(services | workers) "name" "override" -> JSON.

A colour pinned with colors.<colour>.settings ({defaults, services, workers}, a copy
of these values as they were: `blueprint rollout` writes it) renders from that copy,
so a settings change in the values reaches only unpinned colours: the rollout
unpins the idle colour at `deploy`, and the change goes out through
verify/promote like an image. A top-level key the copy lacks (a setting a newer
chart added) comes from the current values, so a nested setting a chart adds needs a
`default` where a template reads it; a workload the copy lacks renders from the
current values entirely.
*/}}
{{- define "blueprint.colorSettings" -}}
{{- $current := include "blueprint.settings" (dict "root" .root "override" .override) | fromJson -}}
{{- $pinned := (index .root.Values.colors .color).settings | default dict -}}
{{- $entries := get $pinned .kind | default dict -}}
{{- if hasKey $entries .name -}}
{{- $s := include "blueprint.deepMerge" (dict "base" ($pinned.defaults | default dict) "override" (get $entries .name | default dict)) | fromJson -}}
{{- range $key, $value := $current -}}
{{- if not (hasKey $s $key) -}}{{- $_ := set $s $key $value -}}{{- end -}}
{{- end -}}
{{- toJson $s -}}
{{- else -}}
{{- toJson $current -}}
{{- end -}}
{{- end -}}

{{/* Where a colour's settings of `path` come from, for error messages: dict "root" "color" "path". */}}
{{- define "blueprint.settingsWhere" -}}
{{- if (index .root.Values.colors .color).settings -}}
colors.{{ .color }}.settings {{ .path }}
{{- else -}}
{{ .path }}
{{- end -}}
{{- end -}}

{{/* The ConfigMap holding the live colour, mounted into workers (blueprint.liveColorMount). */}}
{{- define "blueprint.liveColorConfigMap" -}}
{{- include "blueprint.fullname" . }}-live-color
{{- end -}}

{{/*
The shutdown arithmetic (values.yaml, defaults): refuse to render a grace period
the kubelet would cut short, naming the workload and the numbers.
*/}}
{{- define "blueprint.checkGrace" -}}
{{- $s := .settings -}}
{{- $needed := addf $s.preStopSleepSeconds $s.propagationSeconds $s.drainGraceSeconds $s.shutdownMarginSeconds -}}
{{- if lt (float64 $s.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "%s: terminationGracePeriodSeconds (%v) must be at least preStopSleepSeconds + propagationSeconds + drainGraceSeconds + shutdownMarginSeconds = %v + %v + %v + %v = %v" .where $s.terminationGracePeriodSeconds $s.preStopSleepSeconds $s.propagationSeconds $s.drainGraceSeconds $s.shutdownMarginSeconds $needed) -}}
{{- end -}}
{{- end -}}

{{/*
checkov suppressions: a list of "CKV_ID=reason" -> checkov.io/skipN annotations.
Every skip carries its reason on the object it applies to.
*/}}
{{- define "blueprint.checkovSkips" -}}
{{- range $i, $skip := . }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end }}
{{- end -}}

{{/*
Skips shared by every pod running the Blueprint image: dict "root" "color". The
image checks (CKV_K8S_43 digest, CKV_K8S_15 pull policy Always) are skipped only
where the colour's image does not meet them, so a digest-pinned release passes both.
*/}}
{{- define "blueprint.blueprintPodSkips" -}}
{{- $tag := (index .root.Values.colors .color).tag -}}
{{- if not (contains "@sha256:" $tag) }}
- "CKV_K8S_43=The image is a bare tag ({{ $tag }}): pin colors.<colour>.tag as TAG@sha256:DIGEST, which blueprint rollout deploy prefers; until then the tag is pulled with pullPolicy Always"
{{- end }}
{{- if ne (include "blueprint.pullPolicy" .) "Always" }}
- "CKV_K8S_15=pullPolicy {{ include "blueprint.pullPolicy" . }} for a digest-pinned image: its content cannot change, and Always would make every pod start depend on the registry"
{{- end }}
- "CKV_K8S_38=The token is needed: kubernetes discovery watches EndpointSlices through the API (Role limited to get/list/watch of them)"
- "CKV_K8S_35=BLUEPRINT_REDIS_URL/BLUEPRINT_DATABASE_URL come from Secrets as env because the typed settings are read from the environment"
{{- end -}}

{{/* Pod-level securityContext (podSecurityContext): Pod Security "restricted" by default. Argument: the root. */}}
{{- define "blueprint.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{/* Container-level securityContext (containerSecurityContext): "restricted" plus a read-only root filesystem by default. Argument: the root. */}}
{{- define "blueprint.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* URL Secrets every Blueprint container reads: env entries. */}}
{{- define "blueprint.secretEnv" -}}
{{- $fullname := include "blueprint.fullname" . -}}
- name: BLUEPRINT_REDIS_URL
  valueFrom:
    secretKeyRef:
{{- if .Values.redis.enabled }}
      name: {{ .Values.redis.auth.existingSecret | default (printf "%s-redis" $fullname) }}
      key: url
{{- else }}
      name: {{ .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.urlKey }}
{{- end }}
{{ include "blueprint.databaseSecretEnv" . }}
{{- end -}}

{{/* The database URL Secret alone: what `blueprint migrate` reads. */}}
{{- define "blueprint.databaseSecretEnv" -}}
{{- $fullname := include "blueprint.fullname" . -}}
- name: BLUEPRINT_DATABASE_URL
  valueFrom:
    secretKeyRef:
{{- if .Values.postgresql.enabled }}
      name: {{ .Values.postgresql.auth.existingSecret | default (printf "%s-postgresql" $fullname) }}
      key: url
{{- else }}
      name: {{ .Values.postgresql.external.existingSecret }}
      key: {{ .Values.postgresql.external.urlKey }}
{{- end }}
{{- end -}}

{{/* Services that are enabled, sorted. */}}
{{- define "blueprint.enabledServices" -}}
{{- $names := list -}}
{{- range $name, $override := .Values.services -}}
{{- if include "blueprint.enabled" $override -}}{{- $names = append $names $name -}}{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* A services/workers/cronJobs entry is on unless it says enabled: false. */}}
{{- define "blueprint.enabled" -}}
{{- if or (not (kindIs "map" .)) (not (hasKey . "enabled")) .enabled -}}true{{- end -}}
{{- end -}}

{{/* Enabled services whose code keeps database migrations (services.<name>.migrations), sorted. */}}
{{- define "blueprint.migratedServices" -}}
{{- $names := list -}}
{{- range $name, $override := .Values.services -}}
{{- if and (include "blueprint.enabled" $override) (kindIs "map" $override) $override.migrations -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/*
The colour whose image runs the migrations. Migrations are expand/contract: the
older release runs on the newer schema, and a replica refuses to start on a schema
older than its own release, so the newer release migrates, whichever colour is live:
the idle colour while a new tag is previewed, the live one after the promotion, still
the newer one after a rollback (the older image's `blueprint migrate` does not know
the newer revision and fails). "Newer" compares the tags as versions (an
@sha256 digest aside); equal tags take the live colour. Tags that are not versions
cannot be ordered: migrationJob.color must then name the colour.
*/}}
{{- define "blueprint.migrationColor" -}}
{{- $colors := .Values.colors -}}
{{- $blue := regexReplaceAll "@.*$" $colors.blue.tag "" -}}
{{- $green := regexReplaceAll "@.*$" $colors.green.tag "" -}}
{{- $version := "^v?[0-9]+(\\.[0-9]+){0,2}(-[0-9A-Za-z.-]+)?$" -}}
{{- if .Values.migrationJob.color -}}
{{- .Values.migrationJob.color -}}
{{- else if eq $blue $green -}}
{{- .Values.activeColor -}}
{{- else if and (regexMatch $version $blue) (regexMatch $version $green) -}}
{{- $order := (semver $green).Compare (semver $blue) -}}
{{- if gt $order 0 }}green{{ else if lt $order 0 }}blue{{ else }}{{ .Values.activeColor }}{{ end -}}
{{- else -}}
{{- fail (printf "migrationJob.color: colors.blue.tag (%s) and colors.green.tag (%s) are not both versions, so the chart cannot tell which release is newer and must run the migrations: set migrationJob.color to the colour with the newer release" $colors.blue.tag $colors.green.tag) -}}
{{- end -}}
{{- end -}}

{{/*
When the migration Jobs run. pre-upgrade: before any pod of the new release starts.
On the first install, pre-install hooks run before the release's other objects exist:
with an external database (postgresql.enabled=false) that is fine, the Job needs only
its Secret, which the operator created (its ServiceAccount is a hook too). The in-chart
PostgreSQL StatefulSet and its generated Secret are created only after the pre-install
hooks have finished, so a pre-install Job could never reach the database, whatever it
waited or retried; there the first migration is post-install, and until it is done the
pods of a migrated service restart (they refuse an unmigrated schema). That is also why
that first install cannot use `helm install --wait`: it waits for ready pods before
running post-install hooks. No pre-rollback: `helm rollback` returns to an older
release, which runs on the newer schema, and whose `blueprint migrate` would fail on
a revision it does not know.
*/}}
{{- define "blueprint.migrationHooks" -}}
{{- if .Values.postgresql.enabled }}post-install,pre-upgrade{{ else }}pre-install,pre-upgrade{{ end -}}
{{- end -}}
