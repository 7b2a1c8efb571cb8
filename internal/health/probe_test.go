package health

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// run probes a check once with a timeout and returns the error text ("" when it passed).
func run(t *testing.T, c anycastv1.HealthCheck, timeout time.Duration) string {
	t.Helper()
	p, err := New(c, Node{Address: netip.MustParseAddr("127.0.0.1"),
		Endpoints: func(ns, name string) (bool, error) { return ns == "dns" && name == "ready", nil }})
	if err != nil {
		t.Fatal(err)
	}
	res := NewRunner(clock.RealClock{}, 4).Run(context.Background(), Named{Name: c.Name, Probe: p, Timeout: timeout})
	if res.Passed != (res.Err == "") {
		t.Fatalf("inconsistent result %+v", res)
	}
	return res.Err
}

func expect(t *testing.T, what, got, want string) {
	t.Helper()
	if want == "" && got != "" {
		t.Errorf("%s: failed with %q, want a pass", what, got)
	}
	if want != "" && !strings.Contains(got, want) {
		t.Errorf("%s: got %q, want a failure containing %q", what, got, want)
	}
}

func TestHTTPProbe(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, "/healthz", http.StatusFound)
		case "/auth":
			if r.Header.Get("X-Token") != "t0ken" || r.Host != "dns.example" {
				w.WriteHeader(http.StatusUnauthorized)
			}
		default:
			w.WriteHeader(int(status.Load()))
		}
	}))
	defer srv.Close()
	check := func(path string, expected ...int32) anycastv1.HealthCheck {
		return anycastv1.HealthCheck{Name: "web", HTTP: &anycastv1.HTTPCheck{URL: srv.URL + path, ExpectedStatus: expected}}
	}
	expect(t, "200", run(t, check("/healthz"), time.Second), "")
	status.Store(503)
	expect(t, "503", run(t, check("/healthz"), time.Second), "HTTP 503, want 2xx")
	expect(t, "503 expected", run(t, check("/healthz", 503), time.Second), "")
	status.Store(204)
	expect(t, "204 not in the list", run(t, check("/healthz", 200), time.Second), "HTTP 204, want one of [200]")
	expect(t, "redirects are not followed", run(t, check("/moved"), time.Second), "HTTP 302")
	withHeaders := check("/auth")
	withHeaders.HTTP.Headers = []anycastv1.HTTPHeader{{Name: "X-Token", Value: "t0ken"}, {Name: "Host", Value: "dns.example"}}
	expect(t, "headers", run(t, withHeaders, time.Second), "")
	srv.Close()
	expect(t, "server gone", run(t, check("/healthz"), time.Second), "connection refused")
}

func TestHTTPSProbeVerifiesByDefault(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is the point of the test
	srv.StartTLS()
	defer srv.Close()
	c := anycastv1.HealthCheck{Name: "tls", HTTP: &anycastv1.HTTPCheck{URL: srv.URL}}
	expect(t, "self-signed, verification on", run(t, c, time.Second), "certificate")
	c.HTTP.InsecureSkipVerify = true
	expect(t, "self-signed, verification off", run(t, c, time.Second), "")
}

func TestTCPProbeAndTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := anycastv1.HealthCheck{Name: "port", TCP: &anycastv1.TCPCheck{Address: anycastv1.HostPort(l.Addr().String())}}
	expect(t, "listening", run(t, c, time.Second), "")

	// A listener that accepts but never answers HTTP: the probe must give up at its timeout.
	silent := anycastv1.HealthCheck{Name: "web", HTTP: &anycastv1.HTTPCheck{URL: "http://" + l.Addr().String() + "/"}}
	expect(t, "silent server", run(t, silent, 200*time.Millisecond), "timed out after 200ms")

	_ = l.Close()
	expect(t, "closed", run(t, c, time.Second), "connection refused")
}

