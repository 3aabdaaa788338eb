package main

import (
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"repo/internal/gentree"
)

// statsJSON is the summary of stats --json.
type statsJSON struct {
	MessageType       string  `json:"message_type"`
	Snapshots         int64   `json:"snapshots"`
	TotalFiles        int64   `json:"total_files"`
	TotalSize         int64   `json:"total_size"`
	DataBlobs         int64   `json:"data_blobs"`
	RawSize           int64   `json:"raw_size"`
	StoredSize        int64   `json:"stored_size"`
	TreeBlobs         int64   `json:"tree_blobs"`
	PageMapBlobs      int64   `json:"page_map_blobs"`
	TreeRawSize       int64   `json:"tree_raw_size"`
	TreeStoredSize    int64   `json:"tree_stored_size"`
	Blobs             int64   `json:"blobs"`
	DedupRatio        float64 `json:"dedup_ratio"`
	CompressionRatio  float64 `json:"compression_ratio"`
	Packs             int64   `json:"packs"`
	PacksSize         int64   `json:"packs_size"`
	IndexFiles        int64   `json:"index_files"`
	IndexSize         int64   `json:"index_size"`
	MissingBlobs      int64   `json:"missing_blobs"`
	Errors            int64   `json:"errors"`
	UnreferencedBlobs *int64  `json:"unreferenced_blobs"`
	UnreferencedSize  *int64  `json:"unreferenced_size"`
}

