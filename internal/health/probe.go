// Package health runs a node's health probes: HTTP(S), TCP, DNS, gRPC health v1 and Service endpoints on this node.
// A probe answers pass or fail with the reason; the runner bounds how many run at once, enforces each timeout and
// measures latency. Interpreting results (rise/fall, dampening) is package dampening's job.
package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Probe checks one thing once. It returns nil when the check passes, and an error saying why it failed otherwise.
// It must return by the context's deadline.
type Probe interface {
	Probe(ctx context.Context) error
}

// EndpointsReady reports whether the Service namespace/name has a ready endpoint on this node. The agent backs it
// with an informer on that Service's EndpointSlices.
type EndpointsReady func(namespace, name string) (bool, error)

// NodeIPVariable in a probe's URL or address stands for the node's own address (the agent's --local-address), so
// that one policy can probe a service bound to each node's address rather than to loopback. It follows the $(VAR)
// convention of a container's command; an IPv6 address needs brackets around it, as in http://[$(NODE_IP)]:8080/.
const NodeIPVariable = "$(NODE_IP)"

// Node is what probes need to know of the node they run on.
type Node struct {
	// Address replaces $(NODE_IP) in probe targets.
	Address netip.Addr
	// Endpoints answers serviceEndpoints checks; nil when no check uses them.
	Endpoints EndpointsReady
}

func (n Node) expand(target string) (string, error) {
	if !strings.Contains(target, NodeIPVariable) {
		return target, nil
	}
	if !n.Address.IsValid() {
		return "", fmt.Errorf("%q names %s, but the agent has no node address (--local-address)", target, NodeIPVariable)
	}
	return strings.ReplaceAll(target, NodeIPVariable, n.Address.String()), nil
}

// New builds the probe of a check on this node.
func New(c anycastv1.HealthCheck, node Node) (Probe, error) {
	switch {
	case c.HTTP != nil:
		u, err := node.expand(c.HTTP.URL)
		if err != nil {
			return nil, err
		}
		h := *c.HTTP
		h.URL = u
		return newHTTP(&h)
	case c.TCP != nil:
		a, err := node.expand(string(c.TCP.Address))
		return tcpProbe{address: a}, err
	case c.DNS != nil:
		a, err := node.expand(string(c.DNS.Server))
		d := *c.DNS
		d.Server = anycastv1.HostPort(a)
		return newDNS(&d), err
	case c.GRPC != nil:
		a, err := node.expand(string(c.GRPC.Address))
		return grpcProbe{address: a, service: c.GRPC.Service}, err
	case c.ServiceEndpoints != nil:
		if node.Endpoints == nil {
			return nil, errors.New("serviceEndpoints check without an endpoints source")
		}
		return endpointsProbe{namespace: c.ServiceEndpoints.Namespace, name: c.ServiceEndpoints.Name, ready: node.Endpoints}, nil
	}
	return nil, fmt.Errorf("check %q sets no probe", c.Name)
}

// httpProbe GETs a URL the way a load balancer's health check does: a new connection each time (a listener that died
// must not hide behind a kept-alive connection), one request with "Connection: close", and the status line of the
// first answer (no redirect is followed). It speaks the little HTTP/1.1 this needs itself, in the calling goroutine:
// net/http's client costs several goroutines and buffers per connection, which at 100 probes a second is most of
// the agent's CPU.
type httpProbe struct {
	address  string // host:port to dial
	tls      *tls.Config
	request  []byte
	expected []int32
}

