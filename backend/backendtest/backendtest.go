package backendtest

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"repo/backend"
)

// Run runs the conformance suite against the backends newBackend makes.
// Every call of newBackend must return a new, empty backend that no other
// call shares (subtests run in parallel); newBackend may call t.Fatal or
// t.Skip with the reason it cannot run.
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, be backend.Backend)
	}{
		{"Properties", testProperties},
		{"SaveLoad", testSaveLoad},
		{"LoadRange", testLoadRange},
		{"Stat", testStat},
		{"ListEmpty", testListEmpty},
		{"List", testList},
		{"Remove", testRemove},
		{"NotExist", testNotExist},
		{"SaveExisting", testSaveExisting},
		{"SaveSameNameConcurrently", testSaveSameNameConcurrently},
		{"Large", testLarge},
		{"Empty", testEmpty},
		{"SaveRewinds", testSaveRewinds},
		{"SaveBadReader", testSaveBadReader},
		{"Cancel", testCancel},
		{"Concurrent", testConcurrent},
		{"Quarantine", testQuarantine},
		{"InvalidHandle", testInvalidHandle},
		{"FnErrorUnchanged", testFnErrorUnchanged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			be := newBackend(t)
			t.Cleanup(func() {
				if err := be.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			tt.fn(t, be)
		})
	}
}

// allTypes lists every FileType; the config has no name.
var allTypes = []backend.FileType{
	backend.ConfigFile, backend.KeyFile, backend.PackFile,
	backend.IndexFile, backend.SnapshotFile, backend.LockFile,
	backend.QuarantineFile, backend.PlanFile,
}

// newRand returns a generator with a fixed seed derived from t's name, so
// that each subtest has its own reproducible data.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	var seed [32]byte
	copy(seed[:], t.Name())
	return rand.New(rand.NewChaCha8(seed))
}

func randBytes(rng *rand.Rand, n int) []byte {
	buf := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			buf[i+j] = byte(v >> (8 * j))
		}
	}
	return buf
}

// randHandle returns a handle of type t with a random 64-character hex name
// (the config has no name).
func randHandle(rng *rand.Rand, t backend.FileType) backend.Handle {
	if t == backend.ConfigFile {
		return backend.Handle{Type: t}
	}
	return backend.Handle{Type: t, Name: hex.EncodeToString(randBytes(rng, 32))}
}

func save(t *testing.T, be backend.Backend, h backend.Handle, data []byte) {
	t.Helper()
	if err := be.Save(context.Background(), h, backend.NewByteReader(data)); err != nil {
		t.Fatalf("save %v: %v", h, err)
	}
}

func load(t *testing.T, be backend.Backend, h backend.Handle) []byte {
	t.Helper()
	buf, err := backend.LoadAll(context.Background(), be, h, nil)
	if err != nil {
		t.Fatalf("load %v: %v", h, err)
	}
	return buf
}

// checkContent fails unless h holds exactly want, by Load and by Stat.
func checkContent(t *testing.T, be backend.Backend, h backend.Handle, want []byte) {
	t.Helper()
	if got := load(t, be, h); !bytes.Equal(got, want) {
		t.Errorf("load %v: got %d bytes %s, want %d bytes %s", h, len(got), prefix(got), len(want), prefix(want))
	}
	fi, err := be.Stat(context.Background(), h)
	if err != nil {
		t.Fatalf("stat %v: %v", h, err)
	}
	if fi.Size != int64(len(want)) || fi.Name != h.Name {
		t.Errorf("stat %v: got %+v, want name %q size %d", h, fi, h.Name, len(want))
	}
}

// prefix shows the start of b in failure messages.
func prefix(b []byte) string {
	return fmt.Sprintf("%x", b[:min(len(b), 8)])
}

// listAll returns name → size of every object of type ft.
func listAll(t *testing.T, be backend.Backend, ft backend.FileType) map[string]int64 {
	t.Helper()
	got := make(map[string]int64)
	err := be.List(context.Background(), ft, func(fi backend.FileInfo) error {
		if _, dup := got[fi.Name]; dup {
			t.Errorf("list %v: %q listed twice", ft, fi.Name)
		}
		got[fi.Name] = fi.Size
		return nil
	})
	if err != nil {
		t.Fatalf("list %v: %v", ft, err)
	}
	return got
}

