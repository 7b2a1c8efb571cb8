// Package natest is a local stand-in for the NetActuate API (vAPI2) for tests: the endpoints the provisioning flow
// calls, with the real paths, field names and JSON types, key or source-address authentication, and injectable
// faults (errors, rate limiting, slow and malformed answers, validation errors).
package natest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is one VM of the account.
type Server struct {
	MBPkgID int64
	FQDN    string
	// IPs are its addresses; the first of each family is its primary one.
	IPs []netip.Addr
}

// Group is a BGP group and the provider routers it peers with, per family (two each for redundancy).
type Group struct {
	ID          int64
	ProviderASN int64
	RoutersV4   []netip.Addr
	RoutersV6   []netip.Addr
}

// Fault is what the next matching request gets instead of a normal answer. Delay alone delays a normal answer (the
// request is still carried out: a client that gives up does not undo it).
type Fault struct {
	Method, Path string // Path is a prefix, such as "bgp/bgpcreatesessions"; empty matches any
	Status       int
	RetryAfter   string
	Delay        time.Duration
	Body         string              // a raw body, for malformed answers
	Fields       map[string][]string // a validation error's fields
}

// CreateShape is how the fake answers bgpcreatesessions: each shape NetActuate's clients have handled.
type CreateShape int

// The answer shapes of bgpcreatesessions.
const (
	CreateOneSession  CreateShape = iota // data: one session object
	CreateSessionsMap                    // data: {"Sessions": {"<id>": session}, "Modified": true}
	CreateList                           // data: [session, ...]
)

// API is the fake. Create it with Start.
type API struct {
	URL string
	// Key is the account's API key; with IPAuth the key is not needed and calls are identified by source address.
	Key    string
	IPAuth bool

	mu       sync.Mutex
	srv      *httptest.Server
	servers  []Server
	groups   map[int64]Group
	sessions []session
	nextID   int64
	faults   []Fault
	creates  int
	requests []string // method path?query of every request, as received (for tests that look for the key)
	// HideNewFor: sessions just created are listed only after this many more session lists (provisioning lag).
	HideNewFor int
	Shape      CreateShape
	// ASNsAsNumbers sends customer_asn and provider_asn as JSON numbers instead of quoted numbers.
	ASNsAsNumbers bool
}

type session struct {
	ID                             int64
	GroupID                        int64
	MBPkgID                        int64
	CustomerIP, ProviderIP, Family string
	CustomerASN, ProviderASN       int64
	hiddenFor                      int
}

// Start starts the fake on loopback with servers and groups; customerASN is the account's AS number.
func Start(key string, servers []Server, groups []Group) *API {
	a := &API{Key: key, servers: servers, groups: map[int64]Group{}, nextID: 1000}
	for _, g := range groups {
		a.groups[g.ID] = g
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/cloud/servers", a.handle(a.listServers))
	mux.HandleFunc("GET /api/cloud/networkips/{id}", a.handle(a.networkIPs))
	mux.HandleFunc("GET /api/bgp/bgpsessions", a.handle(a.listSessions))
	mux.HandleFunc("GET /api/bgp/bgpsession/{id}", a.handle(a.getSession))
	mux.HandleFunc("POST /api/bgp/bgpcreatesessions", a.handle(a.createSessions))
	a.srv = httptest.NewServer(mux)
	a.URL = a.srv.URL + "/api/"
	return a
}

// Close stops the fake.
func (a *API) Close() { a.srv.Close() }

// CustomerASN is the AS number the fake gives the account's side of every session.
const CustomerASN = 64512

// Inject queues faults; each is used once, by the first request it matches.
func (a *API) Inject(f ...Fault) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.faults = append(a.faults, f...)
}

// Creates counts the bgpcreatesessions calls that created sessions.
func (a *API) Creates() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.creates
}

// SessionsOf counts the sessions of a server.
func (a *API) SessionsOf(mbpkgid int64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, s := range a.sessions {
		if s.MBPkgID == mbpkgid {
			n++
		}
	}
	return n
}

// Requests are the request lines received, query included.
func (a *API) Requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.requests)
}

type handler func(r *http.Request, caller *Server) (int, any, map[string][]string)

