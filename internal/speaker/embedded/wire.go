package embedded

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// The messages this speaker sends and the few it reads, built with GoBGP's packet package (the wire format alone:
// no server, no gRPC). UPDATEs from peers are never decoded: the speaker originates routes and learns none.

const asTrans = 23456 // RFC 6793: the 2-octet stand-in for a 4-octet AS number

// families are the address families every session offers (multiprotocol BGP, RFC 4760): one session carries a
// claim's IPv4 and IPv6 prefixes whatever its transport; a family the peer does not offer is not negotiated.
var families = []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC}

func familyOf(p netip.Prefix) bgp.Family {
	if p.Addr().Is4() {
		return bgp.RF_IPv4_UC
	}
	return bgp.RF_IPv6_UC
}

// openMessage is the OPEN of a session: the 4-octet AS, both unicast families, route refresh and, when the claim
// sets it, graceful restart with its restart time (forwarding state not preserved).
func openMessage(s speaker.Session, routerID netip.Addr) (*bgp.BGPMessage, error) {
	myAS := uint16(asTrans)
	if s.LocalASN <= 0xffff {
		myAS = uint16(s.LocalASN)
	}
	caps := []bgp.ParameterCapabilityInterface{}
	for _, f := range families {
		caps = append(caps, bgp.NewCapMultiProtocol(f))
	}
	caps = append(caps, bgp.NewCapRouteRefresh(), bgp.NewCapFourOctetASNumber(s.LocalASN))
	if s.GracefulRestart > 0 {
		tuples := make([]*bgp.CapGracefulRestartTuple, 0, len(families))
		for _, f := range families {
			tuples = append(tuples, bgp.NewCapGracefulRestartTuple(f, false))
		}
		caps = append(caps, bgp.NewCapGracefulRestart(false, false, uint16(min(s.GracefulRestart.Seconds(), 4095)), tuples))
	}
	return bgp.NewBGPOpenMessage(myAS, holdSeconds(s.HoldTime), routerID, []bgp.OptionParameterInterface{bgp.NewOptionParameterCapability(caps)})
}

func holdSeconds(d time.Duration) uint16 { return uint16(min(d.Seconds(), 65535)) }

// peerOpen is what a peer's OPEN says that matters here.
type peerOpen struct {
	as       uint32
	hold     time.Duration
	id       netip.Addr
	families map[bgp.Family]bool
	as4      bool
}

// readOpen decodes a peer's OPEN and checks it against the session, returning the NOTIFICATION to send when it is
// refused.
func readOpen(m *bgp.BGPMessage, s speaker.Session, routerID netip.Addr) (peerOpen, *bgp.BGPMessage, error) {
	o, ok := m.Body.(*bgp.BGPOpen)
	if !ok {
		return peerOpen{}, notification(bgp.BGP_ERROR_FSM_ERROR, bgp.BGP_ERROR_SUB_RECEIVE_UNEXPECTED_MESSAGE_IN_OPENSENT_STATE),
			fmt.Errorf("the peer sent message type %d before its OPEN", m.Header.Type)
	}
	po := peerOpen{as: uint32(o.MyAS), hold: time.Duration(o.HoldTime) * time.Second, id: o.ID, families: map[bgp.Family]bool{}}
	for _, p := range o.OptParams {
		c, ok := p.(*bgp.OptionParameterCapability)
		if !ok {
			continue
		}
		for _, cap := range c.Capability {
			switch cap := cap.(type) {
			case *bgp.CapMultiProtocol:
				po.families[cap.CapValue] = true
			case *bgp.CapFourOctetASNumber:
				po.as, po.as4 = cap.CapValue, true
			}
		}
	}
	if len(po.families) == 0 {
		po.families[bgp.RF_IPv4_UC] = true // RFC 4760: a peer without the capability speaks IPv4 unicast only
	}
	switch {
	case o.Version != 4:
		return po, notification(bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_UNSUPPORTED_VERSION_NUMBER), fmt.Errorf("the peer speaks BGP version %d", o.Version)
	case po.as != s.PeerASN:
		return po, notification(bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_BAD_PEER_AS), fmt.Errorf("the peer is AS %d, the claim says AS %d", po.as, s.PeerASN)
	case po.hold > 0 && po.hold < 3*time.Second:
		return po, notification(bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_UNACCEPTABLE_HOLD_TIME), fmt.Errorf("the peer's hold time %s is under 3 s", po.hold)
	case !po.id.Is4() || po.id.IsUnspecified() || s.PeerASN == s.LocalASN && po.id == routerID:
		return po, notification(bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_BAD_BGP_IDENTIFIER), fmt.Errorf("the peer's BGP identifier %s is unusable", po.id)
	case !po.as4 && s.LocalASN > 0xffff:
		return po, notification(bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_UNSUPPORTED_CAPABILITY),
			fmt.Errorf("the peer does not support 4-octet AS numbers, and the local AS %d needs them", s.LocalASN)
	}
	return po, nil, nil
}

func notification(code, subcode uint8) *bgp.BGPMessage {
	return bgp.NewBGPNotificationMessage(code, subcode, nil)
}

// out is a route as one session sends it: the route and its next hop on that session.
type out struct {
	route   speaker.Route
	nextHop netip.Addr
}

func (o out) equal(x out) bool { return o.nextHop == x.nextHop && o.route.Equal(x.route) }