func checkList(t *testing.T, be backend.Backend, ft backend.FileType, want map[string]int64) {
	t.Helper()
	got := listAll(t, be, ft)
	for name, size := range want {
		gsize, ok := got[name]
		switch {
		case !ok:
			t.Errorf("list %v: %q missing", ft, name)
		case gsize != size:
			t.Errorf("list %v: %q has size %d, want %d", ft, name, gsize, size)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("list %v: unexpected %q", ft, name)
		}
	}
}

// checkNotExist fails unless Load and Stat report that h does not exist, in
// a permanent error that names h, and List does not show it.
func checkNotExist(t *testing.T, be backend.Backend, h backend.Handle) {
	t.Helper()
	ctx := context.Background()
	called := false
	err := be.Load(ctx, h, 0, 0, func(io.Reader) error { called = true; return nil })
	checkNotExistErr(t, "load", h, err)
	if called {
		t.Errorf("load %v: fn called for a missing object", h)
	}
	_, err = be.Stat(ctx, h)
	checkNotExistErr(t, "stat", h, err)
	if _, ok := listAll(t, be, h.Type)[h.Name]; ok {
		t.Errorf("list %v: missing object %v listed", h.Type, h)
	}
}

func checkNotExistErr(t *testing.T, op string, h backend.Handle, err error) {
	t.Helper()
	switch {
	case !errors.Is(err, backend.ErrNotExist):
		t.Errorf("%s %v: got error %v, want ErrNotExist", op, h, err)
	case !backend.IsPermanent(err):
		t.Errorf("%s %v: %v is not permanent", op, h, err)
	case !strings.Contains(err.Error(), h.String()):
		t.Errorf("%s %v: error %q does not name the object", op, h, err)
	}
}

func testProperties(t *testing.T, be backend.Backend) {
	if p := be.Properties(); p.Connections < 1 {
		t.Errorf("Properties().Connections = %d, want at least 1", p.Connections)
	}
	if be.Location() == "" {
		t.Error("Location() is empty")
	}
}

func testSaveLoad(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	for _, ft := range allTypes {
		h := randHandle(rng, ft)
		data := randBytes(rng, 1+rng.IntN(10000))
		save(t, be, h, data)
		checkContent(t, be, h, data)
	}
}

func testLoadRange(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	const size = 1000
	data := randBytes(rng, size)
	h := randHandle(rng, backend.PackFile)
	save(t, be, h, data)

	tests := []struct {
		offset int64
		length int
		want   []byte
	}{
		{0, 0, data},
		{0, size, data},
		{0, 1, data[:1]},
		{100, 200, data[100:300]},
		{100, 0, data[100:]},
		{900, 100, data[900:]},
		{999, 1, data[999:]},
		{999, 0, data[999:]},
		// Past the end: a short read, never extra bytes.
		{950, 100, data[950:]},
		{0, size + 1, data},
		{size, 0, nil},
		{size, 10, nil},
		{2 * size, 10, nil},
	}
	for _, tt := range tests {
		var got []byte
		err := be.Load(context.Background(), h, tt.length, tt.offset, func(rd io.Reader) error {
			var err error
			got, err = io.ReadAll(rd)
			return err
		})
		if err != nil {
			t.Errorf("load offset %d length %d: %v", tt.offset, tt.length, err)
			continue
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("load offset %d length %d: got %d bytes %s, want %d bytes %s",
				tt.offset, tt.length, len(got), prefix(got), len(tt.want), prefix(tt.want))
		}
	}

	// ReadAt reports a short object instead of a short read.
	buf := make([]byte, 100)
	if err := backend.ReadAt(context.Background(), be, h, buf, 950); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadAt past the end: got %v, want io.ErrUnexpectedEOF", err)
	}
	if err := backend.ReadAt(context.Background(), be, h, buf, 900); err != nil || !bytes.Equal(buf, data[900:]) {
		t.Errorf("ReadAt at the end: err %v, got %s, want %s", err, prefix(buf), prefix(data[900:]))
	}

	for _, r := range []struct {
		offset int64
		length int
	}{{-1, 0}, {0, -1}} {
		err := be.Load(context.Background(), h, r.length, r.offset, func(io.Reader) error { return nil })
		if err == nil || !backend.IsPermanent(err) {
			t.Errorf("load offset %d length %d: got %v, want a permanent error", r.offset, r.length, err)
		}
	}
}

