package repo

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"repo/backend"
	"repo/backend/faulty"
	"repo/backend/mem"
)

// openWith opens the repository on be with password pw, without a cache
// or index, and returns it (nil and the error when it does not open).
func openWith(t *testing.T, be backend.Backend, pw string) (*Repository, error) {
	t.Helper()
	r, err := Open(context.Background(), be, OpenOptions{Password: passwordFunc(pw)})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { r.Close() })
	return r, nil
}

// mustOpenWith is openWith that fails the test when pw does not open be,
// and checks that the repository says it was opened with key want.
func mustOpenWith(t *testing.T, be backend.Backend, pw, want string) *Repository {
	t.Helper()
	r, err := openWith(t, be, pw)
	if err != nil {
		t.Fatalf("open with password %q: %v", pw, err)
	}
	if want != "" && r.KeyID() != want {
		t.Errorf("opened with password %q: key %s, want %s", pw, shortKeyID(r.KeyID()), shortKeyID(want))
	}
	return r
}

func TestKeyAdd(t *testing.T) {
	r, be := newTestRepo(t, true)
	first := r.KeyID()
	if first == "" || !slices.Contains(names(t, be, backend.KeyFile), first) {
		t.Fatalf("KeyID %q is not one of the key files %v", first, names(t, be, backend.KeyFile))
	}
	// Some data, so that opening with the new key reads real objects.
	src := t.TempDir()
	sn := backup(t, r, BackupOptions{Paths: []string{src}})
	before := listObjects(t, be)

	second, err := r.AddKey(t.Context(), KeyOptions{Password: "second password", KDF: testKDF, Host: "laptop", Username: "ann"})
	if err != nil {
		t.Fatalf("add key: %v", err)
	}
	// Only a key file was written.
	after := listObjects(t, be)
	if len(after) != len(before)+1 {
		t.Errorf("add key: %d objects before, %d after; want one more", len(before), len(after))
	}
	for _, o := range after {
		if o.h.Type != backend.KeyFile && !slices.ContainsFunc(before, func(b backendObject) bool { return b.h == o.h }) {
			t.Errorf("add key wrote %v", o.h)
		}
	}

	mustOpenWith(t, be, testPassword, first)
	r2 := mustOpenWith(t, be, "second password", second)
	if got, err := r2.LoadSnapshot(t.Context(), sn.ID); err != nil || got.Tree != sn.Tree {
		t.Errorf("snapshot through the new key: %v", err)
	}
	if _, err := openWith(t, be, "wrong"); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("open with a wrong password: %v, want ErrWrongPassword", err)
	}

	keys, err := r2.Keys(t.Context())
	if err != nil {
		t.Fatalf("keys: %v", err)
	}
	if len(keys) != 2 {
		t.Fatalf("%d keys listed, want 2: %+v", len(keys), keys)
	}
	for _, k := range keys {
		if k.Err != nil {
			t.Errorf("key %s: %v", k.ShortID(), k.Err)
		}
		if k.Current != (k.ID == second) {
			t.Errorf("key %s: current %v, want %v", k.ShortID(), k.Current, k.ID == second)
		}
		if k.Created.IsZero() || k.KDF != testKDF {
			t.Errorf("key %s: created %v, kdf %+v", k.ShortID(), k.Created, k.KDF)
		}
	}
	if k := keys[1]; k.ID != second || k.Host != "laptop" || k.Username != "ann" {
		t.Errorf("newest key %s host %q user %q, want %s, laptop, ann", k.ShortID(), k.Host, k.Username, shortKeyID(second))
	}

	if _, err := r.AddKey(t.Context(), KeyOptions{KDF: testKDF}); err == nil {
		t.Error("add key with an empty password: no error")
	}
}

