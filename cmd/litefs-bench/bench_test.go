package main

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{5}, 5},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := append([]float64(nil), tc.in...)
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Fatalf("median reordered its input: %v", tc.in)
			}
		}
	}
}

func TestRatioAndVerdict(t *testing.T) {
	if _, ok := ratio(0, 10); ok {
		t.Error("ratio with plain=0 should be undefined")
	}
	w := workload{key: "k", name: "n", unit: "ops/s", target: 0.5}
	// Round ratios 0.9, 0.2, 0.5: the median is 0.5, while the quotient
	// of the medians would be 100/200 = 0.5 only by coincidence.
	row := newResultRow(w, []float64{100, 500, 200}, []float64{90, 100, 100})
	if row.Ratio == nil || *row.Ratio != 0.5 || row.Result != pass {
		t.Errorf("median round ratio against 0.5: got %v %s, want 0.5 PASS", formatRatio(row.Ratio), row.Result)
	}
	if row.Plain.Median != 200 || row.Litefs.Median != 100 {
		t.Errorf("medians: %v %v", row.Plain.Median, row.Litefs.Median)
	}
	row = newResultRow(w, []float64{100, 300, 400}, []float64{100, 90, 80})
	if row.Ratio == nil || *row.Ratio != 0.3 {
		t.Errorf("paired ratios 1, 0.3, 0.2: got %v, want 0.30", formatRatio(row.Ratio))
	}
	row = newResultRow(w, []float64{200}, []float64{99})
	if row.Result != miss {
		t.Errorf("ratio 0.495 against 0.5: got %s, want MISS", row.Result)
	}
	row = newResultRow(w, nil, []float64{99})
	if row.Ratio != nil || row.Result != na || formatRatio(row.Ratio) != na {
		t.Errorf("no plain runs: got %v %s, want n/a", row.Ratio, row.Result)
	}
	if s := (sideStats{Median: 100, Min: 90, Max: 110}).spread(); s != 0.2 {
		t.Errorf("spread = %v, want 0.2", s)
	}
}

func TestFormatting(t *testing.T) {
	for in, want := range map[float64]string{
		0: "0.0", 12.34: "12.3", 999.6: "1,000", 1234567: "1,234,567", 123456: "123,456",
	} {
		if got := formatRate(in); got != want {
			t.Errorf("formatRate(%v) = %q, want %q", in, got, want)
		}
	}
	if got := formatKB(32 << 10); got != "32.0 MiB" {
		t.Errorf("formatKB = %q", got)
	}
	if got := formatKBPtr(nil); got != na {
		t.Errorf("formatKBPtr(nil) = %q", got)
	}
	for in, want := range map[int]string{100000: "100k", 2000000: "2M", 1500: "1500", 999: "999"} {
		if got := shortCount(in); got != want {
			t.Errorf("shortCount(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestLitefsConfig(t *testing.T) {
	conf, err := litefsConfig(`/var/tmp/b "x"/mnt`, "/var/tmp/b/data", 20203)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		FUSE  struct{ Dir string }
		Data  struct{ Dir string }
		Lease struct {
			Type         string
			Candidate    bool
			Hostname     string
			AdvertiseURL string `yaml:"advertise-url"`
		}
		HTTP struct{ Addr string }
	}
	dec := yaml.NewDecoder(strings.NewReader(conf))
	dec.KnownFields(true) // the real litefs rejects unknown keys too
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("config does not parse: %v\n%s", err, conf)
	}
	if got.FUSE.Dir != `/var/tmp/b "x"/mnt` || got.Data.Dir != "/var/tmp/b/data" ||
		got.Lease.Type != "static" || !got.Lease.Candidate || got.Lease.Hostname != "bench" ||
		got.Lease.AdvertiseURL != "http://127.0.0.1:20203" || got.HTTP.Addr != "127.0.0.1:20203" {
		t.Errorf("unexpected config: %+v\n%s", got, conf)
	}
	if _, err := litefsConfig("/tmp/$HOME/mnt", "/d", 1); err == nil {
		t.Error("a '$' in a path should be refused")
	}
}

func TestMountinfo(t *testing.T) {
	info := "36 35 98:0 / /mnt/a\\040b rw - fuse.litefs litefs rw\n" +
		"37 35 98:0 / /var/tmp/x/mnt rw - fuse litefs rw\n"
	for dir, want := range map[string]bool{
		"/mnt/a b": true, "/var/tmp/x/mnt/": true, "/var/tmp/x": false, "/mnt/a": false,
	} {
		if got := mountinfoHas(info, dir); got != want {
			t.Errorf("mountinfoHas(%q) = %v, want %v", dir, got, want)
		}
	}
}

func TestParseStatusLine(t *testing.T) {
	if kb, ok := parseStatusLine("VmRSS:\t   12345 kB", "VmRSS"); !ok || kb != 12345 {
		t.Errorf("got %d %v", kb, ok)
	}
	for _, line := range []string{"VmHWM:\t 1 kB", "VmRSS: x kB", "VmRSSx: 1 kB", "VmRSS: 1"} {
		if _, ok := parseStatusLine(line, "VmRSS"); ok {
			t.Errorf("parseStatusLine(%q) should not match VmRSS", line)
		}
	}
}

func TestRoundOrderAlternates(t *testing.T) {
	if roundOrder(0) != [2]string{sidePlain, sideLitefs} || roundOrder(1) != [2]string{sideLitefs, sidePlain} {
		t.Errorf("turns 0 and 1 should run in opposite orders: %v %v", roundOrder(0), roundOrder(1))
	}
	if laneIndex(sidePlain) != 0 || laneIndex(sideLitefs) != 1 {
		t.Error("laneIndex")
	}
	if workloadSeed("a", 0) == workloadSeed("a", 1) || workloadSeed("a", 0) == workloadSeed("b", 0) {
		t.Error("seeds should differ between rounds and workloads")
	}
}

func TestWorkDirCandidates(t *testing.T) {
	if got := workDirCandidates("/x", "/tmp", "/cwd"); len(got) != 1 || got[0] != "/x" {
		t.Errorf("explicit -dir: %v", got)
	}
	if got := workDirCandidates("", "/tmp", "/cwd"); strings.Join(got, ",") != "/var/tmp,/tmp,/cwd" {
		t.Errorf("defaults: %v", got)
	}
	if !isMemFS(0x01021994) || isMemFS(0xef53) {
		t.Error("isMemFS: tmpfs is memory-backed, ext4 is not")
	}
}

func TestFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-only", "wal-full, select", "-rounds", "5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wls, err := selectWorkloads(cfg)
	if err != nil || len(wls) != 2 || wls[0].key != "wal-full" || wls[1].key != "select" {
		t.Errorf("-only: got %v, %v", wls, err)
	}
	for _, args := range [][]string{{"-only", "nope"}, {"-rounds", "0"}, {"-pid", "1"}, {"extra"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) should fail", args)
		}
	}
}

