package backendtest

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"repo/backend"
)

// unwrapper is a minimal wrapper, as retry and limit are.
type unwrapper struct{ backend.Backend }

func (u unwrapper) Unwrap() backend.Backend { return u.Backend }

// RunRemoveTemp checks backend.TempCleaner on be, a new, empty backend
// whose repository is the local directory dir (local, or SFTP to a server
// on this host): it plants temporary files as killed Saves leave them,
// and checks that RemoveTemp, found through a wrapper as prune finds it,
// removes exactly those more than an hour old, everywhere a Save puts
// them, and leaves objects, other names, directories and symbolic links
// alone; that a second call finds nothing; and that a cancelled context
// stops it. The planted files that must stay are removed at the end.
func RunRemoveTemp(t *testing.T, be backend.Backend, dir string) {
	t.Helper()
	ctx := context.Background()
	pack := backend.Handle{Type: backend.PackFile, Name: "3f" + strings.Repeat("0", 62)}
	save(t, be, pack, []byte("pack"))
	save(t, be, backend.Handle{Type: backend.ConfigFile}, []byte("config"))
	tc, ok := backend.As[backend.TempCleaner](unwrapper{be})
	if !ok {
		t.Fatal("backend.As does not find RemoveTemp through a wrapper")
	}
	if n, size, err := tc.RemoveTemp(ctx, time.Hour); n != 0 || size != 0 || err != nil {
		t.Errorf("remove temp without any: %d, %d, %v", n, size, err)
	}

	old := time.Now().Add(-2 * time.Hour)
	plant := func(rel string, size int, mtime time.Time) string {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stale := []string{
		plant(".tmp-config1", 10, old),
		plant("data/3f/.tmp-123", 1000, old),
		plant("data/00/.tmp-456", 200, old),
		plant("data/ff/.tmp-457", 1, old),
		plant("keys/.tmp-k", 3, old),
		plant("index/.tmp-7", 30, old),
		plant("snapshots/.tmp-8", 4, old),
		plant("locks/.tmp-l", 2, old),
		plant("plans/.tmp-9", 5, old),
		plant("quarantine/.tmp-10", 6, old),
	}
	const staleSize = 10 + 1000 + 200 + 1 + 3 + 30 + 4 + 2 + 5 + 6
	fresh := []string{
		plant("data/3f/.tmp-running", 7, time.Now()),
		plant("index/.tmp-running", 8, time.Now().Add(-30*time.Minute)),
	}
	other := []string{
		plant("data/3f/.other", 9, old), // not a temporary file of ours
		plant("index/tmp-1", 9, old),
	}
	// Neither a directory nor a symbolic link named like a temporary
	// file is one, however old.
	tmpDir := filepath.Join(dir, "index", ".tmp-dir")
	if err := os.Mkdir(tmpDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmpDir, old, old); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "keys", ".tmp-link")
	if err := os.Symlink("k1", link); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(old.UnixNano())
	if err := unix.Lutimes(link, []unix.Timeval{tv, tv}); err != nil {
		t.Fatal(err)
	}
	other = append(other, tmpDir, link)

	n, size, err := tc.RemoveTemp(ctx, time.Hour)
	if err != nil {
		t.Fatalf("remove temp: %v", err)
	}
	if n != len(stale) || size != staleSize {
		t.Errorf("removed %d files of %d bytes, want %d of %d", n, size, len(stale), staleSize)
	}
	for _, p := range stale {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: still there (%v)", p, err)
		}
	}
	for _, p := range append(fresh, other...) {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s: removed: %v", p, err)
		}
	}
	if got := string(load(t, be, pack)); got != "pack" {
		t.Errorf("pack after RemoveTemp: %q", got)
	}
	if got := string(load(t, be, backend.Handle{Type: backend.ConfigFile})); got != "config" {
		t.Errorf("config after RemoveTemp: %q", got)
	}

	// Nothing old is left; a cancelled context stops at once.
	if n, size, err := tc.RemoveTemp(ctx, time.Hour); n != 0 || size != 0 || err != nil {
		t.Errorf("remove temp again: %d, %d, %v", n, size, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := tc.RemoveTemp(cctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("remove temp with a cancelled context: %v, want context.Canceled", err)
	}
	for _, p := range fresh {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s: removed by a cancelled RemoveTemp: %v", p, err)
		}
	}
	for _, p := range append(fresh, other...) {
		os.Remove(p) // callers may check that no temporary file is left
	}
}
