package embedded

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

const (
	// openHold bounds the wait for the peer's OPEN and first KEEPALIVE when the session has no hold time of its
	// own (RFC 4271 suggests a large hold timer there).
	openHold = 90 * time.Second
	// writeTimeout bounds every write: a peer that stops reading ends its session, never the speaker.
	writeTimeout = 10 * time.Second
	// ceaseTimeout bounds the NOTIFICATION sent when a session is removed or the speaker closes.
	ceaseTimeout = time.Second
)

// peer runs one BGP session on its own goroutine: it connects out, negotiates, sends the routes it is handed and
// keeps the session alive, reconnecting after the session's connect-retry time when it fails. Apply only hands
// it the routes it should hold (the latest replaces any not yet sent) and never waits on the network.
type peer struct {
	s        speaker.Session
	routerID netip.Addr
	log      logr.Logger
	kick     chan struct{} // a new rib is waiting; capacity 1
	cancel   context.CancelFunc
	done     chan struct{}

	mu    sync.Mutex
	rib   map[netip.Prefix]out
	state anycastv1.SessionState
	local netip.Addr // the connection's local address, once connected
	conn  net.Conn   // the connection, while there is one
	cease uint8      // the Cease subcode sent when the session is stopped
}

func startPeer(s speaker.Session, routerID netip.Addr, rib map[netip.Prefix]out, log logr.Logger) *peer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &peer{s: s, routerID: routerID, log: log.WithValues("claim", s.Claim, "peer", s.PeerAddress), kick: make(chan struct{}, 1),
		cancel: cancel, done: make(chan struct{}), rib: rib, state: anycastv1.SessionIdle, cease: bgp.BGP_ERROR_SUB_PEER_DECONFIGURED}
	go p.run(ctx)
	return p
}

// setRIB hands the session the routes it should hold now.
func (p *peer) setRIB(rib map[netip.Prefix]out) {
	p.mu.Lock()
	p.rib = rib
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// stop ends the session with a Cease of the given subcode and waits for its goroutine. A session caught in a write
// to a peer that stopped reading gets ceaseTimeout to notice, then its connection is closed under it: stopping
// takes at most twice ceaseTimeout, never a write's whole timeout.
func (p *peer) stop(subcode uint8) {
	p.mu.Lock()
	p.cease = subcode
	p.mu.Unlock()
	p.cancel()
	t := time.NewTimer(2 * ceaseTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		return
	case <-t.C:
	}
	p.mu.Lock()
	if p.conn != nil {
		_ = p.conn.Close()
	}
	p.mu.Unlock()
	<-p.done
}

func (p *peer) status() speaker.SessionStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	local := p.local
	if !local.IsValid() {
		local = p.s.LocalAddress
	}
	st := speaker.SessionStatus{Claim: p.s.Claim, PeerAddress: p.s.PeerAddress.String(), PeerASN: p.s.PeerASN, State: p.state}
	if local.IsValid() {
		st.LocalAddress = local.String()
	}
	return st
}

func (p *peer) setState(s anycastv1.SessionState) {
	p.mu.Lock()
	p.state = s
	p.mu.Unlock()
}

func (p *peer) run(ctx context.Context) {
	defer close(p.done)
	retry := max(p.s.ConnectRetry, time.Second)
	for {
		p.setState(anycastv1.SessionConnect)
		conn, err := dial(ctx, p.s, retry)
		established := false
		if err == nil {
			established, err = p.session(ctx, conn)
			_ = conn.Close()
		}
		p.mu.Lock()
		p.local, p.conn = netip.Addr{}, nil
		p.mu.Unlock()
		if ctx.Err() != nil {
			p.setState(anycastv1.SessionIdle)
			return
		}
		if established {
			p.log.Info("BGP session down", "error", err.Error())
		} else {
			p.log.V(1).Info("BGP session not established", "error", err.Error())
		}
		p.setState(anycastv1.SessionActive)
		// Jittered as RFC 4271 asks, so that the nodes of a site do not all reconnect in step.
		t := time.NewTimer(time.Duration(float64(retry) * (0.75 + 0.25*rand.Float64())))
		select {
		case <-ctx.Done():
			t.Stop()
			p.setState(anycastv1.SessionIdle)
			return
		case <-t.C:
		}
	}
}

