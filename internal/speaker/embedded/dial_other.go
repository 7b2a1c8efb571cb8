//go:build !linux

package embedded

import (
	"context"
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// dial opens a session's TCP connection. TCP MD5 and the eBGP TTL need Linux's socket options; elsewhere a
// session with a password is refused and the system's TTL is used.
func dial(ctx context.Context, s speaker.Session, timeout time.Duration) (net.Conn, error) {
	if s.Password != "" {
		return nil, errors.New("TCP MD5 passwords need Linux")
	}
	port := s.Port
	if port == 0 {
		port = 179
	}
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	if s.LocalAddress.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: s.LocalAddress.AsSlice()}
	}
	return d.DialContext(ctx, "tcp", net.JoinHostPort(s.PeerAddress.String(), strconv.Itoa(int(port))))
}
