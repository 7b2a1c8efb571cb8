package singlenode

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// markerPath records the running cluster (its PID, directory and the host as it was), so that a run killed before
// its cleanup (SIGKILL, a timeout's panic in another package) is cleaned up by the next one, as netlab does for its
// namespaces.
const markerPath = "/run/anycast-singlenode.json"

type marker struct {
	PID  int
	Dir  string
	Host storedHost
}

// storedHost is hostState with exported fields, for the marker.
type storedHost struct {
	Sysctls   map[string]string
	Paths     map[string]bool
	Links     []string
	LoAddrs   []string
	Mounts    []string
	Cgroups   map[string]bool
	Iptables  map[string]string
	NftTables []string
	Netns     []string
}

func (s *hostState) stored() storedHost {
	return storedHost{s.sysctls, s.paths, s.links, s.loAddrs, s.mounts, s.cgroups, s.iptables, s.nftTables, s.netns}
}

func (h storedHost) state() *hostState {
	return &hostState{h.Sysctls, h.Paths, h.Links, h.LoAddrs, h.Mounts, h.Cgroups, h.Iptables, h.NftTables, h.Netns}
}

func writeMarker(dir string, host *hostState) error {
	data, err := json.Marshal(marker{PID: os.Getpid(), Dir: dir, Host: host.stored()})
	if err != nil {
		return err
	}
	return os.WriteFile(markerPath, data, 0o600)
}

// removeStale cleans up after a run that died with its cluster up: it kills what that cluster ran (its daemons name
// its directory; its containers are in the kubepods cgroups), unmounts and removes the directory, and puts the host
// back as that run found it.
func removeStale(t testing.TB) error {
	data, err := os.ReadFile(markerPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var m marker
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%s: %w", markerPath, err)
	}
	if m.PID != os.Getpid() && syscall.Kill(m.PID, 0) == nil {
		return fmt.Errorf("another test's cluster runs (PID %d, %s)", m.PID, m.Dir)
	}
	t.Logf("a run that was killed (PID %d) left its cluster in %s: cleaning up", m.PID, m.Dir)
	killMatching(m.Dir)
	killMatching("containerd-shim", containerdSocket)
	for _, c := range cgroupDirs() {
		killCgroup(c)
	}
	time.Sleep(500 * time.Millisecond) // SIGKILL is delivered asynchronously; cgroups empty only after
	var errs []error
	if err := unmountUnder(m.Dir); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, m.Host.state().restore()...)
	if strings.HasPrefix(m.Dir, os.TempDir()) {
		errs = append(errs, os.RemoveAll(m.Dir))
	}
	errs = append(errs, os.Remove(markerPath))
	return errors.Join(errs...)
}

// killCgroup kills every process in a cgroup and its children.
func killCgroup(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		procs, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, f := range strings.Fields(string(procs)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return nil
	})
}