// conn is an open session's connection with the helpers every phase uses.
type conn struct {
	net.Conn
	r *bufio.Reader
}

func (c conn) send(m *bgp.BGPMessage) error {
	b, err := m.Serialize()
	if err != nil {
		return fmt.Errorf("encoding a message: %w", err)
	}
	_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	return nil
}

// session runs one connection from OPEN to its end. It reports whether the session was established, and why it
// ended.
func (p *peer) session(ctx context.Context, nc net.Conn) (bool, error) {
	c := conn{Conn: nc, r: bufio.NewReader(nc)}
	p.mu.Lock()
	p.conn = nc
	if a, ok := nc.LocalAddr().(*net.TCPAddr); ok {
		p.local = speaker.Canonical(a.AddrPort().Addr())
	}
	p.mu.Unlock()
	// Until established, a cancelled context unblocks the reads at once.
	unblock := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Now()) })
	defer unblock()

	p.setState(anycastv1.SessionOpenSent)
	open, err := openMessage(p.s, p.routerID)
	if err != nil {
		return false, err
	}
	if err := c.send(open); err != nil {
		return false, err
	}
	wait := openHold
	if p.s.HoldTime > 0 {
		wait = p.s.HoldTime
	}
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	m, err := readMessage(c.r)
	if err != nil {
		return false, p.ended(ctx, c, fmt.Errorf("waiting for the peer's OPEN: %w", err))
	}
	if m.typ == bgp.BGP_MSG_NOTIFICATION {
		return false, notificationError(m.msg)
	}
	if m.typ != bgp.BGP_MSG_OPEN {
		_ = c.send(notification(bgp.BGP_ERROR_FSM_ERROR, bgp.BGP_ERROR_SUB_RECEIVE_UNEXPECTED_MESSAGE_IN_OPENSENT_STATE))
		return false, fmt.Errorf("the peer sent message type %d before its OPEN", m.typ)
	}
	po, refusal, err := readOpen(m.msg, p.s, p.routerID)
	if err != nil {
		_ = c.send(refusal)
		return false, err
	}
	hold := min(p.s.HoldTime.Truncate(time.Second), po.hold)
	if p.s.HoldTime == 0 || po.hold == 0 {
		hold = 0 // RFC 4271 4.4: a hold time of zero on either side means no keepalives at all
	}

	p.setState(anycastv1.SessionOpenConfirm)
	if err := c.send(bgp.NewBGPKeepAliveMessage()); err != nil {
		return false, err
	}
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	m, err = readMessage(c.r)
	switch {
	case err != nil:
		return false, p.ended(ctx, c, fmt.Errorf("waiting for the peer's KEEPALIVE: %w", err))
	case m.typ == bgp.BGP_MSG_NOTIFICATION:
		return false, notificationError(m.msg)
	case m.typ != bgp.BGP_MSG_KEEPALIVE:
		_ = c.send(notification(bgp.BGP_ERROR_FSM_ERROR, bgp.BGP_ERROR_SUB_RECEIVE_UNEXPECTED_MESSAGE_IN_OPENCONFIRM_STATE))
		return false, fmt.Errorf("the peer sent message type %d instead of a KEEPALIVE", m.typ)
	}
	if !unblock() {
		return false, p.ended(ctx, c, ctx.Err())
	}
	p.setState(anycastv1.SessionEstablished)
	p.log.Info("BGP session established", "localAddress", nc.LocalAddr().String(), "holdTime", hold)
	return true, p.established(ctx, c, po, hold)
}

// ended is the error a session ends with; when the speaker stopped it, it first tells the peer with a Cease.
func (p *peer) ended(ctx context.Context, c conn, err error) error {
	if ctx.Err() == nil {
		return err
	}
	p.mu.Lock()
	sub := p.cease
	p.mu.Unlock()
	_ = c.SetWriteDeadline(time.Now().Add(ceaseTimeout))
	if b, e := notification(bgp.BGP_ERROR_CEASE, sub).Serialize(); e == nil {
		_, _ = c.Write(b)
	}
	return context.Cause(ctx)
}

type received struct {
	m   message
	err error
}

