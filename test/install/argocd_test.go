// Package install tests the ways users install and watch the operator: kubectl (dist/install.yaml), Helm, OLM and
// Argo CD, and how kstatus (helm --wait, Flux, kpt) reads its objects.
package install

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

// luaValue turns decoded JSON into Lua values, as Argo CD hands objects to health checks.
func luaValue(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := L.NewTable()
		for k, x := range v {
			t.RawSetString(k, luaValue(L, x))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, x := range v {
			t.Append(luaValue(L, x))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	}
	return lua.LNil
}

// runHealth runs one health check on obj and returns the status and message it gives.
func runHealth(t *testing.T, script string, obj map[string]any) (string, string) {
	t.Helper()
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", luaValue(L, obj))
	fn, err := L.LoadString(script)
	if err != nil {
		t.Fatalf("the script does not compile: %v", err)
	}
	L.Push(fn)
	if err := L.PCall(0, 1, nil); err != nil {
		t.Fatalf("the script failed: %v", err)
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("the script returned %v, not a table", L.Get(-1))
	}
	return ret.RawGetString("status").String(), ret.RawGetString("message").String()
}

func fixture(t *testing.T, doc string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestArgoCDHealth runs the health checks of config/argocd/argocd-cm.yaml (what users merge into argocd-cm) under a
// Lua interpreter on status fixtures of each kind.
func TestArgoCDHealth(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "config", "argocd", "argocd-cm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct{ Data map[string]string }
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	script := func(kind string) string {
		s, ok := cm.Data["resource.customizations.health.anycast.dev_"+kind]
		if !ok {
			t.Fatalf("no health check for %s", kind)
		}
		return s
	}
	cond := func(typ, status, reason, msg string) string {
		return "{type: " + typ + ", status: \"" + status + "\", reason: " + reason + ", message: \"" + msg + "\"}"
	}
	obj := func(gen int, spec string, observed int, conds ...string) string {
		s := "metadata: {name: x, generation: " + strconv.Itoa(gen) + "}\nspec: {" + spec + "}\n"
		if observed > 0 {
			s += "status: {observedGeneration: " + strconv.Itoa(observed) + ", conditions: [" + strings.Join(conds, ", ") + "]}\n"
		}
		return s
	}
	ready := cond("Ready", "True", "Announced", "Announced by 4 of 5 nodes")
	notStalled := cond("Stalled", "False", "AsExpected", "")
	notReconciling := cond("Reconciling", "False", "AsExpected", "")
	cases := []struct {
		kind, name, obj, status, says string
	}{
		{"AnycastPrefix", "announced", obj(3, "", 3, ready, notStalled, notReconciling), "Healthy", "Announced by 4 of 5"},
		{"AnycastPrefix", "stale generation", obj(4, "", 3, ready, notStalled, notReconciling), "Progressing", "act on generation 4"},
		{"AnycastPrefix", "never observed", obj(1, "", 0), "Progressing", "act on generation 1"},
		{"AnycastPrefix", "paused", obj(3, "paused: true", 3, ready), "Suspended", "Paused"},
		{"AnycastPrefix", "awaiting agents", obj(2, "", 2, cond("Ready", "False", "AwaitingAgents", "Planned on 3 nodes"),
			cond("Reconciling", "True", "AwaitingAgents", "Planned on 3 nodes; waiting for their agents"), notStalled), "Progressing", "waiting for their agents"},
		{"AnycastPrefix", "conflict", obj(2, "", 2, cond("Ready", "False", "Overlap", "overlaps dns"),
			cond("Stalled", "True", "Overlap", "198.51.100.0/24 overlaps AnycastPrefix dns"), notReconciling), "Degraded", "overlaps AnycastPrefix dns"},
		{"AnycastPrefix", "withdrawn everywhere", obj(2, "", 2, cond("Ready", "False", "NotAnnounced", "Withdrawn on every node"), notStalled, notReconciling), "Degraded", "Withdrawn on every node"},
		{"BGPSessionClaim", "ready", obj(1, "", 1, cond("Ready", "True", "NodesSelected", "3 of 3 established"), notStalled, notReconciling), "Healthy", "3 of 3"},
		{"BGPSessionClaim", "provisioning", obj(1, "", 1, cond("Ready", "False", "Provisioning", "p"), cond("Reconciling", "True", "Provisioning", "Sessions are being provisioned on node a"), notStalled), "Progressing", "being provisioned"},
		{"BGPSessionClaim", "missing Secret", obj(1, "", 1, cond("Stalled", "True", "SecretNotFound", "Secret key bgp-md5/password not found"), notReconciling), "Degraded", "bgp-md5"},
		{"BGPSessionClaim", "stale", obj(2, "", 1, cond("Ready", "True", "NodesSelected", "ok")), "Progressing", "generation 2"},
		{"HealthPolicy", "in use", obj(1, "", 1, cond("Ready", "True", "InUse", "Used by 2 AnycastPrefixes")), "Healthy", "Used by 2"},
		{"HealthPolicy", "stale", obj(2, "", 1, cond("Ready", "True", "InUse", "x")), "Progressing", "generation 2"},
		{"NodeAnnouncement", "agent running", obj(5, "", 5, cond("Ready", "True", "AgentRunning", "2 of 2 prefixes announced")), "Healthy", "2 of 2"},
		{"NodeAnnouncement", "agent behind", obj(6, "", 5, cond("Ready", "True", "AgentRunning", "x")), "Progressing", "node's agent"},
		{"NodeAnnouncement", "no agent yet", obj(1, "", 0), "Progressing", "node's agent"},
		{"NodeAnnouncement", "drained", obj(5, "drain: true", 5, cond("Ready", "True", "AgentRunning", "x")), "Suspended", "Drained"},
	}
	for _, tc := range cases {
		t.Run(tc.kind+"/"+tc.name, func(t *testing.T) {
			status, msg := runHealth(t, script(tc.kind), fixture(t, tc.obj))
			if status != tc.status || !strings.Contains(msg, tc.says) {
				t.Errorf("%s %q, want %s saying %q", status, msg, tc.status, tc.says)
			}
		})
	}
}
