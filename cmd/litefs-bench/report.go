package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

const rssTargetKB = 32 << 10 // 32 MiB: litefs must stay small whatever the database size

// Result labels.
const (
	pass = "PASS"
	miss = "MISS"
	na   = "n/a"
)

// report is everything printed at the end; its JSON form is the -json output.
type report struct {
	started time.Time
	mainRan bool // the single-node workloads ran (not only replication)

	Stat      string      `json:"stat"`   // how runs of one side are combined
	Rounds    int         `json:"rounds"` // runs per side per workload
	Duration  string      `json:"time_per_side_per_round"`
	Slice     string      `json:"slice"`
	WorkDir   string      `json:"work_dir"`
	FSType    string      `json:"work_dir_fs"`
	MountDir  string      `json:"mount_dir"`
	LitefsBin string      `json:"litefs_bin,omitempty"`
	LitefsPID int         `json:"litefs_pid,omitempty"`
	GoVersion string      `json:"go_version"`
	CPUs      int         `json:"cpus"`
	Rows      []resultRow `json:"workloads"`
	RSS       rssResult   `json:"rss"`
	Repl      *replResult `json:"replication,omitempty"`
	Elapsed   string      `json:"elapsed"`
	// Load averages (1, 5, 15 min) at start and end: a busy machine
	// (other processes on the same CPUs) makes every figure noisier.
	LoadStart string `json:"loadavg_start,omitempty"`
	LoadEnd   string `json:"loadavg_end,omitempty"`
}

// resultRow compares one workload across the two sides.
type resultRow struct {
	Key    string    `json:"key"`
	Name   string    `json:"name"`
	Unit   string    `json:"unit"`
	Plain  sideStats `json:"plain"`
	Litefs sideStats `json:"litefs"`
	Ratio  *float64  `json:"ratio"` // median of RoundRatios; null if undefined
	Target float64   `json:"target_min_ratio"`
	// RoundRatios are litefs/plain per round.
	RoundRatios []float64 `json:"round_ratios"`
	Result      string    `json:"result"`
}

// sideStats summarises one side's runs of one workload.
type sideStats struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Runs   []float64 `json:"runs"`
}

// rssResult holds litefs memory figures; nil pointers mean not measured.
type rssResult struct {
	PeakKB      *int64       `json:"peak_vmrss_kb"`
	Samples     int          `json:"samples"`
	SampleError string       `json:"sample_error,omitempty"`
	HWMKB       *int64       `json:"vmhwm_kb"`
	TargetKB    int64        `json:"target_max_kb"`
	Result      string       `json:"result"`
	HWMResult   string       `json:"vmhwm_result"`
	BigDB       *bigDBResult `json:"big_db,omitempty"`
}

// bigDBResult is the -rss-db-mb measurement.
type bigDBResult struct {
	MiB       int     `json:"mib"`
	Rows      int     `json:"rows"`
	Seconds   float64 `json:"seconds"`
	SizeBytes int64   `json:"size_bytes"`
	PeakRSSKB int64   `json:"peak_vmrss_kb"` // 0 if not measured
	Result    string  `json:"result"`
}

// median of xs (mean of the middle two for an even count); 0 if empty.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

func newSideStats(runs []float64) sideStats {
	if len(runs) == 0 {
		return sideStats{}
	}
	return sideStats{Median: median(runs), Min: slices.Min(runs), Max: slices.Max(runs), Runs: runs}
}

// ratio is litefs/plain, undefined when plain is not positive.
func ratio(plain, litefs float64) (float64, bool) {
	if plain <= 0 || math.IsNaN(plain) || math.IsNaN(litefs) {
		return 0, false
	}
	return litefs / plain, true
}

// newResultRow summarises the rounds of w. The ratio is the median of the
// per-round ratios rather than the quotient of the medians: the two sides
// of one round ran interleaved under the same conditions, so pairing them
// cancels drift between rounds.
func newResultRow(w workload, plainRuns, litefsRuns []float64) resultRow {
	row := resultRow{Key: w.key, Name: w.name, Unit: w.unit, Target: w.target,
		Plain: newSideStats(plainRuns), Litefs: newSideStats(litefsRuns), Result: na}
	if len(plainRuns) != len(litefsRuns) {
		return row
	}
	for i := range plainRuns {
		r, ok := ratio(plainRuns[i], litefsRuns[i])
		if !ok {
			return row
		}
		row.RoundRatios = append(row.RoundRatios, r)
	}
	if len(row.RoundRatios) > 0 {
		r := median(row.RoundRatios)
		row.Ratio = &r
		row.Result = verdict(r >= w.target)
	}
	return row
}

func verdict(ok bool) string {
	if ok {
		return pass
	}
	return miss
}

// spread is (max-min)/median, the run-to-run noise of one side.
func (s sideStats) spread() float64 {
	if s.Median <= 0 {
		return 0
	}
	return (s.Max - s.Min) / s.Median
}

