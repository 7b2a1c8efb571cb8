package metallb_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/backend/backendtest"
	"github.com/anycast-operator/anycast-operator/internal/backend/metallb"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// validator is MetalLB v0.16.1's own configuration validation (internal/config), built by
// hack/build-metallb-speaker.sh (make metallb-speaker) into a small command.
func validator(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("METALLB_VALIDATE"); bin != "" {
		return bin
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "metallb", "0.16.1", "validate")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("MetalLB's validator is not built: run make metallb-speaker (%v)", err)
	}
	return bin
}

// metallbAccepts runs MetalLB's validation, as its speaker and controller do, on the objects of a translation for
// the nodes, and returns MetalLB's refusal ("" when it accepts).
func metallbAccepts(t *testing.T, bin string, mode metallb.Mode, tr backend.Translation, nodes []corev1.Node) string {
	t.Helper()
	// The fields of MetalLB's internal/config.ClusterResources, as JSON.
	res := struct {
		Pools           []metallbv1beta1.IPAddressPool    `json:"ipaddresspools"`
		Peers           []metallbv1beta2.BGPPeer          `json:"bgppeers"`
		BFDProfiles     []metallbv1beta1.BFDProfile       `json:"bfdprofiles"`
		BGPAdvs         []metallbv1beta1.BGPAdvertisement `json:"bgpadvertisements"`
		PasswordSecrets map[string]corev1.Secret          `json:"passwordsecrets"`
		Nodes           []corev1.Node                     `json:"nodes"`
		Namespaces      []corev1.Namespace                `json:"namespaces"`
	}{PasswordSecrets: map[string]corev1.Secret{}, Nodes: nodes, Namespaces: []corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: metallbNS}}}}
	for _, o := range tr.Objects {
		switch o := o.(type) {
		case *metallbv1beta1.IPAddressPool:
			res.Pools = append(res.Pools, *o)
		case *metallbv1beta2.BGPPeer:
			res.Peers = append(res.Peers, *o)
		case *metallbv1beta1.BFDProfile:
			res.BFDProfiles = append(res.BFDProfiles, *o)
		case *metallbv1beta1.BGPAdvertisement:
			res.BGPAdvs = append(res.BGPAdvs, *o)
		case *corev1.Secret:
			res.PasswordSecrets[o.Name] = *o
		default:
			t.Fatalf("an object MetalLB's validation does not read: %T", o)
		}
	}
	in, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	mode2 := map[metallb.Mode]string{metallb.Native: "native", metallb.FRRK8s: "frr-k8s"}[mode]
	cmd := exec.Command(bin, mode2)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("%s: %v", bin, err)
		}
		return strings.TrimSpace(string(out))
	}
	return ""
}

// metallbScenario is a cluster the backend translates: claims, prefixes, nodes, what the agents report.
type metallbScenario struct {
	name     string
	claims   []anycastv1.NodeSessions // every node gets those whose claim selects it (selects: claim → nodes)
	selects  map[string][]string
	prefixes []anycastv1.PrefixGroup // on every node whose claims it uses
	nodes    []string
}

func (s metallbScenario) desired() (backend.Desired, []corev1.Node) {
	planned := map[string]anycastv1.NodeAnnouncementSpec{}
	var reported []anycastv1.NodeAnnouncement
	var nodes []corev1.Node
	for i, n := range s.nodes {
		var spec anycastv1.NodeAnnouncementSpec
		for _, c := range s.claims {
			for _, m := range s.selects[string(c.Claim)] {
				if m == n {
					spec.Sessions = append(spec.Sessions, c)
				}
			}
		}
		na := anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: n}}
		for _, g := range s.prefixes {
			var claims []anycastv1.LocalObjectName
			for _, c := range g.Sessions {
				for _, own := range spec.Sessions {
					if own.Claim == c {
						claims = append(claims, c)
					}
				}
			}
			if len(claims) == 0 {
				continue
			}
			g := *g.DeepCopy()
			g.Sessions = claims
			spec.Groups = append(spec.Groups, g)
			state := []anycastv1.PrefixState{anycastv1.PrefixAnnounced, anycastv1.PrefixWithdrawn, anycastv1.PrefixDeprefered}[i%3]
			for _, p := range g.Prefixes {
				na.Status.Prefixes = append(na.Status.Prefixes, anycastv1.NodePrefixStatus{Prefix: p.Prefix, State: state})
			}
		}
		planned[n] = spec
		reported = append(reported, na)
		nodes = append(nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{corev1.LabelHostname: n}}})
	}
	return backend.Compute(planned, reported, nodes), nodes
}

func claimOf(name string, asn int64, peers ...string) anycastv1.NodeSessions {
	s := anycastv1.NodeSessions{Claim: anycastv1.LocalObjectName(name), BGPSessionSettings: anycastv1.BGPSessionSettings{LocalASN: anycastv1.ASN(asn),
		Static: &anycastv1.StaticSessions{}}}
	for _, p := range peers {
		s.Static.Peers = append(s.Static.Peers, anycastv1.BGPPeer{Address: anycastv1.IPAddress(p), ASN: 65001})
	}
	return s
}

