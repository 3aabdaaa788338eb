package repo

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"repo/backend"
	"repo/chunk"
)

func TestParseReadDataSubset(t *testing.T) {
	good := []struct {
		in       string
		part, of uint32
		below    uint64 // for N%
	}{
		{in: "1/1", part: 0, of: 1},
		{in: "1/5", part: 0, of: 5},
		{in: "5/5", part: 4, of: 5},
		{in: "3/7", part: 2, of: 7},
		{in: "007/10", part: 6, of: 10},
		{in: "4294967295/4294967295", part: 4294967294, of: 4294967295},
		{in: "100%", below: 1 << 32},
		{in: "50%", below: 1 << 31},
		{in: "25%", below: 1 << 30},
		{in: "12.5%", below: 1 << 29},
		{in: ".5%", below: 21474837}, // ceil(0.005 × 2^32 = 21474836.48)
		{in: "0.5%", below: 21474837},
		{in: "100.0%", below: 1 << 32},
		{in: "0.0000000001%", below: 1}, // tiny, but more than nothing
	}
	for _, tt := range good {
		s, err := ParseReadDataSubset(tt.in)
		if err != nil {
			t.Errorf("ParseReadDataSubset(%q): %v", tt.in, err)
			continue
		}
		if s.part != tt.part || s.of != tt.of || s.below != tt.below {
			t.Errorf("ParseReadDataSubset(%q) = part %d of %d below %d, want part %d of %d below %d",
				tt.in, s.part, s.of, s.below, tt.part, tt.of, tt.below)
		}
		if s.String() != tt.in {
			t.Errorf("ParseReadDataSubset(%q).String() = %q", tt.in, s.String())
		}
	}

	bad := []struct{ in, msg string }{
		{"", "want N% (e.g. 10%) or K/M"},
		{"5", "want N% (e.g. 10%) or K/M"},
		{"half", "want N% (e.g. 10%) or K/M"},
		{"%", "N a number"},
		{"0%", "more than 0"},
		{"0.0%", "more than 0"},
		{"100.01%", "at most 100"},
		{"101%", "at most 100"},
		{"-5%", "N a number"},
		{"+5%", "N a number"},
		{"5 %", "N a number"},
		{" 5%", "N a number"},
		{"5%%", "N a number"},
		{"1.2.3%", "N a number"},
		{"1e1%", "N a number"},
		{"0x10%", "N a number"},
		{"inf%", "N a number"},
		{"NaN%", "N a number"},
		{"1_0%", "N a number"},
		{"0/5", "between 1 and M"},
		{"6/5", "between 1 and M"},
		{"1/0", "at least 1"},
		{"0/0", "at least 1"},
		{"1/", "whole numbers"},
		{"/5", "whole numbers"},
		{"1/2/3", "whole numbers"},
		{"-1/5", "whole numbers"},
		{"+1/5", "whole numbers"},
		{"1.5/3", "whole numbers"},
		{"1/ 3", "whole numbers"},
		{"a/b", "whole numbers"},
		{"1/4294967296", "below 4294967296"},
		{"99999999999999999999/1", "below 4294967296"},
	}
	for _, tt := range bad {
		s, err := ParseReadDataSubset(tt.in)
		if err == nil {
			t.Errorf("ParseReadDataSubset(%q) = %+v, want an error", tt.in, s)
			continue
		}
		if !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), `"`+tt.in+`"`) {
			t.Errorf("ParseReadDataSubset(%q): error %q, want it to quote the input and say %q", tt.in, err, tt.msg)
		}
	}
}

// randomIDs returns n pseudo-random ids from a fixed seed.
func randomIDs(n int) []chunk.ID {
	rng := rand.New(rand.NewChaCha8([32]byte{'s', 'u', 'b', 's', 'e', 't'}))
	ids := make([]chunk.ID, n)
	for i := range ids {
		for j := 0; j < len(ids[i]); j += 8 {
			binary.LittleEndian.PutUint64(ids[i][j:], rng.Uint64())
		}
	}
	return ids
}