func testStat(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	for _, size := range []int{0, 1, 4095, 4096, 65537} {
		h := randHandle(rng, backend.IndexFile)
		save(t, be, h, randBytes(rng, size))
		fi, err := be.Stat(context.Background(), h)
		if err != nil {
			t.Fatalf("stat %v: %v", h, err)
		}
		if fi.Size != int64(size) || fi.Name != h.Name {
			t.Errorf("stat %v: got %+v, want name %q size %d", h, fi, h.Name, size)
		}
	}
}

func testListEmpty(t *testing.T, be backend.Backend) {
	for _, ft := range allTypes {
		checkList(t, be, ft, nil)
	}
}

func testList(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	counts := map[backend.FileType]int{
		backend.ConfigFile:   1,
		backend.KeyFile:      2,
		backend.PackFile:     300, // spread over most data/xx prefixes
		backend.IndexFile:    5,
		backend.SnapshotFile: 3,
		backend.LockFile:     1,
		// Quarantined packs are few; 40 still spread over many
		// first characters, which must not matter (no sharding).
		backend.QuarantineFile: 40,
		backend.PlanFile:       3,
	}
	want := make(map[backend.FileType]map[string]int64)
	for ft, n := range counts {
		want[ft] = make(map[string]int64)
		for range n {
			h := randHandle(rng, ft)
			size := rng.IntN(100)
			save(t, be, h, randBytes(rng, size))
			want[ft][h.Name] = int64(size)
		}
	}
	// Short names are valid too and share a prefix directory.
	for _, name := range []string{"ab", "abc", "abcd"} {
		save(t, be, backend.Handle{Type: backend.PackFile, Name: name}, []byte(name))
		want[backend.PackFile][name] = int64(len(name))
	}
	for _, ft := range allTypes {
		checkList(t, be, ft, want[ft])
	}
}

func testRemove(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	ctx := context.Background()
	for _, ft := range allTypes {
		h := randHandle(rng, ft)
		other := randHandle(rng, backend.KeyFile)
		save(t, be, h, []byte("remove me"))
		save(t, be, other, []byte("keep me"))
		if err := be.Remove(ctx, h); err != nil {
			t.Fatalf("remove %v: %v", h, err)
		}
		checkNotExist(t, be, h)
		checkNotExistErr(t, "remove", h, be.Remove(ctx, h))
		checkContent(t, be, other, []byte("keep me"))
		// The name is free again.
		save(t, be, h, []byte("again"))
		checkContent(t, be, h, []byte("again"))
	}
}

func testNotExist(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	save(t, be, randHandle(rng, backend.KeyFile), []byte("x"))
	for _, ft := range allTypes {
		h := randHandle(rng, ft)
		checkNotExist(t, be, h)
		checkNotExistErr(t, "remove", h, be.Remove(context.Background(), h))
	}
}

func testSaveExisting(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	for _, ft := range allTypes {
		h := randHandle(rng, ft)
		first, second := randBytes(rng, 100), randBytes(rng, 200)
		save(t, be, h, first)
		err := be.Save(context.Background(), h, backend.NewByteReader(second))
		if !be.Properties().ExclusiveCreate {
			if err != nil {
				t.Fatalf("save existing %v: %v", h, err)
			}
			if got := load(t, be, h); !bytes.Equal(got, first) && !bytes.Equal(got, second) {
				t.Errorf("load %v after replacing: neither the first nor the second content", h)
			}
			continue
		}
		if !errors.Is(err, backend.ErrExists) || !backend.IsPermanent(err) {
			t.Errorf("save existing %v: got %v, want a permanent ErrExists", h, err)
		}
		checkContent(t, be, h, first)
		checkList(t, be, ft, map[string]int64{h.Name: 100})
	}
}

func testSaveSameNameConcurrently(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	const n = 8
	h := randHandle(rng, backend.LockFile)
	contents := make([][]byte, n)
	for i := range contents {
		contents[i] = randBytes(rng, 50000+i)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = be.Save(context.Background(), h, backend.NewByteReader(contents[i]))
		})
	}
	wg.Wait()

	got := load(t, be, h)
	winners := 0
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
			if be.Properties().ExclusiveCreate && !bytes.Equal(got, contents[i]) {
				t.Errorf("saver %d succeeded but the object holds other content", i)
			}
		case !errors.Is(err, backend.ErrExists):
			t.Errorf("saver %d: got %v, want nil or ErrExists", i, err)
		}
	}
	if be.Properties().ExclusiveCreate && winners != 1 {
		t.Errorf("%d concurrent saves of one name succeeded, want exactly 1", winners)
	}
	// Without exclusive create, the last writer wins, but wholly: content
	// i has length 50000+i.
	if i := len(got) - 50000; !be.Properties().ExclusiveCreate && (i < 0 || i >= n || !bytes.Equal(got, contents[i])) {
		t.Errorf("load %v: content is not one of the saved ones", h)
	}
}

