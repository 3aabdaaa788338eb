package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"repo/backend"
	"repo/backend/mem"
	"repo/chunk"
	"repo/index"
	"repo/repo/crypto"
)

// testKDF keeps argon2id cheap: tests open many key files.
var testKDF = crypto.KDFParams{Time: 1, MemoryKiB: 1024, Threads: 1}

const testPassword = "correct horse battery staple"

// testPackSize is the smallest pack size a config accepts, so that a few
// MiB of data make many packs.
const testPackSize = 1 << 20

func testInitOptions(encrypted bool) InitOptions {
	return InitOptions{Password: testPassword, Insecure: !encrypted, KDF: testKDF, PackSize: testPackSize}
}

func passwordFunc(pw string) func() (string, error) {
	return func() (string, error) { return pw, nil }
}

// damagedRepos holds the repositories whose test damaged them on purpose;
// their final check is skipped.
var damagedRepos sync.Map // *Repository → struct{}

// markDamaged tells the final check of newTestRepo that r was damaged on
// purpose, so Error findings are expected.
func markDamaged(r *Repository) { damagedRepos.Store(r, struct{}{}) }

// newTestRepo creates a repository on a fresh in-memory backend, opens it
// with a cache under t.TempDir and loads the index. At the end of the test
// it runs Check with ReadData and fails the test on any Error finding,
// unless markDamaged was called.
func newTestRepo(t *testing.T, encrypted bool) (*Repository, backend.Backend) {
	t.Helper()
	be := mem.New()
	if _, err := Init(t.Context(), be, testInitOptions(encrypted)); err != nil {
		t.Fatalf("init: %v", err)
	}
	return openTestRepo(t, be), be
}

// openTestRepo opens the repository on be (which holds one made with
// testInitOptions) like newTestRepo does, with the same final check.
func openTestRepo(t *testing.T, be backend.Backend) *Repository {
	t.Helper()
	r, err := Open(t.Context(), be, OpenOptions{Password: passwordFunc(testPassword), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close repository: %v", err)
		}
	})
	if _, err := r.LoadIndex(t.Context()); err != nil {
		t.Fatalf("load index: %v", err)
	}
	// Registered after Close, so it runs before it. t.Context is already
	// cancelled when cleanups run.
	t.Cleanup(func() {
		if _, ok := damagedRepos.Load(r); ok {
			damagedRepos.Delete(r)
			return
		}
		var errs []string
		res, err := r.Check(context.Background(), CheckOptions{ReadData: true}, func(f Finding) {
			if f.Severity == Error {
				errs = append(errs, fmt.Sprintf("%s %s: %s", f.Kind, f.Object, f.Message))
			}
		})
		if err != nil {
			t.Errorf("final check: %v", err)
		}
		if len(errs) > 0 || res.Errors > 0 {
			t.Errorf("final check found %d errors:\n%s", res.Errors, strings.Join(errs, "\n"))
		}
	})
	return r
}

// checkFindings runs Check and returns every finding.
func checkFindings(t *testing.T, r *Repository, opts CheckOptions) ([]Finding, CheckResult) {
	t.Helper()
	var fs []Finding
	res, err := r.Check(t.Context(), opts, func(f Finding) { fs = append(fs, f) })
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	return fs, res
}

// randomBytes returns n bytes from a generator seeded with seed.
func randomBytes(seed uint64, n int) []byte {
	var s [32]byte
	for i := range 4 {
		s[i*8] = byte(seed >> (8 * i))
		s[i*8+1] = byte(i)
	}
	s[31] = byte(seed >> 56)
	b := make([]byte, n)
	rng := rand.NewChaCha8(s)
	_, _ = rng.Read(b)
	return b
}

// saveBlobs stores blobs with one Saver, finishes it and returns the ids.
func saveBlobs(t *testing.T, r *Repository, t0 index.BlobType, blobs ...[]byte) []chunk.ID {
	t.Helper()
	s := r.NewSaver(t.Context())
	ids := make([]chunk.ID, len(blobs))
	for i, b := range blobs {
		id, _, err := s.SaveBlob(t0, b)
		if err != nil {
			t.Fatalf("save blob %d: %v", i, err)
		}
		ids[i] = id
	}
	if _, err := s.Finish(); err != nil {
		t.Fatalf("finish: %v", err)
	}
	return ids
}

// backendObject is one object as listObjects returns it.
type backendObject struct {
	h    backend.Handle
	data []byte
}

var allFileTypes = []backend.FileType{backend.ConfigFile, backend.KeyFile, backend.PackFile, backend.IndexFile, backend.SnapshotFile, backend.LockFile, backend.QuarantineFile, backend.PlanFile}

// listObjects returns every object of be with its content, sorted.
func listObjects(t *testing.T, be backend.Backend) []backendObject {
	t.Helper()
	ctx := context.Background()
	var out []backendObject
	for _, ft := range allFileTypes {
		if err := be.List(ctx, ft, func(fi backend.FileInfo) error {
			h := backend.Handle{Type: ft, Name: fi.Name}
			data, err := backend.LoadAll(ctx, be, h, nil)
			if err != nil {
				return err
			}
			out = append(out, backendObject{h, data})
			return nil
		}); err != nil {
			t.Fatalf("list %v: %v", ft, err)
		}
	}
	slices.SortFunc(out, func(a, b backendObject) int { return strings.Compare(a.h.String(), b.h.String()) })
	return out
}