func mustSubset(t *testing.T, s string) *ReadDataSubset {
	t.Helper()
	sub, err := ParseReadDataSubset(s)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

// idWithPrefix returns an id whose first four bytes are p, big-endian.
func idWithPrefix(p uint32) chunk.ID {
	var id chunk.ID
	binary.BigEndian.PutUint32(id[:], p)
	for i := 4; i < len(id); i++ {
		id[i] = 0xa5
	}
	return id
}

// The runs 1/M … M/M read every pack exactly once.
func TestReadDataSubsetPartition(t *testing.T) {
	ids := randomIDs(10000)
	// Edge prefixes too: 0, the largest, and around a multiple of M.
	for _, p := range []uint32{0, 1, 6, 7, 8, 1<<32 - 1, 1 << 31} {
		ids = append(ids, idWithPrefix(p))
	}
	for _, m := range []int{1, 2, 3, 7, 16, 100, 1000} {
		subsets := make([]*ReadDataSubset, m)
		for k := range m {
			subsets[k] = mustSubset(t, fmt.Sprintf("%d/%d", k+1, m))
		}
		sizes := make([]int, m)
		for _, id := range ids {
			var in []int
			for k, s := range subsets {
				if s.Contains(id) {
					in = append(in, k+1)
					sizes[k]++
				}
			}
			want := int(binary.BigEndian.Uint32(id[:4])%uint32(m)) + 1
			if len(in) != 1 || in[0] != want {
				t.Fatalf("M=%d: id %s is in subsets %v, want exactly [%d]", m, id.Short(), in, want)
			}
		}
		// Random ids spread evenly; only meaningful with enough per group.
		if m <= 16 {
			for k, n := range sizes {
				if exp := len(ids) / m; n < exp*8/10 || n > exp*12/10 {
					t.Errorf("%d/%d holds %d of %d ids, want about %d", k+1, m, n, len(ids), exp)
				}
			}
		}
	}
}

func TestReadDataSubsetPercent(t *testing.T) {
	ids := randomIDs(10000)
	count := func(s *ReadDataSubset) int {
		n := 0
		for _, id := range ids {
			if s.Contains(id) {
				n++
			}
		}
		return n
	}
	quarter := mustSubset(t, "25%")
	if n := count(quarter); n < 2000 || n > 3000 {
		t.Errorf("25%% selects %d of %d random ids, want 2000 to 3000", n, len(ids))
	}
	if n := count(mustSubset(t, "100%")); n != len(ids) {
		t.Errorf("100%% selects %d of %d ids", n, len(ids))
	}
	// Deterministic and nested: what 10% reads, 25% reads too.
	tenth := mustSubset(t, "10%")
	for _, id := range ids {
		if tenth.Contains(id) && !quarter.Contains(id) {
			t.Fatalf("id %s is in 10%% but not in 25%%", id.Short())
		}
	}
	// The boundary: p < 25/100 × 2^32 = 2^30.
	for _, tt := range []struct {
		s    string
		p    uint32
		want bool
	}{
		{"25%", 0, true},
		{"25%", 1<<30 - 1, true},
		{"25%", 1 << 30, false},
		{"25%", 1<<32 - 1, false},
		{"100%", 1<<32 - 1, true},
		{"0.0000000001%", 0, true},
		{"0.0000000001%", 1, false},
	} {
		if got := mustSubset(t, tt.s).Contains(idWithPrefix(tt.p)); got != tt.want {
			t.Errorf("%s contains prefix %#x: %v, want %v", tt.s, tt.p, got, tt.want)
		}
	}
	var none *ReadDataSubset
	if !none.Contains(ids[0]) || none.String() != "" {
		t.Error("a nil subset must select every pack")
	}
}

// packLoadRecorder records the packs loaded whole, as check --read-data
// does (tree blobs are loaded by range).
type packLoadRecorder struct {
	backend.Backend
	mu    sync.Mutex
	whole map[string]int
}

func (b *packLoadRecorder) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(io.Reader) error) error {
	if h.Type == backend.PackFile && length == 0 && offset == 0 {
		b.mu.Lock()
		b.whole[h.Name]++
		b.mu.Unlock()
	}
	return b.Backend.Load(ctx, h, length, offset, fn)
}

