package singlenode

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/google/nftables"
)

// The kernel settings a kubelet with protectKernelDefaults false rewrites (container_manager_linux.go), and the
// ones the bridge CNI plugin turns on.
var sysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding",
}

// Host paths containerd, CNI and the kubelet write to even when pointed at private directories (containerd's socket,
// the kubelet's /var/log/containers links); each must be as it was.
var hostPaths = []string{
	"/run/containerd", "/var/lib/containerd", "/var/lib/cni", "/etc/cni", "/opt/cni",
	"/var/log/containers", "/var/log/pods", "/var/lib/kubelet", "/etc/kubernetes", "/run/kubernetes",
	"/usr/libexec/kubernetes",
}

// hostState is what the machine looked like before the cluster started; restore puts it back, diff says what is
// still different.
type hostState struct {
	sysctls  map[string]string
	paths    map[string]bool
	links    []string
	loAddrs  []string
	mounts   []string
	cgroups  map[string]bool
	iptables map[string]string // iptables-save and ip6tables-save, without counters
	// nftTables are the kernel's nf_tables tables ("ip filter"): this Debian's iptables is iptables-nft, which
	// creates a table on first use and cannot delete one.
	nftTables []string
	netns     []string
}

// snapshot records the host; extra are more paths the workloads create (hostPath volumes).
func snapshot(extra ...string) (*hostState, error) {
	s := &hostState{sysctls: map[string]string{}, paths: map[string]bool{}, cgroups: map[string]bool{}, iptables: map[string]string{}}
	for _, k := range sysctls {
		v, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			return nil, fmt.Errorf("reading sysctl %s: %w", k, err)
		}
		s.sysctls[k] = strings.TrimSpace(string(v))
	}
	for _, p := range append(slices.Clone(hostPaths), extra...) {
		_, err := os.Lstat(p)
		s.paths[p] = err == nil
	}
	var err error
	if s.links, err = lines("ip", "-o", "link", "show"); err != nil {
		return nil, err
	}
	for i, l := range s.links { // "3: eth0: <...> ..." -> "eth0"
		if f := strings.Fields(l); len(f) > 1 {
			s.links[i] = strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
		}
	}
	if s.loAddrs, err = lines("ip", "-o", "addr", "show", "dev", "lo"); err != nil {
		return nil, err
	}
	if s.mounts, err = mounts(); err != nil {
		return nil, err
	}
	for _, c := range cgroupDirs() {
		_, err := os.Stat(c)
		s.cgroups[c] = err == nil
	}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			continue
		}
		out, err := exec.Command(tool).Output()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tool, err)
		}
		s.iptables[tool] = normalizeRules(out)
	}
	if s.nftTables, err = nftTables(); err != nil {
		return nil, err
	}
	if s.netns, err = dirNames("/run/netns"); err != nil {
		return nil, err
	}
	return s, nil
}

func nftTables() ([]string, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, err
	}
	defer conn.CloseLasting()
	ts, err := conn.ListTables()
	if err != nil {
		return nil, fmt.Errorf("listing nf_tables tables: %w", err)
	}
	var out []string
	for _, t := range ts {
		out = append(out, nftName(t))
	}
	sort.Strings(out)
	return out, nil
}

func nftName(t *nftables.Table) string {
	fam := map[nftables.TableFamily]string{nftables.TableFamilyIPv4: "ip", nftables.TableFamilyIPv6: "ip6", nftables.TableFamilyINet: "inet",
		nftables.TableFamilyARP: "arp", nftables.TableFamilyBridge: "bridge", nftables.TableFamilyNetdev: "netdev"}[t.Family]
	return fam + " " + t.Name
}