// names returns the names of be's objects of type ft, sorted.
func names(t *testing.T, be backend.Backend, ft backend.FileType) []string {
	t.Helper()
	var out []string
	if err := be.List(context.Background(), ft, func(fi backend.FileInfo) error {
		out = append(out, fi.Name)
		return nil
	}); err != nil {
		t.Fatalf("list %v: %v", ft, err)
	}
	slices.Sort(out)
	return out
}

// rewrite replaces object h of be by what fn makes of its content.
func rewrite(t *testing.T, be backend.Backend, h backend.Handle, fn func([]byte) []byte) {
	t.Helper()
	ctx := context.Background()
	data, err := backend.LoadAll(ctx, be, h, nil)
	if err != nil {
		t.Fatalf("load %v: %v", h, err)
	}
	data = fn(bytes.Clone(data))
	if err := be.Remove(ctx, h); err != nil {
		t.Fatalf("remove %v: %v", h, err)
	}
	if err := be.Save(ctx, h, backend.NewByteReader(data)); err != nil {
		t.Fatalf("save %v: %v", h, err)
	}
}

// flipByte returns a function for rewrite that inverts the byte at off
// (negative: from the end).
func flipByte(off int) func([]byte) []byte {
	return func(b []byte) []byte {
		i := off
		if i < 0 {
			i += len(b)
		}
		b[i] ^= 0xff
		return b
	}
}

// removeObject deletes h from be.
func removeObject(t *testing.T, be backend.Backend, h backend.Handle) {
	t.Helper()
	if err := be.Remove(context.Background(), h); err != nil {
		t.Fatalf("remove %v: %v", h, err)
	}
}

// errInjected is what faultBackend returns.
var errInjected = errors.New("injected fault")

// faultBackend fails the failAt-th Save (1-based) of objects of type ft and
// every later one of that type; the others go through.
type faultBackend struct {
	backend.Backend
	ft     backend.FileType
	failAt int64
	n      atomic.Int64
}

func (b *faultBackend) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	if h.Type == b.ft && b.n.Add(1) >= b.failAt {
		return fmt.Errorf("save %v: %w", h, errInjected)
	}
	return b.Backend.Save(ctx, h, rd)
}

// saveEvent is one Save call seen by recordingBackend.
type saveEvent struct {
	h          backend.Handle
	start, end int64 // sequence numbers; end is 0 when the Save failed
}

// recordingBackend records the order in which Saves start and complete.
type recordingBackend struct {
	backend.Backend
	seq    atomic.Int64
	mu     sync.Mutex
	events []saveEvent
}

func (b *recordingBackend) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	start := b.seq.Add(1)
	err := b.Backend.Save(ctx, h, rd)
	ev := saveEvent{h: h, start: start}
	if err == nil {
		ev.end = b.seq.Add(1)
	}
	b.mu.Lock()
	b.events = append(b.events, ev)
	b.mu.Unlock()
	return err
}

func (b *recordingBackend) saves() []saveEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.events)
}

// indexedPacks returns, per index file of r's backend, the packs it lists.
func indexedPacks(t *testing.T, r *Repository) map[string][]chunk.ID {
	t.Helper()
	out := map[string][]chunk.ID{}
	for _, name := range names(t, r.be, backend.IndexFile) {
		id, err := chunk.ParseID(name)
		if err != nil {
			t.Fatalf("index file name %q: %v", name, err)
		}
		f, err := r.LoadIndexFile(context.Background(), id)
		if err != nil {
			t.Fatalf("load index file %s: %v", name, err)
		}
		for _, p := range f.Packs {
			out[name] = append(out[name], p.ID)
		}
	}
	return out
}

// snapshotContent reads the content of file p of sn.
func snapshotContent(t *testing.T, r *Repository, sn *Snapshot, p string) []byte {
	t.Helper()
	n, _, err := r.FindNode(t.Context(), sn, p)
	if err != nil {
		t.Fatalf("find %s: %v", p, err)
	}
	var buf bytes.Buffer
	if err := r.WriteContent(t.Context(), n, &buf); err != nil {
		t.Fatalf("content of %s: %v", p, err)
	}
	return buf.Bytes()
}

// snapshotPaths returns every path of sn below the snapshot path root,
// relative to it, mapped to its node.
func snapshotPaths(t *testing.T, r *Repository, sn *Snapshot, root string) map[string]*Node {
	t.Helper()
	n, clean, err := r.FindNode(t.Context(), sn, root)
	if err != nil {
		t.Fatalf("find %s: %v", root, err)
	}
	out := map[string]*Node{}
	if err := r.Walk(t.Context(), clean, n, func(p string, n *Node) error {
		rel, err := filepath.Rel(clean, p)
		if err != nil {
			return err
		}
		out[rel] = n
		return nil
	}); err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

func snapshotHandle(id chunk.ID) backend.Handle {
	return backend.Handle{Type: backend.SnapshotFile, Name: id.String()}
}