func newHTTP(c *anycastv1.HTTPCheck) (*httpProbe, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("url %q: want http or https", c.URL)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	p := &httpProbe{address: net.JoinHostPort(u.Hostname(), port), expected: c.ExpectedStatus}
	if u.Scheme == "https" {
		p.tls = &tls.Config{ServerName: u.Hostname(), InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // off by default, the user's explicit choice
	}
	host := u.Host
	var headers strings.Builder
	for _, h := range c.Headers {
		if strings.ContainsAny(h.Name+h.Value, "\r\n") {
			return nil, fmt.Errorf("header %q: line breaks are not allowed in a header", h.Name)
		}
		if strings.EqualFold(h.Name, "Host") {
			host = h.Value
			continue
		}
		fmt.Fprintf(&headers, "%s: %s\r\n", h.Name, h.Value)
	}
	p.request = fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: anycast-agent\r\nConnection: close\r\n%s\r\n", u.RequestURI(), host, headers.String())
	return p, nil
}

func (p *httpProbe) Probe(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.address)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var rw net.Conn = conn
	if p.tls != nil {
		tc := tls.Client(conn, p.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		rw = tc
	}
	if _, err := rw.Write(p.request); err != nil {
		return err
	}
	line, err := bufio.NewReaderSize(rw, 256).ReadSlice('\n')
	if err != nil && err != bufio.ErrBufferFull {
		return fmt.Errorf("reading the response: %w", err)
	}
	code, ok := statusCode(line)
	if !ok {
		return fmt.Errorf("not an HTTP response: %q", strings.TrimSpace(string(line)))
	}
	if len(p.expected) == 0 {
		if code < 200 || code > 299 {
			return fmt.Errorf("HTTP %d, want 2xx", code)
		}
		return nil
	}
	if !slices.Contains(p.expected, int32(code)) {
		return fmt.Errorf("HTTP %d, want one of %v", code, p.expected)
	}
	return nil
}

// statusCode reads the code of a status line such as "HTTP/1.1 200 OK".
func statusCode(line []byte) (int, bool) {
	s := string(line)
	if !strings.HasPrefix(s, "HTTP/1.") || len(s) < 12 || s[8] != ' ' {
		return 0, false
	}
	code, err := strconv.Atoi(s[9:12])
	return code, err == nil && code >= 100 && code <= 599
}

type tcpProbe struct{ address string }

func (p tcpProbe) Probe(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.address)
	if err != nil {
		return err
	}
	return conn.Close()
}

type dnsProbe struct {
	server string
	msg    *dns.Msg
	rcode  int
}

func newDNS(c *anycastv1.DNSCheck) *dnsProbe {
	qtype := dns.TypeA
	if t, ok := dns.StringToType[string(c.Type)]; ok && c.Type != "" {
		qtype = t
	}
	rcode := dns.RcodeSuccess
	if r, ok := dns.StringToRcode[string(c.ExpectRcode)]; ok && c.ExpectRcode != "" {
		rcode = r
	}
	msg := new(dns.Msg)
	msg.SetQuestion(dns.Fqdn(c.Query), qtype)
	return &dnsProbe{server: string(c.Server), msg: msg, rcode: rcode}
}

func (p *dnsProbe) Probe(ctx context.Context) error {
	client := &dns.Client{Net: "udp"}
	msg := p.msg.Copy()
	msg.Id = dns.Id()
	resp, _, err := client.ExchangeContext(ctx, msg, p.server)
	if err != nil {
		return err
	}
	if resp.Truncated {
		client.Net = "tcp"
		if resp, _, err = client.ExchangeContext(ctx, msg, p.server); err != nil {
			return err
		}
	}
	if resp.Rcode != p.rcode {
		return fmt.Errorf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[p.rcode])
	}
	return nil
}

// grpcProbe calls grpc.health.v1.Health/Check on a new connection each time, so that a restarted server is seen at
// once rather than after gRPC's reconnect backoff.
type grpcProbe struct{ address, service string }

func (p grpcProbe) Probe(ctx context.Context) error {
	conn, err := grpc.NewClient("passthrough:///"+p.address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: p.service}, grpc.WaitForReady(false))
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("status %s, want SERVING", resp.GetStatus())
	}
	return nil
}

type endpointsProbe struct {
	namespace, name string
	ready           EndpointsReady
}

func (p endpointsProbe) Probe(context.Context) error {
	ok, err := p.ready(p.namespace, p.name)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no ready endpoint of Service %s/%s on this node", p.namespace, p.name)
	}
	return nil
}
