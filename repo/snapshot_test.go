package repo

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"repo/chunk"
)

func TestFindSnapshot(t *testing.T) {
	r, _ := newTestRepo(t, false)
	ctx := t.Context()
	s := r.NewSaver(ctx)
	tree, err := s.SaveTree(&Tree{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	// 20 snapshots: by pigeonhole two share a first hex digit. Times are
	// out of order on purpose: "latest" is by time, not by save order.
	var sns []*Snapshot
	for i := range 20 {
		sn := &Snapshot{
			Time:     base.Add(time.Duration((i*7)%20) * time.Hour),
			Tree:     tree,
			Hostname: []string{"alpha", "beta"}[i%2],
			Paths:    []string{"/data", fmt.Sprintf("/p%d", i%3)},
			Tags:     []string{fmt.Sprintf("t%d", i%4), "all"},
			Source:   SourceInfo{Kind: SourceFiles},
		}
		if err := r.SaveSnapshot(ctx, sn); err != nil {
			t.Fatal(err)
		}
		sns = append(sns, sn)
	}
	latest := func(f SnapshotFilter) *Snapshot {
		var best *Snapshot
		for _, sn := range sns {
			if f.Match(sn) && (best == nil || sn.Time.After(best.Time)) {
				best = sn
			}
		}
		return best
	}

	t.Run("latest", func(t *testing.T) {
		filters := []SnapshotFilter{
			{},
			{Host: "alpha"},
			{Host: "beta"},
			{Paths: []string{"/p1", "/data"}},
			{Tags: []string{"t2"}},
			{Tags: []string{"t3", "all"}},
			{Host: "alpha", Tags: []string{"t2"}, Paths: []string{"/data", "/p2"}},
		}
		for _, f := range filters {
			want := latest(f)
			if want == nil {
				t.Fatalf("setup: filter %+v matches nothing", f)
			}
			got, err := r.FindSnapshot(ctx, "latest", f)
			if err != nil {
				t.Errorf("filter %+v: %v", f, err)
				continue
			}
			if got.ID != want.ID {
				t.Errorf("filter %+v: got %s (%v), want %s (%v)", f, got.ID.Short(), got.Time, want.ID.Short(), want.Time)
			}
		}
		for _, f := range []SnapshotFilter{
			{Host: "gamma"},
			{Paths: []string{"/data"}},
			{Tags: []string{"t1", "t2"}},
			{Host: "beta", Tags: []string{"t0"}}, // beta has odd i, t0 needs i%4 == 0
		} {
			if got, err := r.FindSnapshot(ctx, "latest", f); !errors.Is(err, ErrSnapshotNotFound) {
				t.Errorf("filter %+v: %v, %v; want ErrSnapshotNotFound", f, got, err)
			}
		}
	})

	t.Run("prefix", func(t *testing.T) {
		for _, sn := range sns {
			id := sn.ID.String()
			n := 1
			for ; n < len(id); n++ {
				unique := true
				for _, o := range sns {
					if o != sn && strings.HasPrefix(o.ID.String(), id[:n]) {
						unique = false
					}
				}
				if unique {
					break
				}
			}
			for _, ref := range []string{id[:n], id, strings.ToUpper(id[:n])} {
				got, err := r.FindSnapshot(ctx, ref, SnapshotFilter{})
				if err != nil || got.ID != sn.ID {
					t.Errorf("ref %s: %v, %v; want %s", ref, got, err, sn.ID.Short())
					continue
				}
				if got.Hostname != sn.Hostname || !got.Time.Equal(sn.Time) || got.Tree != sn.Tree {
					t.Errorf("ref %s: loaded %+v, saved %+v", ref, got, sn)
				}
			}
		}
	})

	t.Run("ambiguous", func(t *testing.T) {
		count := map[byte]int{}
		for _, sn := range sns {
			count[sn.ID.String()[0]]++
		}
		tested := 0
		for c, n := range count {
			if n < 2 {
				continue
			}
			tested++
			_, err := r.FindSnapshot(ctx, string(c), SnapshotFilter{})
			var ae *AmbiguousSnapshotError
			if !errors.As(err, &ae) {
				t.Errorf("prefix %c: %v, want *AmbiguousSnapshotError", c, err)
				continue
			}
			if ae.Prefix != string(c) || ae.Matches != n {
				t.Errorf("prefix %c: %+v, want %d matches", c, ae, n)
			}
			if errors.Is(err, ErrSnapshotNotFound) {
				t.Errorf("ambiguous prefix reported as not found")
			}
		}
		if tested == 0 {
			t.Fatal("setup: no shared first digit among 20 ids")
		}
	})

	t.Run("unknown", func(t *testing.T) {
		used := map[string]bool{}
		for _, sn := range sns {
			used[sn.ID.String()[:2]] = true
		}
		var unused string
		for i := range 256 {
			if p := fmt.Sprintf("%02x", i); !used[p] {
				unused = p
				break
			}
		}
		for _, ref := range []string{unused, "", chunk.ID{}.String(), "not-hex", "latestx"} {
			if got, err := r.FindSnapshot(ctx, ref, SnapshotFilter{}); !errors.Is(err, ErrSnapshotNotFound) {
				t.Errorf("ref %q: %v, %v; want ErrSnapshotNotFound", ref, got, err)
			}
		}
	})
}

func TestFindSnapshotLatestEmptyRepository(t *testing.T) {
	r, _ := newTestRepo(t, true)
	if _, err := r.FindSnapshot(t.Context(), "latest", SnapshotFilter{}); !errors.Is(err, ErrSnapshotNotFound) {
		t.Errorf("latest in an empty repository: %v", err)
	}
}

func TestSnapshotsSkipsDamaged(t *testing.T) {
	r, be := newTestRepo(t, false)
	s := r.NewSaver(t.Context())
	tree, _ := s.SaveTree(&Tree{})
	if _, err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	var ids []chunk.ID
	for i := range 3 {
		sn := &Snapshot{Time: time.Unix(int64(1e9+i), 0), Tree: tree, Hostname: "h"}
		if err := r.SaveSnapshot(t.Context(), sn); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sn.ID)
	}
	rewrite(t, be, snapshotHandle(ids[2]), flipByte(0))
	markDamaged(r)
	var bad []chunk.ID
	sns, err := r.Snapshots(t.Context(), func(id chunk.ID, err error) { bad = append(bad, id) })
	if err != nil || len(sns) != 2 || len(bad) != 1 || bad[0] != ids[2] {
		t.Errorf("Snapshots: %d loaded, bad %v, %v", len(sns), bad, err)
	}
	if _, err := r.Snapshots(t.Context(), nil); err == nil {
		t.Error("Snapshots without onError ignored a damaged snapshot")
	}
	// latest skips it: the newest readable one wins.
	got, err := r.FindSnapshot(t.Context(), "latest", SnapshotFilter{})
	if err != nil || got.ID != ids[1] {
		t.Errorf("latest: %v, %v; want %s", got, err, ids[1].Short())
	}
}