func TestDNSProbe(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		if req.Question[0].Name == "example.com." && req.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR("example.com. 60 IN A 192.0.2.10")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go func() { _ = srv.ActivateAndServe() }()
	defer func() { _ = srv.Shutdown() }()
	check := func(query string, qtype anycastv1.DNSQueryType, rcode anycastv1.DNSRcode) anycastv1.HealthCheck {
		return anycastv1.HealthCheck{Name: "dns", DNS: &anycastv1.DNSCheck{Server: anycastv1.HostPort(pc.LocalAddr().String()), Query: query, Type: qtype, ExpectRcode: rcode}}
	}
	expect(t, "A example.com", run(t, check("example.com", "", ""), time.Second), "")
	expect(t, "AAAA example.com", run(t, check("example.com.", "AAAA", "NOERROR"), time.Second), "rcode NXDOMAIN, want NOERROR")
	expect(t, "expect NXDOMAIN", run(t, check("missing.example.", "A", "NXDOMAIN"), time.Second), "")
	_ = srv.Shutdown()
	expect(t, "no server", run(t, check("example.com", "", ""), 300*time.Millisecond), "connection refused")

	// A truncated answer over UDP: the probe asks again over TCP, whose answer (REFUSED here) is the one that counts.
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upc, err := net.ListenPacket("udp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	answer := func(truncated bool, rcode int) dns.HandlerFunc {
		return func(w dns.ResponseWriter, req *dns.Msg) {
			m := new(dns.Msg)
			m.SetRcode(req, rcode)
			m.Truncated = truncated
			_ = w.WriteMsg(m)
		}
	}
	udpSrv := &dns.Server{PacketConn: upc, Handler: answer(true, dns.RcodeSuccess)}
	tcpSrv := &dns.Server{Listener: tl, Handler: answer(false, dns.RcodeRefused)}
	for _, s := range []*dns.Server{udpSrv, tcpSrv} {
		go func() { _ = s.ActivateAndServe() }()
		defer func() { _ = s.Shutdown() }()
	}
	tc := anycastv1.HealthCheck{Name: "dns", DNS: &anycastv1.DNSCheck{Server: anycastv1.HostPort(tl.Addr().String()), Query: "example.com", ExpectRcode: "REFUSED"}}
	expect(t, "truncated over UDP, answered over TCP", run(t, tc, time.Second), "")
}

func TestGRPCProbe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()
	c := anycastv1.HealthCheck{Name: "api", GRPC: &anycastv1.GRPCCheck{Address: anycastv1.HostPort(l.Addr().String()), Service: "dns"}}
	hs.SetServingStatus("dns", healthpb.HealthCheckResponse_SERVING)
	expect(t, "serving", run(t, c, time.Second), "")
	hs.SetServingStatus("dns", healthpb.HealthCheckResponse_NOT_SERVING)
	expect(t, "not serving", run(t, c, time.Second), "status NOT_SERVING, want SERVING")
	c.GRPC.Service = "web"
	expect(t, "unknown service", run(t, c, time.Second), "gRPC status NotFound: unknown service")
	c.GRPC.Service = ""
	expect(t, "the server's overall health", run(t, c, time.Second), "")
	srv.Stop()
	expect(t, "stopped", run(t, c, time.Second), "connection refused")
}

func TestServiceEndpointsProbe(t *testing.T) {
	c := anycastv1.HealthCheck{Name: "pods", ServiceEndpoints: &anycastv1.ServiceEndpointsCheck{Namespace: "dns", Name: "ready"}}
	expect(t, "ready", run(t, c, time.Second), "")
	c.ServiceEndpoints.Name = "other"
	expect(t, "none ready", run(t, c, time.Second), "no ready endpoint of Service dns/other on this node")
	if _, err := New(c, Node{}); err == nil {
		t.Error("a serviceEndpoints probe without an endpoints source was built")
	}
}

// blocking is a probe that waits until released and records how many run at once.
type blocking struct {
	running, peak *atomic.Int32
	release       chan struct{}
}