func (b *packLoadRecorder) take() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.whole
	b.whole = map[string]int{}
	return w
}

// A check with a subset reads exactly the packs of the subset, and the M
// runs of K/M together read each pack once.
func TestCheckReadDataSubset(t *testing.T) {
	_, be, data, trees := checkRepo(t, false)
	rec := &packLoadRecorder{Backend: be, whole: map[string]int{}}
	r := openTestRepo(t, rec)
	all := append(slices.Clone(data), trees...)

	check := func(opts CheckOptions) CheckResult {
		t.Helper()
		rec.take()
		fs, res := checkFindings(t, r, opts)
		if len(fs) != 0 || res.Errors != 0 {
			t.Fatalf("subset %v: findings %+v", opts.Subset, fs)
		}
		read := rec.take()
		var want []string
		for _, id := range all {
			if (opts.ReadData || opts.Subset != nil) && opts.Subset.Contains(id) {
				want = append(want, id.String())
			}
		}
		var got []string
		for name, n := range read {
			got = append(got, name)
			if n != 1 {
				t.Errorf("subset %v: pack %s read %d times", opts.Subset, name[:8], n)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("subset %v: read packs %q, want %q", opts.Subset, got, want)
		}
		if res.PacksRead != len(want) {
			t.Errorf("subset %v: PacksRead %d, want %d", opts.Subset, res.PacksRead, len(want))
		}
		if res.ReadDataSubset != opts.Subset.String() {
			t.Errorf("subset %v: result says subset %q", opts.Subset, res.ReadDataSubset)
		}
		return res
	}

	for _, m := range []int{2, 3} {
		total := 0
		for k := 1; k <= m; k++ {
			s := mustSubset(t, fmt.Sprintf("%d/%d", k, m))
			total += check(CheckOptions{Subset: s}).PacksRead
			// --read-data as well changes nothing: the subset wins.
			check(CheckOptions{ReadData: true, Subset: s})
		}
		if total != len(all) {
			t.Errorf("1/%d … %d/%d read %d packs together, want %d", m, m, m, total, len(all))
		}
	}
	for _, s := range []string{"100%", "50%", "0.0000001%"} {
		check(CheckOptions{Subset: mustSubset(t, s)})
	}
	if res := check(CheckOptions{Subset: mustSubset(t, "100%")}); res.PacksRead != len(all) {
		t.Errorf("100%%: read %d packs, want all %d", res.PacksRead, len(all))
	}
	if res := check(CheckOptions{}); res.PacksRead != 0 {
		t.Errorf("no read data: read %d packs", res.PacksRead)
	}
}

// Damage inside a pack is found by the subset holding the pack, and only
// by it.
func TestCheckReadDataSubsetFindsDamage(t *testing.T) {
	r, be, data, _ := checkRepo(t, false)
	id := data[0]
	blobs := blobsOfPack(t, r, id)
	rewrite(t, be, packHandle(id), flipByte(int(blobs[len(blobs)-1].Offset)))
	markDamaged(r)
	group := int(binary.BigEndian.Uint32(id[:4])%2) + 1
	for k := 1; k <= 2; k++ {
		fs, _ := checkFindings(t, r, CheckOptions{Subset: mustSubset(t, fmt.Sprintf("%d/2", k))})
		found := len(errorsAbout(fs, packHandle(id).String())) > 0
		if found != (k == group) {
			t.Errorf("subset %d/2 (pack in %d/2): found the damage %v; findings %+v", k, group, found, fs)
		}
	}
}