// finishRSS records the sampler's peak and the process's VmHWM. It must run
// while litefs is still alive.
func (r *report) finishRSS(s *rssSampler) {
	r.RSS = rssResult{TargetKB: rssTargetKB, Result: na, HWMResult: na, BigDB: r.RSS.BigDB}
	peak, samples, err := s.result()
	r.RSS.Samples = samples
	if err != nil {
		r.RSS.SampleError = err.Error()
	}
	if samples > 0 {
		r.RSS.PeakKB = &peak
		r.RSS.Result = verdict(peak <= rssTargetKB)
	}
	if r.LitefsPID > 0 {
		if hwm, err := readStatusKB(r.LitefsPID, "VmHWM"); err == nil {
			r.RSS.HWMKB = &hwm
			r.RSS.HWMResult = verdict(hwm <= rssTargetKB)
		} else if r.RSS.SampleError == "" {
			r.RSS.SampleError = err.Error()
		}
	}
	if b := r.RSS.BigDB; b != nil {
		b.Result = na
		if b.PeakRSSKB > 0 {
			b.Result = verdict(b.PeakRSSKB <= rssTargetKB)
		}
	}
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

func (r *report) writeMarkdown(w io.Writer) {
	if r.mainRan || len(r.Rows) > 0 {
		r.writeMainTable(w)
	}
	if r.Repl != nil {
		r.Repl.writeMarkdown(w)
	}
	fmt.Fprintf(w, "Scratch dir %s (%s)", r.WorkDir, r.FSType)
	if r.mainRan {
		fmt.Fprintf(w, "; mount %s", r.MountDir)
	}
	if r.LitefsBin != "" {
		fmt.Fprintf(w, "; litefs %s", r.LitefsBin)
	}
	if r.LitefsPID > 0 {
		fmt.Fprintf(w, " (pid %d)", r.LitefsPID)
	}
	fmt.Fprintf(w, "; %s, %d CPUs; total %s.", r.GoVersion, r.CPUs, r.Elapsed)
	if r.LoadStart != "" {
		fmt.Fprintf(w, " Load average (1/5/15 min) at start %s, at end %s.", r.LoadStart, r.LoadEnd)
	}
	fmt.Fprintln(w)
	if r.RSS.SampleError != "" {
		fmt.Fprintf(w, "RSS sampling error: %s\n", r.RSS.SampleError)
	}
}

func (r *report) writeMainTable(w io.Writer) {
	fmt.Fprintf(w, "Each figure is the **%s of %d %s** per side. In a round each side gets a fresh database and up to %s of measured time "+
		"(less if it reaches its op limit); the sides take turns in %s slices (ABBA order) so that machine noise hits both. "+
		"The ratio is the median of the per-round litefs/plain ratios, so it can differ a little from the quotient of the columns. "+
		"Spread is the larger side's (max-min)/median over the rounds.\n\n",
		r.Stat, r.Rounds, plural(r.Rounds, "round"), r.Duration, r.Slice)
	fmt.Fprintln(w, "| workload | plain ops/s | litefs ops/s | ratio | target | result | spread |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---|---|---:|")
	for _, row := range r.Rows {
		name := row.Name
		if row.Unit != "ops/s" {
			name += " (" + row.Unit + ")"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | >= %.2f | %s | %.0f%% |\n", name,
			formatRate(row.Plain.Median), formatRate(row.Litefs.Median), formatRatio(row.Ratio),
			row.Target, row.Result, 100*max(row.Plain.spread(), row.Litefs.spread()))
	}
	target := "<= " + formatKB(rssTargetKB)
	fmt.Fprintf(w, "| litefs peak RSS (VmRSS every %v during the workloads) | | %s | | %s | %s | |\n",
		rssInterval, formatKBPtr(r.RSS.PeakKB), target, r.RSS.Result)
	fmt.Fprintf(w, "| litefs VmHWM at end | | %s | | %s | %s | |\n", formatKBPtr(r.RSS.HWMKB), target, r.RSS.HWMResult)
	if b := r.RSS.BigDB; b != nil {
		peak := b.PeakRSSKB
		fmt.Fprintf(w, "| litefs peak RSS writing a %d MiB db in one tx (%s, %.1fs) | | %s | | %s | %s | |\n",
			b.MiB, formatBytes(b.SizeBytes), b.Seconds, formatKBPtr(nonZero(peak)), target, b.Result)
	}
	fmt.Fprintln(w)
}

// loadAvg is the 1, 5 and 15 minute load averages from /proc/loadavg, or
// "" if unreadable.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func nonZero(v int64) *int64 {
	if v == 0 {
		return nil
	}
	return &v
}

func formatRatio(r *float64) string {
	if r == nil {
		return na
	}
	return strconv.FormatFloat(*r, 'f', 2, 64)
}

// formatRate prints a rate with thousands separators; small rates keep a
// decimal so that slow fsync-bound figures stay comparable.
func formatRate(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return na
	}
	if v < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	digits := strconv.FormatInt(int64(math.Round(v)), 10)
	var b strings.Builder
	for i, c := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func formatKB(kb int64) string {
	return strconv.FormatFloat(float64(kb)/1024, 'f', 1, 64) + " MiB"
}

func formatKBPtr(kb *int64) string {
	if kb == nil {
		return na
	}
	return formatKB(*kb)
}

func formatBytes(n int64) string {
	return formatKB(n / 1024)
}
