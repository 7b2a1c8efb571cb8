package netactuate

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/provider/netactuate/natest"
)

func provisioner(t *testing.T, api *natest.API, key string, node ...string) (*Provisioner, *clocktesting.FakeClock) {
	t.Helper()
	fc := clocktesting.NewFakeClock(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	p := &Provisioner{Client: fastClient(t, api, key), Clock: fc}
	for _, a := range node {
		p.NodeAddrs = append(p.NodeAddrs, netip.MustParseAddr(a))
	}
	return p, fc
}

func TestProvisionCreatesOnceAndDerivesPeers(t *testing.T) {
	api := startAPI(t)
	p, _ := provisioner(t, api, testKey, "10.9.9.9", "127.0.0.21") // one address is not the VM's: fine
	var seen []anycastv1.ProvisioningState
	st := p.Provision(context.Background(), Request{GroupID: 100, IPv6: true, Redundant: true}, anycastv1.ProvisioningStatus{Claim: "edge"},
		func(s anycastv1.ProvisioningStatus) { seen = append(seen, s.State) })
	if st.State != anycastv1.ProvisioningReady || st.Reason != ReasonReady || st.ServerID != 4101 || len(st.Sessions) != 4 {
		t.Fatalf("status %+v", st)
	}
	if len(seen) != 2 || seen[0] != anycastv1.ProvisioningDiscovering || seen[1] != anycastv1.ProvisioningProvisioning {
		t.Errorf("intermediate states %v, want Discovering then Provisioning", seen)
	}
	s := st.Sessions[0]
	if s.PeerAddress != "127.0.0.31" || s.PeerASN != 36236 || s.LocalAddress != "127.0.0.21" || s.LocalASN != natest.CustomerASN {
		t.Errorf("peer derived as %+v: want peer = provider_peer_ip, peer ASN = provider_asn, local = customer_peer_ip, local ASN = customer_asn", s)
	}
	// Further rounds, and a restarted agent (a new provisioner from the reported status), never ask again.
	for range 3 {
		st = p.Provision(context.Background(), Request{GroupID: 100, IPv6: true, Redundant: true}, st, nil)
		p2, _ := provisioner(t, api, testKey, "127.0.0.21")
		st = p2.Provision(context.Background(), Request{GroupID: 100, IPv6: true, Redundant: true}, st, nil)
	}
	fresh, _ := provisioner(t, api, testKey, "127.0.0.21")
	if st := fresh.Provision(context.Background(), Request{GroupID: 100, IPv6: true, Redundant: true}, anycastv1.ProvisioningStatus{}, nil); st.State != anycastv1.ProvisioningReady {
		t.Errorf("an agent with no status at all: %+v", st)
	}
	if api.Creates() != 1 || api.SessionsOf(4101) != 4 {
		t.Errorf("%d create calls and %d sessions, want 1 and 4", api.Creates(), api.SessionsOf(4101))
	}
}

// TestProvisionNoDuplicatesAfterTimeout: the create call times out although NetActuate carried it out, and the
// sessions take a while to be listed. Neither the retries nor a restart ask again before Settle; once listed, Ready.
func TestProvisionNoDuplicatesAfterTimeout(t *testing.T) {
	api := startAPI(t)
	api.HideNewFor = 2 // the first two lists after the create do not show the sessions yet
	api.Inject(natest.Fault{Path: "bgp/bgpcreatesessions", Delay: 300 * time.Millisecond})
	p, fc := provisioner(t, api, testKey, "127.0.0.22")
	p.Client.Timeout = 50 * time.Millisecond
	req := Request{GroupID: 100}
	st := p.Provision(context.Background(), req, anycastv1.ProvisioningStatus{Claim: "edge"}, nil)
	if st.State != anycastv1.ProvisioningProvisioning || st.Reason != ReasonWaiting || st.LastCreateTime == nil {
		t.Fatalf("after a timed-out create: %+v", st)
	}
	for api.Creates() == 0 { // the fake carries the request out after its delay, whoever still waits for the answer
		time.Sleep(5 * time.Millisecond)
	}
	for i := range 3 {
		fc.Step(30 * time.Second)
		restarted, _ := provisioner(t, api, testKey, "127.0.0.22")
		restarted.Clock = fc
		if i%2 == 0 {
			st = restarted.Provision(context.Background(), req, st, nil)
		} else {
			st = p.Provision(context.Background(), req, st, nil)
		}
	}
	if st.State != anycastv1.ProvisioningReady || len(st.Sessions) != 1 {
		t.Errorf("once listed: %+v", st)
	}
	if api.Creates() != 1 || api.SessionsOf(4102) != 1 {
		t.Errorf("%d create calls and %d sessions, want 1 and 1", api.Creates(), api.SessionsOf(4102))
	}
}

func TestProvisionErrorsSayWhatToDo(t *testing.T) {
	cases := []struct {
		name   string
		key    string
		node   string
		req    Request
		faults []natest.Fault
		reason string
		says   string
	}{
		{"unknown VM", testKey, "127.0.0.99", Request{GroupID: 100}, nil, ReasonServerNotFound, "No server of this NetActuate account has any of the node's addresses (127.0.0.99)"},
		{"wrong key", "not-the-key", "127.0.0.21", Request{GroupID: 100}, nil, ReasonUnauthorized, "Check the API key in the claim's Secret"},
		{"unknown group", testKey, "127.0.0.21", Request{GroupID: 7}, nil, ReasonRejected, "group_id: The selected group id is invalid."},
		{"API down", testKey, "127.0.0.21", Request{GroupID: 100},
			[]natest.Fault{{Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}}, ReasonUnavailable, "HTTP 503"},
		{"garbage", testKey, "127.0.0.21", Request{GroupID: 100},
			[]natest.Fault{{Body: "<html>"}, {Body: "<html>"}, {Body: "<html>"}, {Body: "<html>"}, {Body: "<html>"}}, ReasonBadAnswer, "not the expected JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			api := startAPI(t)
			api.Inject(tc.faults...)
			p, _ := provisioner(t, api, tc.key, tc.node)
			st := p.Provision(context.Background(), tc.req, anycastv1.ProvisioningStatus{Claim: "edge"}, nil)
			if st.State != anycastv1.ProvisioningError || st.Reason != tc.reason || !strings.Contains(st.Message, tc.says) {
				t.Errorf("got %s %s %q, want Error %s saying %q", st.State, st.Reason, st.Message, tc.reason, tc.says)
			}
			if strings.Contains(st.Message, testKey) {
				t.Errorf("the key leaked into the status: %q", st.Message)
			}
			if api.Creates() != 0 {
				t.Errorf("created sessions despite the error")
			}
		})
	}
}

