// Package netactuate provisions a node's BGP sessions through the NetActuate API: a typed client for the few calls
// it needs (servers, their IPs, BGP sessions, creating sessions), and the provisioning flow the node agent runs
// (discover the node's server, list its sessions, create the missing ones exactly once).
//
// The API (vAPI2) answers every call with an envelope {result, message, data, code, fields}; the key, when one is
// used, is the query parameter "key". The key is never put into an error, a log line or a status: errors name the
// method and path only. docs/netactuate-api.md records what NetActuate's own clients do, field by field.
package netactuate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/utils/clock"
)

// DefaultBaseURL is NetActuate's vAPI2.
const DefaultBaseURL = "https://vapi2.netactuate.com/api/"

// Client calls the NetActuate API. The zero value is not usable: build it with New.
type Client struct {
	base *url.URL
	// key is the API key; empty for VM IP-based authentication (the API identifies the VM by the source address of
	// the call, so calls must come from the node itself).
	key  string
	http *http.Client

	// Timeout bounds one attempt (connect, request and response); a slower answer counts as a network error.
	Timeout time.Duration
	// Attempts bounds the tries of one call: retries follow 5xx, 429 and network errors, never another 4xx.
	Attempts int
	// Backoff is the first wait between attempts; it doubles each time up to MaxBackoff, with full jitter.
	Backoff, MaxBackoff time.Duration
	// MaxRetryAfter caps a 429's Retry-After.
	MaxRetryAfter time.Duration
	Clock         clock.WithTicker
	rand          func() float64
}

// New returns a client for baseURL ("" for DefaultBaseURL) with key ("" for IP-based authentication). localAddr,
// when valid, is the source address of every call: with IP-based authentication it must be the node's own.
func New(baseURL, key string, localAddr net.IP) (*Client, error) {
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	base, err := url.Parse(baseURL)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return nil, fmt.Errorf("NetActuate API URL %q is not an http(s) URL", baseURL)
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	if localAddr != nil {
		dialer.LocalAddr = &net.TCPAddr{IP: localAddr}
	}
	transport := &http.Transport{DialContext: dialer.DialContext, TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns: 4, IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true}
	return &Client{
		base: base, key: key, http: &http.Client{Transport: transport},
		Timeout: 15 * time.Second, Attempts: 5, Backoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second,
		MaxRetryAfter: 2 * time.Minute, Clock: clock.RealClock{}, rand: rand.Float64,
	}, nil
}

// CloseIdleConnections closes the client's kept-alive connections (a caller that builds a client per round, to pick
// up a rotated key, closes the last one's).
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// APIError is an answer the API gave: an HTTP status, the envelope's code, message and per-field messages.
type APIError struct {
	Method, Path string
	Status       int
	Code         int
	Message      string
	Fields       map[string][]string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "NetActuate API %s %s: HTTP %d", e.Method, e.Path, e.Status)
	if e.Code != 0 && e.Code != e.Status {
		fmt.Fprintf(&b, ", code %d", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if len(e.Fields) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(e.Fields)) {
			parts = append(parts, k+": "+strings.Join(e.Fields[k], "; "))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	return b.String()
}

// Retryable reports whether the call may succeed when repeated: server errors and rate limiting.
func (e *APIError) Retryable() bool { return e.Status >= 500 || e.Status == http.StatusTooManyRequests }

// NotFound reports whether the API says the object does not exist.
func (e *APIError) NotFound() bool {
	return e.Status == http.StatusNotFound || e.Code == http.StatusNotFound
}

// Unauthorized reports whether the API refused the caller (a wrong key, or a source address it does not know).
func (e *APIError) Unauthorized() bool {
	return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden || e.Code == http.StatusUnauthorized || e.Code == http.StatusForbidden
}

// envelope is every answer's wrapper. code is a number in every client seen, but tolerated as a string; message
// may be null.
type envelope struct {
	Result  string          `json:"result"`
	Message *string         `json:"message"`
	Data    json.RawMessage `json:"data"`
	Code    flexInt         `json:"code"`
	Fields  json.RawMessage `json:"fields"`
}

// call makes one API call with retries and decodes the envelope's data into out (nil: ignore it). form, when not
// nil, is sent form-encoded with POST.
func (c *Client) call(ctx context.Context, method, path string, form url.Values, retry bool, out any) error {
	attempts := max(c.Attempts, 1)
	backoff := c.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		var wait time.Duration
		wait, err = c.once(ctx, method, path, form, out)
		if err == nil || attempt >= attempts || !retryable(err, retry) {
			return err
		}
		if wait == 0 {
			wait = time.Duration(c.rand() * float64(backoff)) // full jitter
			backoff = min(backoff*2, c.MaxBackoff)
		}
		t := c.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (after %d attempts: %w)", ctx.Err(), attempt, err)
		case <-t.C():
		}
	}
}

