// Command litefs-bench measures what a litefs FUSE mount costs SQLite.
//
// It runs the same workloads through mattn/go-sqlite3 on a plain directory
// and on a litefs mount, both on the same disk and in one process, and
// prints ops/s for each side, the ratio litefs/plain and the peak RSS of the
// litefs process. Within each round the two sides take turns in short
// slices, and the ratio is the median of the per-round ratios, so that a
// burst of noise on a shared machine hits both sides instead of skewing the
// ratio.
//
// Usage:
//
//	go run ./cmd/litefs-bench [flags]
//
// By default it starts its own litefs (see -litefs) on a scratch directory;
// -mount-dir uses an existing mount instead. See -h for all flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// config holds the command-line flags.
type config struct {
	litefsBin  string
	dir        string
	mountDir   string
	pid        int
	port       int
	duration   time.Duration
	slice      time.Duration
	n          int
	batchRows  int
	batchN     int
	selectRows int
	selectN    int
	rounds     int
	rssDBMB    int
	only       string
	jsonOut    bool
	keep       bool

	noRepl        bool
	replN         int
	replDBMB      int
	cpuProfileDir string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("litefs-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.litefsBin, "litefs", "", "litefs `binary` to start (default: litefs next to this binary, else go build "+litefsPkg+" into the scratch dir, which needs the working directory inside the module)")
	fs.StringVar(&c.dir, "dir", "", "`parent` of the scratch directory (default: /var/tmp, os.TempDir or the working directory, whichever is first that is not tmpfs)")
	fs.StringVar(&c.mountDir, "mount-dir", "", "use this existing litefs mount `dir` instead of starting litefs (RSS is n/a unless -pid is given)")
	fs.IntVar(&c.pid, "pid", 0, "with -mount-dir: pid of the litefs process serving it, for RSS sampling")
	fs.IntVar(&c.port, "port", 0, "HTTP port for the started litefs (default: a free port)")
	fs.DurationVar(&c.duration, "duration", 3*time.Second, "measured time per side per round (a side stops at this or its op limit, whichever comes first)")
	fs.DurationVar(&c.slice, "slice", 100*time.Millisecond, "the sides take turns in slices this long within a round (>= -duration: one turn each)")
	fs.IntVar(&c.n, "n", 5000, "single-row transactions per side per round, at most")
	fs.IntVar(&c.batchRows, "batch-rows", 1000, "rows per transaction in the batch workloads")
	fs.IntVar(&c.batchN, "batch-n", 200, "batch transactions per side per round, at most")
	fs.IntVar(&c.selectRows, "select-rows", 100000, "rows in the point-SELECT table")
	fs.IntVar(&c.selectN, "select-n", 200000, "point SELECTs per side per round, at most")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds per workload, each on fresh databases; the median round is reported per side")
	fs.IntVar(&c.rssDBMB, "rss-db-mb", 0, "also build an N MiB database in one transaction on the mount and report litefs peak RSS during it (0 = skip)")
	fs.StringVar(&c.only, "only", "", "comma-separated workload and replication keys to run (default all: "+strings.Join(allKeys(), ",")+")")
	fs.BoolVar(&c.noRepl, "no-replication", false, "skip the replication part ("+strings.Join(replKeys(), ",")+"), which starts its own primary and replica nodes")
	fs.IntVar(&c.replN, "repl-n", 2000, "repl-lag: measured single-row transactions, each waited for on the replica")
	fs.IntVar(&c.replDBMB, "repl-db-mb", 500, "repl-catchup: size in MiB of the database a fresh replica catches up on")
	fs.StringVar(&c.cpuProfileDir, "cpuprofile-dir", "", "write a CPU profile of each replication node to `dir`/NODE.pprof (LITEFS_CPUPROFILE)")
	fs.BoolVar(&c.jsonOut, "json", false, "print results as JSON instead of a markdown table")
	fs.BoolVar(&c.keep, "keep", false, "keep the scratch directory (databases, litefs.yml, litefs.log)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: litefs-bench [flags]

Runs SQLite workloads on a plain directory and on a litefs FUSE mount on the
same disk, interleaved, and prints ops/s per side, the litefs/plain ratio and
litefs peak RSS as a markdown table (or JSON). Then, unless -no-replication,
starts a primary and a replica (real litefs processes on loopback HTTP) and
measures commit-to-visible lag, point SELECTs on the replica against a plain
copy, and a fresh replica's catch-up on a -repl-db-mb database, in a second
table. Progress goes to stderr.
Exits 0 when targets are missed; non-zero only on errors.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return c, c.validate()
}

func (c config) validate() error {
	switch {
	case c.rounds < 1:
		return errors.New("-rounds must be >= 1")
	case c.duration <= 0 || c.slice <= 0:
		return errors.New("-duration and -slice must be > 0")
	case c.n < 1 || c.batchN < 1 || c.selectN < 1 || c.batchRows < 1 || c.selectRows < 1:
		return errors.New("-n, -batch-n, -batch-rows, -select-n and -select-rows must be >= 1")
	case c.rssDBMB < 0:
		return errors.New("-rss-db-mb must be >= 0")
	case c.pid != 0 && c.mountDir == "":
		return errors.New("-pid only makes sense with -mount-dir")
	case c.replN < 1 || c.replDBMB < 1:
		return errors.New("-repl-n and -repl-db-mb must be >= 1")
	case c.noRepl && strings.TrimSpace(c.only) != "" && selectRepl(config{only: c.only}).any():
		return errors.New("-only names a replication key but -no-replication is set")
	}
	_, err := selectWorkloads(c)
	return err
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "litefs-bench:", err)
		os.Exit(2)
	}
	// Cancel on ^C so that the deferred cleanup still stops litefs and
	// unmounts; the child runs in its own process group and so does not
	// get the terminal's SIGINT itself.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "litefs-bench:", err)
		stop()
		os.Exit(1)
	}
}