func testLarge(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	data := randBytes(rng, 20<<20+17)
	h := randHandle(rng, backend.PackFile)
	save(t, be, h, data)
	checkContent(t, be, h, data)

	buf := make([]byte, 1<<20)
	const offset = 17<<20 + 3
	if err := backend.ReadAt(context.Background(), be, h, buf, offset); err != nil {
		t.Fatalf("ReadAt %v: %v", h, err)
	}
	if !bytes.Equal(buf, data[offset:offset+len(buf)]) {
		t.Errorf("ReadAt %v at %d: wrong content", h, offset)
	}
}

func testEmpty(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	for _, ft := range allTypes {
		h := randHandle(rng, ft)
		save(t, be, h, nil)
		checkContent(t, be, h, nil)
		checkList(t, be, ft, map[string]int64{h.Name: 0})
	}
}

// testSaveRewinds hands Save a reader that was read to the end already.
func testSaveRewinds(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	data := randBytes(rng, 3000)
	rd := backend.NewByteReader(data)
	if _, err := io.Copy(io.Discard, rd); err != nil {
		t.Fatal(err)
	}
	h := randHandle(rng, backend.SnapshotFile)
	if err := be.Save(context.Background(), h, rd); err != nil {
		t.Fatalf("save %v: %v", h, err)
	}
	checkContent(t, be, h, data)
}

// testReader is a RewindReader over data that misbehaves on request.
type testReader struct {
	data   []byte
	pos    int
	length int64 // what Length reports
	// failAt, when > 0, makes Read fail with errReader once pos reaches it.
	failAt int
	// afterRead, when set, is called after every Read with pos.
	afterRead func(pos int)
	// rewindErr is returned by Rewind.
	rewindErr error
}

var errReader = errors.New("test reader failed")

func (r *testReader) Read(p []byte) (int, error) {
	if r.failAt > 0 && r.pos >= r.failAt {
		return 0, errReader
	}
	if r.pos >= len(r.data) {
		return 0, io.EOF
	}
	end := len(r.data)
	if r.failAt > 0 {
		end = min(end, r.failAt)
	}
	n := copy(p, r.data[r.pos:end])
	r.pos += n
	if r.afterRead != nil {
		r.afterRead(r.pos)
	}
	return n, nil
}

func (r *testReader) Rewind() error {
	r.pos = 0
	return r.rewindErr
}

func (r *testReader) Length() int64 { return r.length }

// testSaveBadReader checks that a Save whose reader fails, or yields another
// number of bytes than it announced, fails and leaves no object.
func testSaveBadReader(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	data := randBytes(rng, 3<<20)
	tests := []struct {
		name string
		rd   *testReader
	}{
		{"fail early", &testReader{data: data, length: int64(len(data)), failAt: 10}},
		{"fail late", &testReader{data: data, length: int64(len(data)), failAt: 2<<20 + 5}},
		{"fail at the end", &testReader{data: data, length: int64(len(data)), failAt: len(data)}},
		{"rewind fails", &testReader{data: data, length: int64(len(data)), rewindErr: errReader}},
		{"shorter than announced", &testReader{data: data, length: int64(len(data)) + 1}},
		{"longer than announced", &testReader{data: data, length: int64(len(data)) - 1}},
	}
	for _, tt := range tests {
		for _, ft := range []backend.FileType{backend.ConfigFile, backend.PackFile} {
			h := randHandle(rng, ft)
			if err := be.Save(context.Background(), h, tt.rd); err == nil {
				t.Errorf("%s: save %v succeeded", tt.name, h)
				continue
			}
			checkNotExist(t, be, h)
		}
	}
}

