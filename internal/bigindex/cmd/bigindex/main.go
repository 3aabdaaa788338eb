// Command bigindex writes synthetic index files of millions of blobs into
// a local repository (see package bigindex), or rewrites the index files of
// one so that caches must rebuild. scripts/bigindex-bench.sh uses it.
//
//	bigindex [-blobs N] [-per-file N] [-per-pack N] [-seed N] REPO
//	bigindex -rewrite REPO
//
// The password comes from REPO_PASSWORD.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"repo/backend/local"
	"repo/internal/bigindex"
	"repo/repo"
)

func main() {
	s := bigindex.Spec{}
	flag.IntVar(&s.Blobs, "blobs", 10_000_000, "index entries in total")
	flag.IntVar(&s.PerFile, "per-file", 50_000, "entries per index file")
	flag.IntVar(&s.PerPack, "per-pack", 16, "blobs per (fictitious) pack")
	flag.IntVar(&s.TreeEvery, "tree-every", 50, "every N-th pack holds tree blobs (0: none)")
	flag.Uint64Var(&s.Seed, "seed", 1, "seed of the blob and pack ids")
	rewrite := flag.Bool("rewrite", false, "rewrite the existing index files instead (a cache must rebuild)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: bigindex [flags] REPO")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, flag.Arg(0), s, *rewrite); err != nil {
		fmt.Fprintln(os.Stderr, "bigindex:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string, s bigindex.Spec, rewrite bool) error {
	be, err := local.Open(dir)
	if err != nil {
		return err
	}
	r, err := repo.Open(ctx, be, repo.OpenOptions{Password: func() (string, error) {
		return os.Getenv("REPO_PASSWORD"), nil
	}})
	if err != nil {
		return err
	}
	defer r.Close()
	start := time.Now()
	if rewrite {
		if err := bigindex.Rewrite(ctx, r, nil); err != nil {
			return err
		}
		fmt.Printf("rewrote the index files in %.1fs\n", time.Since(start).Seconds())
		return nil
	}
	ids, err := bigindex.Write(ctx, r, s, nil)
	if err != nil {
		return err
	}
	fmt.Printf("wrote %d index files, %d entries, in %.1fs\n", len(ids), s.Blobs, time.Since(start).Seconds())
	return nil
}