func TestKeyRemove(t *testing.T) {
	r, be := newTestRepo(t, true)
	first := r.KeyID()
	ctx := t.Context()

	// The only key goes neither directly nor as the one in use.
	if err := r.RemoveKey(ctx, first); !errors.Is(err, ErrLastKey) {
		t.Errorf("remove the only key: %v, want ErrLastKey", err)
	}
	second, err := r.AddKey(ctx, KeyOptions{Password: "second", KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RemoveKey(ctx, first); !errors.Is(err, ErrKeyInUse) {
		t.Errorf("remove the key in use: %v, want ErrKeyInUse", err)
	}
	if err := r.RemoveKey(ctx, strings.Repeat("0", 64)); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("remove a key that does not exist: %v, want ErrKeyNotFound", err)
	}

	// Through the second key, the first one can go.
	r2 := mustOpenWith(t, be, "second", second)
	id, err := r2.FindKey(ctx, first[:6])
	if err != nil || id != first {
		t.Fatalf("find key %s: %s, %v", first[:6], id, err)
	}
	if err := r2.RemoveKey(ctx, id); err != nil {
		t.Fatalf("remove the first key: %v", err)
	}
	if got := names(t, be, backend.KeyFile); !slices.Equal(got, []string{second}) {
		t.Errorf("key files %v, want only %s", got, second)
	}
	if _, err := openWith(t, be, testPassword); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("open with the removed key's password: %v, want ErrWrongPassword", err)
	}
	mustOpenWith(t, be, "second", second)
	if err := r2.RemoveKey(ctx, second); !errors.Is(err, ErrLastKey) {
		t.Errorf("remove the last key: %v, want ErrLastKey", err)
	}
	if _, err := r2.FindKey(ctx, first[:8]); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("find the removed key: %v, want ErrKeyNotFound", err)
	}
}

// Seventeen keys share a first hex digit somewhere: that prefix is
// ambiguous, and every full id is found.
func TestKeyFindAmbiguous(t *testing.T) {
	r, _ := newTestRepo(t, true)
	ctx := t.Context()
	ids := []string{r.KeyID()}
	for range 16 {
		id, err := r.AddKey(ctx, KeyOptions{Password: "pw", KDF: testKDF})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	byDigit := map[byte]int{}
	for _, id := range ids {
		byDigit[id[0]]++
		if got, err := r.FindKey(ctx, id); err != nil || got != id {
			t.Errorf("find %s: %s, %v", id, got, err)
		}
	}
	for d, n := range byDigit {
		_, err := r.FindKey(ctx, string(d))
		if n > 1 && (err == nil || errors.Is(err, ErrKeyNotFound)) {
			t.Errorf("prefix %c matches %d keys: error %v, want ambiguous", d, n, err)
		}
	}
	if _, err := r.FindKey(ctx, ""); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("empty prefix: %v, want ErrKeyNotFound", err)
	}
}

func TestKeyChangePassword(t *testing.T) {
	r, be := newTestRepo(t, true)
	old := r.KeyID()
	src := t.TempDir()
	sn := backup(t, r, BackupOptions{Paths: []string{src}})
	before := listObjects(t, be)

	res, err := r.ChangePassword(t.Context(), KeyOptions{Password: "new password", KDF: testKDF})
	if err != nil {
		t.Fatalf("change password: %v", err)
	}
	if res.Removed != old || res.Added == "" || res.Added == old {
		t.Errorf("change password: %+v, want removed %s and a new key", res, shortKeyID(old))
	}
	if r.KeyID() != res.Added {
		t.Errorf("KeyID after the change: %s, want %s", shortKeyID(r.KeyID()), shortKeyID(res.Added))
	}
	if got := names(t, be, backend.KeyFile); !slices.Equal(got, []string{res.Added}) {
		t.Errorf("key files %v, want only %s", got, res.Added)
	}
	// Nothing but key files changed: no data was re-encrypted.
	after := listObjects(t, be)
	strip := func(objs []backendObject) []backendObject {
		return slices.DeleteFunc(slices.Clone(objs), func(o backendObject) bool { return o.h.Type == backend.KeyFile })
	}
	if a, b := strip(before), strip(after); !slices.EqualFunc(a, b, func(x, y backendObject) bool { return x.h == y.h && string(x.data) == string(y.data) }) {
		t.Errorf("change password changed objects other than key files")
	}
	if _, err := openWith(t, be, testPassword); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("open with the old password: %v, want ErrWrongPassword", err)
	}
	r2 := mustOpenWith(t, be, "new password", res.Added)
	if _, err := r2.LoadSnapshot(t.Context(), sn.ID); err != nil {
		t.Errorf("snapshot through the new password: %v", err)
	}
	keys, err := r.Keys(t.Context())
	if err != nil || len(keys) != 1 || !keys[0].Current {
		t.Errorf("keys after the change: %+v, %v", keys, err)
	}
}

