// Command litefs mounts a FUSE filesystem that replicates the SQLite
// databases written into it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
)

// Version is set at build time with -ldflags "-X main.Version=v1.2.3".
var Version = "dev"

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0) // -h asked for the usage, which was printed
		}
		fmt.Fprintln(os.Stderr, "litefs:", err)
		os.Exit(2)
	}
}

// exitError carries a child process's exit code out of `mount -- cmd`.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		usage()
		return fmt.Errorf("no command given")
	}
	switch args[0] {
	case "mount":
		return runMount(ctx, args[1:])
	case watchdogCmd:
		return runWatchdog(args[1:])
	case "export":
		return runExport(ctx, args[1:])
	case "import":
		return runImport(ctx, args[1:])
	case "promote":
		return runPromote(ctx, args[1:])
	case "run":
		return runRun(ctx, args[1:])
	case "version":
		fmt.Println(versionString())
		return nil
	case "-h", "--help", "help":
		usage()
		return nil
	}
	usage()
	return fmt.Errorf("unknown command %q", args[0])
}

func usage() {
	fmt.Fprint(os.Stderr, `litefs: a replicated SQLite filesystem

Usage:
	litefs <command> [arguments]

Commands:
	mount    mount the filesystem and serve the node (litefs mount -h)
	export   copy a database out of a node (litefs export -h)
	import   replace a database on the primary with a SQLite file (litefs import -h)
	promote  make a candidate replica the primary by handoff (litefs promote -h)
	run      run a command, after "-promote" makes this node the primary (litefs run -h)
	version  print the version
`)
}

func versionString() string {
	s := "litefs " + Version
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, kv := range info.Settings {
			if kv.Key == "vcs.revision" && len(kv.Value) >= 12 {
				s += " (commit " + kv.Value[:12] + ")"
			}
		}
	}
	return s
}
