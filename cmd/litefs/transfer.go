package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultNodeURL is where export and import find the node's API.
const DefaultNodeURL = "http://localhost:20202"

type transferFlags struct {
	name, url, path string
}

func parseTransferFlags(verb, usageText string, args []string) (transferFlags, error) {
	var tf transferFlags
	fs := flag.NewFlagSet("litefs "+verb, flag.ContinueOnError)
	fs.StringVar(&tf.name, "name", "", "database name in the mount (required)")
	fs.StringVar(&tf.url, "url", DefaultNodeURL, "the node's API URL")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return tf, err
	}
	if tf.name == "" {
		return tf, errors.New("-name is required")
	}
	if fs.NArg() != 1 {
		return tf, fmt.Errorf("exactly one PATH argument is required, got %d", fs.NArg())
	}
	tf.path = fs.Arg(0)
	return tf, nil
}

func endpoint(base, op, name string) string {
	return strings.TrimRight(base, "/") + "/" + op + "?name=" + url.QueryEscape(name)
}

// runExport downloads a consistent copy of a database from a node.
func runExport(ctx context.Context, args []string) error {
	tf, err := parseTransferFlags("export", `Usage: litefs export -name DB [-url URL] PATH

Writes a consistent copy of database DB, as of one transaction, to PATH.

Flags:
`, args)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint(tf.url, "export", tf.name), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("export %s: %w", tf.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("export %s: %s", tf.name, responseError(resp))
	}
	tmp, err := os.CreateTemp(filepath.Dir(tf.path), ".litefs-export-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("got %d of %d bytes", n, resp.ContentLength)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("export %s: %w", tf.name, err)
	}
	if err := os.Rename(tmp.Name(), tf.path); err != nil {
		return err
	}
	fmt.Printf("exported %s at %s (%d bytes) to %s\n", tf.name, resp.Header.Get("Litefs-Pos"), n, tf.path)
	return nil
}

// runImport uploads a SQLite database file to replace a database on the
// primary.
func runImport(ctx context.Context, args []string) error {
	tf, err := parseTransferFlags("import", `Usage: litefs import -name DB [-url URL] PATH

Replaces database DB on the primary with the SQLite database at PATH. The
file is checked (header, integrity_check) before anything changes.

Flags:
`, args)
	if err != nil {
		return err
	}
	f, err := os.Open(tf.path)
	if err != nil {
		return err
	}
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint(tf.url, "import", tf.name), f)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/vnd.sqlite3")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("import %s: %w", tf.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("import %s: %s", tf.name, responseError(resp))
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Printf("imported %s: %s\n", tf.path, strings.TrimSpace(string(body)))
	return nil
}

func responseError(resp *http.Response) string {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
}

// runPromote asks a candidate replica to take the primary role from the
// current primary (a handoff: writes pause briefly, nothing is lost).
func runPromote(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("litefs promote", flag.ContinueOnError)
	u := fs.String("url", DefaultNodeURL, "the API URL of the node to promote")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: litefs promote [-url URL]\n\nMakes the node at URL the primary by asking the current primary to hand the lease over.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(*u, "/")+"/promote", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("promote: %s", responseError(resp))
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Print(string(body))
	return nil
}

// runRun is `litefs run [-promote] [-url URL] [-- cmd args]`: with -promote
// the node at URL becomes the primary by handoff first; then the command
// runs, and its exit code is returned.
func runRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("litefs run", flag.ContinueOnError)
	u := fs.String("url", DefaultNodeURL, "the API URL of the local node")
	promote := fs.Bool("promote", false, "make the node the primary (handoff from the current primary) before running the command")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: litefs run [-promote] [-url URL] [-- command [args...]]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *promote {
		if err := runPromote(ctx, []string{"-url", *u}); err != nil {
			return err
		}
	}
	if fs.NArg() == 0 {
		return nil
	}
	cmd := exec.CommandContext(ctx, fs.Arg(0), fs.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitError(ee.ExitCode())
	}
	return err
}
