package repo

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"repo/chunk"
	"repo/index"
)

// normTimes returns n with its times in UTC, so that reflect.DeepEqual
// compares instants.
func normTimes(n Node) Node {
	n.ModTime, n.AccessTime, n.ChangeTime = n.ModTime.UTC(), n.AccessTime.UTC(), n.ChangeTime.UTC()
	return n
}

func TestNodeJSONRoundtrip(t *testing.T) {
	mt := time.Date(2024, 2, 29, 12, 34, 56, 789012345, time.UTC)
	sub := chunk.Hash([]byte("subtree"))
	tests := []struct {
		name string
		node Node
	}{
		{"plain file", Node{Name: "file.txt", Type: NodeFile, Mode: 0o644, Size: 3, Content: []chunk.ID{chunk.Hash([]byte("a"))}}},
		{"unicode name", Node{Name: "ünïcödé-名前.txt", Type: NodeFile, Mode: 0o644}},
		{"invalid utf8 name", Node{Name: "not-utf8-\xff\xfe", Type: NodeFile, Mode: 0o600}},
		{"lone continuation byte", Node{Name: "\x80", Type: NodeFile}},
		{"truncated sequence", Node{Name: "abc\xe2\x82", Type: NodeFile}},
		{"replacement char and invalid", Node{Name: "\uFFFD\xff", Type: NodeFile}},
		{"only replacement char", Node{Name: "\uFFFD", Type: NodeFile}},
		{"control chars", Node{Name: "new\nline\ttab\x01", Type: NodeFile}},
		{"html chars", Node{Name: "<a&b>", Type: NodeFile}},
		{"symlink invalid target", Node{Name: "link", Type: NodeSymlink, LinkTarget: "../\xff\xfe/target"}},
		{"invalid name and target", Node{Name: "l\xc0\xaf", Type: NodeSymlink, LinkTarget: "\xed\xa0\x80surrogate"}},
		{"symlink valid target", Node{Name: "link", Type: NodeSymlink, LinkTarget: "with space.txt"}},
		{"dir", Node{Name: "d", Type: NodeDir, Mode: 0o1777 | 0o2000, Subtree: &sub}},
		{"metadata", Node{Name: "dev", Type: NodeCharDevice, Rdev: 0x0501, UID: 1000, GID: 1000, User: "u", Group: "g",
			Inode: 42, DeviceID: 7, Links: 2, Xattrs: []Xattr{{Name: "user.a", Value: []byte{0, 1, 0xff}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.node
			n.ModTime, n.AccessTime, n.ChangeTime = mt, mt.Add(time.Second), mt.Add(-time.Hour)
			b, err := json.Marshal(n)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			if !utf8.Valid(b) {
				t.Errorf("encoding is not valid UTF-8: %q", b)
			}
			var got Node
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("unmarshal %s: %v", b, err)
			}
			if got.Name != n.Name {
				t.Errorf("name %q came back as %q", n.Name, got.Name)
			}
			if got.LinkTarget != n.LinkTarget {
				t.Errorf("link target %q came back as %q", n.LinkTarget, got.LinkTarget)
			}
			if !reflect.DeepEqual(normTimes(got), normTimes(n)) {
				t.Errorf("roundtrip:\n got %+v\nwant %+v", got, n)
			}
			// And through a whole tree blob.
			buf, err := encodeTree(&Tree{Nodes: []Node{n}})
			if err != nil {
				t.Fatal(err)
			}
			tr, err := decodeTree(chunk.ID{}, buf)
			if err != nil {
				t.Fatalf("decode tree: %v", err)
			}
			if len(tr.Nodes) != 1 || !reflect.DeepEqual(normTimes(tr.Nodes[0]), normTimes(n)) {
				t.Errorf("tree roundtrip: got %+v, want %+v", tr.Nodes, n)
			}
		})
	}
}

// Extended attribute names are arbitrary bytes on Linux, like file names;
// an invalid UTF-8 name must survive the JSON encoding, or restore would set
// a different attribute than the one backed up.
func TestNodeJSONXattrNameInvalidUTF8(t *testing.T) {
	n := Node{Name: "f", Type: NodeFile, Xattrs: []Xattr{{Name: "user.\xff\xfe", Value: []byte("v")}}}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	var got Node
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Xattrs) != 1 || got.Xattrs[0].Name != n.Xattrs[0].Name {
		t.Errorf("xattr name %q came back as %q", n.Xattrs[0].Name, got.Xattrs)
	}
}

