package embedded

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/osrg/gobgp/v4/api"

	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// TestSessionSettingsReachGoBGP: every session setting of the claim is in the peer GoBGP runs.
func TestSessionSettingsReachGoBGP(t *testing.T) {
	s := New(node, logr.Discard())
	t.Cleanup(func() { _ = s.Close() })
	sess := speaker.Session{Claim: "edge", PeerAddress: netip.MustParseAddr("127.0.0.9"), PeerASN: 65009, LocalASN: 4200000001, Port: 1179,
		LocalAddress: node, Password: "pw", HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetry: 7 * time.Second,
		EBGPMultihop: 4, GracefulRestart: 120 * time.Second}
	if err := s.Apply(context.Background(), speaker.State{Sessions: []speaker.Session{sess}}).Error(); err != nil {
		t.Fatal(err)
	}
	var got *api.Peer
	if err := s.bgp.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) { got = p }); err != nil || got == nil {
		t.Fatalf("ListPeer: %v, %v", got, err)
	}
	c := got.GetConf()
	tc := got.GetTimers().GetConfig()
	if c.GetPeerAsn() != 65009 || c.GetLocalAsn() != 4200000001 || c.GetAuthPassword() != "pw" ||
		got.GetTransport().GetRemotePort() != 1179 || got.GetTransport().GetLocalAddress() != "127.0.0.2" ||
		tc.GetHoldTime() != 9 || tc.GetKeepaliveInterval() != 3 || tc.GetConnectRetry() != 7 ||
		!got.GetEbgpMultihop().GetEnabled() || got.GetEbgpMultihop().GetMultihopTtl() != 4 ||
		!got.GetGracefulRestart().GetEnabled() || got.GetGracefulRestart().GetRestartTime() != 120 {
		t.Errorf("GoBGP runs the peer as %v", got)
	}
}
