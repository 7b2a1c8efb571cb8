package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

var (
	env *testenv.Env
	cl  client.Client
)

func TestMain(m *testing.M) {
	var err error
	env, err = testenv.Start()
	if err != nil {
		panic(err)
	}
	cl, err = client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// Valid bases that each invalid case changes in one place.
const (
	prefixBase = `apiVersion: anycast.dev/v1alpha1
kind: AnycastPrefix
metadata: {name: %s}
spec:
  prefixes: ["198.51.100.0/24"]
  sessionClaims: [edge]
`
	claimBase = `apiVersion: anycast.dev/v1alpha1
kind: BGPSessionClaim
metadata: {name: %s}
spec:
  localASN: 64512
  nodeSelector: {}
`
	policyBase = `apiVersion: anycast.dev/v1alpha1
kind: HealthPolicy
metadata: {name: %s}
spec:
`
)

// invalid is one object the API server must refuse, with a message containing want.
type invalid struct {
	name string
	yaml string
	want string
}

func prefixCase(name, spec, want string) invalid {
	return invalid{name, strings.Replace(prefixBase, "%s", name, 1) + spec, want}
}

func claimCase(name, spec, want string) invalid {
	return invalid{name, strings.Replace(claimBase, "%s", name, 1) + spec, want}
}

func policyCase(name, spec, want string) invalid {
	return invalid{name, strings.Replace(policyBase, "%s", name, 1) + spec, want}
}

const peer = "  static: {peers: [{address: 192.0.2.1, asn: 65001}]}\n"
const check = "  checks: [{name: web, tcp: {address: \"127.0.0.1:80\"}}]\n"

var invalidObjects = []invalid{
	// AnycastPrefix: prefixes
	prefixCase("cidr-syntax", `  prefixes: ["198.51.100.0/33"]`, `"198.51.100.0/33" is not a prefix in CIDR notation`),
	prefixCase("cidr-not-a-prefix", `  prefixes: ["lax-dns"]`, `"lax-dns" is not a prefix in CIDR notation`),
	prefixCase("host-bits-v4", `  prefixes: ["198.51.100.1/24"]`, `"198.51.100.1/24" has host bits set; clear the host bits`),
	prefixCase("host-bits-v6", `  prefixes: ["2001:db8:100::1/48"]`, `"2001:db8:100::1/48" has host bits set; clear the host bits`),
	prefixCase("default-v4", `  prefixes: ["0.0.0.0/0"]`, `"0.0.0.0/0" is a default route (/0)`),
	prefixCase("default-v6", `  prefixes: ["::/0"]`, `"::/0" is a default route (/0)`),
	prefixCase("v6-not-canonical", `  prefixes: ["2001:DB8:100::/48"]`, `is not in canonical form`),
	prefixCase("duplicate-prefix", `  prefixes: ["198.51.100.0/24", "198.51.100.0/24"]`, `Duplicate value: "198.51.100.0/24"`),
	prefixCase("no-prefixes", `  prefixes: []`, `spec.prefixes: Invalid value: 0: spec.prefixes in body should have at least 1 items`),
	prefixCase("too-many-prefixes", "  prefixes: ["+seventeenPrefixes()+"]", `must have at most 16 items`),
	prefixCase("no-claims", "  sessionClaims: []", `spec.sessionClaims in body should have at least 1 items`),
	prefixCase("bad-claim-name", "  sessionClaims: [Edge_LAX]", `"Edge_LAX" is not a valid object name`),
	// AnycastPrefix: attributes
	prefixCase("community-range", "  attributes: {communities: [\"64512:70000\"]}", `community "64512:70000" is invalid; write ASN:VALUE with both parts 0-65535`),
	prefixCase("community-syntax", "  attributes: {communities: [\"no-exports\"]}", `community "no-exports" is invalid`),
	prefixCase("community-blackhole", "  attributes: {communities: [\"65535:666\"]}", `BLACKHOLE community (65535:666)`),
	prefixCase("community-blackhole-name", "  attributes: {communities: [\"blackhole\"]}", `BLACKHOLE community (65535:666)`),
	prefixCase("community-duplicate", "  attributes: {communities: [\"64512:1\", \"64512:1\"]}", `Duplicate value: "64512:1"`),
	prefixCase("large-community", "  attributes: {largeCommunities: [\"64512:1\"]}", `large community "64512:1" is invalid; write GLOBAL:LOCAL1:LOCAL2`),
	prefixCase("large-community-range", "  attributes: {largeCommunities: [\"4294967296:1:2\"]}", `large community "4294967296:1:2" is invalid`),
	prefixCase("prepend-range", "  attributes: {asPathPrepend: 11}", `spec.attributes.asPathPrepend: Invalid value: 11: spec.attributes.asPathPrepend in body should be less than or equal to 10`),
	prefixCase("med-negative", "  attributes: {med: -1}", `spec.attributes.med in body should be greater than or equal to 0`),
	prefixCase("override-community", "  attributeOverrides: [{nodeSelector: {}, attributes: {communities: [\"1:2:3\"]}}]", `community "1:2:3" is invalid`),
	prefixCase("max-withdrawn-percent", "  safety: {maxWithdrawn: \"150%\"}", `maxWithdrawn must be a node count (0 or more) or a percentage from 0% to 100%`),
	prefixCase("max-withdrawn-negative", "  safety: {maxWithdrawn: -1}", `maxWithdrawn must be a node count (0 or more) or a percentage from 0% to 100%`),
	prefixCase("max-withdrawn-word", "  safety: {maxWithdrawn: \"half\"}", `maxWithdrawn must be a node count (0 or more) or a percentage from 0% to 100%`),
	// BGPSessionClaim
	claimCase("no-provider", "", `set exactly one session provider: static or netactuate`),
	claimCase("two-providers", peer+"  netactuate: {groupID: 100}\n", `set exactly one session provider: static or netactuate`),
	claimCase("netactuate-url", "  netactuate: {groupID: 100, apiURL: \"ftp://vapi2.netactuate.com/api/\"}\n", `apiURL "ftp://vapi2.netactuate.com/api/" is not an http or https URL`),
	claimCase("netactuate-url-key", "  netactuate: {groupID: 100, apiURL: \"https://vapi2.netactuate.com/api/?key=abc\"}\n", `apiURL must not carry a query or fragment; the API key belongs in the Secret`),
	claimCase("netactuate-group", "  netactuate: {groupID: 0}\n", `groupID in body should be greater than or equal to 1`),
	claimCase("asn-zero", "  localASN: 0\n"+peer, `AS number must be between 1 and 4294967294`),
	claimCase("asn-too-big", "  localASN: 4294967296\n"+peer, `AS number must be between 1 and 4294967294`),
	claimCase("asn-trans", "  static: {peers: [{address: 192.0.2.1, asn: 23456}]}\n", `AS number 23456 is AS_TRANS`),
	claimCase("peer-address", "  static: {peers: [{address: 192.0.2.300, asn: 65001}]}\n", `"192.0.2.300" is not an IPv4 or IPv6 address`),
	claimCase("peer-unspecified", "  static: {peers: [{address: \"::\", asn: 65001}]}\n", `"::" is the unspecified address`),
	claimCase("peer-duplicate", "  static: {peers: [{address: 192.0.2.1, asn: 65001}, {address: 192.0.2.1, asn: 65002}]}\n", `Duplicate value`),
	claimCase("peer-port", "  static: {peers: [{address: 192.0.2.1, asn: 65001, port: 70000}]}\n", `port in body should be less than or equal to 65535`),
	claimCase("hold-time-short", peer+"  timers: {holdTime: 2s, keepaliveTime: 1s}\n", `holdTime must be 0s (no keepalives) or at least 3s`),
	claimCase("keepalive-not-shorter", peer+"  timers: {holdTime: 30s, keepaliveTime: 30s}\n", `keepaliveTime must be shorter than holdTime`),
	claimCase("keepalive-default-hold", peer+"  timers: {keepaliveTime: 120s}\n", `keepaliveTime must be shorter than holdTime`),
	claimCase("timer-syntax", peer+"  timers: {connectRetry: soon}\n", `"soon" is not a duration`),
	claimCase("export-default-route", peer+"  exportPolicy: {allowedPrefixes: [\"0.0.0.0/0\"]}\n", `"0.0.0.0/0" is a default route (/0)`),
	claimCase("export-host-bits", peer+"  exportPolicy: {allowedPrefixes: [\"198.51.100.7/24\"]}\n", `"198.51.100.7/24" has host bits set`),
	claimCase("export-max-prefixes", peer+"  exportPolicy: {maxPrefixes: 0}\n", `maxPrefixes in body should be greater than or equal to 1`),
	claimCase("bfd-range", peer+"  bfd: {minRx: 1ms}\n", `minRx "1ms" must be a duration from 10ms to 60s`),
	claimCase("multihop-range", peer+"  ebgpMultihop: 256\n", `ebgpMultihop in body should be less than or equal to 255`),
	claimCase("secret-key", "  static: {peers: [{address: 192.0.2.1, asn: 65001, passwordSecretRef: {name: bgp, key: \"pass word\"}}]}\n", `"pass word" is not a valid Secret key`),
	// HealthPolicy
	policyCase("no-checks", "  checks: []\n", `spec.checks in body should have at least 1 items`),
	policyCase("check-no-probe", "  checks: [{name: web}]\n", `each check sets exactly one probe: http, tcp, dns, grpc or serviceEndpoints`),
	policyCase("check-two-probes", "  checks: [{name: web, tcp: {address: \"127.0.0.1:80\"}, grpc: {address: \"127.0.0.1:9000\"}}]\n", `each check sets exactly one probe`),
	policyCase("check-duplicate-name", "  checks: [{name: web, tcp: {address: \"127.0.0.1:80\"}}, {name: web, tcp: {address: \"127.0.0.1:81\"}}]\n", `Duplicate value`),
	policyCase("url-scheme", "  checks: [{name: web, http: {url: \"ftp://127.0.0.1/healthz\"}}]\n", `must be an absolute http:// or https:// URL`),
	policyCase("url-relative", "  checks: [{name: web, http: {url: \"/healthz-only\"}}]\n", `must be an absolute http:// or https:// URL`),
	policyCase("status-code", "  checks: [{name: web, http: {url: \"http://127.0.0.1/\", expectedStatus: [600]}}]\n", `should be less than or equal to 599`),
	policyCase("tcp-address", "  checks: [{name: port, tcp: {address: \"127.0.0.1\"}}]\n", `"127.0.0.1" is not host:port`),
	policyCase("tcp-port-range", "  checks: [{name: port, tcp: {address: \"127.0.0.1:99999\"}}]\n", `the port in "127.0.0.1:99999" must be between 1 and 65535`),
	policyCase("dns-server", "  checks: [{name: dns, dns: {server: \"::1:53\", query: example.com.}}]\n", `"::1:53" is not host:port`),
	policyCase("node-ip-url", "  checks: [{name: web, http: {url: \"ftp://$(NODE_IP):8080/\"}}]\n", `must be an absolute http:// or https:// URL`),
	policyCase("node-ip-no-port", "  checks: [{name: port, tcp: {address: \"$(NODE_IP)\"}}]\n", `"$(NODE_IP)" is not host:port`),
	policyCase("dns-type", "  checks: [{name: dns, dns: {server: \"127.0.0.1:53\", query: example.com., type: ANY}}]\n", `Unsupported value: "ANY"`),
	policyCase("timeout-not-shorter", check+"  interval: 1s\n  timeout: 1s\n", `timeout must be shorter than interval`),
	policyCase("timeout-default-interval", check+"  timeout: 6s\n", `timeout must be shorter than interval`),
	policyCase("interval-too-short", check+"  interval: 50ms\n  timeout: 20ms\n", `interval 50ms is out of range: use 100ms to 5m`),
	policyCase("interval-too-long", check+"  interval: 10m\n", `interval 10m is out of range: use 100ms to 5m`),
	policyCase("fall-threshold", check+"  fallThreshold: 0\n", `fallThreshold in body should be greater than or equal to 1`),
	policyCase("rise-threshold", check+"  riseThreshold: 101\n", `riseThreshold in body should be less than or equal to 100`),
	policyCase("mode", check+"  mode: Majority\n", `Unsupported value: "Majority"`),
	policyCase("dampening", check+"  dampening: {minAnnounceDuration: 48h}\n", `minAnnounceDuration 48h is out of range: use 0s to 24h`),
	policyCase("on-unhealthy", check+"  onUnhealthy: Blackhole\n", `Unsupported value: "Blackhole"`),
}

func seventeenPrefixes() string {
	var list []string
	for i := range 17 {
		list = append(list, fmt.Sprintf("%q", fmt.Sprintf("10.0.%d.0/24", i)))
	}
	return strings.Join(list, ",")
}

func TestInvalidObjectsAreRefused(t *testing.T) {
	if len(invalidObjects) < 30 {
		t.Fatalf("only %d invalid cases", len(invalidObjects))
	}
	seen := map[string]bool{}
	for _, tc := range invalidObjects {
		t.Run(tc.name, func(t *testing.T) {
			if seen[tc.name] {
				t.Fatalf("duplicate case name %q", tc.name)
			}
			seen[tc.name] = true
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(tc.yaml), &obj.Object); err != nil {
				t.Fatalf("test YAML: %v\n%s", err, tc.yaml)
			}
			err := cl.Create(context.Background(), obj)
			if err == nil {
				_ = cl.Delete(context.Background(), obj)
				t.Fatalf("accepted, want refused with %q:\n%s", tc.want, tc.yaml)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("refused with\n  %v\nwant a message containing\n  %s", err, tc.want)
			}
			t.Logf("refused: %v", err)
		})
	}
}