func TestTreeEncodingDeterministic(t *testing.T) {
	instant := time.Date(2023, 10, 1, 8, 0, 0, 123456789, time.UTC)
	zones := []*time.Location{time.UTC, time.FixedZone("plus5", 5*3600+30*60), time.FixedZone("minus11", -11*3600), time.Local}
	sub := chunk.Hash([]byte("x"))
	mk := func(loc *time.Location, reversed bool) *Tree {
		at := instant.In(loc)
		nodes := []Node{
			{Name: "a", Type: NodeFile, Mode: 0o644, ModTime: at, AccessTime: at, ChangeTime: at, Size: 1, Content: []chunk.ID{sub}},
			{Name: "b\xff", Type: NodeSymlink, LinkTarget: "t\xfe", ModTime: at, ChangeTime: at},
			{Name: "c", Type: NodeDir, Mode: 0o755, ModTime: at, AccessTime: at, ChangeTime: at, Subtree: &sub},
		}
		if reversed {
			for i, j := 0, len(nodes)-1; i < j; i, j = i+1, j-1 {
				nodes[i], nodes[j] = nodes[j], nodes[i]
			}
		}
		tr := &Tree{Nodes: nodes}
		tr.Sort()
		return tr
	}
	want, err := encodeTree(mk(time.UTC, false))
	if err != nil {
		t.Fatal(err)
	}
	for _, loc := range zones {
		for _, rev := range []bool{false, true} {
			got, err := encodeTree(mk(loc, rev))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("zone %s, reversed %v: encoding differs:\n got %s\nwant %s", loc, rev, got, want)
			}
		}
	}
	// A time with a monotonic clock reading encodes like the same instant
	// without one.
	nowT := time.Now()
	a := &Tree{Nodes: []Node{{Name: "f", Type: NodeFile, ModTime: nowT}}}
	b := &Tree{Nodes: []Node{{Name: "f", Type: NodeFile, ModTime: nowT.Round(0).In(time.FixedZone("x", 3600))}}}
	ea, _ := encodeTree(a)
	eb, _ := encodeTree(b)
	if !bytes.Equal(ea, eb) {
		t.Errorf("monotonic reading or zone changed the encoding:\n%s\n%s", ea, eb)
	}

	// Stored through two Savers, the same tree is one blob.
	r, _ := newTestRepo(t, true)
	var ids []chunk.ID
	for _, loc := range zones[:2] {
		s := r.NewSaver(t.Context())
		id, err := s.SaveTree(mk(loc, true))
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.Finish()
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 0 && st.Blobs != 0 {
			t.Errorf("second save of the same tree in another zone added %d blobs", st.Blobs)
		}
		ids = append(ids, id)
	}
	if ids[0] != ids[1] {
		t.Errorf("same tree, different ids %s and %s", ids[0].Short(), ids[1].Short())
	}
	tr, err := r.LoadTree(t.Context(), ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.Find("b\xff"); got == nil || got.LinkTarget != "t\xfe" {
		t.Errorf("loaded tree: node b\\xff = %+v", got)
	}
}