func groupOf(claims []string, attrs *anycastv1.BGPAttributes, prefixes ...string) anycastv1.PrefixGroup {
	g := anycastv1.PrefixGroup{Attributes: attrs}
	for _, c := range claims {
		g.Sessions = append(g.Sessions, anycastv1.LocalObjectName(c))
	}
	for _, p := range prefixes {
		g.Prefixes = append(g.Prefixes, anycastv1.GroupPrefix{Prefix: anycastv1.PlannedCIDR(p), Source: "p-" + strings.NewReplacer(".", "-", "/", "-", ":", "-").Replace(p)})
	}
	return g
}

// TestEveryConfigurationMetalLBAccepts runs MetalLB's own validation on what the backend writes for native and
// frr-k8s mode, both families, several claims and AS numbers per node: MetalLB refuses a whole configuration
// (and keeps running its previous one, so a withdrawal never happens) when one part is wrong. What MetalLB cannot
// express must show as SettingsIgnored, never as a refused configuration.
func TestEveryConfigurationMetalLBAccepts(t *testing.T) {
	bin := validator(t)
	attrs := &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100", "no-export"}, LargeCommunities: []anycastv1.LargeCommunity{"64512:1:2"}}
	three := []string{"n1", "n2", "n3"}
	scenarios := []metallbScenario{
		{name: "the golden two claims, both families"},
		{name: "one claim, IPv4 and IPv6 prefixes, communities and large communities", nodes: three,
			claims: []anycastv1.NodeSessions{claimOf("edge", 64512, "192.0.2.1", "2001:db8::1")}, selects: map[string][]string{"edge": three},
			prefixes: []anycastv1.PrefixGroup{groupOf([]string{"edge"}, attrs, "198.51.100.0/24", "2001:db8:100::/48")}},
		{name: "two claims with different AS numbers on the same nodes", nodes: three,
			claims:  []anycastv1.NodeSessions{claimOf("edge", 64512, "192.0.2.1"), claimOf("transit", 64513, "192.0.2.2")},
			selects: map[string][]string{"edge": three, "transit": {"n2", "n3"}},
			prefixes: []anycastv1.PrefixGroup{groupOf([]string{"edge", "transit"}, nil, "198.51.100.0/24"),
				groupOf([]string{"transit"}, nil, "203.0.113.0/24")}},
		{name: "two claims with different AS numbers on different nodes", nodes: three,
			claims:   []anycastv1.NodeSessions{claimOf("lax", 64512, "192.0.2.1"), claimOf("fra", 64513, "192.0.2.1")},
			selects:  map[string][]string{"lax": {"n1"}, "fra": {"n2", "n3"}},
			prefixes: []anycastv1.PrefixGroup{groupOf([]string{"lax", "fra"}, nil, "198.51.100.0/24")}},
		{name: "two claims peering with the same router on the same nodes", nodes: three,
			claims:   []anycastv1.NodeSessions{claimOf("edge", 64512, "192.0.2.1"), claimOf("backup", 64512, "192.0.2.1", "192.0.2.3")},
			selects:  map[string][]string{"edge": three, "backup": three},
			prefixes: []anycastv1.PrefixGroup{groupOf([]string{"edge", "backup"}, nil, "198.51.100.0/24")}},
		{name: "IPv6 only", nodes: three,
			claims: []anycastv1.NodeSessions{claimOf("v6", 64512, "2001:db8::1")}, selects: map[string][]string{"v6": three},
			prefixes: []anycastv1.PrefixGroup{groupOf([]string{"v6"}, nil, "2001:db8:100::/48", "2001:db8:200::/48")}},
	}
	for _, mode := range []metallb.Mode{metallb.Native, metallb.FRRK8s} {
		for _, sc := range scenarios {
			t.Run(fmt.Sprintf("%s/%s", mode, sc.name), func(t *testing.T) {
				var d backend.Desired
				var nodes []corev1.Node
				if sc.nodes == nil {
					d = backendtest.GoldenDesired()
					for _, n := range []string{"n1", "n2", "n3"} {
						nodes = append(nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{corev1.LabelHostname: n + ".example"}}})
					}
				} else {
					d, nodes = sc.desired()
				}
				tr := metallb.Translator{Namespace: metallbNS, Mode: mode, Secrets: backendtest.GoldenSecrets}.Translate(d)
				if refusal := metallbAccepts(t, bin, mode, tr, nodes); refusal != "" {
					t.Errorf("MetalLB refuses the whole configuration: %s\nignored: %v %v", refusal, tr.IgnoredClaims, tr.IgnoredPrefixes)
				}
			})
		}
	}
}
