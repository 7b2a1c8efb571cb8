package netactuate

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
)

// Server is one VM of the account (GET cloud/servers). mbpkgid is its id; ip and ipv6 its primary addresses.
type Server struct {
	MBPkgID flexInt `json:"mbpkgid"`
	FQDN    string  `json:"fqdn"`
	IP      string  `json:"ip"`
	IPv6    string  `json:"ipv6"`
}

// NetworkIP is one address of a server (GET cloud/networkips/{mbpkgid}).
type NetworkIP struct {
	IP      string  `json:"ip"`
	Primary flexInt `json:"primary"`
}

// NetworkIPs are a server's addresses by family.
type NetworkIPs struct {
	IPv4 []NetworkIP `json:"IPv4"`
	IPv6 []NetworkIP `json:"IPv6"`
}

// Session is one BGP session (GET bgp/bgpsessions). The ASNs come as quoted numbers from most answers and as plain
// numbers from some; both are read.
type Session struct {
	ID             flexInt `json:"id"`
	GroupID        flexInt `json:"group_id"`
	CustomerPeerIP string  `json:"customer_peer_ip"`
	ProviderPeerIP string  `json:"provider_peer_ip"`
	ProviderIPType string  `json:"provider_ip_type"` // "ipv4" or "ipv6"
	CustomerASN    flexInt `json:"customer_asn"`
	ProviderASN    flexInt `json:"provider_asn"`
	Locked         flexInt `json:"locked"`
	Location       string  `json:"location"`
	Description    string  `json:"description"`
	State          any     `json:"state"`
}

// Servers lists the account's servers.
func (c *Client) Servers(ctx context.Context) ([]Server, error) {
	var out []Server
	return out, c.getList(ctx, "cloud/servers", &out)
}

// NetworkIPs lists a server's addresses.
func (c *Client) NetworkIPs(ctx context.Context, mbpkgid int64) (NetworkIPs, error) {
	var out NetworkIPs
	return out, c.call(ctx, "GET", "cloud/networkips/"+strconv.FormatInt(mbpkgid, 10), nil, true, &out)
}

// Sessions lists the account's BGP sessions.
func (c *Client) Sessions(ctx context.Context) ([]Session, error) {
	var out []Session
	return out, c.getList(ctx, "bgp/bgpsessions", &out)
}

// Session reads one BGP session.
func (c *Client) Session(ctx context.Context, id int64) (Session, error) {
	var out Session
	return out, c.call(ctx, "GET", "bgp/bgpsession/"+strconv.FormatInt(id, 10), nil, true, &out)
}

// CreateSessions asks for the sessions of a server in a group. The call is not repeated after an error that may
// have reached the API (a 5xx, a timeout): the caller lists the sessions again before asking again, so that a retry
// never creates a second set. What it returns is what the answer listed, in whichever of the shapes NetActuate's
// clients have seen (one session, {sessions|Sessions: map or list, modified}, a list); it may be empty.
func (c *Client) CreateSessions(ctx context.Context, mbpkgid, groupID int64, ipv6, redundant bool) ([]Session, error) {
	form := url.Values{"mbpkgid": {strconv.FormatInt(mbpkgid, 10)}, "group_id": {strconv.FormatInt(groupID, 10)}}
	if ipv6 {
		form.Set("ipv6", "1")
	}
	if redundant {
		form.Set("redundant", "1")
	}
	var raw json.RawMessage
	if err := c.call(ctx, "POST", "bgp/bgpcreatesessions", form, false, &raw); err != nil {
		return nil, err
	}
	return decodeCreated(raw), nil
}

// decodeCreated reads the sessions in a create answer, whatever its shape; unknown shapes give none.
func decodeCreated(raw json.RawMessage) []Session {
	var list []Session
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return nil
	}
	for _, k := range []string{"sessions", "Sessions"} {
		if v, ok := obj[k]; ok {
			if json.Unmarshal(v, &list) == nil {
				return list
			}
			var byID map[string]Session
			if json.Unmarshal(v, &byID) == nil {
				for _, id := range slices.Sorted(maps.Keys(byID)) {
					list = append(list, byID[id])
				}
				return list
			}
		}
	}
	if v, ok := obj["session"]; ok {
		var s Session
		if json.Unmarshal(v, &s) == nil && s.ID != 0 {
			return []Session{s}
		}
	}
	var s Session
	if json.Unmarshal(raw, &s) == nil && s.ID != 0 {
		return []Session{s}
	}
	return nil
}

// getList reads a list, following a paginated answer ({current_page, last_page, data} or {paginator: …}) to its
// last page.
func (c *Client) getList(ctx context.Context, path string, out any) error {
	var raw json.RawMessage
	if err := c.call(ctx, "GET", path, nil, true, &raw); err != nil {
		return err
	}
	items, last, ok := unwrapPage(raw)
	if !ok {
		if err := json.Unmarshal(raw, out); err != nil {
			return &DecodeError{Method: "GET", Path: path, Status: 200, Err: err}
		}
		return nil
	}
	all := items
	for page := 2; page <= last; page++ {
		var next json.RawMessage
		if err := c.call(ctx, "GET", fmt.Sprintf("%s?page=%d", path, page), nil, true, &next); err != nil {
			return err
		}
		more, _, _ := unwrapPage(next)
		all = append(all, more...)
	}
	b, _ := json.Marshal(all)
	if err := json.Unmarshal(b, out); err != nil {
		return &DecodeError{Method: "GET", Path: path, Status: 200, Err: err}
	}
	return nil
}

type page struct {
	CurrentPage int               `json:"current_page"`
	LastPage    int               `json:"last_page"`
	Data        []json.RawMessage `json:"data"`
}

func unwrapPage(raw json.RawMessage) ([]json.RawMessage, int, bool) {
	var wrapped struct {
		Paginator *page `json:"paginator"`
		page
	}
	if json.Unmarshal(raw, &wrapped) != nil {
		return nil, 0, false
	}
	if wrapped.Paginator != nil {
		return wrapped.Paginator.Data, wrapped.Paginator.LastPage, true
	}
	if wrapped.LastPage > 0 {
		return wrapped.Data, wrapped.LastPage, true
	}
	return nil, 0, false
}

// addresses of a server: its primary addresses and those networkips lists.
func (ips NetworkIPs) addresses() []netip.Addr {
	var out []netip.Addr
	for _, ip := range append(append([]NetworkIP{}, ips.IPv4...), ips.IPv6...) {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}