// TestHarnessSmoke runs two tiny workloads with both sides on plain
// directories, exercising open/PRAGMA/measure/report without litefs.
func TestHarnessSmoke(t *testing.T) {
	cfg, err := parseFlags([]string{"-rounds", "2", "-duration", "20ms", "-slice", "5ms", "-n", "50",
		"-batch-rows", "10", "-batch-n", "3", "-select-rows", "100", "-select-n", "50"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b := &bencher{cfg: cfg, plainDir: t.TempDir(), mountDir: t.TempDir(),
		logf: func(string, ...any) {}, onCreate: func(string, string) {}}
	rep := &report{Stat: "median", Rounds: cfg.rounds, Duration: cfg.duration.String(), Slice: cfg.slice.String()}
	for _, w := range allWorkloads(cfg) {
		row, err := b.compare(context.Background(), w)
		if err != nil {
			t.Fatalf("%s: %v", w.key, err)
		}
		if len(row.Plain.Runs) != 2 || len(row.Litefs.Runs) != 2 || row.Ratio == nil {
			t.Errorf("%s: incomplete row %+v", w.key, row)
		}
		rep.Rows = append(rep.Rows, row)
	}
	if _, err := b.round(context.Background(), allWorkloads(cfg)[0], "wal-normal-r1.db", 0); err == nil {
		t.Error("reusing a database file should be refused")
	}
	rep.finishRSS(nil)
	var out bytes.Buffer
	rep.writeMarkdown(&out)
	for _, want := range []string{"| workload | plain ops/s | litefs ops/s | ratio | target |", "10-row tx, WAL", "point SELECT, 100 rows", "median of 2 rounds"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if err := rep.writeJSON(io.Discard); err != nil {
		t.Error(err)
	}
}

// fakeStepper logs which side stepped, to check the turn-taking.
type fakeStepper struct {
	side string
	log  *[]string
}

func (f *fakeStepper) step(context.Context) (int, error) {
	*f.log = append(*f.log, f.side)
	time.Sleep(time.Millisecond)
	return 2, nil
}

func (f *fakeStepper) Close() error { return nil }

func TestRoundTakesTurns(t *testing.T) {
	cfg, err := parseFlags([]string{"-duration", "40ms", "-slice", "5ms"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	plainDir, mountDir := t.TempDir(), t.TempDir()
	var log []string
	w := workload{key: "fake", journal: "WAL", sync: "NORMAL",
		maxSteps: func(config) int { return 1000 },
		newStepper: func(_ context.Context, db *sql.DB, _ config, _ uint64) (stepper, error) {
			// Tell the sides apart by the database file's directory.
			var file string
			if err := db.QueryRow(`SELECT file FROM pragma_database_list WHERE name='main'`).Scan(&file); err != nil {
				return nil, err
			}
			side := sidePlain
			if strings.HasPrefix(file, mountDir) {
				side = sideLitefs
			}
			return &fakeStepper{side: side, log: &log}, nil
		}}
	b := &bencher{cfg: cfg, plainDir: plainDir, mountDir: mountDir,
		logf: func(string, ...any) {}, onCreate: func(string, string) {}}
	lanes, err := b.round(context.Background(), w, "fake.db", 1)
	if err != nil {
		t.Fatal(err)
	}
	if log[0] != sideLitefs {
		t.Errorf("round 1 should start with litefs, started with %s", log[0])
	}
	switches := 0
	for i := 1; i < len(log); i++ {
		if log[i] != log[i-1] {
			switches++
		}
	}
	if switches < 4 {
		t.Errorf("sides switched only %d times in %d steps", switches, len(log))
	}
	for _, l := range lanes {
		if l.elapsed < cfg.duration || l.ops != 2*l.steps {
			t.Errorf("%s: elapsed %v (budget %v), %d ops for %d steps", l.side, l.elapsed, cfg.duration, l.ops, l.steps)
		}
	}
}