func testCancel(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	data := randBytes(rng, 8<<20)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	checkCancelled := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: got %v, want context.Canceled", op, err)
		}
	}

	h := randHandle(rng, backend.PackFile)
	checkCancelled("save with cancelled ctx", be.Save(cancelled, h, backend.NewByteReader(data)))
	checkNotExist(t, be, h)

	// Cancelled while Save reads, after the first MiB of eight: Save must
	// stop reading soon, not only refuse to publish at the end.
	ctx, cancel := context.WithCancel(context.Background())
	read := 0
	rd := &testReader{data: data, length: int64(len(data)), afterRead: func(pos int) {
		read = max(read, pos)
		if pos >= 1<<20 {
			cancel()
		}
	}}
	checkCancelled("save cancelled midway", be.Save(ctx, h, rd))
	checkNotExist(t, be, h)
	if read > 4<<20 {
		t.Errorf("save cancelled after 1 MiB went on reading to %d bytes", read)
	}

	save(t, be, h, data)
	// Two keys, so that a List cancelled at the first has more to do.
	save(t, be, randHandle(rng, backend.KeyFile), []byte("x"))
	save(t, be, randHandle(rng, backend.KeyFile), []byte("y"))

	// fn may be called as long as reading then fails.
	err := be.Load(cancelled, h, 0, 0, func(rd io.Reader) error {
		_, err := io.Copy(io.Discard, rd)
		return err
	})
	checkCancelled("load with cancelled ctx", err)

	// Cancelled while fn reads.
	ctx, cancel = context.WithCancel(context.Background())
	err = be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		if _, err := io.ReadFull(rd, make([]byte, 1024)); err != nil {
			return err
		}
		cancel()
		_, err := io.Copy(io.Discard, rd)
		return err
	})
	checkCancelled("load cancelled midway", err)

	_, err = be.Stat(cancelled, h)
	checkCancelled("stat", err)

	checkCancelled("remove", be.Remove(cancelled, h))
	checkContent(t, be, h, data)

	for _, ft := range []backend.FileType{backend.KeyFile, backend.PackFile} {
		calls := 0
		checkCancelled("list with cancelled ctx", be.List(cancelled, ft, func(backend.FileInfo) error {
			calls++
			return nil
		}))
		if calls != 0 {
			t.Errorf("list %v with cancelled ctx: fn called %d times", ft, calls)
		}
	}

	// Cancelled by fn: List stops before the next object.
	ctx, cancel = context.WithCancel(context.Background())
	calls := 0
	checkCancelled("list cancelled midway", be.List(ctx, backend.KeyFile, func(backend.FileInfo) error {
		calls++
		cancel()
		return nil
	}))
	if calls != 1 {
		t.Errorf("list cancelled by fn: fn called %d times, want 1", calls)
	}
}

func testConcurrent(t *testing.T, be backend.Backend) {
	const workers, perWorker = 8, 16
	type object struct {
		h    backend.Handle
		data []byte
	}
	// Generate up front: rand.Rand is not safe for concurrent use.
	rng := newRand(t)
	objects := make([][]object, workers)
	for w := range objects {
		for i := range perWorker {
			ft := allTypes[1+i%(len(allTypes)-1)]
			objects[w] = append(objects[w], object{randHandle(rng, ft), randBytes(rng, rng.IntN(200<<10))})
		}
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ctx := context.Background()
			for _, o := range objects[w] {
				if err := be.Save(ctx, o.h, backend.NewByteReader(o.data)); err != nil {
					t.Errorf("save %v: %v", o.h, err)
				}
			}
			// Read back another worker's objects, saved or not yet.
			for _, o := range objects[(w+1)%workers] {
				got, err := backend.LoadAll(ctx, be, o.h, nil)
				if errors.Is(err, backend.ErrNotExist) {
					continue
				}
				if err != nil {
					t.Errorf("load %v: %v", o.h, err)
				} else if !bytes.Equal(got, o.data) {
					t.Errorf("load %v: wrong content while saving concurrently", o.h)
				}
			}
			if err := be.List(ctx, backend.PackFile, func(backend.FileInfo) error { return nil }); err != nil {
				t.Errorf("list: %v", err)
			}
		})
	}
	wg.Wait()

	for _, objs := range objects {
		for _, o := range objs {
			checkContent(t, be, o.h, o.data)
		}
	}
}

