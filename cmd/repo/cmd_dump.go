package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"repo/repo"
)

// dumpOptions are the flags of dump.
type dumpOptions struct {
	target string
	filterFlags
}

func newDumpCmd(g *globalOptions) *cobra.Command {
	var o dumpOptions
	c := &cobra.Command{
		Use:   "dump SNAPSHOT PATH [--target FILE]",
		Short: "Write one file of a snapshot to standard output or a file",
		Long: `Write the content of the file at PATH in SNAPSHOT to standard output,
or with --target to FILE, verifying every block. Useful for dump streams.

With --target, FILE appears only complete and verified: the content goes
to a temporary file beside it, which replaces FILE (keeping an existing
FILE's permissions; a new one gets 0666 less the umask) once every block
was written. A FIFO, device or other special FILE is written directly.

--json needs --target, since the content cannot share standard output
with JSON: dump then prints one summary object (see docs/json.md).

Examples:
  repo dump latest /mydb.sql | psql mydb
  repo dump 3fa2b1c9 /etc/fstab
  repo dump --target /tmp/mydb.sql --json latest /mydb.sql

Exit codes: 0 ok, 1 error (on standard output nothing or a verified
prefix was written; with --target FILE is left as it was), 2 usage,
10 no repository, 11 repository locked, 12 wrong password.`,
		Args: argsRange(2, 2),
		RunE: func(c *cobra.Command, args []string) error { return runDump(c.Context(), g, o, args[0], args[1]) },
	}
	c.Flags().StringVarP(&o.target, "target", "t", "", "write the content to `file` instead of standard output")
	o.addFlags(c.Flags(), "for latest: ")
	return withLock(c, lockShared)
}

// dumpSummary is the summary line of dump --json.
type dumpSummary struct {
	MessageType string `json:"message_type"`
	SnapshotID  string `json:"snapshot_id"`
	Path        string `json:"path"`   // the file in the snapshot
	Target      string `json:"target"` // the file written, as given
	Bytes       int64  `json:"bytes"`  // bytes written
}

func runDump(ctx context.Context, g *globalOptions, o dumpOptions, ref, path string) error {
	if g.json && o.target == "" {
		return usageError("dump --json writes JSON on standard output, so the content needs --target FILE")
	}
	if o.target != "" {
		// Fail before the repository is opened, not after the content
		// was read.
		if fi, err := os.Stat(o.target); err == nil && fi.IsDir() {
			return usageError("--target %s is a directory; give a file name", o.target)
		}
	}
	r, sn, ctx, closeRepo, err := g.openSnapshot(ctx, ref, o.filter())
	if err != nil {
		return err
	}
	defer closeRepo()
	node, clean, err := r.FindNode(ctx, sn, path)
	if err != nil {
		return err
	}
	if node.Type != repo.NodeFile {
		return fmt.Errorf("%s is a %s, not a file", clean, node.Type)
	}
	if o.target == "" {
		return r.WriteContent(ctx, node, g.out)
	}
	var n int64
	err = writeFileAtomic(o.target, func(w io.Writer) error {
		cw := &countingWriter{w: w}
		err := r.WriteContent(ctx, node, cw)
		n = cw.n
		return err
	})
	if err != nil {
		return err
	}
	if g.json {
		printJSON(g.out, dumpSummary{"summary", sn.ID.String(), clean, o.target, n})
		return nil
	}
	g.verbosef("wrote %s of snapshot %s to %s, %s", clean, sn.ID.Short(), o.target, formatBytes(n))
	return nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// writeFileAtomic calls write with a file that becomes name only when
// write and the sync succeed, so that a failed dump never leaves a
// truncated file that looks like a good one. An existing special file (a
// FIFO, /dev/null) cannot be replaced by a rename and is written directly.
// A symlink is followed, as a shell's > would, not replaced.
func writeFileAtomic(name string, write func(io.Writer) error) (err error) {
	if real, err := filepath.EvalSymlinks(name); err == nil {
		name = real
	}
	perm := fs.FileMode(0o666) // less the umask, applied by open
	fi, err := os.Stat(name)
	switch {
	case err == nil && !fi.Mode().IsRegular():
		f, err := os.OpenFile(name, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	case err == nil:
		perm = fi.Mode().Perm()
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	f, tmp, err := createTemp(name, perm)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if fi != nil {
		// The umask applied at open may have taken bits the old file had.
		if err := os.Chmod(tmp, perm); err != nil {
			return err
		}
	}
	return os.Rename(tmp, name)
}

// createTemp creates a new file beside name with perm (less the umask:
// os.CreateTemp would always make it 0600).
func createTemp(name string, perm fs.FileMode) (*os.File, string, error) {
	dir, base := filepath.Split(name)
	for range 100 {
		tmp := filepath.Join(dir, "."+base+".repo-dump-"+rand.Text())
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, tmp, err
	}
	return nil, "", fmt.Errorf("create a temporary file beside %s: too many collisions", name)
}
