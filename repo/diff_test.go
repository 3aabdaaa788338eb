package repo

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"repo/chunk"
)

// diffFixture builds trees in a repository for the diff tests.
type diffFixture struct {
	t *testing.T
	r *Repository
	s *Saver
}

var diffTime = time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)

func fakeBlob(name string) chunk.ID { return chunk.Hash([]byte("blob " + name)) }

func dfile(name string, size uint64, blobs ...string) Node {
	n := Node{Name: name, Type: NodeFile, Mode: 0o644, ModTime: diffTime, Size: size}
	for _, b := range blobs {
		n.Content = append(n.Content, fakeBlob(b))
	}
	return n
}

func (f *diffFixture) dir(name string, nodes ...Node) Node {
	f.t.Helper()
	id, err := f.s.SaveTree(&Tree{Nodes: nodes})
	if err != nil {
		f.t.Fatalf("save tree %s: %v", name, err)
	}
	return Node{Name: name, Type: NodeDir, Mode: 0o755, ModTime: diffTime, Subtree: &id}
}

// root is a snapshot root as FindNode returns it for "/".
func root(dir Node) *Node {
	return &Node{Type: NodeDir, Subtree: dir.Subtree}
}

func collectDiff(t *testing.T, r *Repository, p string, o, n *Node) ([]string, DiffStats) {
	t.Helper()
	var got []string
	st, err := r.Diff(t.Context(), p, o, n, func(c DiffChange) error {
		if (c.Old == nil) != (c.Kind == DiffAdded) || (c.New == nil) != (c.Kind == DiffRemoved) {
			t.Errorf("%s %s: old %v, new %v", c.Kind, c.Path, c.Old != nil, c.New != nil)
		}
		got = append(got, c.Kind+" "+c.Path)
		return nil
	})
	if err != nil {
		t.Fatalf("diff: %v", err)
	}
	return got, st
}

func TestDiff(t *testing.T) {
	r, _ := newTestRepo(t, false)
	f := &diffFixture{t: t, r: r, s: r.NewSaver(t.Context())}

	db := func(pageMap string) Node {
		n := Node{Name: "db", Type: NodeFile, Mode: 0o644, ModTime: diffTime, Size: 4096}
		n.Database = &DatabaseInfo{Kind: DatabaseSQLite, PageSize: 4096, PageCount: 1, PageMap: fakeBlob(pageMap)}
		return n
	}
	// same's subtree is not stored: reading it fails the diff, so the test
	// fails if the diff reads a subtree that is the same on both sides.
	missing := chunk.Hash([]byte("a tree that is not stored"))
	same := Node{Name: "same", Type: NodeDir, Mode: 0o755, ModTime: diffTime, Subtree: &missing}
	meta := dfile("meta.txt", 1, "m")
	metaNew := meta
	metaNew.Mode = 0o600
	metaNew.Xattrs = []Xattr{{Name: "user.x", Value: []byte("1")}}

	oldRoot := f.dir("",
		dfile("a.txt", 10, "a1"),
		dfile("b.txt", 20, "b"),
		db("map1"),
		f.dir("dir", f.dir("sub", dfile("y", 3, "y1")), dfile("x", 1, "x")),
		f.dir("gone", f.dir("e"), dfile("q", 8, "q")),
		Node{Name: "link", Type: NodeSymlink, ModTime: diffTime, LinkTarget: "t1"},
		meta,
		same,
		dfile("t", 5, "t"),
	)
	newRoot := f.dir("",
		dfile("a.txt", 12, "a1", "a2"),
		dfile("c.txt", 7, "c"),
		db("map2"),
		f.dir("dir", f.dir("sub", dfile("y", 4, "y2")), dfile("w", 6, "w"), dfile("x", 1, "x")),
		Node{Name: "link", Type: NodeSymlink, ModTime: diffTime, LinkTarget: "t2"},
		metaNew,
		same,
		f.dir("t", dfile("z", 9, "z")),
	)
	if _, err := f.s.Finish(); err != nil {
		t.Fatal(err)
	}

	got, st := collectDiff(t, r, "/", root(oldRoot), root(newRoot))
	want := []string{
		"M /a.txt",
		"- /b.txt",
		"+ /c.txt",
		"M /db",
		"M /dir/sub/y",
		"+ /dir/w",
		"- /gone",
		"- /gone/e",
		"- /gone/q",
		"M /link",
		"U /meta.txt",
		"T /t",
		"+ /t/z",
	}
	if !slices.Equal(got, want) {
		t.Errorf("diff:\n got %q\nwant %q", got, want)
	}
	wantSt := DiffStats{
		FilesAdded: 3, FilesRemoved: 2, FilesChanged: 3, DirsRemoved: 2, OthersChanged: 1, TypeChanged: 1, MetadataChanged: 1,
		BytesAdded:   12 + 7 + 4096 + 4 + 6 + 9,
		BytesRemoved: 10 + 20 + 4096 + 3 + 8 + 5,
	}
	if st != wantSt {
		t.Errorf("stats:\n got %+v\nwant %+v", st, wantSt)
	}

	// The other way round, everything reverses.
	got, st = collectDiff(t, r, "/", root(newRoot), root(oldRoot))
	want = []string{"M /a.txt", "+ /b.txt", "- /c.txt", "M /db", "M /dir/sub/y", "- /dir/w", "+ /gone", "+ /gone/e", "+ /gone/q",
		"M /link", "U /meta.txt", "T /t", "- /t/z"}
	if !slices.Equal(got, want) {
		t.Errorf("reverse diff:\n got %q\nwant %q", got, want)
	}
	wantSt = DiffStats{
		FilesAdded: 2, FilesRemoved: 3, FilesChanged: 3, DirsAdded: 2, OthersChanged: 1, TypeChanged: 1, MetadataChanged: 1,
		BytesAdded: wantSt.BytesRemoved, BytesRemoved: wantSt.BytesAdded,
	}
	if st != wantSt {
		t.Errorf("reverse stats:\n got %+v\nwant %+v", st, wantSt)
	}

	// A tree against itself: nothing, and nothing read (same is missing).
	if got, st := collectDiff(t, r, "/", root(oldRoot), root(oldRoot)); len(got) != 0 || st != (DiffStats{}) {
		t.Errorf("diff of a tree with itself: %q, %+v", got, st)
	}

	// Subdirectories as roots: paths below p; their own metadata counts.
	od, nd := findChild(t, r, oldRoot, "dir"), findChild(t, r, newRoot, "dir")
	nd.Mode = 0o700
	got, _ = collectDiff(t, r, "/dir", od, nd)
	if want := []string{"U /dir", "M /dir/sub/y", "+ /dir/w"}; !slices.Equal(got, want) {
		t.Errorf("diff of /dir:\n got %q\nwant %q", got, want)
	}

	// An error from fn stops the diff.
	stop := errors.New("stop")
	calls := 0
	_, err := r.Diff(t.Context(), "/", root(oldRoot), root(newRoot), func(DiffChange) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Errorf("diff after fn failed: %v after %d calls", err, calls)
	}

	// A cancelled context stops it too.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r.Diff(ctx, "/", root(oldRoot), root(newRoot), func(DiffChange) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("diff with a cancelled context: %v", err)
	}

	// A subtree that differs and cannot be read is an error, not "no
	// change".
	other := chunk.Hash([]byte("another tree that is not stored"))
	broken := f2(same, &other)
	_, err = r.Diff(t.Context(), "/same", &same, &broken, func(DiffChange) error { return nil })
	if err == nil || !strings.Contains(err.Error(), missing.Short()) {
		t.Errorf("diff into a missing tree: %v", err)
	}
}

