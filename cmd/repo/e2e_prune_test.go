package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"repo/internal/gentree"
)

// pruneSummary is the summary line of prune --json.
type pruneSummary struct {
	MessageType       string `json:"message_type"`
	DryRun            bool   `json:"dry_run"`
	Snapshots         int    `json:"snapshots"`
	PacksDeleted      int    `json:"packs_deleted"`
	PacksUnused       int    `json:"packs_unused"`
	PacksRepacked     int    `json:"packs_repacked"`
	PacksUnreferenced int    `json:"packs_unreferenced"`
	BytesFreed        int64  `json:"bytes_freed"`
	BytesDeleted      int64  `json:"bytes_deleted"`
	BytesRepacked     int64  `json:"bytes_repacked"`
	BytesUsed         int64  `json:"bytes_used"`
	BytesUnusedLeft   int64  `json:"bytes_unused_left"`
	IndexFilesAfter   int    `json:"index_files_after"`
}

// churn changes the tree at src as a busy day would: half of the files get
// new content, a tenth are deleted, and a few new ones appear.
// Deterministic for a seed.
func churn(t *testing.T, src string, seed uint64) {
	t.Helper()
	rng := newRand(seed)
	var files []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	for i, p := range files {
		switch n := rng.IntN(10); {
		case n < 5:
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, p, randomBytes(seed<<20|uint64(i), int(fi.Size())+rng.IntN(1000)), 0o644, gentree.Epoch)
		case n == 5:
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 3 {
		writeFile(t, filepath.Join(src, "new", fmt.Sprintf("day%d-%d.dat", seed, i)), randomBytes(seed<<24|uint64(i), 100<<10+rng.IntN(200<<10)), 0o644, gentree.Epoch)
	}
}

// TestE2EPrune: after forgetting half of the snapshots of a churned
// history, prune leaves a repository that check --read-data accepts,
// whose remaining snapshots restore byte for byte, and whose size is
// within 10% of a fresh repository holding only their content.
func TestE2EPrune(t *testing.T) {
	r := newRepo(t, "--pack-size", "1")
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{
		Seed: 21, TextFiles: 120, TextMax: 16 << 10, BinFiles: 6, BinMax: 300 << 10,
		RandFiles: 6, RandSize: 400 << 10,
	})
	const rounds = 6
	var scans []map[string]entry // the source as each snapshot saw it
	var copies []string          // and a copy of its content
	for round := range rounds {
		if round > 0 {
			churn(t, src, uint64(round))
		}
		r.backup(src)
		scans = append(scans, scanTree(t, src))
		cp := filepath.Join(t.TempDir(), fmt.Sprintf("day%d", round))
		copyDir(t, src, cp)
		copies = append(copies, cp)
	}
	sns := r.snapshots()
	if len(sns) != rounds {
		t.Fatalf("%d snapshots, want %d", len(sns), rounds)
	}
	var forget []string
	var kept []int
	for i, sn := range sns {
		if i%2 == 0 {
			forget = append(forget, sn.ShortID)
		} else {
			kept = append(kept, i)
		}
	}
	r.mustRun(append([]string{"forget"}, forget...)...)
	before := dataSize(t, r.dir)

	// A dry run says what it would do and changes nothing.
	out := r.mustRun("prune", "--dry-run")
	if !strings.Contains(out, "would delete ") || !strings.Contains(out, "prune (dry run, nothing changed): would free ") {
		t.Errorf("prune --dry-run printed:\n%s", out)
	}
	if got := dataSize(t, r.dir); got != before {
		t.Errorf("dry run changed the data from %d to %d bytes", before, got)
	}

	sum := lastSummary[pruneSummary](t, r.mustRun("prune", "--json"))
	after := dataSize(t, r.dir)
	t.Logf("prune: %+v; data %d → %d bytes", sum, before, after)
	if sum.Snapshots != len(kept) || sum.PacksDeleted == 0 || sum.BytesFreed != before-after {
		t.Errorf("summary %+v: want %d snapshots, packs deleted, %d bytes freed", sum, len(kept), before-after)
	}
	if float64(sum.BytesUnusedLeft) > 0.05*float64(sum.BytesUsed) {
		t.Errorf("%d bytes unused left of %d used: more than 5%%", sum.BytesUnusedLeft, sum.BytesUsed)
	}
	r.mustRun("check", "--read-data")

	for _, i := range kept {
		target := filepath.Join(t.TempDir(), "target")
		r.mustRun("restore", sns[i].ShortID, "--target", target)
		compareTrees(t, scans[i], scanTree(t, restoredPath(target, src)), false)
	}

	// A fresh repository holding only the kept content.
	fresh := newRepo(t, "--pack-size", "1")
	for _, i := range kept {
		fresh.backup(copies[i])
	}
	want := dataSize(t, fresh.dir)
	t.Logf("fresh repository of the kept content: %d bytes; before prune %d, after %d", want, before, after)
	if float64(before) < 1.3*float64(want) {
		t.Fatalf("setup: before prune the repository (%d bytes) is not much larger than a fresh one (%d)", before, want)
	}
	if d := float64(after-want) / float64(want); d > 0.10 || d < -0.10 {
		t.Errorf("after prune the repository holds %d bytes of packs, %.1f%% off the %d of a fresh one", after, 100*d, want)
	}

	// Nothing left to do; the human summary line.
	out = r.mustRun("prune")
	if !strings.Contains(out, "freed 0 B in 0 packs, repacked 0 B in 0 packs") {
		t.Errorf("second prune printed:\n%s", out)
	}
}

