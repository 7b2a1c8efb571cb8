// Package health runs a node's health probes: HTTP(S), TCP, DNS, gRPC health v1 and Service endpoints on this node.
// A probe answers pass or fail with the reason; the runner bounds how many run at once, enforces each timeout and
// measures latency. Interpreting results (rise/fall, dampening) is package dampening's job.
package health

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/protobuf/encoding/protowire"

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
		if err != nil {
			return nil, err
		}
		d := *c.DNS
		d.Server = anycastv1.HostPort(a)
		p, err := newDNS(&d)
		if err != nil {
			return nil, err
		}
		return p, nil
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

// dnsProbe sends one query with recursion desired, over UDP and, when the answer is truncated, again over TCP, and
// passes on the expected response code. It is built on golang.org/x/net/dns/dnsmessage, the parser Go's own
// resolver uses.
type dnsProbe struct {
	server   string
	question dnsmessage.Question
	rcode    dnsmessage.RCode
}

var (
	dnsTypes = map[anycastv1.DNSQueryType]dnsmessage.Type{"A": dnsmessage.TypeA, "AAAA": dnsmessage.TypeAAAA,
		"CNAME": dnsmessage.TypeCNAME, "MX": dnsmessage.TypeMX, "NS": dnsmessage.TypeNS, "PTR": dnsmessage.TypePTR,
		"SOA": dnsmessage.TypeSOA, "SRV": dnsmessage.TypeSRV, "TXT": dnsmessage.TypeTXT}
	dnsRcodes = map[anycastv1.DNSRcode]dnsmessage.RCode{"NOERROR": dnsmessage.RCodeSuccess, "NXDOMAIN": dnsmessage.RCodeNameError,
		"SERVFAIL": dnsmessage.RCodeServerFailure, "REFUSED": dnsmessage.RCodeRefused}
)

func newDNS(c *anycastv1.DNSCheck) (*dnsProbe, error) {
	qtype, ok := dnsTypes[c.Type]
	if c.Type == "" {
		qtype, ok = dnsmessage.TypeA, true
	}
	rcode, rok := dnsRcodes[c.ExpectRcode]
	if c.ExpectRcode == "" {
		rcode, rok = dnsmessage.RCodeSuccess, true
	}
	if !ok || !rok {
		return nil, fmt.Errorf("DNS query type %q or response code %q is not supported", c.Type, c.ExpectRcode)
	}
	name := c.Query
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, fmt.Errorf("DNS query %q: %w", c.Query, err)
	}
	return &dnsProbe{server: string(c.Server), question: dnsmessage.Question{Name: n, Type: qtype, Class: dnsmessage.ClassINET}, rcode: rcode}, nil
}

func (p *dnsProbe) Probe(ctx context.Context) error {
	id := uint16(rand.Uint32())
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		return err
	}
	if err := b.Question(p.question); err != nil {
		return err
	}
	query, err := b.Finish()
	if err != nil {
		return err
	}
	h, err := p.exchange(ctx, "udp", query, id)
	if err == nil && h.Truncated {
		h, err = p.exchange(ctx, "tcp", query, id)
	}
	if err != nil {
		return err
	}
	if h.RCode != p.rcode {
		return fmt.Errorf("rcode %s, want %s", rcodeName(h.RCode), rcodeName(p.rcode))
	}
	return nil
}

// exchange sends the query and returns the header of the answer with the query's ID.
func (p *dnsProbe) exchange(ctx context.Context, network string, query []byte, id uint16) (dnsmessage.Header, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, p.server)
	if err != nil {
		return dnsmessage.Header{}, err
	}
	defer func() { _ = c.Close() }()
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(deadline)
	}
	if network == "tcp" {
		query = append(binary.BigEndian.AppendUint16(nil, uint16(len(query))), query...)
	}
	if _, err := c.Write(query); err != nil {
		return dnsmessage.Header{}, err
	}
	// Only the header is read, so a UDP answer is read into 512 bytes (RFC 1035's limit without EDNS, which the
	// query does not offer; a longer datagram is cut, its header intact), a TCP one into its own length.
	var udp [512]byte
	for {
		var msg []byte
		if network == "tcp" {
			var l [2]byte
			if _, err := io.ReadFull(c, l[:]); err != nil {
				return dnsmessage.Header{}, err
			}
			msg = make([]byte, binary.BigEndian.Uint16(l[:]))
			_, err = io.ReadFull(c, msg)
		} else {
			var n int
			n, err = c.Read(udp[:])
			msg = udp[:n]
		}
		if err != nil {
			return dnsmessage.Header{}, err
		}
		var parser dnsmessage.Parser
		h, err := parser.Start(msg)
		if err != nil {
			return dnsmessage.Header{}, fmt.Errorf("malformed DNS answer: %w", err)
		}
		if h.Response && h.ID == id {
			return h, nil
		}
		// Not the answer to this query (a late one to an earlier probe): keep reading until the deadline.
	}
}

func rcodeName(r dnsmessage.RCode) string {
	for name, code := range dnsRcodes {
		if code == r {
			return string(name)
		}
	}
	return strings.TrimPrefix(r.String(), "RCode")
}

// grpcProbe calls grpc.health.v1.Health/Check on a new connection each time, so that a restarted server is seen at
// once rather than after a client's reconnect backoff. It speaks the little of gRPC the call needs (cleartext
// HTTP/2 with prior knowledge, one length-prefixed message each way, the status in the trailers) over Go's own
// HTTP/2, instead of linking gRPC and protobuf into the agent on every node (issue 16).
type grpcProbe struct{ address, service string }

// servingStatus names grpc.health.v1.HealthCheckResponse.ServingStatus.
var servingStatus = []string{"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"}

// grpcCodes names the gRPC status codes.
var grpcCodes = []string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
	"PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented", "Internal",
	"Unavailable", "DataLoss", "Unauthenticated"}

func (p grpcProbe) Probe(ctx context.Context) error {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	defer tr.CloseIdleConnections()
	// HealthCheckRequest{service = 1}, framed: no compression, a 4-byte length.
	msg := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), p.service)
	body := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.address+"/grpc.health.v1.Health/Check", bytes.NewReader(append(body, msg...)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d, want 200", resp.StatusCode)
	}
	// The status is in the trailers, or in the headers of a trailers-only response.
	code, message := resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	if code == "" {
		code, message = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	if code != "0" {
		name := code
		if n, err := strconv.Atoi(code); err == nil && n >= 0 && n < len(grpcCodes) {
			name = grpcCodes[n]
		}
		if m, err := url.PathUnescape(message); err == nil {
			message = m
		}
		return fmt.Errorf("gRPC status %s: %s", name, message)
	}
	if len(reply) < 5 || reply[0] != 0 || int(binary.BigEndian.Uint32(reply[1:5])) != len(reply)-5 {
		return errors.New("the reply is not one uncompressed gRPC message")
	}
	status, err := servingStatusOf(reply[5:])
	if err != nil {
		return err
	}
	if status != 1 {
		name := strconv.FormatUint(status, 10)
		if status < uint64(len(servingStatus)) {
			name = servingStatus[status]
		}
		return fmt.Errorf("status %s, want SERVING", name)
	}
	return nil
}

// servingStatusOf reads HealthCheckResponse{status = 1} (0 when absent, as protobuf defaults it).
func servingStatusOf(b []byte) (uint64, error) {
	var status uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, errors.New("malformed HealthCheckResponse")
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, errors.New("malformed HealthCheckResponse")
			}
			status, b = v, b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return 0, errors.New("malformed HealthCheckResponse")
		}
		b = b[n:]
	}
	return status, nil
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
