package install

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	"helm.sh/helm/v3/pkg/strvals"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

var chartDir = filepath.Join("..", "..", "charts", "anycast-operator")

// render renders the chart as `helm template` would, for a release "anycast" in anycast-system.
func render(t *testing.T, set string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]any{}
	if set != "" {
		if err := strvals.ParseInto(set, vals); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &action.Configuration{KubeClient: &fake.PrintingKubeClient{Out: io.Discard}, Releases: storage.Init(driver.NewMemory()),
		Capabilities: chartutil.DefaultCapabilities, Log: func(string, ...any) {}}
	install := action.NewInstall(cfg)
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.ReleaseName, install.Namespace = "anycast", "anycast-system"
	install.KubeVersion = &chartutil.KubeVersion{Version: "v1.37.2", Major: "1", Minor: "37"}
	rel, err := install.Run(chrt, vals)
	if err != nil {
		return nil, err
	}
	return decode(t, []byte(rel.Manifest)), nil
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// TestChart renders the chart for several value sets, lints it, and server-side dry-runs every rendered object
// against a test API server.
func TestChart(t *testing.T) {
	c := startAPIServer(t)
	cases := []struct {
		name, set string
		check     func(t *testing.T, objs []*unstructured.Unstructured)
	}{
		{"defaults", "", func(t *testing.T, objs []*unstructured.Unstructured) {
			crd := find(objs, "CustomResourceDefinition", "anycastprefixes.anycast.dev")
			if crd == nil || crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
				t.Errorf("the CRDs are not rendered, or not kept on uninstall")
			}
			if find(objs, "BGPSessionClaim", "anycast") != nil {
				t.Errorf("a claim without quick-start values")
			}
		}},
		{"crds off, metallb", "crds.enabled=false,backend=metallb,metallb.mode=native", func(t *testing.T, objs []*unstructured.Unstructured) {
			if find(objs, "CustomResourceDefinition", "anycastprefixes.anycast.dev") != nil {
				t.Errorf("CRDs rendered with crds.enabled=false")
			}
			role := find(objs, "Role", "anycast-manager-metallb")
			if role == nil || role.GetNamespace() != "metallb-system" {
				t.Errorf("MetalLB's RBAC for the manager: %v", role)
			}
			args := containerArgs(find(objs, "Deployment", "anycast-manager"))
			if !strings.Contains(args, "--backend=metallb") || !strings.Contains(args, "--metallb-mode=native") {
				t.Errorf("manager args %s", args)
			}
		}},
		{"calico", "backend=calico,calico.namespace=kube-system", func(t *testing.T, objs []*unstructured.Unstructured) {
			if r := find(objs, "Role", "anycast-manager-calico"); r == nil || r.GetNamespace() != "kube-system" {
				t.Errorf("Calico's RBAC in kube-system: %v", r)
			}
			rb := find(objs, "RoleBinding", "calico-node-anycast-passwords")
			if rb == nil || !strings.Contains(toString(rb), "namespace: calico-system") {
				t.Errorf("calico-node's own ServiceAccount must keep its namespace: %v", rb)
			}
		}},
		{"cilium and bird-less agent", "backend=cilium", func(t *testing.T, objs []*unstructured.Unstructured) {
			if find(objs, "ClusterRole", "anycast-manager-cilium") == nil {
				t.Errorf("no Cilium RBAC")
			}
		}},
		{"bird", "backend=bird,image.agent.repository=ghcr.io/anycast-operator/agent-bird", func(t *testing.T, objs []*unstructured.Unstructured) {
			ds := toString(find(objs, "DaemonSet", "anycast-agent"))
			if !strings.Contains(ds, "--bird-socket=/run/bird/bird.ctl") || !strings.Contains(ds, "path: /run/bird") {
				t.Errorf("the agent cannot reach BIRD:\n%s", ds)
			}
		}},
		{"quick start, static peers", "bgp.localASN=64512,bgp.prefixes[0]=198.51.100.0/24,bgp.prefixes[1]=2001:db8:100::/48,bgp.peers[0].address=192.0.2.1,bgp.peerASN=65001,bgp.peers[1].address=192.0.2.2,bgp.peers[1].asn=65002,bgp.healthCheck.url=http://127.0.0.1:8080/healthz,bgp.communities[0]=64512:100",
			func(t *testing.T, objs []*unstructured.Unstructured) {
				claim := toString(find(objs, "BGPSessionClaim", "anycast"))
				if !strings.Contains(claim, "asn: 65001") || !strings.Contains(claim, "asn: 65002") || !strings.Contains(claim, "198.51.100.0/24") {
					t.Errorf("claim:\n%s", claim)
				}
				ap := toString(find(objs, "AnycastPrefix", "anycast"))
				if !strings.Contains(ap, "healthPolicyRef") || !strings.Contains(ap, "64512:100") || find(objs, "HealthPolicy", "anycast") == nil {
					t.Errorf("prefix:\n%s", ap)
				}
			}},
		{"monitoring", "monitoring.podMonitor.enabled=true,monitoring.serviceMonitor.enabled=true,monitoring.rules.enabled=true,monitoring.dashboard.enabled=true",
			func(t *testing.T, objs []*unstructured.Unstructured) {
				for _, kn := range [][2]string{{"PodMonitor", "anycast-agent"}, {"ServiceMonitor", "anycast-manager"}, {"PrometheusRule", "anycast-operator"},
					{"ConfigMap", "anycast-operator-dashboard"}} {
					if find(objs, kn[0], kn[1]) == nil {
						t.Errorf("%s %s not rendered", kn[0], kn[1])
					}
				}
				if cm := toString(find(objs, "ConfigMap", "anycast-operator-dashboard")); !strings.Contains(cm, "grafana_dashboard") || !strings.Contains(cm, "anycast_prefix_nodes") {
					t.Errorf("the dashboard ConfigMap:\n%s", cm)
				}
			}},
		{"quick start, NetActuate", "bgp.localASN=64512,bgp.prefixes[0]=198.51.100.0/24,bgp.netactuate.groupID=100,bgp.netactuate.apiKeySecret=netactuate-api",
			func(t *testing.T, objs []*unstructured.Unstructured) {
				claim := toString(find(objs, "BGPSessionClaim", "anycast"))
				if !strings.Contains(claim, "groupID: 100") || !strings.Contains(claim, "name: netactuate-api") {
					t.Errorf("claim:\n%s", claim)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := render(t, tc.set)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, objs)
			vals := map[string]any{}
			_ = strvals.ParseInto(tc.set, vals)
			lint := action.NewLint()
			lint.Namespace = "anycast-system"
			for _, m := range lint.Run([]string{chartDir}, vals).Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				}
			}
			ensureNamespaces(t, c, objs)
			serverSideApply(t, c, objs, true)
		})
	}
}

// TestChartRefusesBadValues: values.schema.json refuses unknown keys and wrong values; the quick start says what is
// missing.
func TestChartRefusesBadValues(t *testing.T) {
	for set, want := range map[string]string{
		"replicas=3":         "additional properties 'replicas' not allowed",
		"manager.replica=3":  "additional properties 'replica' not allowed",
		"backend=frr":        "backend",
		"bgp.localASN=23456": "localASN",
		"bgp.localASN=64512,bgp.prefixes[0]=10.0.0.0/8":                                "set bgp.peers (static peers) or bgp.netactuate.groupID",
		"bgp.localASN=64512,bgp.prefixes[0]=10.0.0.0/8,bgp.peers[0].address=192.0.2.1": "peer 192.0.2.1 has no asn",
	} {
		_, err := render(t, set)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: %v, want an error about %q", set, err, want)
		}
	}
}

func containerArgs(o *unstructured.Unstructured) string {
	if o == nil {
		return ""
	}
	cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	if len(cs) == 0 {
		return ""
	}
	args, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
	return strings.Join(args, " ")
}

func toString(o *unstructured.Unstructured) string {
	if o == nil {
		return "<missing>"
	}
	b, _ := yaml.Marshal(o.Object)
	return string(b)
}
