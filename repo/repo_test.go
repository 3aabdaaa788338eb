package repo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"repo/backend"
	"repo/backend/mem"
	"repo/index"
)

func TestInitOpen(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		t.Run(modeName(encrypted), func(t *testing.T) {
			ctx := t.Context()
			be := mem.New()
			cfg, err := Init(ctx, be, testInitOptions(encrypted))
			if err != nil {
				t.Fatalf("init: %v", err)
			}
			if cfg.Encrypted != encrypted {
				t.Errorf("init config: Encrypted = %v, want %v", cfg.Encrypted, encrypted)
			}
			wantKeys := 0
			wantIDs := BlobIDUnkeyed
			if encrypted {
				wantKeys = 1
				wantIDs = BlobIDKeyed
			}
			if got := len(names(t, be, backend.KeyFile)); got != wantKeys {
				t.Errorf("%d key files, want %d", got, wantKeys)
			}
			if cfg.BlobIDs != wantIDs {
				t.Errorf("blob ids %q, want %q", cfg.BlobIDs, wantIDs)
			}

			calls := 0
			r, err := Open(ctx, be, OpenOptions{
				Password: func() (string, error) { calls++; return testPassword, nil },
				CacheDir: t.TempDir(),
			})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer r.Close()
			if wantCalls := wantKeys; calls != wantCalls {
				t.Errorf("password func called %d times, want %d", calls, wantCalls)
			}
			got := r.Config()
			if got.ID != cfg.ID || got.Encrypted != encrypted || got.PackSize != testPackSize || got.Polynomial != cfg.Polynomial {
				t.Errorf("opened config %+v differs from the one init made %+v", got, *cfg)
			}

			// The opened repository works: a blob stored with one Open is
			// read back with another.
			if _, err := r.LoadIndex(ctx); err != nil {
				t.Fatalf("load index: %v", err)
			}
			ids := saveBlobs(t, r, index.DataBlob, []byte("hello"))
			r2 := openTestRepo(t, be)
			data, err := r2.LoadBlob(ctx, index.DataBlob, ids[0], nil)
			if err != nil || string(data) != "hello" {
				t.Errorf("load blob after reopen: %q, %v", data, err)
			}
		})
	}
}

func modeName(encrypted bool) string {
	if encrypted {
		return "encrypted"
	}
	return "unencrypted"
}