func TestTreeValidate(t *testing.T) {
	sub := chunk.Hash([]byte("sub"))
	file := func(name string) Node { return Node{Name: name, Type: NodeFile} }
	tests := []struct {
		name  string
		nodes []Node
		ok    bool
	}{
		{"empty tree", nil, true},
		{"valid", []Node{file("a"), {Name: "b", Type: NodeDir, Subtree: &sub}, {Name: "c", Type: NodeSymlink, LinkTarget: "/x"}, file("d\xff")}, true},
		{"all other types", []Node{{Name: "a", Type: NodeDevice}, {Name: "b", Type: NodeCharDevice}, {Name: "c", Type: NodeFIFO}, {Name: "d", Type: NodeSocket}}, true},
		{"empty name", []Node{file("")}, false},
		{"dot", []Node{file(".")}, false},
		{"dotdot", []Node{file("..")}, false},
		{"slash", []Node{file("a/b")}, false},
		{"leading slash", []Node{file("/etc")}, false},
		{"only slash", []Node{file("/")}, false},
		{"dotdot path", []Node{file("../x")}, false},
		{"NUL", []Node{file("a\x00b")}, false},
		{"dotdot dir", []Node{{Name: "..", Type: NodeDir, Subtree: &sub}}, false},
		{"duplicate", []Node{file("a"), file("a")}, false},
		{"duplicate of different types", []Node{file("a"), {Name: "a", Type: NodeDir, Subtree: &sub}}, false},
		{"unsorted", []Node{file("b"), file("a")}, false},
		{"unsorted bytewise", []Node{file("\xff"), file("z")}, false},
		{"unknown type", []Node{{Name: "a", Type: "whiteout"}}, false},
		{"empty type", []Node{{Name: "a"}}, false},
		{"dir without subtree", []Node{{Name: "a", Type: NodeDir}}, false},
		{"file with subtree", []Node{{Name: "a", Type: NodeFile, Subtree: &sub}}, false},
		{"symlink with subtree", []Node{{Name: "a", Type: NodeSymlink, Subtree: &sub}}, false},
		{"dir with content", []Node{{Name: "a", Type: NodeDir, Subtree: &sub, Content: []chunk.ID{sub}}}, false},
		{"symlink with content", []Node{{Name: "a", Type: NodeSymlink, Content: []chunk.ID{sub}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &Tree{Nodes: tt.nodes}
			err := tr.Validate()
			if tt.ok && err != nil {
				t.Errorf("Validate: %v, want nil", err)
			}
			if !tt.ok && err == nil {
				t.Error("Validate accepted an invalid tree")
			}
			// LoadTree validates too: the same tree stored as a blob.
			buf, err := encodeTree(tr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeTree(chunk.ID{}, buf); (err == nil) != tt.ok {
				t.Errorf("decodeTree: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestTreeFind(t *testing.T) {
	tr := &Tree{Nodes: []Node{{Name: "c"}, {Name: "a"}, {Name: "b\xff"}, {Name: "B"}}}
	tr.Sort()
	var got []string
	for _, n := range tr.Nodes {
		got = append(got, n.Name)
	}
	if strings.Join(got, ",") != "B,a,b\xff,c" {
		t.Errorf("sorted: %q", got)
	}
	for _, name := range []string{"a", "b\xff", "B", "c"} {
		if n := tr.Find(name); n == nil || n.Name != name {
			t.Errorf("Find(%q) = %v", name, n)
		}
	}
	for _, name := range []string{"", "b", "d", "A"} {
		if n := tr.Find(name); n != nil {
			t.Errorf("Find(%q) = %+v, want nil", name, n)
		}
	}
	var nilTree *Tree
	if nilTree.Find("a") != nil {
		t.Error("Find on a nil tree")
	}
}

func TestLoadTreeWrongType(t *testing.T) {
	r, _ := newTestRepo(t, false)
	buf, err := encodeTree(&Tree{Nodes: []Node{{Name: "a", Type: NodeFile}}})
	if err != nil {
		t.Fatal(err)
	}
	// Stored as a data blob, it is not a tree.
	ids := saveBlobs(t, r, index.DataBlob, buf)
	if _, err := r.LoadTree(t.Context(), ids[0]); err == nil {
		t.Error("LoadTree found a data blob")
	}
}

// TestNodeEqualCoversFields changes each field of a node in turn and
// checks that nodeEqual notices: a field added to Node but not compared
// there would let an unchanged-looking tree hide a change.
func TestNodeEqualCoversFields(t *testing.T) {
	id := chunk.ID{1}
	base := Node{
		Name: "a", Type: NodeFile, Mode: 0o644, UID: 1, GID: 2, User: "u", Group: "g",
		ModTime: time.Unix(10, 0), AccessTime: time.Unix(11, 0), ChangeTime: time.Unix(12, 0),
		Inode: 3, DeviceID: 4, Links: 1, Size: 5, Rdev: 6, LinkTarget: "t",
		Xattrs:   []Xattr{{Name: "user.x", Value: []byte("v")}},
		Content:  []chunk.ID{id},
		Subtree:  &id,
		Database: &DatabaseInfo{Kind: "sqlite"},
	}
	clone := func() Node {
		n := base
		n.Xattrs = slices.Clone(base.Xattrs)
		n.Content = slices.Clone(base.Content)
		sub := *base.Subtree
		n.Subtree = &sub
		db := *base.Database
		n.Database = &db
		return n
	}
	if !nodeEqual(base, clone()) {
		t.Fatal("a node differs from its copy")
	}
	utc := clone()
	utc.ModTime = utc.ModTime.In(time.FixedZone("x", 3600))
	if !nodeEqual(base, utc) {
		t.Error("the same instant in another zone differs")
	}
	typ := reflect.TypeFor[Node]()
	for i := range typ.NumField() {
		n := clone()
		f := reflect.ValueOf(&n).Elem().Field(i)
		switch v := f.Addr().Interface().(type) {
		case *string:
			*v += "x"
		case *uint32:
			*v++
		case *uint64:
			*v++
		case *time.Time:
			*v = v.Add(time.Second)
		case *[]Xattr:
			(*v)[0].Value = []byte("w")
		case *[]chunk.ID:
			*v = append(*v, id)
		case **chunk.ID:
			*v = &chunk.ID{2}
		case **DatabaseInfo:
			(*v).PageCount++
		default:
			t.Fatalf("field %s of type %s: teach this test to change it", typ.Field(i).Name, f.Type())
		}
		if nodeEqual(base, n) {
			t.Errorf("a change of %s goes unnoticed", typ.Field(i).Name)
		}
	}
}

// decodeTree reads back exactly what encodeTree wrote: encoding the result
// again gives the same bytes (the same id), also for an empty tree.
func TestDecodeTreeReencodes(t *testing.T) {
	mt := time.Date(2024, 2, 29, 12, 34, 56, 789012345, time.UTC)
	sub := chunk.Hash([]byte("subtree"))
	for _, tr := range []*Tree{
		{},
		{Nodes: []Node{}},
		{Nodes: []Node{
			{Name: "a\xff", Type: NodeFile, Size: 1, ModTime: mt, Content: []chunk.ID{chunk.Hash([]byte("a"))}},
			{Name: "d", Type: NodeDir, Subtree: &sub, ChangeTime: mt, Xattrs: []Xattr{{Name: "user.\xfe", Value: []byte{0}}}},
			{Name: "l", Type: NodeSymlink, LinkTarget: "t\xc0"},
		}},
	} {
		buf, err := encodeTree(tr)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeTree(chunk.Hash(buf), buf)
		if err != nil {
			t.Fatalf("decode %s: %v", buf, err)
		}
		again, err := encodeTree(got)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, buf) {
			t.Errorf("decoded and encoded again:\n%s\nwant\n%s", again, buf)
		}
	}
}