// handle authenticates, applies faults and writes the envelope.
func (a *API) handle(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.requests = append(a.requests, r.Method+" "+r.URL.RequestURI())
		fault, ok := a.takeFault(r)
		a.mu.Unlock()
		if ok && fault.Delay > 0 {
			time.Sleep(fault.Delay)
		}
		if ok && (fault.Status != 0 || fault.Body != "") {
			if fault.RetryAfter != "" {
				w.Header().Set("Retry-After", fault.RetryAfter)
			}
			status := fault.Status
			if status == 0 {
				status = http.StatusOK
			}
			w.WriteHeader(status)
			if fault.Body != "" {
				_, _ = w.Write([]byte(fault.Body))
				return
			}
			writeEnvelope(w, status, nil, fault.Fields, "")
			return
		}
		a.mu.Lock()
		caller, authErr := a.authenticate(r)
		var (
			status int
			data   any
			fields map[string][]string
		)
		if authErr == "" {
			status, data, fields = h(r, caller)
		}
		a.mu.Unlock()
		if authErr != "" {
			w.WriteHeader(http.StatusUnauthorized)
			writeEnvelope(w, http.StatusUnauthorized, nil, nil, authErr)
			return
		}
		w.WriteHeader(status)
		writeEnvelope(w, status, data, fields, "")
	}
}

func (a *API) takeFault(r *http.Request) (Fault, bool) {
	path := strings.TrimPrefix(r.URL.Path, "/api/")
	for i, f := range a.faults {
		if (f.Method == "" || f.Method == r.Method) && strings.HasPrefix(path, f.Path) {
			a.faults = slices.Delete(a.faults, i, i+1)
			return f, true
		}
	}
	return Fault{}, false
}

// authenticate checks the key, or with IPAuth finds the server calling by its source address.
func (a *API) authenticate(r *http.Request) (*Server, string) {
	if !a.IPAuth {
		if r.URL.Query().Get("key") != a.Key {
			return nil, "Invalid API key"
		}
		return nil, ""
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	src, err := netip.ParseAddr(host)
	if err != nil {
		return nil, "Unknown source address"
	}
	for i := range a.servers {
		if slices.Contains(a.servers[i].IPs, src.Unmap()) {
			return &a.servers[i], ""
		}
	}
	return nil, fmt.Sprintf("No VM with address %s on this account", src)
}

func writeEnvelope(w http.ResponseWriter, status int, data any, fields map[string][]string, message string) {
	env := map[string]any{"result": "success", "message": nil, "code": status, "data": data}
	if status >= 300 {
		env["result"] = "error"
		if message == "" {
			message = http.StatusText(status)
			if len(fields) > 0 {
				message = "validation failed"
			}
		}
	}
	if message != "" {
		env["message"] = message
	}
	if fields != nil {
		env["fields"] = fields
	}
	_ = json.NewEncoder(w).Encode(env)
}

// visible: with IP authentication, a VM sees itself only.
func visible(s *Server, caller *Server) bool { return caller == nil || caller.MBPkgID == s.MBPkgID }

func (a *API) listServers(_ *http.Request, caller *Server) (int, any, map[string][]string) {
	var out []map[string]any
	for i := range a.servers {
		s := &a.servers[i]
		if !visible(s, caller) {
			continue
		}
		m := map[string]any{"mbpkgid": s.MBPkgID, "fqdn": s.FQDN, "status": "RUNNING", "state": "UP", "ip": "", "ipv6": ""}
		for _, ip := range s.IPs {
			if ip.Is4() && m["ip"] == "" {
				m["ip"] = ip.String()
			}
			if ip.Is6() && m["ipv6"] == "" {
				m["ipv6"] = ip.String()
			}
		}
		out = append(out, m)
	}
	return http.StatusOK, out, nil
}

func (a *API) server(id string, caller *Server) *Server {
	n, _ := strconv.ParseInt(id, 10, 64)
	for i := range a.servers {
		if a.servers[i].MBPkgID == n && visible(&a.servers[i], caller) {
			return &a.servers[i]
		}
	}
	return nil
}

var invalidMBPkgID = map[string][]string{"mbpkgid": {"The mbpkgid must be a valid mbpkgid"}}

func (a *API) networkIPs(r *http.Request, caller *Server) (int, any, map[string][]string) {
	s := a.server(r.PathValue("id"), caller)
	if s == nil {
		return http.StatusUnprocessableEntity, nil, invalidMBPkgID
	}
	out := map[string][]map[string]any{"IPv4": {}, "IPv6": {}}
	seen := map[bool]bool{}
	for i, ip := range s.IPs {
		fam := "IPv4"
		if ip.Is6() {
			fam = "IPv6"
		}
		primary := 0
		if !seen[ip.Is4()] {
			primary, seen[ip.Is4()] = 1, true
		}
		out[fam] = append(out[fam], map[string]any{"id": i + 1, "primary": primary, "reverse": "", "ip": ip.String(), "gateway": "", "netmask": "", "broadcast": ""})
	}
	return http.StatusOK, out, nil
}

func (a *API) sessionJSON(s session) map[string]any {
	asn := func(v int64) any {
		if a.ASNsAsNumbers {
			return v
		}
		return strconv.FormatInt(v, 10)
	}
	return map[string]any{"id": s.ID, "group_id": s.GroupID, "group_name": fmt.Sprintf("group-%d", s.GroupID),
		"customer_peer_ip": s.CustomerIP, "provider_peer_ip": s.ProviderIP, "provider_ip_type": s.Family,
		"customer_asn": asn(s.CustomerASN), "provider_asn": asn(s.ProviderASN), "locked": 0, "state": "Established",
		"location": "LAX", "latitude": "33.9", "longitude": "-118.4", "description": "", "prefixes": []any{}, "config_status": 1}
}

func (a *API) listSessions(_ *http.Request, caller *Server) (int, any, map[string][]string) {
	out := []map[string]any{}
	for i := range a.sessions {
		s := &a.sessions[i]
		if s.hiddenFor > 0 {
			s.hiddenFor--
			continue
		}
		if caller != nil && caller.MBPkgID != s.MBPkgID {
			continue
		}
		out = append(out, a.sessionJSON(*s))
	}
	return http.StatusOK, out, nil
}

func (a *API) getSession(r *http.Request, _ *Server) (int, any, map[string][]string) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	for _, s := range a.sessions {
		if s.ID == id {
			return http.StatusOK, a.sessionJSON(s), nil
		}
	}
	return http.StatusUnprocessableEntity, nil, map[string][]string{"id": {"The bgp id could not be found"}}
}