func (b blocking) Probe(ctx context.Context) error {
	n := b.running.Add(1)
	defer b.running.Add(-1)
	for {
		p := b.peak.Load()
		if n <= p || b.peak.CompareAndSwap(p, n) {
			break
		}
	}
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestRunnerBoundsConcurrency(t *testing.T) {
	var running, peak atomic.Int32
	release := make(chan struct{})
	probes := make([]Named, 20)
	for i := range probes {
		probes[i] = Named{Name: "p", Probe: blocking{&running, &peak, release}, Timeout: time.Minute}
	}
	done := make(chan []Result)
	go func() { done <- NewRunner(clock.RealClock{}, 3).RunAll(context.Background(), probes) }()
	// Release the probes one at a time, each time once the runner has filled every slot it may: an unbounded
	// runner would have all 20 running by then.
	for remaining := 20; remaining > 0; remaining-- {
		want := int32(min(3, remaining))
		if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return running.Load() == want, nil
		}); err != nil {
			t.Fatalf("%d probes running, want %d", running.Load(), want)
		}
		release <- struct{}{}
	}
	results := <-done
	if p := peak.Load(); p != 3 {
		t.Errorf("peak concurrency %d, want 3", p)
	}
	for _, r := range results {
		if !r.Passed {
			t.Errorf("result %+v", r)
		}
	}
}

func TestHTTPProbeRefusesHeaderInjection(t *testing.T) {
	c := anycastv1.HealthCheck{Name: "web", HTTP: &anycastv1.HTTPCheck{URL: "http://127.0.0.1:1/", Headers: []anycastv1.HTTPHeader{{Name: "X-A", Value: "1\r\nX-Injected: 2"}}}}
	if _, err := New(c, Node{}); err == nil || !strings.Contains(err.Error(), "line breaks are not allowed") {
		t.Errorf("New = %v, want a refusal", err)
	}
}

func TestHTTPProbeDefaultPortAndHTTP10(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		buf := make([]byte, 1024)
		n, _ := conn.Read(buf)
		got <- string(buf[:n])
		_, _ = conn.Write([]byte("HTTP/1.0 200 OK\r\n\r\n"))
	}()
	c := anycastv1.HealthCheck{Name: "web", HTTP: &anycastv1.HTTPCheck{URL: "http://" + l.Addr().String() + "/ready?full=1"}}
	expect(t, "an HTTP/1.0 server", run(t, c, time.Second), "")
	req := <-got
	if !strings.HasPrefix(req, "GET /ready?full=1 HTTP/1.1\r\nHost: "+l.Addr().String()+"\r\n") || !strings.Contains(req, "Connection: close\r\n") {
		t.Errorf("request sent:\n%s", req)
	}
	p, err := newHTTP(&anycastv1.HTTPCheck{URL: "https://dns.example/healthz"})
	if err != nil || p.address != "dns.example:443" || p.tls == nil || p.tls.ServerName != "dns.example" {
		t.Errorf("https default port: %+v, %v", p, err)
	}
}

// TestNodeIPVariable probes each node's own address through $(NODE_IP): the same check passes on the node whose
// address the service listens on and fails on another.
func TestNodeIPVariable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.21:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	port := l.Addr().(*net.TCPAddr).Port
	checks := []anycastv1.HealthCheck{
		{Name: "web", HTTP: &anycastv1.HTTPCheck{URL: fmt.Sprintf("http://$(NODE_IP):%d/healthz", port)}},
		{Name: "port", TCP: &anycastv1.TCPCheck{Address: anycastv1.HostPort(fmt.Sprintf("$(NODE_IP):%d", port))}},
	}
	for _, c := range checks {
		for _, tc := range []struct{ node, want string }{{"127.0.0.21", ""}, {"127.0.0.22", "connection refused"}} {
			p, err := New(c, Node{Address: netip.MustParseAddr(tc.node)})
			if err != nil {
				t.Fatal(err)
			}
			res := NewRunner(clock.RealClock{}, 1).Run(context.Background(), Named{Name: c.Name, Probe: p, Timeout: time.Second})
			expect(t, c.Name+" on "+tc.node, res.Err, tc.want)
		}
		if _, err := New(c, Node{}); err == nil || !strings.Contains(err.Error(), "no node address") {
			t.Errorf("%s without a node address: got %v", c.Name, err)
		}
	}
}
