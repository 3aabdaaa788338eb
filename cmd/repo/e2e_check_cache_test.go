package main

import (
	"path/filepath"
	"testing"
)

// TestE2ECheckWithoutCache: check finds a database image's page map
// through the index files it reads itself, so a repository with a database
// snapshot checks clean without a local index cache, with a new one, and
// with one that another process left stale. (It used to load page maps
// through the cache, which check does not update, and reported every
// database as "blob not in index" unless another command had filled it;
// the torture harness met that after a prune rewrote the index.)
func TestE2ECheckWithoutCache(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	db := filepath.Join(t.TempDir(), "bank.db")
	createBank(t, db, "wal", 140, 300, 500)
	first := r.backup("--sqlite", db)

	stale := envWith(r.env, "REPO_CACHE_DIR", t.TempDir())
	mustRunBin(t, stale, nil, "snapshots")
	mustRunBin(t, stale, nil, "ls", "latest") // loads the index into this cache
	// Other processes write a new database snapshot and rewrite the
	// index; the first cache knows neither.
	sqlExec(t, openSQLite(t, db), "UPDATE log SET payload = zeroblob(500) WHERE seq <= 100")
	r.backup("--sqlite", db)
	r.mustRun("forget", first.SnapshotID)
	r.mustRun("prune", "--max-unused", "0%")

	for _, c := range []struct {
		name string
		env  []string
		args []string
	}{
		{"no cache", r.env, []string{"check", "--no-cache"}},
		{"no cache, read data", r.env, []string{"check", "--no-cache", "--read-data"}},
		{"new cache", envWith(r.env, "REPO_CACHE_DIR", t.TempDir()), []string{"check"}},
		{"stale cache", stale, []string{"check"}},
	} {
		if out, errOut, code := runBin(t, c.env, nil, c.args...); code != 0 {
			t.Errorf("%s: repo %s: exit %d\n%s%s", c.name, quoteArgs(c.args), code, out, errOut)
		}
	}
}
