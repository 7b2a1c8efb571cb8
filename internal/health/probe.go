// Package health runs a node's health probes: HTTP(S), TCP, DNS, gRPC health v1 and Service endpoints on this node.
// A probe answers pass or fail with the reason; the runner bounds how many run at once, enforces each timeout and
// measures latency. Interpreting results (rise/fall, dampening) is package dampening's job.
package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"

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

// New builds the probe of a check. endpoints may be nil when no check uses serviceEndpoints.
func New(c anycastv1.HealthCheck, endpoints EndpointsReady) (Probe, error) {
	switch {
	case c.HTTP != nil:
		return newHTTP(c.HTTP), nil
	case c.TCP != nil:
		return tcpProbe{address: string(c.TCP.Address)}, nil
	case c.DNS != nil:
		return newDNS(c.DNS), nil
	case c.GRPC != nil:
		return grpcProbe{address: string(c.GRPC.Address), service: c.GRPC.Service}, nil
	case c.ServiceEndpoints != nil:
		if endpoints == nil {
			return nil, errors.New("serviceEndpoints check without an endpoints source")
		}
		return endpointsProbe{namespace: c.ServiceEndpoints.Namespace, name: c.ServiceEndpoints.Name, ready: endpoints}, nil
	}
	return nil, fmt.Errorf("check %q sets no probe", c.Name)
}

// httpProbe GETs a URL on a new connection each time (a listener that died must not hide behind a kept-alive
// connection) and does not follow redirects: the first answer is the service's answer.
type httpProbe struct {
	url      string
	headers  []anycastv1.HTTPHeader
	expected []int32
	client   *http.Client
}

func newHTTP(c *anycastv1.HTTPCheck) *httpProbe {
	transport := &http.Transport{
		DisableKeepAlives: true,
		Proxy:             nil,                                                   // probes talk to the local service, never through a proxy
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: c.InsecureSkipVerify}, //nolint:gosec // off by default, the user's explicit choice
	}
	return &httpProbe{
		url:      c.URL,
		headers:  c.Headers,
		expected: c.ExpectedStatus,
		client: &http.Client{
			Transport:     transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

func (p *httpProbe) Probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "anycast-agent")
	for _, h := range p.headers {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Set(h.Name, h.Value)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if len(p.expected) == 0 {
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("HTTP %d, want 2xx", resp.StatusCode)
		}
		return nil
	}
	if !slices.Contains(p.expected, int32(resp.StatusCode)) {
		return fmt.Errorf("HTTP %d, want one of %v", resp.StatusCode, p.expected)
	}
	return nil
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