// deleteNewTables deletes the nf_tables tables that were not there before (with their chains and rules).
func (s *hostState) deleteNewTables() error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	defer conn.CloseLasting()
	ts, err := conn.ListTables()
	if err != nil {
		return err
	}
	n := 0
	for _, t := range ts {
		if !slices.Contains(s.nftTables, nftName(t)) {
			conn.DelTable(t)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return conn.Flush()
}

// cgroupDirs are the cgroups the kubelet (kubepods) and a CRI-less ctr run (k8s.io) create, in every hierarchy.
func cgroupDirs() []string {
	var out []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, r := range append(roots, "/sys/fs/cgroup") {
		for _, n := range []string{"kubepods", "kubepods.slice", "k8s.io"} {
			out = append(out, filepath.Join(r, n))
		}
	}
	return out
}

// restore undoes what the cluster left: kernel settings, interfaces, addresses on lo, cgroups, iptables chains,
// network namespaces, host paths. Every step runs even when an earlier one fails.
func (s *hostState) restore() []error {
	var errs []error
	for k, v := range s.sysctls {
		if cur, _ := os.ReadFile(filepath.Join("/proc/sys", k)); strings.TrimSpace(string(cur)) != v {
			if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restoring %s: %w", k, err))
			}
		}
	}
	if names, err := dirNames("/run/netns"); err == nil {
		for _, n := range names {
			if !slices.Contains(s.netns, n) && strings.HasPrefix(n, "cni-") {
				p := filepath.Join("/run/netns", n)
				_ = unmount(p)
				if err := os.Remove(p); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if after, err := snapshot(); err == nil {
		for _, l := range after.links {
			if !slices.Contains(s.links, l) && (l == bridgeName || strings.HasPrefix(l, "veth")) {
				// A pod's veth also goes by itself once its network namespace has: gone in between is fine.
				if out, err := exec.Command("ip", "link", "del", l).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find device") {
					errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", l, err, out))
				}
			}
		}
		for tool, rules := range after.iptables {
			if rules != s.iptables[tool] && s.iptables[tool] != "" {
				errs = append(errs, restoreRules(tool, s.iptables[tool])...)
			}
		}
	}
	if err := s.deleteNewTables(); err != nil {
		errs = append(errs, fmt.Errorf("deleting nf_tables tables: %w", err))
	}
	if lo, err := lines("ip", "-o", "addr", "show", "dev", "lo"); err == nil && !slices.Equal(lo, s.loAddrs) {
		for _, l := range lo {
			if strings.Contains(l, " "+ServiceIP+"/32 ") && !slices.Contains(s.loAddrs, l) {
				if out, err := exec.Command("ip", "addr", "del", ServiceIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
					errs = append(errs, fmt.Errorf("ip addr del %s dev lo: %v: %s", ServiceIP, err, out))
				}
			}
		}
	}
	for _, c := range cgroupDirs() {
		if !s.cgroups[c] {
			if err := removeCgroup(c); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for p, existed := range s.paths {
		if !existed {
			_ = unmountUnder(p)
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// diff lists what differs from the snapshot now.
func (s *hostState) diff() ([]string, error) {
	now, err := snapshot(slices.Collect(maps.Keys(s.paths))...)
	if err != nil {
		return nil, err
	}
	var out []string
	for k, v := range s.sysctls {
		if now.sysctls[k] != v {
			out = append(out, fmt.Sprintf("sysctl %s is %s, was %s", k, now.sysctls[k], v))
		}
	}
	for p, existed := range s.paths {
		if now.paths[p] != existed {
			out = append(out, fmt.Sprintf("%s exists: %v, before: %v", p, now.paths[p], existed))
		}
	}
	for c, existed := range s.cgroups {
		if now.cgroups[c] != existed {
			out = append(out, fmt.Sprintf("cgroup %s exists: %v, before: %v", c, now.cgroups[c], existed))
		}
	}
	add := func(what string, before, after []string) {
		for _, x := range after {
			if !slices.Contains(before, x) {
				out = append(out, fmt.Sprintf("new %s: %s", what, x))
			}
		}
		for _, x := range before {
			if !slices.Contains(after, x) {
				out = append(out, fmt.Sprintf("%s gone: %s", what, x))
			}
		}
	}
	add("interface", s.links, now.links)
	add("address on lo", s.loAddrs, now.loAddrs)
	add("mount", s.mounts, now.mounts)
	add("network namespace", s.netns, now.netns)
	add("nf_tables table", s.nftTables, now.nftTables)
	for tool, rules := range s.iptables {
		if now.iptables[tool] != rules {
			out = append(out, fmt.Sprintf("%s differs:\n%s\nwas:\n%s", tool, now.iptables[tool], rules))
		}
	}
	return out, nil
}

// restoreRules puts back the tables of before (iptables-restore replaces each table it is given); tables that were
// not there at all are deleted by deleteNewTables.
func restoreRules(tool, before string) []error {
	restore := strings.TrimSuffix(tool, "-save") + "-restore"
	cmd := exec.Command(restore)
	cmd.Stdin = strings.NewReader(before)
	if out, err := cmd.CombinedOutput(); err != nil {
		return []error{fmt.Errorf("%s: %v: %s", restore, err, out)}
	}
	return nil
}

// normalizeRules drops iptables-save's comments and packet counters, which change on their own.
func normalizeRules(out []byte) string {
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, ":") { // ":CHAIN POLICY [packets:bytes]"
			if i := strings.LastIndex(l, " ["); i > 0 {
				l = l[:i]
			}
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

// removeCgroup removes a cgroup and its children, deepest first (a cgroup directory goes with rmdir only).
func removeCgroup(dir string) error {
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var first error
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && first == nil {
			first = fmt.Errorf("removing cgroup %s: %w", d, err)
		}
	}
	return first
}

// mounts are the mount points of this mount namespace.
func mounts() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			out = append(out, f[4])
		}
	}
	return out, nil
}

// unmountUnder unmounts every mount point at or below dir, deepest first.
func unmountUnder(dir string) error {
	ms, err := mounts()
	if err != nil {
		return err
	}
	var under []string
	for _, m := range ms {
		if m == dir || strings.HasPrefix(m, strings.TrimSuffix(dir, "/")+"/") {
			under = append(under, m)
		}
	}
	sort.Slice(under, func(i, j int) bool { return len(under[i]) > len(under[j]) })
	var first error
	for _, m := range under {
		if err := unmount(m); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func unmount(path string) error {
	if out, err := exec.Command("umount", "-l", path).CombinedOutput(); err != nil {
		return fmt.Errorf("umount %s: %v: %s", path, err, out)
	}
	return nil
}

func lines(name string, args ...string) ([]string, error) {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return nil, fmt.Errorf("%s %v: %w", name, args, err)
	}
	var ls []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			ls = append(ls, l)
		}
	}
	return ls, nil
}

func dirNames(dir string) ([]string, error) {
	es, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out, err
}
