package repo

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"repo/backend"
	"repo/source"
)

// TestProgressNil: a nil *Progress takes every update and reports the
// zero state, so operations need no checks.
func TestProgressNil(t *testing.T) {
	var p *Progress
	p.StartPhase(PhaseBackup)
	p.StartCounted(PhaseReadData, 3, 100)
	p.AddTotals(1, 2)
	p.SetTotals(1, 2)
	p.TotalsFinal()
	p.AddFiles(1)
	p.AddBytes(1)
	p.AddItem(1)
	p.AddError()
	p.SetCurrent("x")
	if st := p.State(); st != (ProgressState{}) {
		t.Errorf("nil progress state %+v, want zero", st)
	}
}

// TestProgressCounters: concurrent updates all count; a phase starts from
// zero with totals not final, except StartCounted's; errors count over
// phases.
func TestProgressCounters(t *testing.T) {
	p := NewProgress()
	if st := p.State(); st.Phase != "" || !st.PhaseStarted.IsZero() {
		t.Errorf("before the first phase: %+v", st)
	}
	before := time.Now()
	p.StartPhase(PhaseBackup)
	const workers, each = 8, 1000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				p.AddTotals(1, 10)
				p.AddFiles(1)
				p.AddBytes(int64(i % 7))
				p.AddItem(2)
				if i%100 == 0 {
					p.AddError()
				}
			}
			p.SetCurrent(fmt.Sprintf("file %d", w))
		})
	}
	wg.Wait()
	st := p.State()
	wantBytes := int64(0)
	for i := range each {
		wantBytes += int64(i%7) + 2
	}
	want := ProgressState{
		Phase: PhaseBackup, PhaseStarted: st.PhaseStarted,
		FilesDone: workers * each, FilesTotal: workers * each,
		BytesDone: workers * wantBytes, BytesTotal: workers * each * 10,
		ItemsDone: workers * each, Errors: workers * each / 100,
		Current: st.Current,
	}
	if st != want {
		t.Errorf("state\n got %+v\nwant %+v", st, want)
	}
	if st.PhaseStarted.Before(before.Truncate(time.Microsecond)) {
		t.Errorf("phase started %v, before StartPhase was called (%v)", st.PhaseStarted, before)
	}
	if len(st.Current) < len("file 0") {
		t.Errorf("current %q, want one of the names set", st.Current)
	}
	p.TotalsFinal()
	if !p.State().TotalsFinal {
		t.Error("TotalsFinal did not mark the totals final")
	}

	p.StartCounted(PhaseReadData, 5, 500)
	st = p.State()
	want = ProgressState{Phase: PhaseReadData, PhaseStarted: st.PhaseStarted, ItemsTotal: 5, BytesTotal: 500, TotalsFinal: true, Errors: workers * each / 100}
	if st != want {
		t.Errorf("after StartCounted\n got %+v\nwant %+v", st, want)
	}
	p.StartPhase(PhaseHeal)
	if st := p.State(); st.TotalsFinal || st.ItemsTotal != 0 || st.Current != "" {
		t.Errorf("after StartPhase: %+v", st)
	}
	p.SetTotals(3, 30)
	if st := p.State(); !st.TotalsFinal || st.FilesTotal != 3 || st.BytesTotal != 30 {
		t.Errorf("after SetTotals: %+v", st)
	}
}

