{{/* Labels every object of the release carries. */}}
{{- define "anycast.labels" -}}
app.kubernetes.io/name: anycast-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "anycast.image" -}}
{{- $img := index . 0 -}}{{- $root := index . 1 -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/*
anycast.fromFile renders the objects of one of config/'s YAML files (copied into files/ by make manifests), so that
the chart installs exactly what kubectl apply -k does: namespaced objects move to $ns (but those of namespace
default, where the API server keeps the events of cluster-scoped objects), the operator's own ServiceAccounts in
bindings to the release's namespace. Arguments: root, path, namespace.
*/}}
{{- define "anycast.fromFile" -}}
{{- $root := index . 0 -}}{{- $path := index . 1 -}}{{- $ns := index . 2 -}}
{{- range $doc := regexSplit "(?m)^---[ \\t]*$" ($root.Files.Get $path) -1 }}
{{- $obj := fromYaml $doc }}
{{- if hasKey $obj "Error" }}{{ fail (printf "%s: %s" $path $obj.Error) }}{{ end }}
{{- if $obj.kind }}
{{- if and $obj.metadata.namespace (ne $obj.metadata.namespace "default") }}{{ $_ := set $obj.metadata "namespace" $ns }}{{ end }}
{{- $_ := set $obj.metadata "labels" (merge (default dict $obj.metadata.labels) (include "anycast.labels" $root | fromYaml)) }}
{{- range $obj.subjects }}{{ if has .name (list "anycast-manager" "anycast-agent") }}{{ $_ := set . "namespace" $root.Release.Namespace }}{{ end }}{{ end }}
---
{{ toYaml $obj }}
{{- end }}
{{- end }}
{{- end -}}