// testQuarantine checks that quarantine/ is a namespace of its own: a
// quarantined pack may share its name with a live pack (the usual case: a
// damaged pack moved aside and a good copy written again), names need not
// be long enough to shard, and each type lists and removes only its own.
func testQuarantine(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	ctx := context.Background()
	pack := randHandle(rng, backend.PackFile)
	quar := backend.Handle{Type: backend.QuarantineFile, Name: pack.Name}
	short := backend.Handle{Type: backend.QuarantineFile, Name: "a"}
	packData, quarData := randBytes(rng, 5000), randBytes(rng, 4000)

	checkList(t, be, backend.QuarantineFile, nil)
	save(t, be, pack, packData)
	checkList(t, be, backend.QuarantineFile, nil)
	save(t, be, quar, quarData)
	save(t, be, short, []byte("x"))
	checkContent(t, be, pack, packData)
	checkContent(t, be, quar, quarData)
	checkContent(t, be, short, []byte("x"))
	checkList(t, be, backend.PackFile, map[string]int64{pack.Name: 5000})
	checkList(t, be, backend.QuarantineFile, map[string]int64{quar.Name: 4000, short.Name: 1})

	// Ranges read as for packs: check reads quarantined packs piecewise.
	buf := make([]byte, 100)
	if err := backend.ReadAt(ctx, be, quar, buf, 1234); err != nil || !bytes.Equal(buf, quarData[1234:1334]) {
		t.Errorf("ReadAt %v: err %v, got %s, want %s", quar, err, prefix(buf), prefix(quarData[1234:]))
	}

	if err := be.Remove(ctx, quar); err != nil {
		t.Fatalf("remove %v: %v", quar, err)
	}
	checkNotExist(t, be, quar)
	checkContent(t, be, pack, packData)
	checkList(t, be, backend.QuarantineFile, map[string]int64{short.Name: 1})

	if err := be.Remove(ctx, pack); err != nil {
		t.Fatalf("remove %v: %v", pack, err)
	}
	checkNotExist(t, be, pack)
	checkContent(t, be, short, []byte("x"))
}

func testInvalidHandle(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	handles := []backend.Handle{
		{},
		{Type: 99, Name: "ab"},
		{Type: backend.KeyFile},
		{Type: backend.ConfigFile, Name: "ab"},
		{Type: backend.PackFile, Name: "a"},
		{Type: backend.KeyFile, Name: "../config"},
		{Type: backend.KeyFile, Name: "a/b"},
		{Type: backend.IndexFile, Name: ".tmp-x"},
		{Type: backend.SnapshotFile, Name: "ABCD"},
		{Type: backend.QuarantineFile},
		{Type: backend.QuarantineFile, Name: "../data"},
		{Type: backend.QuarantineFile, Name: "ab/cd"},
	}
	checkInvalid := func(op string, h backend.Handle, err error) {
		t.Helper()
		if err == nil || !backend.IsPermanent(err) || errors.Is(err, backend.ErrNotExist) {
			t.Errorf("%s %#v: got %v, want a permanent error other than ErrNotExist", op, h, err)
		}
	}
	for _, h := range handles {
		checkInvalid("save", h, be.Save(ctx, h, backend.NewByteReader([]byte("x"))))
		checkInvalid("load", h, be.Load(ctx, h, 0, 0, func(io.Reader) error {
			t.Errorf("load %#v: fn called", h)
			return nil
		}))
		_, err := be.Stat(ctx, h)
		checkInvalid("stat", h, err)
		checkInvalid("remove", h, be.Remove(ctx, h))
	}
	for _, ft := range allTypes {
		checkList(t, be, ft, nil)
	}
	for _, ft := range []backend.FileType{0, backend.PlanFile + 1, 255} {
		err := be.List(ctx, ft, func(backend.FileInfo) error {
			t.Errorf("list %v: fn called", ft)
			return nil
		})
		if err == nil || !backend.IsPermanent(err) {
			t.Errorf("list %v: got %v, want a permanent error", ft, err)
		}
	}
}

func testFnErrorUnchanged(t *testing.T, be backend.Backend) {
	rng := newRand(t)
	ctx := context.Background()
	errFn := errors.New("fn failed")
	for _, ft := range allTypes {
		h := randHandle(rng, ft)
		save(t, be, h, []byte("data"))
		if ft != backend.ConfigFile {
			save(t, be, randHandle(rng, ft), []byte("more"))
			save(t, be, randHandle(rng, ft), []byte("more"))
		}
		if err := be.Load(ctx, h, 0, 0, func(io.Reader) error { return errFn }); err != errFn {
			t.Errorf("load %v: got error %v, want fn's error unchanged", h, err)
		}
		calls := 0
		err := be.List(ctx, ft, func(backend.FileInfo) error { calls++; return errFn })
		if err != errFn {
			t.Errorf("list %v: got error %v, want fn's error unchanged", ft, err)
		}
		if calls != 1 {
			t.Errorf("list %v: fn called %d times after failing, want 1", ft, calls)
		}
	}
}
