package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"repo/internal/gentree"
)

// checkSummary is the summary line of check --json.
type checkSummary struct {
	MessageType    string `json:"message_type"`
	Packs          int    `json:"packs"`
	PacksRead      int    `json:"packs_read"`
	Errors         int    `json:"errors"`
	ReadDataSubset string `json:"read_data_subset"`
}

// TestE2ECheckReadDataSubset checks --read-data-subset: K/M runs together
// read every pack once, the summary says how many were read, and a bad
// subset is a usage error.
func TestE2ECheckReadDataSubset(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	generate(t, src, gentree.Spec{Seed: 21, TextFiles: 30, TextMax: 8 << 10})
	r.backup(src)
	packs := len(packFiles(t, r.dir))

	const m = 3
	total := 0
	for k := 1; k <= m; k++ {
		subset := fmt.Sprintf("%d/%d", k, m)
		sum := lastSummary[checkSummary](t, r.mustRun("check", "--json", "--read-data-subset="+subset))
		if sum.Errors != 0 || sum.Packs != packs || sum.ReadDataSubset != subset {
			t.Errorf("check --read-data-subset=%s: summary %+v, want %d packs, subset %q", subset, sum, packs, subset)
		}
		total += sum.PacksRead
		// With --read-data as well: the subset wins.
		both := lastSummary[checkSummary](t, r.mustRun("check", "--json", "--read-data", "--read-data-subset", subset))
		if both.PacksRead != sum.PacksRead {
			t.Errorf("--read-data --read-data-subset=%s read %d packs, the subset alone %d", subset, both.PacksRead, sum.PacksRead)
		}
	}
	if total != packs {
		t.Errorf("1/%d … %d/%d read %d packs together, want all %d", m, m, m, total, packs)
	}

	if sum := lastSummary[checkSummary](t, r.mustRun("check", "--json", "--read-data-subset=100%")); sum.PacksRead != packs {
		t.Errorf("100%%: read %d of %d packs", sum.PacksRead, packs)
	}
	if sum := lastSummary[checkSummary](t, r.mustRun("check", "--json", "--read-data")); sum.ReadDataSubset != "" || sum.PacksRead != packs {
		t.Errorf("--read-data: summary %+v, want all %d packs read and no subset", sum, packs)
	}

	out := r.mustRun("check", "--read-data-subset=12.5%")
	if !regexp.MustCompile(`, read \d+ packs \(subset 12\.5%\): 0 errors`).MatchString(out) {
		t.Errorf("text summary does not say how many packs of the subset were read: %q", out)
	}

	for _, bad := range []string{"", "0%", "101%", "x%", "0/3", "4/3", "1/0", "1/2/3", "half"} {
		stdout, stderr, code := r.run(nil, "check", "--read-data-subset="+bad)
		if code != exitUsage {
			t.Errorf("--read-data-subset=%q: exit %d, want %d; stderr %s", bad, code, exitUsage, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		if len(lines) != 1 || !strings.Contains(stderr, "--read-data-subset") || !strings.Contains(stderr, fmt.Sprintf("%q", bad)) {
			t.Errorf("--read-data-subset=%q: want one stderr line naming the flag and the value, got %q", bad, stderr)
		}
		if stdout != "" {
			t.Errorf("--read-data-subset=%q printed to stdout: %q", bad, stdout)
		}
	}
}
