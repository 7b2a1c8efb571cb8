// Package procstat reads a process's CPU time and memory from /proc: what the kernel charges the process, not what
// it says of itself. The footprint benchmarks measure the agent and the speakers it is compared with by it, and the
// agent exports its own process metrics from it.
package procstat

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of /proc/PID/stat's CPU times on Linux.
const userHZ = 100

// CPU is a process's user+system CPU time (fields 14 and 15 of /proc/PID/stat).
func CPU(pid int) (time.Duration, error) {
	user, sys, err := Times(pid)
	return user + sys, err
}

// Times is a process's user and system CPU time, apart.
func Times(pid int) (user, sys time.Duration, err error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, 0, err
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return time.Duration(utime) * time.Second / userHZ, time.Duration(stime) * time.Second / userHZ, nil
}

// Start is when a process started: field 22 of /proc/PID/stat, in clock ticks since boot (btime of /proc/stat).
func Start(pid int) (time.Time, error) {
	f, err := statFields(pid)
	if err != nil {
		return time.Time{}, err
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("/proc/%d/stat: starttime %q", pid, f[19])
	}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(stat), "\n") {
		if rest, ok := strings.CutPrefix(line, "btime "); ok {
			boot, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err != nil {
				return time.Time{}, err
			}
			return time.Unix(boot, 0).Add(time.Duration(ticks) * time.Second / userHZ), nil
		}
	}
	return time.Time{}, errors.New("/proc/stat has no btime")
}

// statFields are the fields of /proc/PID/stat from the third (state) on: index i is field i+3.
func statFields(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // the command name may hold spaces
	if len(f) < 20 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

// MemoryMB reads a figure of /proc/PID/status (VmRSS, VmHWM, ...) in MB (2^20 bytes).
func MemoryMB(pid int, field string) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseFloat(f[0], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// Usage is a process's CPU use over a window, in percent of one core.
type Usage struct{ User, System float64 }

// Total is user and system together.
func (u Usage) Total() float64 { return u.User + u.System }

// Window measures a process's CPU use over a window: during runs while the window is open.
func Window(pid int, during func()) (Usage, error) {
	t0 := time.Now()
	u0, s0, err := Times(pid)
	if err != nil {
		return Usage{}, err
	}
	during()
	u1, s1, err := Times(pid)
	if err != nil {
		return Usage{}, err
	}
	elapsed := float64(time.Since(t0))
	return Usage{User: float64(u1-u0) / elapsed * 100, System: float64(s1-s0) / elapsed * 100}, nil
}