func (a *API) createSessions(r *http.Request, caller *Server) (int, any, map[string][]string) {
	if err := r.ParseForm(); err != nil {
		return http.StatusBadRequest, nil, nil
	}
	srv := a.server(r.PostForm.Get("mbpkgid"), caller)
	if srv == nil {
		return http.StatusUnprocessableEntity, nil, invalidMBPkgID
	}
	gid, _ := strconv.ParseInt(r.PostForm.Get("group_id"), 10, 64)
	g, ok := a.groups[gid]
	if !ok {
		return http.StatusUnprocessableEntity, nil, map[string][]string{"group_id": {"The selected group id is invalid."}}
	}
	n := 1
	if r.PostForm.Get("redundant") == "1" {
		n = 2
	}
	var created []session
	add := func(family string, routers []netip.Addr, v4 bool) {
		var customer netip.Addr
		for _, ip := range srv.IPs {
			if ip.Is4() == v4 {
				customer = ip
				break
			}
		}
		if !customer.IsValid() {
			return
		}
		for i := 0; i < n && i < len(routers); i++ {
			a.nextID++
			created = append(created, session{ID: a.nextID, GroupID: gid, MBPkgID: srv.MBPkgID, CustomerIP: customer.String(),
				ProviderIP: routers[i].String(), Family: family, CustomerASN: CustomerASN, ProviderASN: g.ProviderASN, hiddenFor: a.HideNewFor})
		}
	}
	add("ipv4", g.RoutersV4, true)
	if r.PostForm.Get("ipv6") == "1" {
		add("ipv6", g.RoutersV6, false)
	}
	a.sessions = append(a.sessions, created...)
	a.creates++
	switch a.Shape {
	case CreateSessionsMap:
		m := map[string]any{}
		for _, s := range created {
			m[strconv.FormatInt(s.ID, 10)] = a.sessionJSON(s)
		}
		return http.StatusOK, map[string]any{"Sessions": m, "Modified": true}, nil
	case CreateList:
		var l []any
		for _, s := range created {
			l = append(l, a.sessionJSON(s))
		}
		return http.StatusOK, l, nil
	}
	if len(created) == 0 {
		return http.StatusOK, map[string]any{}, nil
	}
	return http.StatusOK, a.sessionJSON(created[0]), nil
}