// writeDB makes a SQLite database at path with rows of random blobs, in
// journal mode mode ("wal" leaves its newest pages in the -wal file, so the
// file is smaller than the image a backup reads).
func writeDB(t *testing.T, path, mode string, rows int) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode("+mode+")")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// One connection, so that the WAL stays open (and unchecked-pointed)
	// until the test ends.
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("PRAGMA wal_autocheckpoint=0; CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"); err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		if _, err := db.Exec("INSERT INTO t VALUES (?, ?)", i, randomBytes(uint64(500+i), 3000)); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// TestCountTargets: the scanner's totals are the files and bytes the
// backup saves, with the same excludes, a database below the paths and
// its sidecar files left out, a database named outside them counted, and
// symlinks not followed; cancelled, it leaves the totals not final.
func TestCountTargets(t *testing.T) {
	r, _ := newTestRepo(t, false)
	src := generate(t, smallTree)
	writeDB(t, filepath.Join(src, "d00", "in.db"), "delete", 50)
	other := filepath.Join(t.TempDir(), "other.db")
	writeDB(t, other, "delete", 20)
	// Sidecars a database's writers would leave: not part of the image.
	for _, side := range []string{"-wal", "-journal"} {
		if err := os.WriteFile(filepath.Join(src, "d00", "in.db"+side), make([]byte, 5000), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts := BackupOptions{
		Paths:     []string{src},
		Excludes:  []string{"*.bin", src + "/d01"},
		Databases: []string{filepath.Join(src, "d00", "in.db"), other},
	}
	sn := backup(t, r, opts)

	excl, err := source.NewExcluder(opts.Excludes)
	if err != nil {
		t.Fatal(err)
	}
	a := &archiver{excl: excl, databases: map[string]bool{}}
	for _, d := range opts.Databases {
		a.databases[d] = true
	}
	targets := []string{src, other}
	p := NewProgress()
	p.StartPhase(PhaseBackup)
	a.countTargets(t.Context(), p, targets)
	st := p.State()
	if !st.TotalsFinal {
		t.Error("totals not final after a complete walk")
	}
	if st.FilesTotal != int64(sn.Summary.TotalFiles) || st.BytesTotal != sn.Summary.TotalBytes {
		t.Errorf("scanner counted %d files, %d bytes; the backup saved %d files, %d bytes",
			st.FilesTotal, st.BytesTotal, sn.Summary.TotalFiles, sn.Summary.TotalBytes)
	}
	if sn.Summary.Databases != 2 {
		t.Errorf("backup saved %d databases, want 2", sn.Summary.Databases)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	p = NewProgress()
	p.StartPhase(PhaseBackup)
	a.countTargets(ctx, p, targets)
	if p.State().TotalsFinal {
		t.Error("totals final after a cancelled walk")
	}
}

// itemLog records OnItem calls.
type itemLog struct {
	mu    sync.Mutex
	items map[string]string // path → action
	sizes map[string]int64
}

func (l *itemLog) onItem(action, path string, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.items == nil {
		l.items, l.sizes = map[string]string{}, map[string]int64{}
	}
	if old, dup := l.items[path]; dup {
		l.items[path] = "twice: " + old + ", " + action
		return
	}
	l.items[path], l.sizes[path] = action, size
}

func (l *itemLog) count(action string) int {
	n := 0
	for _, a := range l.items {
		if a == action {
			n++
		}
	}
	return n
}

// TestBackupProgress: a backup counts every file and byte it saves as
// done, unchanged ones included, tells OnItem about each file once with
// the right action, and its totals, when the scanner finished, are the
// summary's. A WAL database's image is larger than its file: the total is
// corrected to the image.
func TestBackupProgress(t *testing.T) {
	r, _ := newTestRepo(t, true)
	src := generate(t, smallTree)
	dbPath := filepath.Join(src, "app.db")
	db := writeDB(t, dbPath, "wal", 100)
	opts := BackupOptions{Paths: []string{src}, Databases: []string{dbPath}}

	for round, change := range []func(){
		nil,
		func() { // a file changed, a row of the database changed
			if err := os.WriteFile(filepath.Join(src, "d00", "new.txt"), []byte("new content"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec("UPDATE t SET v = ? WHERE id = 3", randomBytes(99, 3000)); err != nil {
				t.Fatal(err)
			}
		},
		func() {}, // nothing changed
	} {
		if change != nil {
			change()
		}
		p := NewProgress()
		var log itemLog
		o := opts
		o.Progress, o.OnItem = p, log.onItem
		sn := backup(t, r, o)
		s, st := sn.Summary, p.State()
		if st.Phase != PhaseBackup || st.FilesDone != int64(s.TotalFiles) || st.BytesDone != s.TotalBytes || st.Errors != 0 {
			t.Errorf("round %d: progress %+v, summary %d files, %d bytes", round, st, s.TotalFiles, s.TotalBytes)
		}
		// The scanner runs beside the backup and is stopped with it:
		// only a walk that finished has the totals.
		if st.TotalsFinal && (st.FilesTotal != int64(s.TotalFiles) || st.BytesTotal != s.TotalBytes) {
			t.Errorf("round %d: final totals %d files, %d bytes; summary %d files, %d bytes", round, st.FilesTotal, st.BytesTotal, s.TotalFiles, s.TotalBytes)
		}
		if len(log.items) != s.TotalFiles || log.count(ItemNew) != s.FilesNew || log.count(ItemChanged) != s.FilesChanged || log.count(ItemUnchanged) != s.FilesUnmodified {
			t.Errorf("round %d: OnItem told %d new, %d changed, %d unchanged of %d; summary %d new, %d changed, %d unmodified",
				round, log.count(ItemNew), log.count(ItemChanged), log.count(ItemUnchanged), len(log.items), s.FilesNew, s.FilesChanged, s.FilesUnmodified)
		}
		switch round {
		case 1:
			if log.items[dbPath] != ItemChanged || log.items[filepath.Join(src, "d00", "new.txt")] != ItemNew {
				t.Errorf("round 1: database %q, new file %q", log.items[dbPath], log.items[filepath.Join(src, "d00", "new.txt")])
			}
		case 2:
			if s.FilesUnmodified != s.TotalFiles {
				t.Errorf("round 2: %d of %d files unmodified", s.FilesUnmodified, s.TotalFiles)
			}
		}
		if n := snapshotPaths(t, r, sn, src)["app.db"]; n == nil || log.sizes[dbPath] != int64(n.Size) {
			t.Errorf("round %d: OnItem size of the database %d, node %+v", round, log.sizes[dbPath], n)
		}
	}
}

// TestBackupStdinProgress: stdin redirected from a file has a known total;
// bytes done advance to it.
func TestBackupStdinProgress(t *testing.T) {
	r, _ := newTestRepo(t, false)
	path := filepath.Join(t.TempDir(), "dump")
	data := randomBytes(5, 3<<20+17)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := NewProgress()
	var log itemLog
	backup(t, r, BackupOptions{Stdin: f, StdinName: "dump.sql", Progress: p, OnItem: log.onItem})
	st := p.State()
	n := int64(len(data))
	if !st.TotalsFinal || st.BytesTotal != n || st.BytesDone != n || st.FilesTotal != 1 || st.FilesDone != 1 {
		t.Errorf("progress %+v, want %d bytes of 1 file, done and final", st, n)
	}
	if log.items["/dump.sql"] != ItemNew || log.sizes["/dump.sql"] != n {
		t.Errorf("OnItem told %v %v", log.items, log.sizes)
	}
}

// TestRestoreProgress: a restore counts every file and byte written or
// kept, tells OnItem about each file once ("restored", or "skipped" when
// kept), and its totals are the snapshot's.
func TestRestoreProgress(t *testing.T) {
	r, _ := newTestRepo(t, false)
	src := generate(t, smallTree)
	sn := backup(t, r, BackupOptions{Paths: []string{src}})
	target := filepath.Join(t.TempDir(), "target")
	for _, c := range []struct {
		overwrite Overwrite
		action    string
	}{
		{OverwriteAlways, ItemRestored},
		{OverwriteIfChanged, ItemSkipped}, // everything is there already
	} {
		p := NewProgress()
		var log itemLog
		st, err := r.Restore(t.Context(), sn, "/", RestoreOptions{Target: target, Overwrite: c.overwrite, Progress: p, OnItem: log.onItem})
		if err != nil {
			t.Fatal(err)
		}
		ps := p.State()
		files, bytes := int64(st.Files+st.FilesSkipped), st.Bytes+st.BytesSkipped
		want := ProgressState{
			Phase: PhaseRestore, PhaseStarted: ps.PhaseStarted,
			FilesDone: files, FilesTotal: files, BytesDone: bytes, BytesTotal: bytes,
			TotalsFinal: true, Current: ps.Current,
		}
		if ps != want || files != int64(sn.Summary.TotalFiles) || bytes != sn.Summary.TotalBytes {
			t.Errorf("overwrite %v: progress\n got %+v\nwant %+v\n(summary %d files, %d bytes)", c.overwrite, ps, want, sn.Summary.TotalFiles, sn.Summary.TotalBytes)
		}
		if log.count(c.action) != int(files) || len(log.items) != int(files) {
			t.Errorf("overwrite %v: OnItem told %d files, %d of them %q; want %d", c.overwrite, len(log.items), log.count(c.action), c.action, files)
		}
	}

	// A subtree: its totals come from a walk beside the restore.
	p := NewProgress()
	sub := filepath.Join(src, "d02")
	st, err := r.Restore(t.Context(), sn, sub, RestoreOptions{Target: filepath.Join(t.TempDir(), "sub"), Progress: p})
	if err != nil {
		t.Fatal(err)
	}
	ps := p.State()
	if ps.FilesDone != int64(st.Files) || ps.BytesDone != st.Bytes {
		t.Errorf("subtree: progress %+v, restored %d files, %d bytes", ps, st.Files, st.Bytes)
	}
	if ps.TotalsFinal && (ps.FilesTotal != int64(st.Files) || ps.BytesTotal != st.Bytes) {
		t.Errorf("subtree: final totals %d files, %d bytes; restored %d files, %d bytes", ps.FilesTotal, ps.BytesTotal, st.Files, st.Bytes)
	}
	if want := countTree(t, sub); st.Files != want.files {
		t.Errorf("subtree: restored %d files, the source has %d", st.Files, want.files)
	}
}

// TestCheckPruneProgress: check --read-data ends in its read phase with
// every pack read, with its bytes; prune ends with its last phase
// complete; errors count the error findings.
func TestCheckPruneProgress(t *testing.T) {
	r, be := newTestRepo(t, false)
	src := generate(t, smallTree)
	sn1 := backup(t, r, BackupOptions{Paths: []string{src}})
	if err := os.WriteFile(filepath.Join(src, "d00", "more"), randomBytes(8, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	backup(t, r, BackupOptions{Paths: []string{src}})

	p := NewProgress()
	res, err := r.Check(t.Context(), CheckOptions{ReadData: true, Progress: p}, func(Finding) {})
	if err != nil {
		t.Fatal(err)
	}
	st := p.State()
	if st.Phase != PhaseReadData || !st.TotalsFinal || st.ItemsDone != int64(res.PacksRead) || st.ItemsTotal != int64(res.PacksRead) ||
		st.BytesDone != st.BytesTotal || st.BytesTotal == 0 || st.Errors != int64(res.Errors) {
		t.Errorf("check: progress %+v, result %+v", st, res)
	}

	if err := r.RemoveSnapshot(t.Context(), sn1.ID); err != nil {
		t.Fatal(err)
	}
	p = NewProgress()
	pres, err := r.Prune(t.Context(), PruneOptions{MaxUnused: -1, Progress: p})
	if err != nil {
		t.Fatal(err)
	}
	st = p.State()
	if st.Phase != PhaseDelete || st.ItemsDone != st.ItemsTotal || st.ItemsTotal == 0 || !st.TotalsFinal {
		t.Errorf("prune: progress %+v, result %+v", st, pres)
	}

	// An error finding counts as an error.
	packs := names(t, be, backend.PackFile)
	if len(packs) == 0 {
		t.Fatal("no packs")
	}
	markDamaged(r)
	p = NewProgress()
	removeObject(t, be, backend.Handle{Type: backend.PackFile, Name: packs[0]})
	res, err = r.Check(t.Context(), CheckOptions{Progress: p}, func(Finding) {})
	if err != nil {
		t.Fatal(err)
	}
	if st := p.State(); res.Errors == 0 || st.Errors != int64(res.Errors) || st.Phase != PhaseSnapshots {
		t.Errorf("check of a damaged repository: progress %+v, result %+v", st, res)
	}
}
