package main

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"os"
	"os/exec"
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
			Type           string
			Candidate      bool
			Hostname       string
			AdvertiseURL   string `yaml:"advertise-url"`
			ReconnectDelay string `yaml:"reconnect-delay"`
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

func TestReplicaConfig(t *testing.T) {
	conf, err := nodeConfig("/s/replica/mnt", "/s/replica/data",
		nodeSpec{hostname: "replica", port: 20204, primary: "http://127.0.0.1:20203"})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		FUSE  struct{ Dir string }
		Data  struct{ Dir string }
		Lease struct {
			Type           string
			Candidate      bool
			Hostname       string
			AdvertiseURL   string `yaml:"advertise-url"`
			ReconnectDelay string `yaml:"reconnect-delay"`
		}
		HTTP struct{ Addr string }
	}
	dec := yaml.NewDecoder(strings.NewReader(conf))
	dec.KnownFields(true)
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("config does not parse: %v\n%s", err, conf)
	}
	if got.Lease.Candidate || got.Lease.Hostname != "replica" || got.Lease.AdvertiseURL != "http://127.0.0.1:20203" ||
		got.HTTP.Addr != "127.0.0.1:20204" || got.FUSE.Dir != "/s/replica/mnt" {
		t.Errorf("a replica must not be a candidate and must advertise the primary's URL: %+v\n%s", got, conf)
	}
	if _, err := nodeConfig("/m", "/d", nodeSpec{hostname: "r", port: 1}); err == nil {
		t.Error("a replica without the primary's URL should be refused")
	}
}

func TestReplFlags(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if p := selectRepl(cfg); !p.lag || !p.sel || !p.catchUp || cfg.replDBMB != 500 || cfg.replN < 1000 {
		t.Errorf("replication should run by default with >= 1000 txs on 500 MiB: %+v %+v", p, cfg)
	}
	cfg, err = parseFlags([]string{"-only", "repl-lag, repl-catchup"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wls, _ := selectWorkloads(cfg)
	if p := selectRepl(cfg); !p.lag || p.sel || !p.catchUp || len(wls) != 0 {
		t.Errorf("-only repl keys: %+v, %d workloads", p, len(wls))
	}
	cfg, err = parseFlags([]string{"-only", "select,repl-select"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wls, _ = selectWorkloads(cfg)
	if p := selectRepl(cfg); p.lag || !p.sel || p.catchUp || len(wls) != 1 || wls[0].key != "select" {
		t.Errorf("-only mixed keys: %+v, %v", p, wls)
	}
	cfg, err = parseFlags([]string{"-no-replication"}, io.Discard)
	if err != nil || selectRepl(cfg).any() {
		t.Errorf("-no-replication: %v %+v", err, selectRepl(cfg))
	}
	for _, args := range [][]string{{"-no-replication", "-only", "repl-lag"}, {"-repl-db-mb", "0"}, {"-repl-n", "0"}, {"-only", "repl-nope"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) should fail", args)
		}
	}
}

func TestLagStats(t *testing.T) {
	var s []float64
	for i := 1; i <= 1000; i++ {
		s = append(s, float64(i)/100) // 0.01 .. 10 ms
	}
	if p := percentile(s, 50); p != 5 {
		t.Errorf("p50 = %v, want 5", p)
	}
	if p := percentile(s, 99); p != 9.9 {
		t.Errorf("p99 = %v, want 9.9", p)
	}
	if p := percentile([]float64{7}, 99); p != 7 {
		t.Errorf("p99 of one = %v", p)
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing")
	}
	l := &lagResult{TargetP50Ms: 0.5, TargetP99Ms: 3, samples: []float64{0.4, 0.3, 0.2, 0.5, 2.9}}
	l.summarize()
	if l.Txs != 5 || l.P50Ms != 0.4 || l.P99Ms != 2.9 || l.MaxMs != 2.9 || l.P50Result != pass || l.P99Result != pass {
		t.Errorf("summarize: %+v", l)
	}
	l = &lagResult{TargetP50Ms: 0.5, TargetP99Ms: 3, samples: []float64{0.6, 3.1}}
	l.summarize()
	if l.P50Result != miss || l.P99Result != miss {
		t.Errorf("misses: %+v", l)
	}
}

func TestMountinfoUnder(t *testing.T) {
	info := "36 35 98:0 / /var/tmp/b\\040x/repl/replica/mnt rw - fuse litefs rw\n"
	for dir, want := range map[string]bool{
		"/var/tmp/b x": true, "/var/tmp/b x/repl/replica/mnt": true, "/var/tmp/b": false, "/var/tmp/b x/repl/primary": false,
	} {
		if got := mountinfoHasUnder(info, dir); got != want {
			t.Errorf("mountinfoHasUnder(%q) = %v, want %v", dir, got, want)
		}
	}
}

// requireFUSE skips when FUSE is unavailable, unless LITEFS_REQUIRE_FUSE
// demands it (as the tests package does).
func requireFUSE(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("fusermount3")
	if _, serr := os.Stat("/dev/fuse"); err == nil && serr == nil && os.Geteuid() == 0 {
		return
	}
	if os.Getenv("LITEFS_REQUIRE_FUSE") != "" {
		t.Fatalf("FUSE not available (need root, /dev/fuse and fusermount3)")
	}
	t.Skip("FUSE not available (need root, /dev/fuse and fusermount3)")
}

// TestRunWithReplication runs the whole command on tiny sizes with real
// litefs nodes: one single-node workload, then a primary and a replica for
// the lag and the replica SELECTs, then a fresh replica catching up. It
// checks the report and that no process or mount is left behind.
func TestRunWithReplication(t *testing.T) {
	requireFUSE(t)
	if testing.Short() {
		t.Skip("builds and starts litefs")
	}
	parent := t.TempDir()
	cfg, err := parseFlags([]string{"-dir", parent, "-only", "wal-normal,repl-lag,repl-select,repl-catchup",
		"-rounds", "1", "-duration", "50ms", "-slice", "10ms", "-n", "20",
		"-select-rows", "300", "-select-n", "200", "-repl-n", "30", "-repl-db-mb", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out, progress bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := run(ctx, cfg, &out, &progress); err != nil {
		t.Fatalf("run: %v\n%s", err, progress.String())
	}
	for _, want := range []string{
		"| single-row tx, WAL, sync=NORMAL |",
		"| replication | measured | target | result | LiteFS anchor | detail |",
		"commit-to-visible lag on a replica, p50 (30 single-row tx",
		"commit-to-visible lag on a replica, p99",
		"point SELECT on a replica, 300 rows, WAL (queries/s), replica/plain",
		"catch-up of a fresh replica on a",
		"fresh replica peak RSS during catch-up",
		"by snapshot",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s\nprogress:\n%s", want, out.String(), progress.String())
		}
	}
	t.Logf("report:\n%s", out.String())
	if hasMountUnder(parent) {
		t.Error("a mount was left under the scratch dir")
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("scratch dir not removed: %v", left)
	}
}