// A password change adds the new key before it removes the old one: when
// the removal fails (a crash at that point), both passwords open the
// repository; when the new key cannot be saved or read back, the old key
// is not touched.
func TestKeyChangePasswordFaults(t *testing.T) {
	for _, c := range []struct {
		name    string
		fault   faulty.Fault
		added   bool // the new key is there afterwards
		removed bool // the old key is gone
	}{
		{"remove fails", faulty.Fault{Op: faulty.Remove, Type: backend.KeyFile}, true, false},
		{"remove lost", faulty.Fault{Op: faulty.Remove, Type: backend.KeyFile, Mode: faulty.Drop}, true, false},
		{"save fails", faulty.Fault{Op: faulty.Save, Type: backend.KeyFile}, false, false},
		{"save lost", faulty.Fault{Op: faulty.Save, Type: backend.KeyFile, Mode: faulty.Drop}, false, false},
		{"read back fails", faulty.Fault{Op: faulty.Load, Type: backend.KeyFile}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			fb := faulty.New(mem.New())
			if _, err := Init(t.Context(), fb, testInitOptions(true)); err != nil {
				t.Fatal(err)
			}
			r := openTestRepo(t, fb)
			old := r.KeyID()
			fb.Inject(c.fault)
			removes := fb.Calls(faulty.Remove)
			res, err := r.ChangePassword(t.Context(), KeyOptions{Password: "new", KDF: testKDF})
			removes = fb.Calls(faulty.Remove) - removes
			fb.Reset()
			if c.fault.Mode == faulty.Drop && c.fault.Op == faulty.Remove {
				// A lost removal looks like success; the old key stays.
				if err != nil {
					t.Fatalf("change password: %v", err)
				}
			} else if err == nil {
				t.Fatalf("change password with %s: no error", c.name)
			}
			keys := names(t, fb, backend.KeyFile)
			if !slices.Contains(keys, old) {
				t.Fatalf("old key %s is gone; key files %v", shortKeyID(old), keys)
			}
			mustOpenWith(t, fb, testPassword, old)
			if c.added {
				if res.Added == "" {
					t.Errorf("result %+v names no added key", res)
				}
				mustOpenWith(t, fb, "new", res.Added)
			} else {
				if len(keys) != 1 {
					t.Errorf("key files %v, want only the old one", keys)
				}
				if removes != 0 {
					t.Errorf("%d removals after the new key failed to save", removes)
				}
				if _, err := openWith(t, fb, "new"); !errors.Is(err, ErrWrongPassword) {
					t.Errorf("open with the new password: %v, want ErrWrongPassword", err)
				}
			}
		})
	}
}

func TestKeyUnencrypted(t *testing.T) {
	r, be := newTestRepo(t, false)
	ctx := t.Context()
	if r.KeyID() != "" {
		t.Errorf("KeyID of an unencrypted repository: %q", r.KeyID())
	}
	if keys, err := r.Keys(ctx); err != nil || len(keys) != 0 {
		t.Errorf("keys: %v, %v; want none", keys, err)
	}
	if _, err := r.AddKey(ctx, KeyOptions{Password: "pw", KDF: testKDF}); !errors.Is(err, ErrNotEncrypted) {
		t.Errorf("add key: %v, want ErrNotEncrypted", err)
	}
	if _, err := r.ChangePassword(ctx, KeyOptions{Password: "pw", KDF: testKDF}); !errors.Is(err, ErrNotEncrypted) {
		t.Errorf("change password: %v, want ErrNotEncrypted", err)
	}
	if err := r.RemoveKey(ctx, "00"); !errors.Is(err, ErrNotEncrypted) {
		t.Errorf("remove key: %v, want ErrNotEncrypted", err)
	}
	if got := names(t, be, backend.KeyFile); len(got) != 0 {
		t.Errorf("key files %v in an unencrypted repository", got)
	}
}