// TestE2EPruneUsage: --max-unused takes N% or unlimited; anything else is
// a usage error that touches nothing.
func TestE2EPruneUsage(t *testing.T) {
	r := newRepo(t)
	for _, bad := range []string{"5", "-1%", "x%", "5%%", ""} {
		if _, stderr, code := r.run(nil, "prune", "--max-unused", bad); code != 2 {
			t.Errorf("prune --max-unused %q: exit %d, want 2\n%s", bad, code, stderr)
		}
	}
	for _, good := range []string{"0%", "2.5%", "100%", "unlimited"} {
		r.mustRun("prune", "--max-unused", good, "--dry-run")
	}
}

// forgetPruneSummary is the summary line of forget --json with --prune.
type forgetPruneSummary struct {
	DryRun      bool          `json:"dry_run"`
	Removed     int           `json:"removed"`
	WouldRemove *int          `json:"would_remove"`
	Prune       *pruneSummary `json:"prune"`
}

// TestE2EForgetPruneDryRun: forget --dry-run --prune simulates the prune
// with the snapshots to remove counted as gone. It changes nothing, and
// its figures are those the real forget --prune gives next.
func TestE2EForgetPruneDryRun(t *testing.T) {
	r := newRepo(t, "--pack-size", "1")
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 22, TextFiles: 60, TextMax: 16 << 10, BinFiles: 4, BinMax: 300 << 10})
	for round := range 4 {
		if round > 0 {
			churn(t, src, uint64(10+round))
		}
		r.backup(src)
	}
	before := dataSize(t, r.dir)

	dry := lastSummary[forgetPruneSummary](t, r.mustRun("forget", "--keep-last", "1", "--prune", "--dry-run", "--json"))
	if !dry.DryRun || dry.WouldRemove == nil || *dry.WouldRemove != 3 || dry.Prune == nil {
		t.Fatalf("dry run summary %+v: want dry_run, would_remove 3 and a prune object", dry)
	}
	if dry.Prune.Snapshots != 1 || dry.Prune.PacksDeleted == 0 || dry.Prune.BytesFreed == 0 {
		t.Errorf("simulated prune %+v: want 1 snapshot left and packs to delete", *dry.Prune)
	}
	if n := len(r.snapshots()); n != 4 {
		t.Errorf("the dry run left %d snapshots, want all 4", n)
	}
	if got := dataSize(t, r.dir); got != before {
		t.Errorf("the dry run changed the data from %d to %d bytes", before, got)
	}
	out := r.mustRun("forget", "--keep-last", "1", "--prune", "--dry-run")
	if !strings.Contains(out, "prune (dry run): would free ") || !strings.Contains(out, "(1 snapshots would use ") {
		t.Errorf("forget --dry-run --prune printed:\n%s", out)
	}

	real := lastSummary[forgetPruneSummary](t, r.mustRun("forget", "--keep-last", "1", "--prune", "--json"))
	if real.Removed != 3 || real.Prune == nil {
		t.Fatalf("real summary %+v: want 3 removed and a prune object", real)
	}
	// Bytes freed is an estimate in any prune dry run: the size of the
	// packs repacking writes is only known once they are written.
	d, g := *dry.Prune, *real.Prune
	if diff := d.BytesFreed - g.BytesFreed; diff < -g.BytesFreed/100 || diff > g.BytesFreed/100 {
		t.Errorf("the dry run predicted %d bytes freed, the real prune freed %d: more than 1%% off", d.BytesFreed, g.BytesFreed)
	}
	d.DryRun, g.DryRun, d.BytesFreed, g.BytesFreed = false, false, 0, 0
	if d != g {
		t.Errorf("the dry run predicted %+v, the real prune did %+v", d, g)
	}
	if got := before - dataSize(t, r.dir); got != real.Prune.BytesFreed {
		t.Errorf("prune freed %d bytes of packs, reports %d", got, real.Prune.BytesFreed)
	}
	r.mustRun("check", "--read-data")

	// Nothing to remove: the prune is not simulated, and says so.
	out = r.mustRun("forget", "--keep-last", "1", "--prune", "--dry-run")
	if !strings.Contains(out, "prune (dry run): skipped, no snapshot would be removed") {
		t.Errorf("forget --dry-run --prune with nothing to remove printed:\n%s", out)
	}
}
