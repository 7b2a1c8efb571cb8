package netactuate

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/anycast-operator/anycast-operator/internal/provider/netactuate/natest"
)

const testKey = "na-key-7f3c9d-never-shown"

var (
	vm1 = natest.Server{MBPkgID: 4101, FQDN: "lax-1.example", IPs: []netip.Addr{netip.MustParseAddr("127.0.0.21"), netip.MustParseAddr("::1")}}
	vm2 = natest.Server{MBPkgID: 4102, FQDN: "lax-2.example", IPs: []netip.Addr{netip.MustParseAddr("127.0.0.22"), netip.MustParseAddr("127.0.0.23")}}
	grp = natest.Group{ID: 100, ProviderASN: 36236,
		RoutersV4: []netip.Addr{netip.MustParseAddr("127.0.0.31"), netip.MustParseAddr("127.0.0.32")},
		RoutersV6: []netip.Addr{netip.MustParseAddr("fd00::31"), netip.MustParseAddr("fd00::32")}}
)

func startAPI(t *testing.T) *natest.API {
	t.Helper()
	api := natest.Start(testKey, []natest.Server{vm1, vm2}, []natest.Group{grp})
	t.Cleanup(api.Close)
	return api
}

// fastClient retries quickly: the tests are about which calls are repeated, not about how long the waits are.
func fastClient(t *testing.T, api *natest.API, key string) *Client {
	t.Helper()
	c, err := New(api.URL, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Backoff, c.MaxBackoff, c.Timeout = time.Millisecond, 2*time.Millisecond, 5*time.Second
	return c
}

func noKey(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), testKey) {
		t.Fatalf("the API key leaked into an error: %v", err)
	}
}

func TestClientRetries(t *testing.T) {
	cases := []struct {
		name      string
		faults    []natest.Fault
		call      func(*Client) error
		wantErr   string // "" for success
		wantCalls int
	}{
		{"5xx then success", []natest.Fault{{Path: "cloud/servers", Status: 500}, {Path: "cloud/servers", Status: 503}},
			func(c *Client) error { _, err := c.Servers(context.Background()); return err }, "", 3},
		{"malformed JSON then success", []natest.Fault{{Path: "bgp/bgpsessions", Body: "{not json"}},
			func(c *Client) error { _, err := c.Sessions(context.Background()); return err }, "", 2},
		{"5xx until the attempts run out", []natest.Fault{{Status: 502}, {Status: 502}, {Status: 502}, {Status: 502}, {Status: 502}},
			func(c *Client) error { _, err := c.Servers(context.Background()); return err }, "HTTP 502", 5},
		{"422 is not retried and says what is wrong", nil,
			func(c *Client) error { _, err := c.NetworkIPs(context.Background(), 999); return err }, "mbpkgid: The mbpkgid must be a valid mbpkgid", 1},
		{"a validation error with fields", []natest.Fault{{Path: "bgp/bgpcreatesessions", Status: 422, Fields: map[string][]string{"group_id": {"The selected group id is invalid."}}}},
			func(c *Client) error {
				_, err := c.CreateSessions(context.Background(), 4101, 100, false, false)
				return err
			}, "group_id: The selected group id is invalid.", 1},
		{"a create is not repeated after a 5xx", []natest.Fault{{Path: "bgp/bgpcreatesessions", Status: 500}},
			func(c *Client) error {
				_, err := c.CreateSessions(context.Background(), 4101, 100, false, false)
				return err
			}, "HTTP 500", 1},
		{"a create is repeated after a 429", []natest.Fault{{Path: "bgp/bgpcreatesessions", Status: 429}},
			func(c *Client) error {
				_, err := c.CreateSessions(context.Background(), 4101, 100, false, false)
				return err
			}, "", 2},
		{"a wrong key is refused, not retried", nil,
			func(c *Client) error {
				bad, _ := New(c.base.String(), "wrong", nil)
				_, err := bad.Servers(context.Background())
				return err
			}, "HTTP 401: Invalid API key", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			api := startAPI(t)
			api.Inject(tc.faults...)
			err := tc.call(fastClient(t, api, testKey))
			noKey(t, err)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want it to say %q", err, tc.wantErr)
			}
			if got := len(api.Requests()); got != tc.wantCalls {
				t.Errorf("%d requests, want %d: %v", got, tc.wantCalls, api.Requests())
			}
		})
	}
}

// TestClientRetryAfter: a 429's Retry-After is the wait before the next attempt (an injected clock).
func TestClientRetryAfter(t *testing.T) {
	api := startAPI(t)
	api.Inject(natest.Fault{Path: "cloud/servers", Status: 429, RetryAfter: "7"})
	c := fastClient(t, api, testKey)
	fc := clocktesting.NewFakeClock(time.Now())
	c.Clock = fc
	done := make(chan error, 1)
	go func() { _, err := c.Servers(context.Background()); done <- err }()
	for !fc.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	fc.Step(7*time.Second - time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("retried before Retry-After: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	fc.Step(time.Millisecond)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(api.Requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

// TestClientTimeout: an answer slower than the timeout is a retryable network error whose text carries no key.
func TestClientTimeout(t *testing.T) {
	api := startAPI(t)
	api.Inject(natest.Fault{Path: "cloud/servers", Delay: 300 * time.Millisecond})
	c := fastClient(t, api, testKey)
	c.Timeout, c.Attempts = 50*time.Millisecond, 1
	_, err := c.Servers(context.Background())
	noKey(t, err)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "GET cloud/servers: no answer in time") {
		t.Fatalf("want a timeout naming the call, got %v", err)
	}
	c.Attempts = 3
	api.Inject(natest.Fault{Path: "cloud/servers", Delay: 300 * time.Millisecond})
	if _, err := c.Servers(context.Background()); err != nil {
		t.Fatalf("a slow answer is retried: %v", err)
	}
}

// TestCreateAnswerShapes: every answer shape NetActuate's clients handle is read, and ASNs quoted or not.
func TestCreateAnswerShapes(t *testing.T) {
	for _, shape := range []natest.CreateShape{natest.CreateOneSession, natest.CreateSessionsMap, natest.CreateList} {
		for _, numbers := range []bool{false, true} {
			api := startAPI(t)
			api.Shape, api.ASNsAsNumbers = shape, numbers
			got, err := fastClient(t, api, testKey).CreateSessions(context.Background(), 4101, 100, true, true)
			if err != nil {
				t.Fatal(err)
			}
			want := 4 // redundant, both families
			if shape == natest.CreateOneSession {
				want = 1
			}
			if len(got) != want || got[0].ProviderASN != 36236 || got[0].CustomerASN != natest.CustomerASN || got[0].ID == 0 {
				t.Errorf("shape %d, ASNs as numbers %v: read %+v", shape, numbers, got)
			}
		}
	}
}

func TestRetryAfterForms(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{"": 0, "3": 3 * time.Second, "junk": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second} {
		if got := retryAfter(in, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", in, got, want)
		}
	}
}
