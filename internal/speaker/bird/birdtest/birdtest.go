// Package birdtest runs a real BIRD 2 daemon (Debian's bird2) for tests, configured the way a user would: a
// bird.conf that includes the speaker's three files.
package birdtest

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bird"
)

// Start runs bird with the given router ID until the test ends and returns a speaker driving it.
func Start(t testing.TB, routerID netip.Addr) *bird.Speaker {
	t.Helper()
	bin, err := exec.LookPath("bird")
	if err != nil {
		t.Fatalf("bird is not installed (Debian package bird2; .ci/run installs it): %v", err)
	}
	dir := t.TempDir()
	// A port of its own: BIRD otherwise listens on 0.0.0.0:179, and a second BIRD (another test) could not.
	s := &bird.Speaker{Dir: filepath.Join(dir, "anycast"), Socket: filepath.Join(dir, "bird.ctl"), Log: logr.Discard(),
		ListenPort: uint16(bgptest.FreePort(t, routerID))}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := "router id " + routerID.String() + ";\nprotocol device {}\n"
	for _, f := range bird.Files {
		if err := os.WriteFile(filepath.Join(s.Dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		conf += `include "` + filepath.Join(s.Dir, f) + "\";\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "bird.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", "-c", filepath.Join(dir, "bird.conf"), "-s", s.Socket, "-P", filepath.Join(dir, "bird.pid"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	err = wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return exec.CommandContext(ctx, "birdc", "-s", s.Socket, "show", "status").Run() == nil, nil
	})
	if err != nil {
		t.Fatalf("bird did not start: %s", stderr.String())
	}
	return s
}