func TestSamplesAreAccepted(t *testing.T) {
	dir := filepath.Join(env.Root, "config", "samples")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) != 4 {
		t.Fatalf("want one sample per kind in %s, found %v (%v)", dir, files, err)
	}
	for _, args := range [][]string{{"apply", "-f", dir}, {"get", "anycast"}} {
		out, err := env.Kubectl(args...)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
		if args[0] == "get" {
			for _, want := range []string{"anycastprefix.anycast.dev/dns", "healthpolicy.anycast.dev/dns", "bgpsessionclaim.anycast.dev/edge-lax", "nodeannouncement.anycast.dev/lax-1"} {
				if !strings.Contains(out, want) {
					t.Errorf("kubectl get anycast does not list %s", want)
				}
			}
		}
	}
}

// TestNodeIPVariableIsAccepted: every probe target may name the node's address as $(NODE_IP).
func TestNodeIPVariableIsAccepted(t *testing.T) {
	spec := `  checks:
  - {name: web, http: {url: "http://$(NODE_IP):8080/healthz"}}
  - {name: web6, http: {url: "https://[$(NODE_IP)]:8443/healthz"}}
  - {name: port, tcp: {address: "$(NODE_IP):53"}}
  - {name: port6, tcp: {address: "[$(NODE_IP)]:53"}}
  - {name: dns, dns: {server: "$(NODE_IP):53", query: example.com.}}
  - {name: grpc, grpc: {address: "$(NODE_IP):9090"}}
`
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte(strings.Replace(policyBase, "%s", "node-ip", 1)+spec), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl("apply", "-f", file); err != nil {
		t.Fatalf("refused: %v\n%s", err, out)
	}
}

// TestInstallManifestsAreAccepted applies config/default (CRDs, RBAC, the manager's Deployment) to the API server.
func TestInstallManifestsAreAccepted(t *testing.T) {
	out, err := env.Kubectl("apply", "--server-side", "--force-conflicts", "-k", filepath.Join(env.Root, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"clusterrole.rbac.authorization.k8s.io/anycast-manager", "role.rbac.authorization.k8s.io/anycast-manager", "deployment.apps/anycast-manager",
		"clusterrole.rbac.authorization.k8s.io/anycast-agent", "role.rbac.authorization.k8s.io/anycast-agent", "daemonset.apps/anycast-agent"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply -k config/default did not apply %s:\n%s", want, out)
		}
	}
}
