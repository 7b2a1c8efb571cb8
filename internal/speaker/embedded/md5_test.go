package embedded

import (
	"context"
	"net/netip"
	"testing"

	"github.com/go-logr/logr"

	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

// TestMD5Password: a router that requires a TCP MD5 password accepts the session only with the right one.
func TestMD5Password(t *testing.T) {
	r := bgptest.StartWithPassword(t, routerA, 65001, map[netip.Addr]uint32{node: 64512}, "s3cret")
	s := New(node, logr.Discard())
	t.Cleanup(func() { _ = s.Close() })
	sess := session("transit-a", r)
	sess.Password = "s3cret"
	route, err := speaker.RouteFor(dns, []string{"transit-a"}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(context.Background(), speaker.State{Sessions: []speaker.Session{sess}, Exports: map[string][]netip.Prefix{"transit-a": {dns}}, Routes: []speaker.Route{route}}).Error(); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, 1)
	r.WaitFor(t, dns, "announced over the MD5 session", func(p []bgptest.Path) bool { return len(p) == 1 })
}
