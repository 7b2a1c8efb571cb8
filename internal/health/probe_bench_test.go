package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

func BenchmarkHTTPProbeOnce(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	p, err := newHTTP(&anycastv1.HTTPCheck{URL: srv.URL + "/healthz"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Probe(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
