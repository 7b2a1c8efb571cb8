package promtext

import (
	"bufio"
	"fmt"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

	"github.com/anycast-operator/anycast-operator/internal/procstat"
)

// processMetrics writes, at each scrape, what Prometheus's process and Go collectors export under the same names:
// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_start_time_seconds, process_open_fds, process_max_fds, go_goroutines, go_memstats_heap_inuse_bytes. The
// figures come from /proc/self and runtime/metrics, which stops nothing (unlike runtime.ReadMemStats).
type processMetrics struct {
	start time.Time
}

// AddProcessMetrics adds the process's own metrics to the registry.
func AddProcessMetrics(r *Registry) {
	start := time.Now()
	if t, err := procstat.Start(os.Getpid()); err == nil {
		start = t
	}
	r.add(processMetrics{start: start})
}

func (p processMetrics) write(w *bufio.Writer) {
	gauge := func(name, help, typ string, v float64) {
		desc{name: name, help: help, typ: typ}.header(w)
		fmt.Fprintf(w, "%s %s\n", name, formatFloat(v))
	}
	pid := os.Getpid()
	if cpu, err := procstat.CPU(pid); err == nil {
		gauge("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", cpu.Seconds())
	}
	if rss, err := procstat.MemoryMB(pid, "VmRSS"); err == nil {
		gauge("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", rss*(1<<20))
	}
	if vsize, err := procstat.MemoryMB(pid, "VmSize"); err == nil {
		gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", vsize*(1<<20))
	}
	gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge", float64(p.start.UnixNano())/1e9)
	if entries, err := os.ReadDir("/proc/self/fd"); err == nil {
		gauge("process_open_fds", "Number of open file descriptors.", "gauge", float64(len(entries)))
	}
	if max, err := maxFDs(); err == nil {
		gauge("process_max_fds", "Maximum number of open file descriptors.", "gauge", max)
	}
	samples := []metrics.Sample{{Name: "/sched/goroutines:goroutines"}, {Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"}}
	metrics.Read(samples)
	if samples[0].Value.Kind() == metrics.KindUint64 {
		gauge("go_goroutines", "Number of goroutines that currently exist.", "gauge", float64(samples[0].Value.Uint64()))
	}
	if samples[1].Value.Kind() == metrics.KindUint64 && samples[2].Value.Kind() == metrics.KindUint64 {
		gauge("go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use.", "gauge",
			float64(samples[1].Value.Uint64()+samples[2].Value.Uint64()))
	}
}

// maxFDs is the soft limit of open files, from /proc/self/limits.
func maxFDs() (float64, error) {
	data, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.ParseFloat(f[0], 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/self/limits has no Max open files")
}