// f2 returns dir n with another subtree id.
func f2(n Node, sub *chunk.ID) Node {
	n.Subtree = sub
	return n
}

func findChild(t *testing.T, r *Repository, dir Node, name string) *Node {
	t.Helper()
	tr, err := r.LoadTree(t.Context(), *dir.Subtree)
	if err != nil {
		t.Fatal(err)
	}
	n := tr.Find(name)
	if n == nil {
		t.Fatalf("no %s", name)
	}
	c := *n
	return &c
}

// TestDiffMetadataOnly: each metadata field a restore sets is compared;
// times and ids that change by themselves are not.
func TestDiffMetadataOnly(t *testing.T) {
	base := dfile("f", 1, "f")
	tests := []struct {
		name   string
		change func(n *Node)
		want   bool
	}{
		{"mode", func(n *Node) { n.Mode = 0o600 }, true},
		{"uid", func(n *Node) { n.UID = 7 }, true},
		{"gid", func(n *Node) { n.GID = 7 }, true},
		{"user", func(n *Node) { n.User = "ann" }, true},
		{"group", func(n *Node) { n.Group = "staff" }, true},
		{"mtime", func(n *Node) { n.ModTime = n.ModTime.Add(time.Nanosecond) }, true},
		{"mtime in another zone", func(n *Node) { n.ModTime = n.ModTime.In(time.FixedZone("x", 3600)) }, false},
		{"xattr value", func(n *Node) { n.Xattrs = []Xattr{{Name: "user.a", Value: []byte("2")}} }, true},
		{"atime", func(n *Node) { n.AccessTime = n.AccessTime.Add(time.Hour) }, false},
		{"ctime", func(n *Node) { n.ChangeTime = n.ChangeTime.Add(time.Hour) }, false},
		{"inode", func(n *Node) { n.Inode = 99 }, false},
		{"links", func(n *Node) { n.Links = 3 }, false},
	}
	base.Xattrs = []Xattr{{Name: "user.a", Value: []byte("1")}}
	for _, tt := range tests {
		n := base
		n.Xattrs = slices.Clone(base.Xattrs)
		tt.change(&n)
		if got := metadataChanged(&base, &n); got != tt.want {
			t.Errorf("%s: metadataChanged = %v, want %v", tt.name, got, tt.want)
		}
		if contentChanged(&base, &n) {
			t.Errorf("%s: counted as a content change", tt.name)
		}
	}
	dev := Node{Name: "d", Type: NodeCharDevice, Rdev: 1}
	dev2 := dev
	dev2.Rdev = 2
	if !contentChanged(&dev, &dev2) {
		t.Errorf("a device with another number is not a content change")
	}
	fifo := Node{Name: "p", Type: NodeFIFO}
	if contentChanged(&fifo, &fifo) {
		t.Errorf("a fifo changed content")
	}
	f1, f3 := dfile("f", 6, "a", "b"), dfile("f", 6, "b", "a")
	if !contentChanged(&f1, &f3) {
		t.Errorf("blobs in another order are not a content change")
	}
}
