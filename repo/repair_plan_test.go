package repo

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"repo/backend"
	"repo/backend/faulty"
	"repo/backend/mem"
	"repo/chunk"
)

// repairOutcome describes a repaired repository by content: for each
// snapshot, keyed by the snapshot it descends from (its Original, or
// itself), the paths it purged and the digest of every entry.
type repairOutcome map[chunk.ID]string

func repairOutcomeOf(t *testing.T, r *Repository) repairOutcome {
	t.Helper()
	sns, err := r.Snapshots(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := repairOutcome{}
	for _, sn := range sns {
		key := sn.ID
		if sn.Original != nil {
			key = *sn.Original
		}
		d := contentDigests(t, r, sn)
		var b strings.Builder
		fmt.Fprintf(&b, "purged %q\n", slices.Sorted(slices.Values(sn.Purged)))
		for _, k := range slices.Sorted(maps.Keys(d)) {
			fmt.Fprintf(&b, "%s %s\n", k, d[k])
		}
		if _, dup := out[key]; dup {
			t.Errorf("two snapshots descend from %s", key.Short())
		}
		out[key] = b.String()
	}
	return out
}

// TestRepairInterrupted makes check --repair fail at each save and at each
// removal in turn (outright, or after the call took effect) and checks that
// a second repair finishes the job: it says it continues the interrupted
// run, leaves no plan, check then finds no error, and every snapshot has
// exactly the content and purged paths a repair that was never interrupted
// gives it.
func TestRepairInterrupted(t *testing.T) {
	r, be := newTestRepo(t, true)
	markDamaged(r)
	files := map[string][]byte{}
	for i := range 16 {
		files[fmt.Sprintf("f%02d", i)] = randomBytes(uint64(700+i), 200<<10+i)
	}
	backup(t, r, BackupOptions{Paths: []string{writeFiles(t, files)}})
	for i := range 8 {
		files[fmt.Sprintf("g%02d", i)] = randomBytes(uint64(800+i), 150<<10+i)
	}
	backup(t, r, BackupOptions{Paths: []string{writeFiles(t, files)}})

	// Damage: one pack gone, one with a flipped byte (salvage, then
	// quarantine).
	packs := names(t, be, backend.PackFile)
	if len(packs) < 4 {
		t.Fatalf("setup: %d packs", len(packs))
	}
	removeObject(t, be, backend.Handle{Type: backend.PackFile, Name: packs[0]})
	rewrite(t, be, backend.Handle{Type: backend.PackFile, Name: packs[1]}, flipByte(100))
	objects := listObjects(t, be)

	open := func(t *testing.T) (*Repository, *faulty.Backend) {
		m := mem.New()
		for _, o := range objects {
			if err := m.Save(context.Background(), o.h, backend.NewByteReader(o.data)); err != nil {
				t.Fatal(err)
			}
		}
		fb := faulty.New(m)
		return openTestRepoNoIndex(t, fb), fb
	}
	opts := func(msgs *[]string) RepairOptions {
		return RepairOptions{ReadData: true, From: []string{}, Report: func(m string) { *msgs = append(*msgs, m) }}
	}
	// verify checks a finished repair against the clean one.
	var want repairOutcome
	verify := func(t *testing.T, be backend.Backend) {
		t.Helper()
		r := openTestRepoNoIndex(t, be)
		if _, err := r.LoadIndex(t.Context()); err != nil {
			t.Fatal(err)
		}
		fs, res := checkFindings(t, r, CheckOptions{ReadData: true})
		if res.Errors > 0 {
			t.Errorf("check after the repair: %d errors: %+v", res.Errors, bySeverity(fs, Error))
		}
		if plans, err := r.Plans(t.Context(), nil); err != nil || len(plans) != 0 {
			t.Errorf("after a finished repair: %d plans, %v", len(plans), err)
		}
		got := repairOutcomeOf(t, r)
		if want != nil && !maps.Equal(got, want) {
			t.Errorf("repaired snapshots differ from a clean repair:\ngot  %v\nwant %v", got, want)
		}
		if want == nil {
			want = got
		}
	}

	// The clean repair, counting the calls to interrupt.
	clean, cfb := open(t)
	cb := &countingBackend{Backend: cfb, op: faulty.Save | faulty.Remove}
	clean.be = cb
	var msgs []string
	res, err := clean.Repair(t.Context(), opts(&msgs))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.FilesPurged) == 0 || res.PacksDamaged != 1 || res.PacksMissing != 1 {
		t.Fatalf("setup: the clean repair purged %d files, found %d damaged and %d missing packs; want some, 1, 1", len(res.FilesPurged), res.PacksDamaged, res.PacksMissing)
	}
	verify(t, cfb)
	calls := int(cb.n.Load())
	t.Logf("a clean repair makes %d saves and removals; purged %d files", calls, len(res.FilesPurged))

	for _, mode := range []faulty.Mode{faulty.Fail, faulty.FailAfter} {
		for skip := range calls {
			t.Run(fmt.Sprintf("mode%d-call%d", mode, skip), func(t *testing.T) {
				r, fb := open(t)
				fb.Inject(faulty.Fault{Op: faulty.Save | faulty.Remove, Mode: mode, Skip: skip, Times: 1})
				var msgs []string
				_, err := r.Repair(t.Context(), opts(&msgs))
				fb.Reset()
				if err == nil {
					verify(t, fb)
					return
				}
				left, err := openTestRepoNoIndex(t, fb).Plans(t.Context(), nil)
				if err != nil {
					t.Fatal(err)
				}
				r2 := openTestRepoNoIndex(t, fb)
				msgs = nil
				if _, err := r2.Repair(t.Context(), opts(&msgs)); err != nil {
					t.Fatalf("second repair: %v", err)
				}
				continued := slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, "continuing an interrupted repair") })
				if continued != (len(left) > 0) {
					t.Errorf("%d plans left by the interrupted repair; the second said it continues one: %v", len(left), continued)
				}
				verify(t, fb)
			})
		}
	}
}