func TestOpenErrors(t *testing.T) {
	encryptedBE := mem.New()
	if _, err := Init(t.Context(), encryptedBE, testInitOptions(true)); err != nil {
		t.Fatal(err)
	}
	errPrompt := errors.New("prompt cancelled")
	tests := []struct {
		name     string
		be       backend.Backend
		password func() (string, error)
		want     error
	}{
		{"wrong password", encryptedBE, passwordFunc("wrong"), ErrWrongPassword},
		{"empty password", encryptedBE, passwordFunc(""), ErrWrongPassword},
		{"no password func", encryptedBE, nil, ErrPasswordRequired},
		{"password func fails", encryptedBE, func() (string, error) { return "", errPrompt }, errPrompt},
		{"empty backend", mem.New(), passwordFunc(testPassword), ErrNoRepository},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Open(t.Context(), tt.be, OpenOptions{Password: tt.password, CacheDir: t.TempDir()})
			if err == nil {
				r.Close()
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("open: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestInitTwice(t *testing.T) {
	for _, first := range []bool{true, false} {
		for _, second := range []bool{true, false} {
			t.Run(modeName(first)+"-then-"+modeName(second), func(t *testing.T) {
				ctx := t.Context()
				be := mem.New()
				if _, err := Init(ctx, be, testInitOptions(first)); err != nil {
					t.Fatal(err)
				}
				before := listObjects(t, be)
				opts := testInitOptions(second)
				opts.Password = "another password"
				_, err := Init(ctx, be, opts)
				if !errors.Is(err, ErrAlreadyInitialized) {
					t.Errorf("second init: %v, want %v", err, ErrAlreadyInitialized)
				}
				after := listObjects(t, be)
				if len(before) != len(after) {
					t.Fatalf("second init changed the backend: %d objects before, %d after", len(before), len(after))
				}
				for i := range before {
					if before[i].h != after[i].h || !bytes.Equal(before[i].data, after[i].data) {
						t.Errorf("second init changed the backend: %v became %v", before[i].h, after[i].h)
					}
				}
				// The first repository still opens with its password.
				r, err := Open(ctx, be, OpenOptions{Password: passwordFunc(testPassword), CacheDir: t.TempDir()})
				if err != nil {
					t.Fatalf("open after second init: %v", err)
				}
				r.Close()
			})
		}
	}
}

func TestInitRemovesLeftoverKeys(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		t.Run(modeName(encrypted), func(t *testing.T) {
			ctx := t.Context()
			be := mem.New()
			// An interrupted init of another repository: a real key file,
			// no config.
			if _, err := Init(ctx, be, testInitOptions(true)); err != nil {
				t.Fatal(err)
			}
			removeObject(t, be, backend.Handle{Type: backend.ConfigFile})
			// And a second leftover that is not even a key file.
			if err := be.Save(ctx, backend.Handle{Type: backend.KeyFile, Name: "0123abcd"}, backend.NewByteReader([]byte("junk"))); err != nil {
				t.Fatal(err)
			}
			stale := names(t, be, backend.KeyFile)
			if len(stale) != 2 {
				t.Fatalf("setup: %d key files, want 2", len(stale))
			}

			if _, err := Init(ctx, be, testInitOptions(encrypted)); err != nil {
				t.Fatalf("init over leftover keys: %v", err)
			}
			keys := names(t, be, backend.KeyFile)
			for _, k := range keys {
				for _, s := range stale {
					if k == s {
						t.Errorf("leftover key %s was not removed", s)
					}
				}
			}
			want := 0
			if encrypted {
				want = 1
			}
			if len(keys) != want {
				t.Errorf("%d key files after init, want %d", len(keys), want)
			}
			calls := 0
			r, err := Open(ctx, be, OpenOptions{
				Password: func() (string, error) { calls++; return testPassword, nil },
				CacheDir: t.TempDir(),
			})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			r.Close()
			if r.Config().Encrypted != encrypted {
				t.Errorf("opened repository: Encrypted = %v, want %v", r.Config().Encrypted, encrypted)
			}
			if !encrypted && calls != 0 {
				t.Errorf("password asked %d times for an unencrypted repository", calls)
			}
		})
	}
}

func TestOpenDamagedConfig(t *testing.T) {
	damage := []struct {
		name string
		fn   func([]byte) []byte
	}{
		{"first byte", flipByte(0)},
		{"middle byte", func(b []byte) []byte { return flipByte(len(b) / 2)(b) }},
		{"last byte", flipByte(-1)},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"one byte", func(b []byte) []byte { return b[:1] }},
		{"empty", func([]byte) []byte { return nil }},
		{"appended", func(b []byte) []byte { return append(b, 0) }},
	}
	for _, encrypted := range []bool{true, false} {
		for _, d := range damage {
			t.Run(modeName(encrypted)+"/"+d.name, func(t *testing.T) {
				be := mem.New()
				if _, err := Init(t.Context(), be, testInitOptions(encrypted)); err != nil {
					t.Fatal(err)
				}
				rewrite(t, be, backend.Handle{Type: backend.ConfigFile}, d.fn)
				r, err := Open(t.Context(), be, OpenOptions{Password: passwordFunc(testPassword), CacheDir: t.TempDir()})
				if err == nil {
					r.Close()
					t.Fatal("open of a damaged config succeeded")
				}
				if errors.Is(err, ErrNoRepository) {
					t.Errorf("open: %v: a damaged config is not a missing repository", err)
				}
			})
		}
	}
}

// A damaged config opened with the right password must not be reported as
// a wrong password: the user would be sent hunting for another password
// (exit code 12) while the real problem is damage.
func TestOpenDamagedConfigIsNotWrongPassword(t *testing.T) {
	be := mem.New()
	if _, err := Init(t.Context(), be, testInitOptions(true)); err != nil {
		t.Fatal(err)
	}
	rewrite(t, be, backend.Handle{Type: backend.ConfigFile}, flipByte(-1))
	r, err := Open(t.Context(), be, OpenOptions{Password: passwordFunc(testPassword), CacheDir: t.TempDir()})
	if err == nil {
		r.Close()
		t.Fatal("open of a damaged config succeeded")
	}
	if errors.Is(err, ErrWrongPassword) {
		t.Errorf("open with the right password and a damaged config: %v; want an error saying the config is damaged, not ErrWrongPassword", err)
	}
}

func TestOpenPasswordNotAskedForUnencrypted(t *testing.T) {
	be := mem.New()
	if _, err := Init(t.Context(), be, testInitOptions(false)); err != nil {
		t.Fatal(err)
	}
	r, err := Open(t.Context(), be, OpenOptions{
		Password: func() (string, error) {
			t.Error("password func called for an unencrypted repository")
			return "", errors.New("no")
		},
		CacheDir: t.TempDir(),
	})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	r.Close()
	// Without any password func too.
	r, err = Open(t.Context(), be, OpenOptions{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatalf("open without password func: %v", err)
	}
	r.Close()
}

func TestUnpackedRoundtripAndDamage(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		t.Run(modeName(encrypted), func(t *testing.T) {
			r, be := newTestRepo(t, encrypted)
			ctx := t.Context()
			plain := []byte(`{"some":"object"}`)
			id, err := r.SaveUnpacked(ctx, backend.LockFile, plain)
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.LoadUnpacked(ctx, backend.LockFile, id)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("load unpacked: %q, %v", got, err)
			}
			h := backend.Handle{Type: backend.LockFile, Name: id.String()}
			rewrite(t, be, h, flipByte(3))
			if got, err := r.LoadUnpacked(ctx, backend.LockFile, id); err == nil {
				t.Errorf("load of a damaged object returned %q and no error", got)
			}
			removeObject(t, be, h)
			if _, err := r.LoadUnpacked(context.Background(), backend.LockFile, id); !errors.Is(err, backend.ErrNotExist) {
				t.Errorf("load of a missing object: %v, want ErrNotExist", err)
			}
		})
	}
}

