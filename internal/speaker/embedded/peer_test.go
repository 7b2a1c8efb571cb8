package embedded

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"golang.org/x/sys/unix"
	"k8s.io/utils/ptr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// fakePeer is the far end of a session, speaking raw BGP, to see exactly what the speaker sends and to answer it
// the way a router might not.
type fakePeer struct {
	t *testing.T
	l *net.TCPListener
}

type fakeConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func listen(t *testing.T, addr netip.Addr) fakePeer {
	l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return fakePeer{t: t, l: l}
}

func (f fakePeer) port() uint16 { return uint16(f.l.Addr().(*net.TCPAddr).Port) }

func (f fakePeer) accept() fakeConn {
	f.t.Helper()
	_ = f.l.SetDeadline(time.Now().Add(time.Minute))
	c, err := f.l.Accept()
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = c.Close() })
	return fakeConn{t: f.t, c: c, r: bufio.NewReader(c)}
}

func (c fakeConn) read() message {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(time.Minute))
	m, err := readMessage(c.r)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

func (c fakeConn) send(m *bgp.BGPMessage) {
	c.t.Helper()
	b, err := m.Serialize()
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// expectNotification reads until a NOTIFICATION and checks its code and subcode.
func (c fakeConn) expectNotification(code, subcode uint8) {
	c.t.Helper()
	for {
		m := c.read()
		if m.typ != bgp.BGP_MSG_NOTIFICATION {
			continue
		}
		if n := m.msg.Body.(*bgp.BGPNotification); n.ErrorCode != code || n.ErrorSubcode != subcode {
			c.t.Fatalf("NOTIFICATION %d/%d, want %d/%d", n.ErrorCode, n.ErrorSubcode, code, subcode)
		}
		return
	}
}

func peerOpenMessage(t *testing.T, as uint32, hold uint16) *bgp.BGPMessage {
	t.Helper()
	m, err := bgp.NewBGPOpenMessage(uint16(min(as, asTrans)), hold, netip.MustParseAddr("192.0.2.9"), []bgp.OptionParameterInterface{
		bgp.NewOptionParameterCapability([]bgp.ParameterCapabilityInterface{bgp.NewCapMultiProtocol(bgp.RF_IPv4_UC), bgp.NewCapFourOctetASNumber(as)}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSessionSettingsOnTheWire: every session setting of the claim is in what the peer receives (OPEN, source
// address, port); a peer of the wrong AS is refused with the NOTIFICATION RFC 4271 names; a silent peer is dropped
// when the hold timer expires; Close ends the session with an administrative-shutdown Cease.
func TestSessionSettingsOnTheWire(t *testing.T) {
	far := netip.MustParseAddr("127.0.0.9")
	f := listen(t, far)
	s := New(node, logr.Discard())
	t.Cleanup(func() { _ = s.Close() })
	sess := speaker.Session{Claim: "edge", PeerAddress: far, PeerASN: 65009, LocalASN: 4200000001, Port: f.port(),
		LocalAddress: node, HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetry: time.Second,
		EBGPMultihop: 4, GracefulRestart: 120 * time.Second}
	if err := s.Apply(context.Background(), speaker.State{Sessions: []speaker.Session{sess}}).Error(); err != nil {
		t.Fatal(err)
	}

	c := f.accept()
	if got := c.c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != node {
		t.Errorf("the session comes from %s, want the local address %s", got, node)
	}
	m := c.read()
	o, ok := m.msg.Body.(*bgp.BGPOpen)
	if !ok {
		t.Fatalf("first message of type %d, want an OPEN", m.typ)
	}
	if o.MyAS != asTrans || o.HoldTime != 9 || o.ID != node {
		t.Errorf("OPEN: AS %d, hold time %d, ID %s; want AS_TRANS, 9, %s", o.MyAS, o.HoldTime, o.ID, node)
	}
	var mp []bgp.Family
	var as4 uint32
	var restart uint16
	refresh := false
	for _, p := range o.OptParams {
		for _, c := range p.(*bgp.OptionParameterCapability).Capability {
			switch c := c.(type) {
			case *bgp.CapMultiProtocol:
				mp = append(mp, c.CapValue)
			case *bgp.CapFourOctetASNumber:
				as4 = c.CapValue
			case *bgp.CapGracefulRestart:
				restart = c.Time
			case *bgp.CapRouteRefresh:
				refresh = true
			}
		}
	}
	if len(mp) != 2 || as4 != 4200000001 || restart != 120 || !refresh {
		t.Errorf("capabilities: multiprotocol %v, 4-octet AS %d, graceful restart %d s, route refresh %v", mp, as4, restart, refresh)
	}
	// The wrong AS: refused (OPEN message error, bad peer AS).
	c.send(peerOpenMessage(t, 65010, 90))
	c.expectNotification(bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_BAD_PEER_AS)

	// The right AS, a hold time of 3 s, then silence: the speaker drops the session when the hold timer expires.
	c = f.accept()
	c.read() // OPEN
	c.send(peerOpenMessage(t, 65009, 3))
	c.send(bgp.NewBGPKeepAliveMessage())
	if m := c.read(); m.typ != bgp.BGP_MSG_KEEPALIVE {
		t.Fatalf("message of type %d after the OPEN, want a KEEPALIVE", m.typ)
	}
	c.expectNotification(bgp.BGP_ERROR_HOLD_TIMER_EXPIRED, 0)

	// Hold time 0 (no keepalives), established; Close says why it ends the session.
	c = f.accept()
	c.read()
	c.send(peerOpenMessage(t, 65009, 0))
	c.send(bgp.NewBGPKeepAliveMessage())
	c.read() // KEEPALIVE
	waitEstablished(t, s, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c.expectNotification(bgp.BGP_ERROR_CEASE, bgp.BGP_ERROR_SUB_ADMINISTRATIVE_SHUTDOWN)
}

// TestTTL: an eBGP session leaves with TTL 1 (a directly connected peer is one hop away) or the claim's multihop
// TTL; an iBGP one with the system's.
func TestTTL(t *testing.T) {
	f := listen(t, routerA)
	for _, tc := range []struct {
		name     string
		peerASN  uint32
		multihop uint8
		want     int
	}{{"eBGP", 65001, 0, 1}, {"eBGP multihop", 65001, 4, 4}, {"iBGP", 64512, 0, -1}} {
		t.Run(tc.name, func(t *testing.T) {
			s := speaker.Session{PeerAddress: routerA, PeerASN: tc.peerASN, LocalASN: 64512, Port: f.port(), LocalAddress: node, EBGPMultihop: tc.multihop}
			c, err := dial(context.Background(), s, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sc, err := c.(*net.TCPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var ttl int
			var serr error
			if err := sc.Control(func(fd uintptr) { ttl, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL) }); err != nil || serr != nil {
				t.Fatal(err, serr)
			}
			if tc.want < 0 {
				if ttl <= 1 {
					t.Errorf("iBGP TTL %d, want the system's", ttl)
				}
			} else if ttl != tc.want {
				t.Errorf("TTL %d, want %d", ttl, tc.want)
			}
		})
	}
}

// TestRemovingASessionToAPeerThatStoppedReading: a peer that no longer reads leaves the session's writes blocked;
// removing the session still ends it within twice ceaseTimeout, not after a write's whole timeout, so one stuck
// peer cannot hold up the Apply that carries every other session's routes.
func TestRemovingASessionToAPeerThatStoppedReading(t *testing.T) {
	far := netip.MustParseAddr("127.0.0.9")
	l, err := (&net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}).Listen(context.Background(), "tcp", netip.AddrPortFrom(far, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	f := fakePeer{t: t, l: l.(*net.TCPListener)}
	s := New(node, logr.Discard())
	t.Cleanup(func() { _ = s.Close() })
	sess := speaker.Session{Claim: "edge", PeerAddress: far, PeerASN: 65009, LocalASN: 64512, Port: f.port(), LocalAddress: node,
		ConnectRetry: time.Second}
	// Enough routes that their UPDATEs cannot all fit in the socket buffers.
	var routes []speaker.Route
	var exports []netip.Prefix
	for i := range 100000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(10 + i>>16), byte(i >> 8), byte(i), 0}), 24)
		r, err := speaker.RouteFor(p, []string{"edge"}, &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:1"}}, false)
		if err != nil {
			t.Fatal(err)
		}
		routes, exports = append(routes, r), append(exports, p)
	}
	st := speaker.State{Sessions: []speaker.Session{sess}, Exports: map[string][]netip.Prefix{"edge": exports}, Routes: routes}
	if err := s.Apply(context.Background(), st).Error(); err != nil {
		t.Fatal(err)
	}
	c := f.accept()
	c.read() // OPEN
	c.send(peerOpenMessage(t, 65009, 0))
	c.send(bgp.NewBGPKeepAliveMessage())
	waitEstablished(t, s, 1)
	// The peer reads nothing more: the table's UPDATEs fill its window and the speaker's buffer.
	start := time.Now()
	st.Sessions = nil
	if err := s.Apply(context.Background(), st).Error(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= writeTimeout {
		t.Errorf("removing the session took %s, a write's whole timeout", took)
	}
	if got, _ := s.Sessions(context.Background()); len(got) != 0 {
		t.Errorf("sessions left: %+v", got)
	}
}

// TestOldPeerAndRouteRefresh: a peer without the 4-octet AS capability gets its AS_PATH in 2-octet form, and a
// ROUTE-REFRESH from it brings the family's routes again.
func TestOldPeerAndRouteRefresh(t *testing.T) {
	far := netip.MustParseAddr("127.0.0.9")
	f := listen(t, far)
	s := New(node, logr.Discard())
	t.Cleanup(func() { _ = s.Close() })
	sess := speaker.Session{Claim: "edge", PeerAddress: far, PeerASN: 65009, LocalASN: 64512, Port: f.port(), LocalAddress: node,
		ConnectRetry: time.Second}
	r, err := speaker.RouteFor(dns, []string{"edge"}, &anycastv1.BGPAttributes{ASPathPrepend: ptr.To[int32](1)}, false)
	if err != nil {
		t.Fatal(err)
	}
	st := speaker.State{Sessions: []speaker.Session{sess}, Exports: map[string][]netip.Prefix{"edge": {dns}}, Routes: []speaker.Route{r}}
	if err := s.Apply(context.Background(), st).Error(); err != nil {
		t.Fatal(err)
	}
	c := f.accept()
	c.read() // OPEN
	old, err := bgp.NewBGPOpenMessage(65009, 90, netip.MustParseAddr("192.0.2.9"), []bgp.OptionParameterInterface{
		bgp.NewOptionParameterCapability([]bgp.ParameterCapabilityInterface{bgp.NewCapMultiProtocol(bgp.RF_IPv4_UC), bgp.NewCapRouteRefresh()})})
	if err != nil {
		t.Fatal(err)
	}
	c.send(old)
	c.send(bgp.NewBGPKeepAliveMessage())
	// nextUpdate reads up to the next UPDATE and decodes it as a router without 4-octet AS numbers would.
	nextUpdate := func() *bgp.BGPUpdate {
		t.Helper()
		for {
			_ = c.c.SetReadDeadline(time.Now().Add(time.Minute))
			var hdr [bgp.BGP_HEADER_LENGTH]byte
			if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
				t.Fatal(err)
			}
			body := make([]byte, int(binary.BigEndian.Uint16(hdr[16:18]))-bgp.BGP_HEADER_LENGTH)
			if _, err := io.ReadFull(c.r, body); err != nil {
				t.Fatal(err)
			}
			if hdr[18] != bgp.BGP_MSG_UPDATE {
				continue
			}
			m, err := bgp.ParseBGPBody(&bgp.BGPHeader{Marker: hdr[:16], Len: uint16(len(body) + bgp.BGP_HEADER_LENGTH), Type: hdr[18]}, body,
				&bgp.MarshallingOption{Use2ByteAS: true})
			if err != nil {
				t.Fatalf("a 2-octet-AS router cannot decode the UPDATE: %v", err)
			}
			return m.Body.(*bgp.BGPUpdate)
		}
	}
	check := func(what string, u *bgp.BGPUpdate) {
		t.Helper()
		if len(u.NLRI) != 1 || u.NLRI[0].NLRI.String() != dns.String() {
			t.Fatalf("%s: UPDATE for %v, want %s", what, u.NLRI, dns)
		}
		for _, a := range u.PathAttributes {
			if p, ok := a.(*bgp.PathAttributeAsPath); ok {
				seg, ok := p.Value[0].(*bgp.AsPathParam)
				if len(p.Value) != 1 || !ok || len(seg.AS) != 2 || seg.AS[0] != 64512 || seg.AS[1] != 64512 {
					t.Errorf("%s: AS_PATH %v, want 64512 64512 in 2-octet form", what, p)
				}
				return
			}
		}
		t.Errorf("%s: no AS_PATH", what)
	}
	check("initial table", nextUpdate())
	if eor, _ := nextUpdate().IsEndOfRib(); !eor {
		t.Error("no End-of-RIB after the initial table")
	}
	c.send(bgp.NewBGPRouteRefreshMessage(bgp.AFI_IP, 0, bgp.SAFI_UNICAST))
	check("after a route refresh", nextUpdate())
}