// TestProvisionIPAuthentication: without a key, the API knows the VM by the source address of the call, so the
// client calls from the node's address; from any other address it is refused.
func TestProvisionIPAuthentication(t *testing.T) {
	api := startAPI(t)
	api.IPAuth = true
	for _, tc := range []struct {
		from   string
		state  anycastv1.ProvisioningState
		reason string
	}{{"127.0.0.22", anycastv1.ProvisioningReady, ReasonReady}, {"127.0.0.77", anycastv1.ProvisioningError, ReasonUnauthorized}} {
		c, err := New(api.URL, "", net.ParseIP(tc.from))
		if err != nil {
			t.Fatal(err)
		}
		c.Backoff = time.Millisecond
		p := &Provisioner{Client: c, Clock: clocktesting.NewFakeClock(time.Now()), NodeAddrs: []netip.Addr{netip.MustParseAddr(tc.from)}}
		st := p.Provision(context.Background(), Request{GroupID: 100}, anycastv1.ProvisioningStatus{Claim: "edge"}, nil)
		if st.State != tc.state || st.Reason != tc.reason {
			t.Errorf("from %s: %s %s %q", tc.from, st.State, st.Reason, st.Message)
		}
	}
	for _, r := range api.Requests() {
		if strings.Contains(r, "key=") {
			t.Errorf("IP-based authentication sent a key: %s", r)
		}
	}
}

// TestProvisionIncompleteFamilies: sessions exist for IPv4 only although the claim asks for IPv6 as well: the
// provisioner uses them and says how to complete them, and does not ask again (that could duplicate IPv4).
func TestProvisionIncompleteFamilies(t *testing.T) {
	api := startAPI(t)
	p, _ := provisioner(t, api, testKey, "127.0.0.21")
	if st := p.Provision(context.Background(), Request{GroupID: 100}, anycastv1.ProvisioningStatus{Claim: "edge"}, nil); st.State != anycastv1.ProvisioningReady {
		t.Fatal(st)
	}
	st := p.Provision(context.Background(), Request{GroupID: 100, IPv6: true}, anycastv1.ProvisioningStatus{Claim: "edge"}, nil)
	if st.State != anycastv1.ProvisioningReady || st.Reason != ReasonMissingFamily || !strings.Contains(st.Message, "add the IPv6 sessions in the NetActuate portal") {
		t.Errorf("%+v", st)
	}
	if api.Creates() != 1 {
		t.Errorf("%d create calls, want 1", api.Creates())
	}
}
