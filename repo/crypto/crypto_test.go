package crypto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// testKDF keeps argon2 cheap in tests; DefaultKDF has its own test.
var testKDF = KDFParams{Time: 1, MemoryKiB: 1024, Threads: 1}

func mustKey(t testing.TB) *Key {
	t.Helper()
	k, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sealers returns one sealer of each kind, by name.
func sealers(t testing.TB) map[string]Sealer {
	t.Helper()
	return map[string]Sealer{"aead": NewAEAD(mustKey(t)), "plain": NewPlain()}
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestNewRandomKey(t *testing.T) {
	a, b := mustKey(t), mustKey(t)
	if a.Encrypt == b.Encrypt || a.BlobID == b.BlobID || a.Encrypt == a.BlobID {
		t.Fatal("random keys repeat")
	}
	if a.Encrypt == [32]byte{} {
		t.Fatal("random key is zero")
	}
}

func TestSealOpenRoundtrip(t *testing.T) {
	for name, s := range sealers(t) {
		for _, n := range []int{0, 1, 15, 16, 17, 4096, 1 << 20} {
			t.Run(fmt.Sprintf("%s/%d", name, n), func(t *testing.T) {
				plain := randBytes(uint64(n), n)
				prefix := []byte("prefix")
				sealed := s.Seal(bytes.Clone(prefix), plain)
				if !bytes.HasPrefix(sealed, prefix) {
					t.Fatal("Seal did not append to dst")
				}
				sealed = sealed[len(prefix):]
				if got, want := len(sealed), n+s.Overhead(); got != want {
					t.Fatalf("sealed length %d, want %d", got, want)
				}
				if n >= 16 && name == "aead" && bytes.Contains(sealed, plain[:16]) {
					t.Fatal("sealed form contains the plaintext")
				}
				opened, err := s.Open(bytes.Clone(prefix), sealed)
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if !bytes.HasPrefix(opened, prefix) {
					t.Fatal("Open did not append to dst")
				}
				if !bytes.Equal(opened[len(prefix):], plain) {
					t.Fatal("Open returned other bytes")
				}
			})
		}
	}
}

func TestSealAppendsWithinCapacity(t *testing.T) {
	for name, s := range sealers(t) {
		t.Run(name, func(t *testing.T) {
			plain := randBytes(1, 1000)
			dst := make([]byte, 3, 3+len(plain)+s.Overhead())
			out := s.Seal(dst, plain)
			if &out[0] != &dst[0] {
				t.Fatal("Seal reallocated although dst had room")
			}
		})
	}
}

func TestOpenDamaged(t *testing.T) {
	for name, s := range sealers(t) {
		plain := randBytes(2, 300)
		sealed := s.Seal(nil, plain)
		cases := map[string][]byte{
			"empty":      {},
			"overhead-1": sealed[:s.Overhead()-1],
			"truncated":  sealed[:len(sealed)-1],
			"cut front":  sealed[1:],
			"extended":   append(bytes.Clone(sealed), 0),
		}
		for _, i := range []int{0, 23, 24, len(sealed) / 2, len(sealed) - 17, len(sealed) - 16, len(sealed) - 1} {
			b := bytes.Clone(sealed)
			b[i] ^= 0x04
			cases[fmt.Sprintf("flip %d", i)] = b
		}
		for cname, b := range cases {
			t.Run(name+"/"+cname, func(t *testing.T) {
				dst := []byte("keep")
				out, err := s.Open(dst, b)
				if !errors.Is(err, ErrAuth) {
					t.Fatalf("Open = %v, want ErrAuth", err)
				}
				if string(out) != "keep" {
					t.Fatalf("Open returned dst %q after failing", out)
				}
			})
		}
	}
}

func TestAEADOtherKey(t *testing.T) {
	sealed := NewAEAD(mustKey(t)).Seal(nil, []byte("secret"))
	if _, err := NewAEAD(mustKey(t)).Open(nil, sealed); !errors.Is(err, ErrAuth) {
		t.Fatalf("Open with another key = %v, want ErrAuth", err)
	}
	if _, err := NewPlain().Open(nil, sealed); !errors.Is(err, ErrAuth) {
		t.Fatalf("plain Open of an AEAD object = %v, want ErrAuth", err)
	}
}

func TestAEADNoncesDiffer(t *testing.T) {
	s := NewAEAD(mustKey(t))
	seen := make(map[string]bool)
	plain := []byte("same plaintext every time")
	for range 1000 {
		sealed := s.Seal(nil, plain)
		nonce := string(sealed[:nonceSize])
		if seen[nonce] {
			t.Fatal("nonce repeated")
		}
		seen[nonce] = true
	}
}

func TestSealerConcurrent(t *testing.T) {
	for name, s := range sealers(t) {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := range 8 {
				wg.Go(func() {
					var sealed, opened []byte
					for i := range 200 {
						plain := randBytes(uint64(g*1000+i), 100+i)
						sealed = s.Seal(sealed[:0], plain)
						var err error
						opened, err = s.Open(opened[:0], sealed)
						if err != nil || !bytes.Equal(opened, plain) {
							errs <- fmt.Errorf("goroutine %d round %d: %v", g, i, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

func TestKeyFileRoundtrip(t *testing.T) {
	k := mustKey(t)
	kf, err := NewKeyFile(k, "correct horse", testKDF)
	if err != nil {
		t.Fatal(err)
	}
	if kf.Version != 1 || kf.KDF != "argon2id" || kf.Params != testKDF || len(kf.Salt) != 32 {
		t.Fatalf("unexpected key file fields: %+v", kf)
	}
	if time.Since(kf.Created) > time.Minute || kf.Created.Location() != time.UTC {
		t.Fatalf("Created = %v", kf.Created)
	}
	js, err := json.Marshal(kf)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseKeyFile(js)
	if err != nil {
		t.Fatalf("ParseKeyFile: %v", err)
	}
	if !parsed.Created.Equal(kf.Created) || parsed.Host != kf.Host || !bytes.Equal(parsed.Data, kf.Data) || !bytes.Equal(parsed.Salt, kf.Salt) {
		t.Fatalf("parsed key file differs:\n got %+v\nwant %+v", parsed, kf)
	}
	got, err := parsed.Open("correct horse")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if *got != *k {
		t.Fatal("opened key differs from the original")
	}
	if _, err := parsed.Open("correct horse "); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("Open with wrong password = %v, want ErrWrongPassword", err)
	}
	if _, err := parsed.Open(""); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("Open with empty password = %v, want ErrWrongPassword", err)
	}
}

func TestKeyFileSaltsDiffer(t *testing.T) {
	k := mustKey(t)
	a, err := NewKeyFile(k, "pw", testKDF)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKeyFile(k, "pw", testKDF)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Salt, b.Salt) || bytes.Equal(a.Data, b.Data) {
		t.Fatal("two key files share salt or data")
	}
}

func TestKeyFileDefaultKDF(t *testing.T) {
	if testing.Short() {
		t.Skip("argon2id with 64 MiB")
	}
	k := mustKey(t)
	kf, err := NewKeyFile(k, "pw", KDFParams{})
	if err != nil {
		t.Fatal(err)
	}
	if kf.Params != DefaultKDF {
		t.Fatalf("zero params gave %+v, want DefaultKDF %+v", kf.Params, DefaultKDF)
	}
	got, err := kf.Open("pw")
	if err != nil {
		t.Fatal(err)
	}
	if *got != *k {
		t.Fatal("opened key differs from the original")
	}
}

func TestKeyFileDamagedData(t *testing.T) {
	kf, err := NewKeyFile(mustKey(t), "pw", testKDF)
	if err != nil {
		t.Fatal(err)
	}
	kf.Data[len(kf.Data)/2] ^= 1
	if _, err := kf.Open("pw"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("Open of damaged data = %v, want ErrWrongPassword", err)
	}
}

func TestParseKeyFileRejects(t *testing.T) {
	kf, err := NewKeyFile(mustKey(t), "pw", testKDF)
	if err != nil {
		t.Fatal(err)
	}
	valid, err := json.Marshal(kf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKeyFile(valid); err != nil {
		t.Fatalf("valid key file rejected: %v", err)
	}
	cases := []struct {
		name   string
		modify func(*KeyFile)
		want   string
	}{
		{"version 0", func(k *KeyFile) { k.Version = 0 }, "version"},
		{"version 2", func(k *KeyFile) { k.Version = 2 }, "version"},
		{"kdf scrypt", func(k *KeyFile) { k.KDF = "scrypt" }, "kdf"},
		{"kdf empty", func(k *KeyFile) { k.KDF = "" }, "kdf"},
		{"time 0", func(k *KeyFile) { k.Params.Time = 0 }, "time"},
		{"time 101", func(k *KeyFile) { k.Params.Time = 101 }, "time"},
		{"time max", func(k *KeyFile) { k.Params.Time = 1<<32 - 1 }, "time"},
		{"threads 0", func(k *KeyFile) { k.Params.Threads = 0 }, "threads"},
		{"memory 0", func(k *KeyFile) { k.Params.MemoryKiB = 0 }, "memory"},
		{"memory below 8 per thread", func(k *KeyFile) { k.Params.Threads = 4; k.Params.MemoryKiB = 31 }, "memory"},
		{"memory 4 GiB + 1 KiB", func(k *KeyFile) { k.Params.MemoryKiB = 4<<20 + 1 }, "memory"},
		{"memory max", func(k *KeyFile) { k.Params.MemoryKiB = 1<<32 - 1 }, "memory"},
		{"salt empty", func(k *KeyFile) { k.Salt = nil }, "salt"},
		{"salt short", func(k *KeyFile) { k.Salt = k.Salt[:31] }, "salt"},
		{"salt long", func(k *KeyFile) { k.Salt = append(k.Salt, 0) }, "salt"},
		{"data short", func(k *KeyFile) { k.Data = k.Data[:39] }, "sealed key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := *kf
			bad.Salt = bytes.Clone(kf.Salt)
			c.modify(&bad)
			js, err := json.Marshal(&bad)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseKeyFile(js)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParseKeyFile = %v, want an error about %q", err, c.want)
			}
			// A KeyFile built in memory is checked by Open too, before
			// argon2 would allocate or panic.
			if _, err := bad.Open("pw"); err == nil || errors.Is(err, ErrWrongPassword) {
				t.Fatalf("Open = %v, want a validation error", err)
			}
		})
	}
	for _, s := range []string{"", "{", "null", "[]", `{"version":"1"}`} {
		if _, err := ParseKeyFile([]byte(s)); err == nil {
			t.Errorf("ParseKeyFile(%q) succeeded", s)
		}
	}
}

func TestNewKeyFileRejectsParams(t *testing.T) {
	for _, p := range []KDFParams{
		{Time: 0, MemoryKiB: 1024, Threads: 1},
		{Time: 1, MemoryKiB: 1024, Threads: 0},
		{Time: 1, MemoryKiB: 5 << 20, Threads: 1},
	} {
		if _, err := NewKeyFile(mustKey(t), "pw", p); err == nil {
			t.Errorf("NewKeyFile accepted %+v", p)
		}
	}
}

func benchmarkSealer(b *testing.B, size int) {
	for name, s := range sealers(b) {
		plain := randBytes(3, size)
		sealed := s.Seal(nil, plain)
		b.Run(fmt.Sprintf("Seal/%s/%dKiB", name, size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			buf := make([]byte, 0, len(sealed))
			for b.Loop() {
				buf = s.Seal(buf[:0], plain)
			}
		})
		b.Run(fmt.Sprintf("Open/%s/%dKiB", name, size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			buf := make([]byte, 0, size)
			for b.Loop() {
				var err error
				buf, err = s.Open(buf[:0], sealed)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSealer4KiB(b *testing.B) { benchmarkSealer(b, 4<<10) }
func BenchmarkSealer1MiB(b *testing.B) { benchmarkSealer(b, 1<<20) }

func BenchmarkArgon2DefaultKDF(b *testing.B) {
	kf, err := NewKeyFile(mustKey(b), "pw", DefaultKDF)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := kf.Open("pw"); err != nil {
			b.Fatal(err)
		}
	}
}
