{{/*
The in-chart data stores (redis.yaml, postgresql.yaml): one single-instance
StatefulSet with a PVC, a headless Service and a credentials Secret each, from
these templates. Quick-start grade: no replication, no backups.

Argument: dict
  root      the chart root ($)
  name      redis | postgresql
  values    .Values.redis | .Values.postgresql
  port      the port number; its name is `name`
  command   container command (list)
  env       extra env (list of EnvVar)
  probe     exec command answering "ready" (list)
  dataPath  where the PVC is mounted
  mounts    extra emptyDir mount paths (list)
*/}}

{{- define "blueprint.datastoreName" -}}
{{- printf "%s-%s" (include "blueprint.fullname" .root) .name -}}
{{- end -}}

{{- define "blueprint.datastoreSecretName" -}}
{{- .values.auth.existingSecret | default (include "blueprint.datastoreName" .) -}}
{{- end -}}

{{/*
Generated credentials: a random password, looked up and reused on upgrades (a
new one would lock the database out of its data), kept on uninstall alongside
the PVC. Rendered only without auth.existingSecret.
urlFormat: printf format of the URL, %s = the password.
*/}}
{{- define "blueprint.datastoreSecret" -}}
{{- $root := .root -}}
{{- $name := include "blueprint.datastoreName" . -}}
{{- $password := randAlphaNum 32 -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace $name -}}
{{- if and $existing (hasKey ($existing.data | default dict) "password") -}}
{{- $password = index $existing.data "password" | b64dec -}}
{{- end -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "component" "datastore") | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
type: Opaque
data:
  password: {{ $password | b64enc }}
  url: {{ printf .urlFormat $password | b64enc }}
{{- end -}}

{{- define "blueprint.datastoreService" -}}
{{- $root := .root -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "blueprint.datastoreName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "component" "datastore") | nindent 4 }}
spec:
  # Headless: one pod, dialled directly; also the StatefulSet's governing Service.
  clusterIP: None
  selector:
    {{- include "blueprint.selectorLabels" (dict "root" $root "name" .name) | nindent 4 }}
  ports:
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .name }}
      protocol: TCP
{{- end -}}

{{- define "blueprint.datastoreStatefulSet" -}}
{{- $root := .root -}}
{{- $v := .values -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ include "blueprint.datastoreName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "blueprint.labels" (dict "root" $root "name" .name "component" "datastore") | nindent 4 }}
  annotations:
    {{- include "blueprint.checkovSkips" (list
      "CKV_K8S_43=Upstream image addressed by tag, overridable in values (<store>.image.tag accepts tag@sha256:digest)"
      "CKV_K8S_15=pullPolicy IfNotPresent: a restart of the single instance must not depend on the registry"
    ) | trim | nindent 4 }}
spec:
  replicas: 1
  serviceName: {{ include "blueprint.datastoreName" . }}
  selector:
    matchLabels:
      {{- include "blueprint.selectorLabels" (dict "root" $root "name" .name) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "blueprint.labels" (dict "root" $root "name" .name "component" "datastore") | nindent 8 }}
    spec:
      serviceAccountName: {{ include "blueprint.fullname" $root }}-datastore
      automountServiceAccountToken: false
      securityContext:
        {{- include "blueprint.podSecurityContext" $root | nindent 8 }}
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ .name }}
          image: {{ printf "%s:%s" $v.image.repository $v.image.tag }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command:
            {{- toYaml .command | nindent 12 }}
          {{- with .env }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: {{ .name }}
              containerPort: {{ .port }}
              protocol: TCP
          startupProbe:
            exec:
              command:
                {{- toYaml .probe | nindent 16 }}
            periodSeconds: 2
            failureThreshold: 90
            timeoutSeconds: 3
          readinessProbe:
            exec:
              command:
                {{- toYaml .probe | nindent 16 }}
            periodSeconds: 5
            failureThreshold: 2
            timeoutSeconds: 3
          livenessProbe:
            exec:
              command:
                {{- toYaml .probe | nindent 16 }}
            periodSeconds: 10
            failureThreshold: 6
            timeoutSeconds: 5
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "blueprint.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: {{ .dataPath }}
            - name: credentials
              mountPath: /run/secrets/blueprint
              readOnly: true
            {{- range $i, $path := .mounts }}
            - name: scratch-{{ $i }}
              mountPath: {{ $path }}
            {{- end }}
      volumes:
        # Only the password: the server reads it from a file, never from env.
        - name: credentials
          secret:
            secretName: {{ include "blueprint.datastoreSecretName" . }}
            defaultMode: 0440
            items:
              - key: password
                path: password
        {{- range $i, $path := .mounts }}
        - name: scratch-{{ $i }}
          emptyDir:
            sizeLimit: 256Mi
        {{- end }}
  volumeClaimTemplates:
    - metadata:
        name: data
        labels:
          {{- include "blueprint.selectorLabels" (dict "root" $root "name" .name) | nindent 10 }}
      spec:
        accessModes: ["ReadWriteOnce"]
        {{- with $v.persistence.storageClass }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $v.persistence.size }}
{{- end -}}
