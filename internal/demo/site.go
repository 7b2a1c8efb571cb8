package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"
)

// Site is one simulated node: a Node object labelled with its site, a loopback address its agent's BGP sessions
// start from, and a local HTTP service the agent probes.
type Site struct {
	Name    string // the site label: ams, fra, nyc
	Node    string
	Address netip.Addr
}

// service is a site's HTTP service. /healthz answers 200 while it is healthy and 503 while it fails; POST /fail and
// POST /recover switch it, so that a person can fail a site by hand with curl. It counts the probes it answered
// since the last switch, which the scenario uses to check the agent's rise and fall thresholds.
type service struct {
	site    Site
	port    int
	srv     *http.Server
	healthy atomic.Bool
	probes  atomic.Int64 // /healthz requests since the last switch
}

// startServices starts one service per site, all on the same port of their own loopback address (the port is free
// on every address), so that one HealthPolicy URL with $(NODE_IP) probes each node's own service.
func startServices(sites []Site) ([]*service, error) {
	var lastErr error
	for range 10 {
		listeners, err := listenAll(sites)
		if err != nil {
			lastErr = err
			continue
		}
		out := make([]*service, len(sites))
		for i, site := range sites {
			s := &service{site: site, port: listeners[i].Addr().(*net.TCPAddr).Port}
			s.healthy.Store(true)
			s.srv = &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second}
			go func(l net.Listener) { _ = s.srv.Serve(l) }(listeners[i])
			out[i] = s
		}
		return out, nil
	}
	return nil, fmt.Errorf("no port free on every site address: %w", lastErr)
}

func listenAll(sites []Site) ([]net.Listener, error) {
	first, err := net.Listen("tcp", netip.AddrPortFrom(sites[0].Address, 0).String())
	if err != nil {
		return nil, err
	}
	port := uint16(first.Addr().(*net.TCPAddr).Port)
	out := []net.Listener{first}
	for _, s := range sites[1:] {
		l, err := net.Listen("tcp", netip.AddrPortFrom(s.Address, port).String())
		if err != nil {
			for _, l := range out {
				_ = l.Close()
			}
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

func (s *service) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		s.probes.Add(1)
		if !s.healthy.Load() {
			http.Error(w, "failing (POST /recover to heal)", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, _ *http.Request) {
		s.set(false)
		fmt.Fprintf(w, "%s: the service now fails its health check\n", s.site.Node)
	})
	mux.HandleFunc("POST /recover", func(w http.ResponseWriter, _ *http.Request) {
		s.set(true)
		fmt.Fprintf(w, "%s: the service is healthy again\n", s.site.Node)
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "hello from %s in %s\n", s.site.Node, s.site.Name)
	})
	return mux
}

// set switches the service's health and restarts the probe count.
func (s *service) set(healthy bool) {
	if s.healthy.Swap(healthy) != healthy {
		s.probes.Store(0)
	}
}

// url is the service's address as curl takes it.
func (s *service) url(path string) string {
	return fmt.Sprintf("http://%s%s", netip.AddrPortFrom(s.site.Address, uint16(s.port)), path)
}

// post switches the service the way a person does, with curl -X POST.
func (s *service) post(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url(path), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", s.url(path), err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", s.url(path), resp.Status)
	}
	return nil
}

func (s *service) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return s.srv.Close()
	}
	return nil
}
