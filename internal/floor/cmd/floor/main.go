// Command floor prints the floors of a first backup and of a restore of a
// tree on this machine (see package floor); `make bench-floor` runs it on
// the shared files/ dataset beside the tools' times.
//
//	floor [-reps N] [-workers N] [-work DIR] TREE
//
// The restore floor copies TREE into DIR/copy, deleting the copy of the
// run before first, as the bench harness deletes the previous restore
// before each tool's run: a file system that avoids reusing recently freed
// inodes (ext4 without a journal) pays for that in every file created.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"repo/internal/floor"
)

func main() {
	reps := flag.Int("reps", 3, "repetitions of the copy; the median is printed")
	workers := flag.Int("workers", runtime.GOMAXPROCS(0), "copy workers")
	work := flag.String("work", os.TempDir(), "directory for the copies")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: floor [flags] TREE")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *work, *reps, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(tree, work string, reps, workers int) error {
	cores := runtime.GOMAXPROCS(0)
	st, err := floor.Stages(tree, cores)
	if err != nil {
		return err
	}
	sec := func(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
	fmt.Printf("first backup of %s: %d files, %d chunks, %.1f MB, compressed to %.1f MB (zstd fastest)\n\n",
		tree, st.Files, st.Chunks, float64(st.Bytes)/1e6, float64(st.Stored)/1e6)
	fmt.Printf("| stage (CPU time, summed over %d workers) | time |\n", cores)
	fmt.Println("|---|---:|")
	for _, s := range []struct {
		name string
		d    time.Duration
	}{{"read", st.Read}, {"chunk (Rabin)", st.Chunk}, {"hash (BLAKE3)", st.Hash},
		{"compress (zstd fastest)", st.Compress}, {"seal (XChaCha20-Poly1305)", st.Seal}} {
		fmt.Printf("| %s | %s |\n", s.name, sec(s.d))
	}
	fmt.Printf("| **sum** | %s |\n\n", sec(st.Total()))
	fmt.Printf("first-backup floor: %s wall with %d workers, one per core (perfect scaling would give %s); no trees, index, pack writes or key derivation\n\n",
		sec(st.Wall), cores, sec(st.Total()/time.Duration(cores)))

	dst := filepath.Join(work, "floor-copy")
	var times []time.Duration
	for range reps {
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
		if err := exec.Command("sync").Run(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		d, err := floor.CopyTree(tree, dst, workers)
		if err != nil {
			return err
		}
		times = append(times, d)
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	slices.Sort(times)
	all := make([]string, len(times))
	for i, d := range times {
		all[i] = sec(d)
	}
	fmt.Printf("restore floor (copy of the tree, %d workers, after deleting the previous copy): median %s of %v\n",
		workers, sec(times[len(times)/2]), all)
	return nil
}