// updateMessage announces one route to a peer. An iBGP peer (in the session's own AS) gets LOCAL_PREF and no local
// AS in the path; as4 says the peer takes 4-octet AS numbers.
func updateMessage(o out, s speaker.Session, as4 bool) (*bgp.BGPMessage, error) {
	r := o.route
	ibgp := s.PeerASN == s.LocalASN
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	n := r.Prepend
	if !ibgp {
		n++ // the speaker's own AS, once, on eBGP; Prepend counts the extra copies
	}
	var segments []bgp.AsPathParamInterface
	if n > 0 {
		if as4 {
			segments = append(segments, bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, slices.Repeat([]uint32{s.LocalASN}, n)))
		} else {
			segments = append(segments, bgp.NewAsPathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, slices.Repeat([]uint16{uint16(s.LocalASN)}, n)))
		}
	}
	attrs = append(attrs, bgp.NewPathAttributeAsPath(segments))
	if r.Prefix.Addr().Is4() {
		nh, err := bgp.NewPathAttributeNextHop(o.nextHop)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	}
	if r.MED != nil {
		attrs = append(attrs, bgp.NewPathAttributeMultiExitDisc(*r.MED))
	}
	if ibgp {
		// RFC 4271 5.1.5: LOCAL_PREF goes to internal peers only; 100 is every router's default.
		lp := uint32(100)
		if r.LocalPref != nil {
			lp = *r.LocalPref
		}
		attrs = append(attrs, bgp.NewPathAttributeLocalPref(lp))
	}
	if len(r.Communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(r.Communities))
	}
	nlri, err := bgp.NewIPAddrPrefix(r.Prefix)
	if err != nil {
		return nil, err
	}
	var reach []bgp.PathNLRI
	if r.Prefix.Addr().Is4() {
		reach = []bgp.PathNLRI{{NLRI: nlri}}
	} else {
		mp, err := bgp.NewPathAttributeMpReachNLRI(bgp.RF_IPv6_UC, []bgp.PathNLRI{{NLRI: nlri}}, o.nextHop)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, mp)
	}
	if len(r.LargeCommunities) > 0 {
		lc := make([]*bgp.LargeCommunity, len(r.LargeCommunities))
		for i, c := range r.LargeCommunities {
			lc[i] = bgp.NewLargeCommunity(c[0], c[1], c[2])
		}
		attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(lc))
	}
	return bgp.NewBGPUpdateMessage(nil, attrs, reach), nil
}

// withdrawMessages withdraws prefixes of one family, as many per UPDATE as fit well under 4096 bytes.
func withdrawMessages(f bgp.Family, prefixes []netip.Prefix) ([]*bgp.BGPMessage, error) {
	const perMessage = 200 // ≤ 17 bytes each for IPv6
	var msgs []*bgp.BGPMessage
	for chunk := range slices.Chunk(prefixes, perMessage) {
		nlris := make([]bgp.PathNLRI, 0, len(chunk))
		for _, p := range chunk {
			n, err := bgp.NewIPAddrPrefix(p)
			if err != nil {
				return nil, err
			}
			nlris = append(nlris, bgp.PathNLRI{NLRI: n})
		}
		if f == bgp.RF_IPv4_UC {
			msgs = append(msgs, bgp.NewBGPUpdateMessage(nlris, nil, nil))
			continue
		}
		mp, err := bgp.NewPathAttributeMpUnreachNLRI(f, nlris)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, bgp.NewBGPUpdateMessage(nil, []bgp.PathAttributeInterface{mp}, nil))
	}
	return msgs, nil
}

// message is one message read from a peer: its type, and its body decoded unless it is an UPDATE.
type message struct {
	typ uint8
	msg *bgp.BGPMessage
}

var errBadHeader = errors.New("bad BGP message header")

// readMessage reads one whole message. UPDATE bodies are skipped undecoded: nothing a peer announces is used.
func readMessage(r *bufio.Reader) (message, error) {
	var hdr [bgp.BGP_HEADER_LENGTH]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return message{}, err
	}
	for _, b := range hdr[:16] {
		if b != 0xff {
			return message{}, errBadHeader
		}
	}
	length := int(binary.BigEndian.Uint16(hdr[16:18]))
	typ := hdr[18]
	// RFC 8654 lets an UPDATE be up to 65535 bytes once the extended message capability is negotiated; this
	// speaker does not offer it, but reading what the length says costs nothing.
	if length < bgp.BGP_HEADER_LENGTH {
		return message{}, errBadHeader
	}
	body := make([]byte, length-bgp.BGP_HEADER_LENGTH)
	if _, err := io.ReadFull(r, body); err != nil {
		return message{}, err
	}
	if typ == bgp.BGP_MSG_UPDATE {
		return message{typ: typ}, nil
	}
	h := &bgp.BGPHeader{Marker: hdr[:16], Len: uint16(length), Type: typ}
	m, err := bgp.ParseBGPBody(h, body)
	if err != nil {
		return message{typ: typ}, fmt.Errorf("decoding a message of type %d: %w", typ, err)
	}
	return message{typ: typ, msg: m}, nil
}

// notificationError describes a NOTIFICATION a peer sent.
func notificationError(m *bgp.BGPMessage) error {
	n, ok := m.Body.(*bgp.BGPNotification)
	if !ok {
		return errors.New("the peer sent a NOTIFICATION")
	}
	return fmt.Errorf("the peer sent a NOTIFICATION: code %d, subcode %d%s", n.ErrorCode, n.ErrorSubcode, notificationText(n))
}

// notificationText is the shutdown communication of a Cease (RFC 9003), which routers use to say why.
func notificationText(n *bgp.BGPNotification) string {
	if n.ErrorCode != bgp.BGP_ERROR_CEASE || len(n.Data) < 2 || int(n.Data[0]) > len(n.Data)-1 {
		return ""
	}
	return fmt.Sprintf(" (%q)", n.Data[1:1+int(n.Data[0])])
}