// retryable: 5xx, 429 and network errors, when the call may be repeated at all; a 429 always, since the API did
// not act on the request.
func retryable(err error, repeatable bool) bool {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Status == http.StatusTooManyRequests || (repeatable && apiErr.Retryable())
	}
	var decodeErr *DecodeError
	if errors.As(err, &decodeErr) {
		return repeatable
	}
	return repeatable // a network error or a timeout
}

// DecodeError is an answer that is not the JSON the API promises.
type DecodeError struct {
	Method, Path string
	Status       int
	Err          error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("NetActuate API %s %s: HTTP %d with a body that is not the expected JSON: %v", e.Method, e.Path, e.Status, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// once makes one attempt. wait is the server's Retry-After, if it sent one.
func (c *Client) once(ctx context.Context, method, path string, form url.Values, out any) (wait time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	ref, err := url.Parse(path)
	if err != nil {
		return 0, fmt.Errorf("NetActuate API %s %s: %w", method, path, err)
	}
	u := c.base.ResolveReference(ref)
	if c.key != "" {
		q := u.Query()
		q.Set("key", c.key)
		u.RawQuery = q.Encode()
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return 0, fmt.Errorf("NetActuate API %s %s: %w", method, path, redact(err))
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "anycast-operator")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// *url.Error carries the URL, and with it the key: keep only what went wrong.
		return 0, fmt.Errorf("NetActuate API %s %s: %w", method, path, redact(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, fmt.Errorf("NetActuate API %s %s: reading the answer: %w", method, path, redact(err))
	}
	var env envelope
	decodeErr := json.Unmarshal(raw, &env)
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	if decodeErr == nil && ok && (env.Code == 0 || (env.Code >= 200 && env.Code < 300)) && env.Result != "error" {
		if out == nil || len(env.Data) == 0 || string(env.Data) == "null" {
			return 0, nil
		}
		if err := json.Unmarshal(env.Data, out); err != nil {
			return 0, &DecodeError{Method: method, Path: path, Status: resp.StatusCode, Err: err}
		}
		return 0, nil
	}
	if decodeErr != nil && ok {
		return 0, &DecodeError{Method: method, Path: path, Status: resp.StatusCode, Err: decodeErr}
	}
	apiErr := &APIError{Method: method, Path: path, Status: resp.StatusCode, Code: int(env.Code), Fields: decodeFields(env.Fields)}
	if env.Message != nil {
		apiErr.Message = *env.Message
	}
	if apiErr.Message == "" && decodeErr != nil {
		apiErr.Message = http.StatusText(resp.StatusCode)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		wait = min(retryAfter(resp.Header.Get("Retry-After"), c.Clock.Now()), c.MaxRetryAfter)
	}
	return wait, apiErr
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// decodeFields reads the per-field messages of a validation error: each a list of strings, or a string.
func decodeFields(raw json.RawMessage) map[string][]string {
	if len(raw) == 0 {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || len(m) == 0 {
		return nil
	}
	out := map[string][]string{}
	for k, v := range m {
		var list []string
		if json.Unmarshal(v, &list) == nil {
			out[k] = list
			continue
		}
		var one string
		if json.Unmarshal(v, &one) == nil {
			out[k] = []string{one}
			continue
		}
		out[k] = []string{string(bytes.TrimSpace(v))}
	}
	return out
}

// redact strips the URL (and with it the key) from a transport error.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if errors.Is(ue.Err, context.DeadlineExceeded) || ue.Timeout() {
			return fmt.Errorf("no answer in time: %w", context.DeadlineExceeded)
		}
		return ue.Err
	}
	return err
}

// flexInt is a number the API sends either as a JSON number or as a quoted one (ASNs, sometimes codes).
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(bytes.TrimSpace(b)), `"`)
	if s == "" || s == "null" {
		*f = 0
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not an integer", s)
	}
	*f = flexInt(v)
	return nil
}