// sourceStats counts the regular files below dir and their bytes, and
// adds each distinct non-empty content to contents (content hash → size).
func sourceStats(t *testing.T, dir string, contents map[[32]byte]int64) (files, size int64) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		size += int64(len(b))
		if len(b) > 0 {
			contents[sha256.Sum256(b)] = int64(len(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files, size
}

// dirStats counts the files below dir (of the repository) and their bytes.
func dirStats(t *testing.T, dir string) (n, size int64) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n++
		size += fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, size
}

// packOverhead is what a pack of an encrypted repository holds besides its
// blobs: the header's version byte, seal and length, plus 46 bytes per
// blob (docs/format.md, "Pack files").
func packOverhead(packs, blobs int64) int64 { return packs*(1+40+4) + blobs*46 }

// TestE2EStats compares stats --json with what the source trees and the
// repository directory say: files and bytes from the sources, distinct
// blobs from distinct file contents (every file is shorter than the
// smallest chunk, so one blob each), and the size of data/ from the blob
// sizes plus the pack headers.
func TestE2EStats(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 31, TextFiles: 40, TextMax: 16 << 10, BinFiles: 5, BinMax: 200 << 10, RandFiles: 2, RandSize: 100 << 10})
	contents := map[[32]byte]int64{}
	files1, size1 := sourceStats(t, src, contents)
	r.backup(src)
	// A second snapshot: one file more, one file changed, the rest shared.
	if err := os.WriteFile(filepath.Join(src, "new.txt"), []byte(strings.Repeat("new file\n", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	var changed string
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if changed == "" && err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".txt") && !strings.HasSuffix(p, "new.txt") {
			changed = p
		}
		return nil
	})
	f, err := os.OpenFile(changed, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("appended\n")
	f.Close()
	files2, size2 := sourceStats(t, src, contents)
	r.backup(src)
	var raw int64
	for _, n := range contents {
		raw += n
	}

	check := func(s statsJSON, unreferenced bool) {
		t.Helper()
		if s.MessageType != "summary" || s.MissingBlobs != 0 || s.Errors != 0 {
			t.Errorf("stats: %+v", s)
		}
		if s.Blobs != s.DataBlobs+s.TreeBlobs || s.PageMapBlobs != 0 {
			t.Errorf("stats: %d blobs, %d data and %d tree, %d page map", s.Blobs, s.DataBlobs, s.TreeBlobs, s.PageMapBlobs)
		}
		if want := float64(s.TotalSize) / float64(s.RawSize); s.DedupRatio != want {
			t.Errorf("dedup ratio %v, want %v", s.DedupRatio, want)
		}
		if want := float64(s.RawSize) / float64(s.StoredSize); s.CompressionRatio != want || s.CompressionRatio <= 1 {
			t.Errorf("compression ratio %v, want %v (above 1: the text compresses)", s.CompressionRatio, want)
		}
		packs, packsSize := dirStats(t, filepath.Join(r.dir, "data"))
		indexFiles, indexSize := dirStats(t, filepath.Join(r.dir, "index"))
		if s.Packs != packs || s.PacksSize != packsSize || s.IndexFiles != indexFiles || s.IndexSize != indexSize {
			t.Errorf("stats: %d packs of %d bytes, %d index files of %d bytes; the directory holds %d of %d, %d of %d",
				s.Packs, s.PacksSize, s.IndexFiles, s.IndexSize, packs, packsSize, indexFiles, indexSize)
		}
		if (s.UnreferencedBlobs != nil) != unreferenced || (s.UnreferencedSize != nil) != unreferenced {
			t.Errorf("unreferenced fields present: %v, %v; want %v", s.UnreferencedBlobs != nil, s.UnreferencedSize != nil, unreferenced)
		}
	}

	// All snapshots: everything stored is referenced, so the packs hold
	// exactly the referenced blobs and their headers.
	s := lastSummary[statsJSON](t, r.mustRun("stats", "--json"))
	check(s, true)
	want := statsJSON{MessageType: "summary", Snapshots: 2, TotalFiles: files1 + files2, TotalSize: size1 + size2,
		DataBlobs: int64(len(contents)), RawSize: raw}
	if s.Snapshots != want.Snapshots || s.TotalFiles != want.TotalFiles || s.TotalSize != want.TotalSize || s.DataBlobs != want.DataBlobs || s.RawSize != want.RawSize {
		t.Errorf("stats of both snapshots: %d snapshots, %d files of %d bytes, %d data blobs of %d bytes;\nwant %d, %d of %d, %d of %d",
			s.Snapshots, s.TotalFiles, s.TotalSize, s.DataBlobs, s.RawSize,
			want.Snapshots, want.TotalFiles, want.TotalSize, want.DataBlobs, want.RawSize)
	}
	if *s.UnreferencedBlobs != 0 || *s.UnreferencedSize != 0 {
		t.Errorf("unreferenced after two backups: %d blobs, %d bytes", *s.UnreferencedBlobs, *s.UnreferencedSize)
	}
	if got := s.StoredSize + s.TreeStoredSize + packOverhead(s.Packs, s.Blobs); got != s.PacksSize {
		t.Errorf("stored %d + trees %d + pack headers = %d, data/ holds %d", s.StoredSize, s.TreeStoredSize, got, s.PacksSize)
	}

	// The latest snapshot alone: the second source tree.
	sns := r.snapshots()
	latest := lastSummary[statsJSON](t, r.mustRun("stats", "latest", sns[1].ID[:8], "--json"))
	check(latest, false)
	if latest.Snapshots != 1 || latest.TotalFiles != files2 || latest.TotalSize != size2 || latest.DataBlobs != s.DataBlobs-1 {
		t.Errorf("stats latest: %d snapshots, %d files of %d bytes, %d data blobs; want 1, %d of %d, %d",
			latest.Snapshots, latest.TotalFiles, latest.TotalSize, latest.DataBlobs, files2, size2, s.DataBlobs-1)
	}

	// Without the first snapshot, its version of the changed file and its
	// trees are unreferenced, and still in the packs.
	r.mustRun("forget", sns[0].ID)
	after := lastSummary[statsJSON](t, r.mustRun("stats", "--json"))
	check(after, true)
	if *after.UnreferencedBlobs < 2 || after.DataBlobs != s.DataBlobs-1 || after.TotalFiles != files2 {
		t.Errorf("stats after forget: %d unreferenced, %d data blobs, %d files; want at least 2, %d, %d",
			*after.UnreferencedBlobs, after.DataBlobs, after.TotalFiles, s.DataBlobs-1, files2)
	}
	if got := after.StoredSize + after.TreeStoredSize + *after.UnreferencedSize + packOverhead(after.Packs, after.Blobs+*after.UnreferencedBlobs); got != after.PacksSize {
		t.Errorf("after forget: stored, trees, unreferenced and pack headers add up to %d, data/ holds %d", got, after.PacksSize)
	}

	// The human form names the same numbers.
	human := r.mustRun("stats")
	for _, w := range []string{"Snapshots:", "Restore size:", "Dedup ratio:", "Compression ratio:", "Unreferenced:"} {
		if !strings.Contains(human, w) {
			t.Errorf("stats output lacks %q:\n%s", w, human)
		}
	}
	if _, _, code := r.run(nil, "stats", "deadbeef"); code != exitError {
		t.Errorf("stats of a snapshot that does not exist: exit %d, want %d", code, exitError)
	}
}
