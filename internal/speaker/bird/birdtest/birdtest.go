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
	return StartDaemon(t, routerID).Speaker
}

// Daemon is a running bird and the speaker that drives it.
type Daemon struct {
	Speaker *bird.Speaker
	conf    string
	pidFile string
	cmd     *exec.Cmd
	stderr  *strings.Builder
}

// StartDaemon runs bird with the given router ID until the test ends.
func StartDaemon(t testing.TB, routerID netip.Addr) *Daemon {
	t.Helper()
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatalf("bird is not installed (Debian package bird2; make deps installs it): %v", err)
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
	d := &Daemon{Speaker: s, conf: filepath.Join(dir, "bird.conf"), pidFile: filepath.Join(dir, "bird.pid")}
	if err := os.WriteFile(d.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Kill)
	d.Restart(t)
	return d
}

// Restart starts bird again (after Kill); it reads the include files the speaker last wrote.
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	d.cmd = exec.Command("bird", "-f", "-c", d.conf, "-s", d.Speaker.Socket, "-P", d.pidFile)
	d.stderr = &strings.Builder{}
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return exec.CommandContext(ctx, "birdc", "-s", d.Speaker.Socket, "show", "status").Run() == nil, nil
	})
	if err != nil {
		t.Fatalf("bird did not start: %s", d.stderr.String())
	}
}

// Kill stops bird at once, as a crash would.
func (d *Daemon) Kill() {
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Kill()
		_ = d.cmd.Wait()
		d.cmd = nil
	}
}