// A cache directory that cannot be used is not fatal: the cache is only a
// cache, so Open falls back to a temporary one, says why, and removes it
// on Close.
func TestOpenUnusableCacheDir(t *testing.T) {
	be := mem.New()
	if _, err := Init(t.Context(), be, testInitOptions(true)); err != nil {
		t.Fatalf("init: %v", err)
	}
	// A regular file where the cache root should be: nothing can be made
	// below it.
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Open(t.Context(), be, OpenOptions{Password: passwordFunc(testPassword), CacheDir: notDir})
	if err != nil {
		t.Fatalf("open with an unusable cache dir: %v", err)
	}
	if r.CacheFallback() == nil {
		t.Error("CacheFallback is nil, want the reason the cache dir was not used")
	}
	tmp := r.tempCacheDir
	if tmp == "" {
		t.Fatal("no temporary cache in use")
	}
	if _, err := r.LoadIndex(t.Context()); err != nil {
		t.Fatalf("load index: %v", err)
	}
	s := r.NewSaver(t.Context())
	id, _, err := s.SaveBlob(index.DataBlob, []byte("content"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	if got, err := r.LoadBlob(t.Context(), index.DataBlob, id, nil); err != nil || string(got) != "content" {
		t.Fatalf("load blob through the fallback cache: %q, %v", got, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("temporary cache %s still exists after Close (%v)", tmp, err)
	}
}
