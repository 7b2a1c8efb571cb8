// Package netlab builds small networks for tests: a router's network namespace joined to the host by a veth pair,
// with test addresses of both families on each end, so that what a router receives (next hops, IPv6) is what it
// would receive on a real link, which loopback hides. Everything it creates is removed when the test ends, and what
// an interrupted run left behind is removed by the next one. It needs root and iproute2's ip.
package netlab

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// prefix names everything the package creates; the creating process's PID follows it, so a later run can tell
// what an interrupted one left behind.
const prefix = "anylab"

// Lab is one link: the host's end carries the nodes' addresses, the namespace's end the router's.
type Lab struct {
	// Netns is the name of the router's network namespace; NetnsPath its path.
	Netns, NetnsPath string
	// HostIf and RouterIf are the two ends of the veth pair.
	HostIf, RouterIf string
	// Nodes4 and Nodes6 are the nodes' addresses on the host's end (one of each family per node).
	Nodes4, Nodes6 []netip.Addr
	// Router4 and Router6 are the router's addresses in the namespace.
	Router4, Router6 netip.Addr

	extra []netip.Addr
}

// New creates a lab with addresses for n nodes; it is removed when the test ends.
func New(t testing.TB, nodes int) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("netlab needs root to create network namespaces and veth pairs (make test runs as root in CI; see the README's prerequisites)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("netlab needs iproute2's ip (Debian package iproute2)")
	}
	removeStale()
	id := randomID()
	l := &Lab{
		Netns:    fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), id),
		HostIf:   "alh" + id, // interface names: at most 15 bytes
		RouterIf: "alr" + id,
	}
	l.NetnsPath = filepath.Join("/run/netns", l.Netns)
	t.Cleanup(func() { l.remove(t) })
	// Random test subnets, so that parallel test packages never share one: 10.X.Y.0/24 and fdXX:XXXX:XXXX:Y::/64.
	b := randomBytes(5)
	v4 := netip.AddrFrom4([4]byte{10, 200 + b[0]%50, b[1], 0})
	var v6 [16]byte
	v6[0], v6[1], v6[2], v6[3], v6[4], v6[5], v6[7] = 0xfd, b[2], b[3], b[4], b[0], b[1], 1
	host := func(base netip.Addr, i int) netip.Addr {
		s := base.As16()
		s[15] = byte(i)
		if base.Is4() {
			return netip.AddrFrom16(s).Unmap()
		}
		return netip.AddrFrom16(s)
	}
	l.Router4, l.Router6 = host(v4, 254), host(netip.AddrFrom16(v6), 254)
	for i := 1; i <= nodes; i++ {
		l.Nodes4 = append(l.Nodes4, host(v4, i))
		l.Nodes6 = append(l.Nodes6, host(netip.AddrFrom16(v6), i))
	}
	run(t, "ip", "netns", "add", l.Netns)
	run(t, "ip", "link", "add", l.HostIf, "type", "veth", "peer", "name", l.RouterIf)
	run(t, "ip", "link", "set", l.RouterIf, "netns", l.Netns)
	for _, a := range l.Nodes4 {
		run(t, "ip", "addr", "add", a.String()+"/24", "dev", l.HostIf)
	}
	for _, a := range l.Nodes6 {
		run(t, "ip", "addr", "add", a.String()+"/64", "dev", l.HostIf, "nodad")
	}
	run(t, "ip", "link", "set", l.HostIf, "up")
	l.inNetns(t, "ip", "addr", "add", l.Router4.String()+"/24", "dev", l.RouterIf)
	l.inNetns(t, "ip", "addr", "add", l.Router6.String()+"/64", "dev", l.RouterIf, "nodad")
	l.inNetns(t, "ip", "link", "set", l.RouterIf, "up")
	l.inNetns(t, "ip", "link", "set", "lo", "up")
	return l
}

// AddRouterAddress adds one more router address of the family in the namespace (a second router, or a second session
// of one node) and returns it.
func (l *Lab) AddRouterAddress(t testing.TB, v6 bool) netip.Addr {
	t.Helper()
	last := l.Router4
	if v6 {
		last = l.Router6
	}
	for _, a := range l.extra {
		if a.Is6() == v6 {
			last = a
		}
	}
	b := last.As16()
	b[15]--
	a := netip.AddrFrom16(b)
	bits := "/64"
	if !v6 {
		a, bits = a.Unmap(), "/24"
	}
	args := []string{"addr", "add", a.String() + bits, "dev", l.RouterIf}
	if v6 {
		args = append(args, "nodad")
	}
	l.inNetns(t, "ip", args...)
	l.extra = append(l.extra, a)
	return a
}

// Command returns a command that runs inside the router's namespace.
func (l *Lab) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.Netns, name}, args...)...)
}

func (l *Lab) inNetns(t testing.TB, name string, args ...string) {
	t.Helper()
	run(t, "ip", append([]string{"netns", "exec", l.Netns, name}, args...)...)
}

// remove deletes the namespace (and with it the veth pair, whose one end lives there) and checks nothing is left.
func (l *Lab) remove(t testing.TB) {
	_ = exec.Command("ip", "netns", "del", l.Netns).Run()
	_ = exec.Command("ip", "link", "del", l.HostIf).Run() // gone with the namespace already, normally
	if _, err := os.Stat(l.NetnsPath); err == nil {
		t.Errorf("netlab: namespace %s still exists after cleanup", l.Netns)
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", l.HostIf).CombinedOutput(); strings.Contains(string(out), l.HostIf+":") {
		t.Errorf("netlab: interface %s still exists after cleanup", l.HostIf)
	}
}

// RemoveStale deletes what labs of processes that no longer exist left behind; New does it first anyway.
func RemoveStale() { removeStale() }

// removeStale deletes what runs that no longer exist left behind (interrupted by a timeout or a kill).
func removeStale() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, prefix+"-") {
			continue
		}
		parts := strings.Split(name, "-")
		pid, err := strconv.Atoi(parts[1])
		if err != nil || alive(pid) {
			continue
		}
		_ = exec.Command("ip", "netns", "del", name).Run()
		if len(parts) == 3 {
			_ = exec.Command("ip", "link", "del", "alh"+parts[2]).Run()
		}
	}
}

func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func randomID() string {
	b := randomBytes(4)
	return fmt.Sprintf("%02x%02x%02x%02x", b[0], b[1], b[2], b[3])
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
