package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

const rssInterval = 50 * time.Millisecond

// rssSampler tracks the resident set size of one process (litefs) while
// the mount side runs. A nil sampler (no known pid) measures nothing.
type rssSampler struct {
	pid int

	mu      sync.Mutex
	peakKB  int64 // highest VmRSS seen in any window
	samples int
	readErr error // first failed read, e.g. the process is gone
}

func newRSSSampler(pid int) *rssSampler {
	if pid <= 0 {
		return nil
	}
	return &rssSampler{pid: pid}
}

// during runs fn while sampling VmRSS every rssInterval (plus once at each
// end, so short runs still get samples) and returns the peak seen in this
// window. The overall peak is kept too.
func (s *rssSampler) during(fn func() error) (peakKB int64, err error) {
	if s == nil {
		return 0, fn()
	}
	stop := make(chan struct{})
	done := make(chan int64)
	go func() {
		peak := s.sample()
		t := time.NewTicker(rssInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				peak = max(peak, s.sample())
			case <-stop:
				done <- max(peak, s.sample())
				return
			}
		}
	}()
	err = fn()
	close(stop)
	peakKB = <-done
	s.mu.Lock()
	s.peakKB = max(s.peakKB, peakKB)
	s.mu.Unlock()
	return peakKB, err
}

// sample reads VmRSS once; a failure is remembered and counts as 0.
func (s *rssSampler) sample() int64 {
	kb, err := readStatusKB(s.pid, "VmRSS")
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.readErr == nil {
			s.readErr = err
		}
		return 0
	}
	s.samples++
	return kb
}

// result returns the overall peak, the sample count and the first error.
func (s *rssSampler) result() (peakKB int64, samples int, err error) {
	if s == nil {
		return 0, 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peakKB, s.samples, s.readErr
}

// readStatusKB reads a "kB" field such as VmRSS or VmHWM of /proc/PID/status.
func readStatusKB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read %s of pid %d: %w", field, pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if kb, ok := parseStatusLine(sc.Text(), field); ok {
			return kb, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s of pid %d: %w", field, pid, err)
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// parseStatusLine parses a line like "VmRSS:	   12345 kB".
func parseStatusLine(line, field string) (int64, bool) {
	rest, ok := strings.CutPrefix(line, field+":")
	if !ok {
		return 0, false
	}
	f := strings.Fields(rest)
	if len(f) != 2 || f[1] != "kB" {
		return 0, false
	}
	kb, err := strconv.ParseInt(f[0], 10, 64)
	return kb, err == nil
}
