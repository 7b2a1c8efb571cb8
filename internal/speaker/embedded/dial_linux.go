package embedded

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// dial opens a session's TCP connection: from its local address, with its TCP MD5 password (RFC 2385) and, on
// eBGP, a TTL of 1 or the claim's multihop TTL (as routers do: a directly connected eBGP peer is one hop away).
// The socket options are set before the SYN leaves.
func dial(ctx context.Context, s speaker.Session, timeout time.Duration) (net.Conn, error) {
	port := s.Port
	if port == 0 {
		port = 179
	}
	d := net.Dialer{Timeout: timeout, KeepAlive: -1, Control: func(network, address string, c syscall.RawConn) error {
		return control(c, s)
	}}
	if s.LocalAddress.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: s.LocalAddress.AsSlice()}
	}
	return d.DialContext(ctx, "tcp", net.JoinHostPort(s.PeerAddress.String(), strconv.Itoa(int(port))))
}

func control(c syscall.RawConn, s speaker.Session) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		if s.Password != "" {
			if err = unix.SetsockoptTCPMD5Sig(int(fd), unix.IPPROTO_TCP, unix.TCP_MD5SIG, md5Sig(s.PeerAddress, s.Password)); err != nil {
				err = fmt.Errorf("setting the TCP MD5 password: %w", err)
				return
			}
		}
		if ttl := ttlOf(s); ttl > 0 {
			if s.PeerAddress.Is4() {
				err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl)
			} else {
				err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttl)
			}
			if err != nil {
				err = fmt.Errorf("setting the TTL to %d: %w", ttl, err)
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// ttlOf is the TTL of a session's packets: 0 (the system's) on iBGP, the multihop TTL or 1 on eBGP.
func ttlOf(s speaker.Session) int {
	switch {
	case s.PeerASN == s.LocalASN:
		return 0
	case s.EBGPMultihop > 0:
		return int(s.EBGPMultihop)
	default:
		return 1
	}
}

func md5Sig(peer netip.Addr, password string) *unix.TCPMD5Sig {
	sig := &unix.TCPMD5Sig{Keylen: uint16(len(password))}
	if peer.Is4() {
		sig.Addr.Family = unix.AF_INET
		a := peer.As4()
		copy(sig.Addr.Data[2:], a[:]) // after the port, as in a sockaddr_in
	} else {
		sig.Addr.Family = unix.AF_INET6
		a := peer.As16()
		copy(sig.Addr.Data[6:], a[:]) // after the port and the flow info, as in a sockaddr_in6
	}
	copy(sig.Key[:], password)
	return sig
}