func (p *peer) established(ctx context.Context, c conn, po peerOpen, hold time.Duration) error {
	events := make(chan received)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		for {
			// Any message from the peer restarts the hold timer.
			if hold > 0 {
				_ = c.SetReadDeadline(time.Now().Add(hold))
			} else {
				_ = c.SetReadDeadline(time.Time{})
			}
			m, err := readMessage(c.r)
			select {
			case events <- received{m, err}:
			case <-quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var keepalive <-chan time.Time
	if hold > 0 {
		every := hold / 3
		if k := p.s.KeepaliveTime.Truncate(time.Second); k > 0 && k < every {
			every = k
		}
		t := time.NewTicker(max(every, time.Second))
		defer t.Stop()
		keepalive = t.C
	}

	sent := map[netip.Prefix]out{}
	if err := p.sync(c, po, sent); err != nil {
		return err
	}
	// End-of-RIB (RFC 4724): the peer knows the initial table is complete; graceful-restart helpers drop stale
	// routes then.
	for _, f := range families {
		if po.families[f] {
			if err := c.send(bgp.NewEndOfRib(f)); err != nil {
				return err
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return p.ended(ctx, c, nil)
		case <-p.kick:
			if err := p.sync(c, po, sent); err != nil {
				return err
			}
		case <-keepalive:
			if err := c.send(bgp.NewBGPKeepAliveMessage()); err != nil {
				return err
			}
		case ev := <-events:
			if ev.err != nil {
				var ne net.Error
				if errors.As(ev.err, &ne) && ne.Timeout() || errors.Is(ev.err, os.ErrDeadlineExceeded) {
					_ = c.send(notification(bgp.BGP_ERROR_HOLD_TIMER_EXPIRED, 0))
					return fmt.Errorf("hold timer expired: nothing from the peer in %s", hold)
				}
				return fmt.Errorf("reading from the peer: %w", ev.err)
			}
			switch ev.m.typ {
			case bgp.BGP_MSG_NOTIFICATION:
				return notificationError(ev.m.msg)
			case bgp.BGP_MSG_ROUTE_REFRESH:
				// Send the family again, whole (RFC 2918).
				if rr, ok := ev.m.msg.Body.(*bgp.BGPRouteRefresh); ok {
					f := bgp.NewFamily(rr.AFI, rr.SAFI)
					maps.DeleteFunc(sent, func(pfx netip.Prefix, _ out) bool { return familyOf(pfx) == f })
				}
				if err := p.sync(c, po, sent); err != nil {
					return err
				}
			case bgp.BGP_MSG_OPEN:
				_ = c.send(notification(bgp.BGP_ERROR_FSM_ERROR, bgp.BGP_ERROR_SUB_RECEIVE_UNEXPECTED_MESSAGE_IN_ESTABLISHED_STATE))
				return errors.New("the peer sent an OPEN on an established session")
			}
		}
	}
}

// sync sends the peer what changed between what it was sent and the session's rib: withdrawals first, then each
// new or changed route (a new UPDATE for a prefix replaces the old path). Families the peer did not negotiate are
// never sent.
func (p *peer) sync(c conn, po peerOpen, sent map[netip.Prefix]out) error {
	p.mu.Lock()
	rib, local := p.rib, p.local
	p.mu.Unlock()
	gone := map[bgp.Family][]netip.Prefix{}
	for pfx := range sent {
		if _, ok := rib[pfx]; !ok {
			gone[familyOf(pfx)] = append(gone[familyOf(pfx)], pfx)
		}
	}
	for _, f := range families {
		if len(gone[f]) == 0 {
			continue
		}
		slices.SortFunc(gone[f], speaker.ComparePrefixes)
		msgs, err := withdrawMessages(f, gone[f])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if err := c.send(m); err != nil {
				return err
			}
		}
		for _, pfx := range gone[f] {
			delete(sent, pfx)
		}
	}
	for _, pfx := range slices.SortedFunc(maps.Keys(rib), speaker.ComparePrefixes) {
		o := rib[pfx]
		if !po.families[familyOf(pfx)] {
			continue
		}
		if cur, ok := sent[pfx]; ok && cur.equal(o) {
			continue
		}
		wire := o
		if !wire.nextHop.IsValid() {
			wire.nextHop = local // same family: the session's own address
		}
		m, err := updateMessage(wire, p.s, po.as4)
		if err != nil {
			p.log.Error(err, "Route not sent", "prefix", pfx)
			continue
		}
		if err := c.send(m); err != nil {
			return err
		}
		sent[pfx] = o
	}
	return nil
}
