package repo

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"repo/backend"
	"repo/backend/mem"
	"repo/chunk"
	"repo/index"
	"repo/internal/gentree"
	"repo/source"
)

// smallTree is a gentree spec that makes a few MiB in a few hundred
// entries, with every odd case.
var smallTree = gentree.Spec{
	Seed: 7, TextFiles: 60, TextMax: 40 << 10,
	BinFiles: 4, BinMax: 600 << 10,
	RandFiles: 3, RandSize: 1<<20 + 4321,
	Odd: true,
}

// generate writes spec under a new temporary directory and returns the
// tree's root (an absolute path).
func generate(t *testing.T, spec gentree.Spec) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	if err := gentree.Generate(dir, spec); err != nil {
		t.Fatalf("generate: %v", err)
	}
	return dir
}

// errorCollector is an OnError callback that records what it is told.
type errorCollector struct {
	mu   sync.Mutex
	errs map[string]error
}

func (c *errorCollector) onError(p string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.errs == nil {
		c.errs = map[string]error{}
	}
	c.errs[p] = err
}

func (c *errorCollector) paths() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for p := range c.errs {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// backup runs a backup of paths with a fixed host name and fails the test
// on any error, reported or returned.
func backup(t *testing.T, r *Repository, opts BackupOptions) *Snapshot {
	t.Helper()
	var ec errorCollector
	opts.OnError = ec.onError
	if opts.Hostname == "" {
		opts.Hostname = "testhost"
	}
	sn, err := r.Backup(t.Context(), opts)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	for _, p := range ec.paths() {
		t.Errorf("backup reported %s: %v", p, ec.errs[p])
	}
	if sn.Summary == nil {
		t.Fatal("snapshot without summary")
	}
	if sn.Summary.Errors != 0 {
		t.Errorf("summary counts %d errors", sn.Summary.Errors)
	}
	return sn
}

// treeStats counts the regular files, their bytes, directories (the root
// excluded) and symlinks below dir.
type treeStats struct {
	files, dirs, symlinks, other int
	bytes                        int64
}

func countTree(t *testing.T, dir string) treeStats {
	t.Helper()
	var st treeStats
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case p == dir:
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			st.files++
			st.bytes += fi.Size()
		case d.IsDir():
			st.dirs++
		case d.Type()&fs.ModeSymlink != 0:
			st.symlinks++
		default:
			st.other++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// compareDirs checks that got holds what want holds: the same entries,
// types, permission bits, owners, contents, link targets and mtimes (the
// roots' metadata excepted).
func compareDirs(t *testing.T, want, got string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		seen[rel] = true
		wi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		gi, err := os.Lstat(filepath.Join(got, rel))
		if err != nil {
			t.Errorf("%q: %v", rel, err)
			if wi.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if wi.Mode().Type() != gi.Mode().Type() {
			t.Errorf("%q: type %v, want %v", rel, gi.Mode().Type(), wi.Mode().Type())
			return nil
		}
		switch {
		case wi.Mode()&fs.ModeSymlink != 0:
			wl, _ := os.Readlink(p)
			gl, err := os.Readlink(filepath.Join(got, rel))
			if err != nil || gl != wl {
				t.Errorf("%q: link target %q (%v), want %q", rel, gl, err, wl)
			}
			if !wi.ModTime().Equal(gi.ModTime()) {
				t.Errorf("%q: symlink mtime %v, want %v", rel, gi.ModTime(), wi.ModTime())
			}
			return nil
		case wi.Mode().IsRegular():
			wd, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			gd, err := os.ReadFile(filepath.Join(got, rel))
			if err != nil || !bytes.Equal(wd, gd) {
				t.Errorf("%q: content differs (%d bytes, want %d; %v)", rel, len(gd), len(wd), err)
			}
		}
		if rel == "." {
			return nil // the target keeps its own metadata
		}
		if wp, gp := wi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky), gi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky); wp != gp {
			t.Errorf("%q: mode %v, want %v", rel, gp, wp)
		}
		if !wi.ModTime().Equal(gi.ModTime()) {
			t.Errorf("%q: mtime %v, want %v", rel, gi.ModTime(), wi.ModTime())
		}
		if ws, gs := wi.Sys().(*syscall.Stat_t), gi.Sys().(*syscall.Stat_t); ws.Uid != gs.Uid || ws.Gid != gs.Gid {
			t.Errorf("%q: owner %d:%d, want %d:%d", rel, gs.Uid, gs.Gid, ws.Uid, ws.Gid)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", want, err)
	}
	err = filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(got, p)
		if !seen[rel] {
			t.Errorf("%q: restored but not in the source", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", got, err)
	}
}

// restore restores subpath of sn into a new directory, fails the test on
// any error, and returns the directory.
func restore(t *testing.T, r *Repository, sn *Snapshot, subpath string) (string, RestoreStats) {
	t.Helper()
	target := filepath.Join(t.TempDir(), "target")
	var ec errorCollector
	st, err := r.Restore(t.Context(), sn, subpath, RestoreOptions{Target: target, OnError: ec.onError})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	for _, p := range ec.paths() {
		t.Errorf("restore reported %s: %v", p, ec.errs[p])
	}
	if st.Errors != 0 {
		t.Errorf("restore counted %d errors", st.Errors)
	}
	return target, st
}

func TestBackupRestoreRoundtrip(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		t.Run(modeName(encrypted), func(t *testing.T) {
			r, _ := newTestRepo(t, encrypted)
			src := generate(t, smallTree)
			if err := syscall.Mkfifo(filepath.Join(src, "odd", "fifo"), 0o640); err != nil {
				t.Fatal(err)
			}
			// setuid/setgid/sticky bits survive too.
			if err := os.Chmod(filepath.Join(src, "odd", "run.sh"), 0o755|fs.ModeSetuid|fs.ModeSetgid); err != nil {
				t.Fatal(err)
			}
			sticky := filepath.Join(src, "odd", "emptydirs")
			if err := os.Chmod(sticky, 0o755|fs.ModeSticky); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(sticky, gentree.Epoch, gentree.Epoch); err != nil {
				t.Fatal(err)
			}
			want := countTree(t, src)

			sn := backup(t, r, BackupOptions{Paths: []string{src}, Tags: []string{"t1"}})
			sum := sn.Summary
			if sum.FilesNew != want.files || sum.FilesRead != want.files || sum.TotalFiles != want.files {
				t.Errorf("summary: new %d, read %d, total %d files; want %d", sum.FilesNew, sum.FilesRead, sum.TotalFiles, want.files)
			}
			if sum.TotalBytes != want.bytes || sum.BytesRead != want.bytes {
				t.Errorf("summary: total %d, read %d bytes; want %d", sum.TotalBytes, sum.BytesRead, want.bytes)
			}
			if sum.FilesChanged != 0 || sum.FilesUnmodified != 0 || sum.DirsUnmodified != 0 {
				t.Errorf("first backup: summary %+v", sum)
			}
			if sum.BytesAdded <= 0 || sum.BlobsAdded <= 0 || sum.PacksAdded <= 0 {
				t.Errorf("first backup added nothing: %+v", sum)
			}
			if sn.Hostname != "testhost" || !slices.Equal(sn.Paths, []string{src}) || !slices.Equal(sn.Tags, []string{"t1"}) || sn.Source.Kind != SourceFiles {
				t.Errorf("snapshot %+v", sn)
			}
			loaded, err := r.LoadSnapshot(t.Context(), sn.ID)
			if err != nil || loaded.Tree != sn.Tree {
				t.Fatalf("load snapshot: %v", err)
			}

			target, rst := restore(t, r, sn, src)
			compareDirs(t, src, target)
			if rst.Files != want.files || rst.Dirs != want.dirs || rst.Symlinks != want.symlinks || rst.Other != want.other || rst.Bytes != want.bytes {
				t.Errorf("restore stats %+v, want %+v", rst, want)
			}
			// Restoring one file puts it into the target under its name.
			one, _ := restore(t, r, sn, filepath.Join(src, "odd", "not-utf8-\xff\xfe"))
			compareFile(t, filepath.Join(src, "odd", "not-utf8-\xff\xfe"), filepath.Join(one, "not-utf8-\xff\xfe"))
		})
	}
}

func compareFile(t *testing.T, want, got string) {
	t.Helper()
	wd, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	gd, err := os.ReadFile(got)
	if err != nil || !bytes.Equal(gd, wd) {
		t.Errorf("%s: %d bytes (%v), want the %d of %s", got, len(gd), err, len(wd), want)
	}
}

// subtreeOf returns the subtree id of directory p in sn.
func subtreeOf(t *testing.T, r *Repository, sn *Snapshot, p string) chunk.ID {
	t.Helper()
	n, _, err := r.FindNode(t.Context(), sn, p)
	if err != nil {
		t.Fatal(err)
	}
	if n.Subtree == nil {
		t.Fatalf("%s is not a directory in the snapshot", p)
	}
	return *n.Subtree
}

func TestBackupIncremental(t *testing.T) {
	r, be := newTestRepo(t, true)
	src := generate(t, smallTree)
	want := countTree(t, src)
	first := backup(t, r, BackupOptions{Paths: []string{src}})
	packs := len(names(t, be, backend.PackFile))

	second := backup(t, r, BackupOptions{Paths: []string{src}})
	sum := second.Summary
	if second.Parent == nil || *second.Parent != first.ID {
		t.Errorf("parent %v, want %s", second.Parent, first.ID.Short())
	}
	if sum.FilesRead != 0 || sum.BytesRead != 0 {
		t.Errorf("second backup read %d files, %d bytes; want none", sum.FilesRead, sum.BytesRead)
	}
	if sum.FilesUnmodified != want.files || sum.FilesNew != 0 || sum.FilesChanged != 0 {
		t.Errorf("second backup: %d unmodified, %d new, %d changed files; want %d, 0, 0", sum.FilesUnmodified, sum.FilesNew, sum.FilesChanged, want.files)
	}
	if sum.TotalFiles != want.files || sum.TotalBytes != want.bytes {
		t.Errorf("second backup totals %d files, %d bytes; want %d, %d", sum.TotalFiles, sum.TotalBytes, want.files, want.bytes)
	}
	if limit := first.Summary.BytesAdded / 100; sum.BytesAdded >= limit {
		t.Errorf("second backup added %d bytes, want < 1%% of %d", sum.BytesAdded, first.Summary.BytesAdded)
	}
	if a, b := subtreeOf(t, r, first, src), subtreeOf(t, r, second, src); a != b {
		t.Errorf("unchanged source, different trees %s and %s", a.Short(), b.Short())
	}
	if got := len(names(t, be, backend.PackFile)); got-packs > 1 {
		t.Errorf("second backup added %d packs, want at most one (of trees)", got-packs)
	}

	// Change one file, add one: only those are read.
	changed := filepath.Join(src, "d03", "e3", "t00003.txt")
	f, err := os.OpenFile(changed, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("appended\n")
	f.Close()
	if err := os.WriteFile(filepath.Join(src, "new.txt"), []byte("new file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	third := backup(t, r, BackupOptions{Paths: []string{src}})
	sum = third.Summary
	if sum.FilesRead != 2 || sum.FilesChanged != 1 || sum.FilesNew != 1 || sum.FilesUnmodified != want.files-1 {
		t.Errorf("third backup: read %d, changed %d, new %d, unmodified %d; want 2, 1, 1, %d", sum.FilesRead, sum.FilesChanged, sum.FilesNew, sum.FilesUnmodified, want.files-1)
	}
	if got := snapshotContent(t, r, third, changed); !bytes.HasSuffix(got, []byte("appended\n")) {
		t.Errorf("changed file in the third snapshot ends %q", got[max(0, len(got)-20):])
	}
	// An explicit NoParent reads everything again but adds no data.
	fourth := backup(t, r, BackupOptions{Paths: []string{src}, NoParent: true})
	if fourth.Parent != nil || fourth.Summary.FilesRead != want.files+1 {
		t.Errorf("backup without parent: parent %v, %d files read", fourth.Parent, fourth.Summary.FilesRead)
	}
	if limit := first.Summary.BytesAdded / 100; fourth.Summary.BytesAdded >= limit {
		t.Errorf("backup without parent of unchanged data added %d bytes, want < %d", fourth.Summary.BytesAdded, limit)
	}
}

// A file taken from the parent must not reference a blob that was lost
// since: when the parent's blob is no longer indexed, the file is read again.
func TestBackupParentBlobLost(t *testing.T) {
	r, be := newTestRepo(t, false)
	src := t.TempDir()
	data := randomBytes(3, 100<<10)
	if err := os.WriteFile(filepath.Join(src, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	first := backup(t, r, BackupOptions{Paths: []string{src}})
	// Lose the data, as a repair of a damaged repository would: the data
	// packs go, the index keeps only the tree packs, the snapshot goes.
	for name := range indexedPacks(t, r) {
		id, _ := chunk.ParseID(name)
		f, err := r.LoadIndexFile(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		var kept index.File
		for _, p := range f.Packs {
			if p.Blobs[0].Type == index.TreeBlob {
				kept.Packs = append(kept.Packs, p)
			} else {
				removeObject(t, be, packHandle(p.ID))
			}
		}
		if _, err := r.SaveUnpacked(t.Context(), backend.IndexFile, kept.Encode()); err != nil {
			t.Fatal(err)
		}
		removeObject(t, be, backend.Handle{Type: backend.IndexFile, Name: name})
	}
	removeObject(t, be, backend.Handle{Type: backend.SnapshotFile, Name: first.ID.String()})

	r2 := openTestRepo(t, be)
	if _, err := r2.LoadTree(t.Context(), subtreeOf(t, r2, first, src)); err != nil {
		t.Fatalf("setup: the parent's trees must stay readable: %v", err)
	}
	second := backup(t, r2, BackupOptions{Paths: []string{src}, Parent: first})
	if second.Summary.FilesRead != 1 || second.Summary.FilesUnmodified != 0 {
		t.Errorf("file whose blobs are lost was taken from the parent: %+v", second.Summary)
	}
	if got := snapshotContent(t, r2, second, filepath.Join(src, "f")); !bytes.Equal(got, data) {
		t.Error("content differs")
	}
}

func TestBackupExcludes(t *testing.T) {
	r, _ := newTestRepo(t, false)
	src := generate(t, smallTree)
	sn := backup(t, r, BackupOptions{Paths: []string{src}, Excludes: []string{"*.bin", src + "/d01", "private"}})
	all := snapshotPaths(t, r, sn, src)
	for p := range all {
		switch {
		case strings.HasSuffix(p, ".bin"):
			t.Errorf("%s: excluded by *.bin but saved", p)
		case p == "d01" || strings.HasPrefix(p, "d01/"):
			t.Errorf("%s: excluded by %s/d01 but saved", p, src)
		case p == "odd/private" || strings.HasPrefix(p, "odd/private/"):
			t.Errorf("%s: excluded by private but saved", p)
		}
	}
	for _, p := range []string{"d00", "d02", "d11/e1", "bin", "rand/r000.dat", "odd/link-to-dir", "odd/empty"} {
		if all[p] == nil {
			t.Errorf("%s: not excluded but missing", p)
		}
	}
	// The anchored pattern matches only at its place: a d01 deeper down
	// stays.
	deep := filepath.Join(src, "d02", "d01")
	if err := os.Mkdir(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	sn = backup(t, r, BackupOptions{Paths: []string{src}, Excludes: []string{src + "/d01"}})
	all = snapshotPaths(t, r, sn, src)
	if all["d02/d01"] == nil || all["d01"] != nil {
		t.Errorf("anchored exclude: d02/d01 saved %v, d01 saved %v", all["d02/d01"] != nil, all["d01"] != nil)
	}
	if _, err := r.Backup(t.Context(), BackupOptions{Paths: []string{src}, Excludes: []string{"[unclosed"}}); err == nil {
		t.Error("backup with a malformed exclude pattern succeeded")
	}
}

func TestUnchanged(t *testing.T) {
	mt := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	ct := mt.Add(time.Minute)
	pn := &Node{Name: "f", Type: NodeFile, Size: 100, ModTime: mt, ChangeTime: ct, Inode: 42}
	base := source.Info{Name: "f", Type: source.File, Size: 100, ModTime: mt, ChangeTime: ct, Inode: 42}
	tests := []struct {
		name string
		pn   func(*Node)
		info func(*source.Info)
		want bool
	}{
		{"same", nil, nil, true},
		{"same instant, other zone", nil, func(i *source.Info) {
			i.ModTime = mt.In(time.FixedZone("x", -7*3600))
			i.ChangeTime = ct.In(time.FixedZone("y", 3*3600))
		}, true},
		{"atime differs", nil, func(i *source.Info) { i.AccessTime = mt.Add(time.Hour) }, true},
		{"size", nil, func(i *source.Info) { i.Size = 101 }, false},
		{"mtime", nil, func(i *source.Info) { i.ModTime = mt.Add(time.Nanosecond) }, false},
		{"ctime", nil, func(i *source.Info) { i.ChangeTime = ct.Add(time.Nanosecond) }, false},
		{"inode", nil, func(i *source.Info) { i.Inode = 43 }, false},
		{"parent not a file", func(n *Node) { n.Type = NodeSymlink }, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, info := *pn, base
			if tt.pn != nil {
				tt.pn(&n)
			}
			if tt.info != nil {
				tt.info(&info)
			}
			if got := unchanged(&n, &info); got != tt.want {
				t.Errorf("unchanged = %v, want %v", got, tt.want)
			}
		})
	}
	// And through the parent's JSON form, as backup sees it.
	b, err := encodeTree(&Tree{Nodes: []Node{*pn}})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := decodeTree(chunk.ID{}, b)
	if err != nil {
		t.Fatal(err)
	}
	local := base
	local.ModTime, local.ChangeTime = mt.Local(), ct.Local()
	if !unchanged(&tr.Nodes[0], &local) {
		t.Error("a node decoded from JSON does not match the same file")
	}
}

// finishDir records a file with the size its content has, not the size
// Lstat saw: the file may have changed in between.
func TestFinishDirSizeFromContent(t *testing.T) {
	r, _ := newTestRepo(t, false)
	s := r.NewSaver(t.Context())
	var ec errorCollector
	a := &archiver{r: r, s: s, onError: ec.onError}
	data := []byte("five!")
	id, _, err := s.SaveBlob(index.DataBlob, data)
	if err != nil {
		t.Fatal(err)
	}
	result := func(res fileResult) chan fileResult {
		ch := make(chan fileResult, 1)
		ch <- res
		return ch
	}
	entries := []pendingNode{
		{node: Node{Name: "grew", Type: NodeFile, Size: 2}, res: result(fileResult{content: []chunk.ID{id}, size: 5}), path: "/x/grew"},
		{node: Node{Name: "same", Type: NodeFile, Size: 5}, res: result(fileResult{content: []chunk.ID{id}, size: 5}), path: "/x/same"},
		{node: Node{Name: "shrank", Type: NodeFile, Size: 9}, res: result(fileResult{content: []chunk.ID{id}, size: 5}), path: "/x/shrank"},
		{node: Node{Name: "unreadable", Type: NodeFile, Size: 7}, res: result(fileResult{err: errors.New("read failed")}), path: "/x/unreadable"},
		{node: Node{Name: "link", Type: NodeSymlink, LinkTarget: "grew"}},
	}
	// As saveEntry counted them from Lstat.
	a.sum.TotalFiles, a.sum.TotalBytes = 4, 2+5+9+7
	node, err := a.finishDir(t.Context(), "/x", nil, entries, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	tr, err := r.LoadTree(t.Context(), *node.Subtree)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"grew", "same", "shrank"} {
		n := tr.Find(name)
		if n == nil || n.Size != 5 || !slices.Equal(n.Content, []chunk.ID{id}) {
			t.Errorf("%s: node %+v, want size 5 with the content read", name, n)
		}
	}
	if tr.Find("unreadable") != nil {
		t.Error("unreadable file was saved")
	}
	if tr.Find("link") == nil {
		t.Error("symlink missing")
	}
	sum := a.summary()
	if sum.TotalFiles != 3 || sum.TotalBytes != 15 || sum.Errors != 1 {
		t.Errorf("summary: %d files, %d bytes, %d errors; want 3, 15, 1", sum.TotalFiles, sum.TotalBytes, sum.Errors)
	}
	if got := ec.paths(); !slices.Equal(got, []string{"/x/unreadable"}) {
		t.Errorf("reported %q, want /x/unreadable", got)
	}
}

// Files in /proc and /sys lie about their size: /proc files say 0 and
// have content (a file that grew between Lstat and read), sysfs files say
// 4096 and hold a few bytes (one that shrank). The snapshot records what
// was read, so restore and the content list agree.
func TestBackupSizeDiffersFromLstat(t *testing.T) {
	tests := []struct {
		name string
		path string
		grew bool
	}{
		{"grew", fmt.Sprintf("/proc/%d/status", os.Getpid()), true},
		{"shrank", "/sys/devices/system/cpu/online", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.path
			fi, err := os.Lstat(p)
			if err != nil {
				t.Skipf("%s: %v", p, err)
			}
			actual, err := os.ReadFile(p)
			if err != nil {
				t.Skipf("%s: %v", p, err)
			}
			if grew := int64(len(actual)) > fi.Size(); grew != tt.grew || int64(len(actual)) == fi.Size() {
				t.Skipf("%s: Lstat says %d bytes, %d read: not the case tested", p, fi.Size(), len(actual))
			}
			r, _ := newTestRepo(t, false)
			sn := backup(t, r, BackupOptions{Paths: []string{p}})
			n, _, err := r.FindNode(t.Context(), sn, p)
			if err != nil {
				t.Fatal(err)
			}
			content := snapshotContent(t, r, sn, p)
			if len(content) == 0 || n.Size != uint64(len(content)) {
				t.Errorf("node size %d, content %d bytes (Lstat said %d): want the size read", n.Size, len(content), fi.Size())
			}
			if sn.Summary.TotalBytes != int64(len(content)) || sn.Summary.BytesRead != int64(len(content)) {
				t.Errorf("summary: %d total, %d read bytes; want %d", sn.Summary.TotalBytes, sn.Summary.BytesRead, len(content))
			}
			target, _ := restore(t, r, sn, p)
			got, err := os.ReadFile(filepath.Join(target, filepath.Base(p)))
			if err != nil || !bytes.Equal(got, content) {
				t.Errorf("restored: %d bytes, %v", len(got), err)
			}
		})
	}
}

func TestBackupMultiplePaths(t *testing.T) {
	r, _ := newTestRepo(t, false)
	base := t.TempDir()
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b\xff")
	for _, d := range []string{filepath.Join(a, "sub"), b} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(a, "sub", "f"): "in a",
		filepath.Join(b, "g"):        "in b",
		filepath.Join(base, "other"): "not backed up",
	}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A nested path and a duplicate are dropped; relative paths are made
	// absolute.
	t.Chdir(base)
	sn := backup(t, r, BackupOptions{Paths: []string{b, "a", filepath.Join(a, "sub"), a + "/", filepath.Join(b, "..", "b\xff")}})
	if want := []string{a, b}; !slices.Equal(sn.Paths, want) {
		t.Errorf("paths %q, want %q", sn.Paths, want)
	}
	loaded, err := r.LoadSnapshot(t.Context(), sn.ID)
	if err != nil || !slices.Equal(loaded.Paths, sn.Paths) {
		t.Errorf("loaded paths %q (%v), want %q byte-exact", loaded.Paths, err, sn.Paths)
	}
	for p, c := range files {
		if filepath.Base(p) == "other" {
			if _, _, err := r.FindNode(t.Context(), sn, p); err == nil {
				t.Errorf("%s is in the snapshot", p)
			}
			continue
		}
		if got := snapshotContent(t, r, sn, p); string(got) != c {
			t.Errorf("%s: %q", p, got)
		}
	}
	// The parent is found by the same paths in any order, non-UTF-8 too.
	again := backup(t, r, BackupOptions{Paths: []string{a, b}})
	if again.Parent == nil || *again.Parent != sn.ID || again.Summary.FilesRead != 0 {
		t.Errorf("second backup: parent %v, %d files read; want %s, 0", again.Parent, again.Summary.FilesRead, sn.ID.Short())
	}
	target, _ := restore(t, r, sn, "/")
	compareContent(t, filepath.Join(target, a, "sub", "f"), []byte("in a"))
	compareContent(t, filepath.Join(target, b, "g"), []byte("in b"))
	if _, err := r.Backup(t.Context(), BackupOptions{Paths: []string{filepath.Join(base, "missing")}, Hostname: "h"}); err == nil {
		t.Error("backup of a missing path succeeded")
	}
	if _, err := r.Backup(t.Context(), BackupOptions{Hostname: "h"}); err == nil {
		t.Error("backup of no paths succeeded")
	}
}

// A backup path below a symlinked directory (/home -> /data/home is common)
// must give a snapshot that can be read: the intermediate component is
// stored as a directory leading to the target, not as a symlink with a
// subtree, which Validate (and so restore, ls and check) rejects.
func TestBackupPathThroughSymlink(t *testing.T) {
	r, _ := newTestRepo(t, false)
	base := t.TempDir()
	dir := filepath.Join(base, "real")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "f"), []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(base, "link", "sub")
	sn, err := r.Backup(t.Context(), BackupOptions{Paths: []string{p}, Hostname: "testhost"})
	if err != nil {
		// Refusing the path is acceptable; a snapshot that cannot be
		// read is not.
		t.Logf("backup through a symlink refused: %v", err)
		return
	}
	markDamaged(r) // findings are reported below
	findings, _ := checkFindings(t, r, CheckOptions{})
	for _, f := range findings {
		if f.Severity == Error {
			t.Errorf("check: %s %s: %s", f.Kind, f.Object, f.Message)
		}
	}
	n, _, err := r.FindNode(t.Context(), sn, filepath.Join(p, "f"))
	if err != nil {
		t.Fatalf("find the file in the snapshot: %v", err)
	}
	var buf bytes.Buffer
	if err := r.WriteContent(t.Context(), n, &buf); err != nil || buf.String() != "content" {
		t.Errorf("content %q, %v", buf.String(), err)
	}
}

func TestBackupStdin(t *testing.T) {
	r, _ := newTestRepo(t, true)
	data := append(randomBytes(9, 6<<20), bytes.Repeat([]byte("INSERT INTO t VALUES (1);\n"), 80000)...)
	sn := backup(t, r, BackupOptions{Stdin: bytes.NewReader(data), StdinName: "dump.sql"})
	if sn.Source.Kind != SourceStdin || !slices.Equal(sn.Paths, []string{"/dump.sql"}) {
		t.Errorf("snapshot source %q, paths %q", sn.Source.Kind, sn.Paths)
	}
	sum := sn.Summary
	if sum.FilesRead != 1 || sum.BytesRead != int64(len(data)) || sum.TotalFiles != 1 || sum.TotalBytes != int64(len(data)) {
		t.Errorf("summary %+v", sum)
	}
	n, _, err := r.FindNode(t.Context(), sn, "/dump.sql")
	if err != nil {
		t.Fatal(err)
	}
	if n.Type != NodeFile || n.Size != uint64(len(data)) || len(n.Content) < 2 {
		t.Errorf("node %s: type %s, size %d, %d blobs", n.Name, n.Type, n.Size, len(n.Content))
	}
	var buf bytes.Buffer
	if err := r.WriteContent(t.Context(), n, &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Error("stdin content differs")
	}
	// The same stream again adds no data.
	again := backup(t, r, BackupOptions{Stdin: bytes.NewReader(data), StdinName: "dump.sql"})
	if again.Summary.BlobsAdded > 1 {
		t.Errorf("same stream again added %d blobs", again.Summary.BlobsAdded)
	}

	for _, name := range []string{"", ".", "..", "a/b", "x\x00"} {
		before := len(names(t, r.be, backend.SnapshotFile))
		if _, err := r.Backup(t.Context(), BackupOptions{Stdin: bytes.NewReader(data), StdinName: name}); err == nil {
			t.Errorf("stdin name %q accepted", name)
		}
		if after := len(names(t, r.be, backend.SnapshotFile)); after != before {
			t.Errorf("stdin name %q: a snapshot was written", name)
		}
	}
}

// errReader fails after n bytes.
type errReader struct{ n int }

func (r *errReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errInjected
	}
	k := min(len(p), r.n)
	r.n -= k
	return k, nil
}

func TestBackupStdinReadError(t *testing.T) {
	r, be := newTestRepo(t, false)
	_, err := r.Backup(t.Context(), BackupOptions{Stdin: &errReader{3 << 20}, StdinName: "x", Hostname: "h"})
	if !errors.Is(err, errInjected) {
		t.Errorf("backup of a failing stream: %v, want the read error", err)
	}
	if n := len(names(t, be, backend.SnapshotFile)); n != 0 {
		t.Errorf("%d snapshots written for a failed stream", n)
	}
}

// The write ordering, observed on the backend during a backup: every pack
// is saved before an index file lists it, every index file before the
// snapshot.
func TestBackupWriteOrdering(t *testing.T) {
	if testing.Short() {
		t.Skip("backs up 40 MiB")
	}
	mb := mem.New()
	if _, err := Init(t.Context(), mb, testInitOptions(false)); err != nil {
		t.Fatal(err)
	}
	rec := &recordingBackend{Backend: mb}
	r := openTestRepo(t, rec)
	spec := gentree.Spec{Seed: 3, TextFiles: 40, TextMax: 8 << 10, RandFiles: 40, RandSize: 1 << 20, Odd: true}
	src := generate(t, spec)
	sn := backup(t, r, BackupOptions{Paths: []string{src}})

	events := rec.saves()
	done := map[backend.Handle]int64{} // handle → sequence number its Save completed
	started := map[backend.Handle]int64{}
	for _, ev := range events {
		if ev.end == 0 {
			t.Errorf("save of %v failed", ev.h)
			continue
		}
		done[ev.h] = ev.end
		started[ev.h] = ev.start
	}
	snapH := backend.Handle{Type: backend.SnapshotFile, Name: sn.ID.String()}
	snapStart, ok := started[snapH]
	if !ok {
		t.Fatal("snapshot save not recorded")
	}
	files := indexedPacks(t, r)
	if len(files) < 2 {
		t.Errorf("%d index files, want at least 2 to see a periodic index write", len(files))
	}
	listed := map[string]bool{}
	for name, packs := range files {
		ih := backend.Handle{Type: backend.IndexFile, Name: name}
		for _, p := range packs {
			listed[p.String()] = true
			ph := packHandle(p)
			if done[ph] == 0 {
				t.Errorf("index %s lists pack %s, whose save was not seen", name[:8], p.Short())
			} else if done[ph] > started[ih] {
				t.Errorf("index %s was saved before pack %s it lists", name[:8], p.Short())
			}
		}
		if done[ih] > snapStart {
			t.Errorf("snapshot saved before index %s", name[:8])
		}
	}
	for _, name := range names(t, mb, backend.PackFile) {
		if !listed[name] {
			t.Errorf("pack %s is in no index after a successful backup", name[:8])
		}
	}
	if n := len(names(t, mb, backend.SnapshotFile)); n != 1 {
		t.Errorf("%d snapshots", n)
	}
}

// TestBackupXattrChanges: an entry whose inode and change time are those
// of the parent keeps the parent's extended attributes without reading
// them; setting, changing or removing an attribute sets the change time,
// so every such change is in the next snapshot.
func TestBackupXattrChanges(t *testing.T) {
	r, _ := newTestRepo(t, false)
	src := t.TempDir()
	file := filepath.Join(src, "f.txt")
	if err := os.WriteFile(file, []byte("content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	set := func(p, name, value string) {
		t.Helper()
		if err := unix.Lsetxattr(p, name, []byte(value), 0); err != nil {
			t.Skipf("user extended attributes not supported here: %v", err)
		}
	}
	set(file, "user.a", "1")
	set(src, "user.dir", "d1")
	xattrs := func(sn *Snapshot, p string) string {
		t.Helper()
		n, _, err := r.FindNode(t.Context(), sn, p)
		if err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, x := range n.Xattrs {
			parts = append(parts, x.Name+"="+string(x.Value))
		}
		return strings.Join(parts, ",")
	}
	check := func(sn *Snapshot, wantFile, wantDir string) {
		t.Helper()
		if got := xattrs(sn, file); got != wantFile {
			t.Errorf("snapshot %s: file attributes %q, want %q", sn.ID.Short(), got, wantFile)
		}
		if got := xattrs(sn, src); got != wantDir {
			t.Errorf("snapshot %s: directory attributes %q, want %q", sn.ID.Short(), got, wantDir)
		}
	}
	check(backup(t, r, BackupOptions{Paths: []string{src}}), "user.a=1", "user.dir=d1")
	check(backup(t, r, BackupOptions{Paths: []string{src}}), "user.a=1", "user.dir=d1")

	set(file, "user.a", "2") // same length; the content stays
	set(file, "user.b", "new")
	third := backup(t, r, BackupOptions{Paths: []string{src}})
	check(third, "user.a=2,user.b=new", "user.dir=d1")
	if err := unix.Lremovexattr(file, "user.a"); err != nil {
		t.Fatal(err)
	}
	set(src, "user.dir", "d2")
	check(backup(t, r, BackupOptions{Paths: []string{src}}), "user.b=new", "user.dir=d2")
}
