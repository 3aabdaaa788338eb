package chunk

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

// testPol was drawn once with chunker.RandomPolynomial and is fixed forever:
// the golden vectors below depend on it.
const testPol Pol = 0x2b8e82e689f30b

// testKey is the fixed key of the keyed golden ids: bytes 0..31.
var testKey = func() []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}()

// Sizes of the parts of the golden data set.
const (
	randomPart   = 40 << 20 // incompressible, cut by content
	periodicPart = 12 << 20 // a 1000-byte pattern repeated: no cut, so MaxSize chunks
	tailPart     = 3 << 20  // random again, so the stream ends mid-chunk
)

var (
	goldenOnce sync.Once
	goldenBuf  []byte
)

// goldenData returns the fixed-seed test stream (55 MiB). It depends only
// on math/rand/v2's PCG, whose output is specified and stable across Go
// versions, and on little-endian byte order.
func goldenData() []byte {
	goldenOnce.Do(func() {
		r := rand.New(rand.NewPCG(0x7265706f, 0x63686e6b))
		fill := func(b []byte) {
			for i := 0; i+8 <= len(b); i += 8 {
				binary.LittleEndian.PutUint64(b[i:], r.Uint64())
			}
		}
		buf := make([]byte, randomPart+periodicPart+tailPart)
		fill(buf[:randomPart])
		pattern := make([]byte, 1000)
		fill(pattern)
		for i := randomPart; i < randomPart+periodicPart; i += len(pattern) {
			copy(buf[i:randomPart+periodicPart], pattern)
		}
		fill(buf[randomPart+periodicPart:])
		goldenBuf = buf
	})
	return goldenBuf
}

// chunkAll cuts data and returns the chunks (copies) or fails the test.
func chunkAll(t testing.TB, c *Chunker, rd io.Reader, buf []byte) [][]byte {
	t.Helper()
	c.Reset(rd)
	var out [][]byte
	for {
		ch, err := c.Next(buf)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("next chunk: %v", err)
		}
		out = append(out, bytes.Clone(ch))
	}
}

func lengths(chunks [][]byte) []int {
	l := make([]int, len(chunks))
	for i, c := range chunks {
		l[i] = len(c)
	}
	return l
}

func TestPolynomialIrreducible(t *testing.T) {
	if !testPol.Irreducible() {
		t.Fatalf("test polynomial %v is not irreducible", testPol)
	}
	if d := testPol.Deg(); d != 53 {
		t.Fatalf("test polynomial degree %d, want 53", d)
	}
}

// TestGoldenFileClass pins the FileClass boundaries and ids of the golden
// stream: any change to the chunker, its configuration (e.g. a lost
// SetAverageBits) or the hash makes it fail, and with it the dedup between
// old and new snapshots.
func TestGoldenFileClass(t *testing.T) {
	data := goldenData()
	chunks := chunkAll(t, NewChunker(testPol, FileClass), bytes.NewReader(data), make([]byte, FileClass.MaxSize))

	wantLengths := []int{
		795790, 700317, 613323, 999428, 578193, 1125233, 1685809, 1074194, 647268, 737753,
		759564, 877934, 1241762, 1223016, 1779024, 672419, 1617729, 529961, 785897, 947698,
		925630, 1071030, 1030875, 1212789, 1144164, 1117672, 925571, 999727, 594608, 1227749,
		633847, 1666601, 1321402, 556438, 612769, 534550, 743846, 894194, 2690996, 761796,
		540184, 555194, 755438, 8388608, 4316309, 1361031, 681309, 783172, 231869,
	}
	if got := lengths(chunks); !equalInts(got, wantLengths) {
		t.Errorf("boundaries changed:\n got %#v\nwant %#v", got, wantLengths)
	}

	// The ids of the first chunks, unkeyed and keyed with testKey.
	wantUnkeyed := []string{
		"ea9565cf11316ae55f083e1c4507a2eade93b17e4dd5e6689dc27fe274409cf8",
		"171b4ca344bb23b757c5b9c9b84fcedf082a4336dc9fa0f24ec82b0a535ae1f5",
		"c078dc61409e899cbdc248df2f36c2b175c0b78da48be7413bca81749f59842b",
	}
	wantKeyed := []string{
		"f4018d36ed104da0029e6ec7b0db9dd6d3f882bd4df84f95fc411f31f2dbd28e",
		"c274b0ba09e4519d9539cb3a2440e7d78eea13cb92bb1edb28e033ee009cc685",
		"57037bd0ab7320ecfdf1208f6af97b6890bc5ec0ff64ccd526ce8dbf7af138ea",
	}
	unkeyed, keyed := NewHasher(nil), NewHasher(testKey)
	for i := range wantUnkeyed {
		if i >= len(chunks) {
			t.Fatalf("only %d chunks", len(chunks))
		}
		if got := unkeyed.Sum(chunks[i]).String(); got != wantUnkeyed[i] {
			t.Errorf("chunk %d unkeyed id %s, want %s", i, got, wantUnkeyed[i])
		}
		if got := keyed.Sum(chunks[i]).String(); got != wantKeyed[i] {
			t.Errorf("chunk %d keyed id %s, want %s", i, got, wantKeyed[i])
		}
	}
}

// smallClass is a size class far from the defaults, so that a chunker that
// ignored the class's bounds or average would be caught.
var smallClass = Class{MinSize: 16 << 10, MaxSize: 256 << 10, AverageBits: 16}

// TestGoldenSmallClass pins a class with many chunks through a digest of
// all boundaries, plus the first few literally.
func TestGoldenSmallClass(t *testing.T) {
	data := goldenData()[:8<<20]
	chunks := chunkAll(t, NewChunker(testPol, smallClass), bytes.NewReader(data), nil)
	l := lengths(chunks)

	const wantCount = 109
	wantFirst := []int{155681, 29390, 54307, 17393, 32276, 59690, 68584, 75967}
	const wantDigest = "f0fdce797660ccc3794acd7f58db55d62be89286afc738d6b26db80af3356eb5"

	if len(l) != wantCount {
		t.Errorf("%d chunks, want %d", len(l), wantCount)
	}
	if n := len(wantFirst); len(l) < n || !equalInts(l[:n], wantFirst) {
		t.Errorf("first boundaries %v, want %v", l[:min(len(wantFirst), len(l))], wantFirst)
	}
	if got := lengthsDigest(l).String(); got != wantDigest {
		t.Errorf("boundaries digest %s, want %s", got, wantDigest)
	}
}

// lengthsDigest hashes a list of chunk lengths (uint64 little-endian each).
func lengthsDigest(l []int) ID {
	b := make([]byte, 0, 8*len(l))
	for _, n := range l {
		b = binary.LittleEndian.AppendUint64(b, uint64(n))
	}
	return Hash(b)
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestChunkerInvariants checks, per class, that every chunk but the last
// respects MinSize and MaxSize, that the chunks concatenate to the input,
// and (on random data) that the mean is near MinSize + 2^AverageBits.
func TestChunkerInvariants(t *testing.T) {
	random := goldenData()[:randomPart]
	tests := []struct {
		name     string
		class    Class
		data     []byte
		meanLow  float64 // bounds of the mean chunk size; 0: not checked
		meanHigh float64
	}{
		// FileClass: 512 KiB + 512 KiB = ~1 MiB expected; 40 chunks make
		// the mean noisy, hence the generous range.
		{"file class random", FileClass, random, 800 << 10, 1300 << 10},
		{"file class golden", FileClass, goldenData(), 0, 0},
		{"small class random", smallClass, random[:8<<20], 70 << 10, 95 << 10},
		{"tiny class", Class{MinSize: 64, MaxSize: 4096, AverageBits: 8}, random[:1<<20], 250, 400},
		{"min equals max", Class{MinSize: 4096, MaxSize: 4096, AverageBits: 12}, random[:1<<20+100], 4096, 4096.5},
		{"shorter than min", FileClass, random[:1000], 0, 0},
		{"one byte", FileClass, random[:1], 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chunks := chunkAll(t, NewChunker(testPol, tt.class), bytes.NewReader(tt.data), make([]byte, tt.class.MaxSize))
			if len(chunks) == 0 {
				t.Fatal("no chunks")
			}
			for i, c := range chunks {
				if uint(len(c)) > tt.class.MaxSize {
					t.Errorf("chunk %d: %d bytes > max %d", i, len(c), tt.class.MaxSize)
				}
				if i < len(chunks)-1 && uint(len(c)) < tt.class.MinSize {
					t.Errorf("chunk %d (not last): %d bytes < min %d", i, len(c), tt.class.MinSize)
				}
				if len(c) == 0 {
					t.Errorf("chunk %d is empty", i)
				}
			}
			if !bytes.Equal(bytes.Join(chunks, nil), tt.data) {
				t.Error("chunks do not concatenate to the input")
			}
			if tt.meanHigh > 0 {
				// Leave the last (truncated) chunk out of the mean.
				full := chunks[:len(chunks)-1]
				total := 0
				for _, c := range full {
					total += len(c)
				}
				mean := float64(total) / float64(len(full))
				if mean < tt.meanLow || mean > tt.meanHigh {
					t.Errorf("mean chunk %.0f bytes over %d chunks, want in [%.0f, %.0f]", mean, len(full), tt.meanLow, tt.meanHigh)
				}
				t.Logf("mean chunk %.0f bytes over %d chunks", mean, len(full))
			}
		})
	}
}

// TestChunkerReset checks that a reused chunker, whatever it did before,
// cuts exactly like a fresh one; in particular that the class's average
// survives Reset (the wrapped chunker resets it to 20 bits).
func TestChunkerReset(t *testing.T) {
	data := goldenData()[:8<<20]
	fresh := lengths(chunkAll(t, NewChunker(testPol, smallClass), bytes.NewReader(data), nil))

	c := NewChunker(testPol, smallClass)
	// Abandon a stream mid-chunk, then finish a different one.
	c.Reset(bytes.NewReader(goldenData()[randomPart:]))
	if _, err := c.Next(nil); err != nil {
		t.Fatal(err)
	}
	chunkAll(t, c, bytes.NewReader(data[:3<<20+17]), nil)
	for round := range 2 {
		if got := lengths(chunkAll(t, c, bytes.NewReader(data), nil)); !equalInts(got, fresh) {
			t.Fatalf("round %d: reused chunker cut %d chunks %v…, fresh one %d chunks %v…",
				round, len(got), got[:min(5, len(got))], len(fresh), fresh[:min(5, len(fresh))])
		}
	}
}

// TestChunkerReaderShape checks that boundaries do not depend on how the
// reader splits its data.
func TestChunkerReaderShape(t *testing.T) {
	data := goldenData()[:4<<20]
	want := lengths(chunkAll(t, NewChunker(testPol, smallClass), bytes.NewReader(data), nil))
	readers := map[string]io.Reader{
		"one byte":   iotest.OneByteReader(bytes.NewReader(data)),
		"half":       iotest.HalfReader(bytes.NewReader(data)),
		"data error": iotest.DataErrReader(bytes.NewReader(data)),
	}
	for name, rd := range readers {
		t.Run(name, func(t *testing.T) {
			if got := lengths(chunkAll(t, NewChunker(testPol, smallClass), rd, nil)); !equalInts(got, want) {
				t.Errorf("got %d chunks, want %d", len(got), len(want))
			}
		})
	}
}

func TestChunkerEmptyAndEOF(t *testing.T) {
	c := NewChunker(testPol, FileClass)
	c.Reset(strings.NewReader(""))
	for i := range 3 {
		if ch, err := c.Next(nil); err != io.EOF || ch != nil {
			t.Fatalf("call %d on empty stream: %q, %v; want nil, io.EOF", i, ch, err)
		}
	}
	c.Reset(strings.NewReader("abc"))
	if ch, err := c.Next(nil); err != nil || string(ch) != "abc" {
		t.Fatalf("short stream: %q, %v", ch, err)
	}
	for i := range 2 {
		if _, err := c.Next(nil); err != io.EOF {
			t.Fatalf("call %d after last chunk: %v, want io.EOF", i, err)
		}
	}
}

func TestChunkerErrors(t *testing.T) {
	t.Run("next before reset", func(t *testing.T) {
		if _, err := NewChunker(testPol, FileClass).Next(nil); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("reader error", func(t *testing.T) {
		boom := errors.New("boom")
		c := NewChunker(testPol, smallClass)
		c.Reset(io.MultiReader(bytes.NewReader(goldenData()[:1<<20]), iotest.ErrReader(boom)))
		var err error
		for err == nil {
			_, err = c.Next(nil)
		}
		if !errors.Is(err, boom) {
			t.Fatalf("got %v, want %v", err, boom)
		}
	})
	t.Run("bad polynomial", func(t *testing.T) {
		for _, pol := range []Pol{0, 1 << 60} {
			c := NewChunker(pol, smallClass)
			c.Reset(bytes.NewReader(goldenData()[:1<<20]))
			if _, err := c.Next(nil); err == nil || err == io.EOF {
				t.Errorf("pol %#x: got %v, want an error", uint64(pol), err)
			}
		}
	})
}

func TestChunkerUsesBuffer(t *testing.T) {
	c := NewChunker(testPol, smallClass)
	c.Reset(bytes.NewReader(goldenData()[:1<<20]))
	buf := make([]byte, smallClass.MaxSize)
	ch, err := c.Next(buf)
	if err != nil {
		t.Fatal(err)
	}
	if &ch[0] != &buf[0] {
		t.Error("chunk not stored in the given buffer")
	}
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := c.Next(buf); err != nil && err != io.EOF {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("Next with a MaxSize buffer allocates %.1f times per call", allocs)
	}
}

func TestClassValidate(t *testing.T) {
	tests := []struct {
		class Class
		ok    bool
	}{
		{FileClass, true},
		{smallClass, true},
		{Class{MinSize: 64, MaxSize: 64, AverageBits: 1}, true},
		{Class{MinSize: 63, MaxSize: 4096, AverageBits: 10}, false},
		{Class{MinSize: 8192, MaxSize: 4096, AverageBits: 10}, false},
		{Class{MinSize: 4096, MaxSize: MaxChunkSize + 1, AverageBits: 10}, false},
		{Class{MinSize: 4096, MaxSize: 8192, AverageBits: 0}, false},
		{Class{MinSize: 4096, MaxSize: 8192, AverageBits: 31}, false},
		{Class{}, false},
	}
	for _, tt := range tests {
		if err := tt.class.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", tt.class, err, tt.ok)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("NewChunker accepted an invalid class")
		}
	}()
	NewChunker(testPol, Class{})
}

// TestHashSpecVectors checks Hash and Hasher against the official BLAKE3
// test vectors (input byte i is i%251; key "whats the Elvish word for
// friend"), so that ids are standard BLAKE3, not merely stable.
func TestHashSpecVectors(t *testing.T) {
	key := []byte("whats the Elvish word for friend")
	tests := []struct {
		n             int
		hash, keyHash string
	}{
		{0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
			"92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26"},
		{1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
			"357dc55de0c7e382c900fd6e320acc04146be01db6a8ce7210b7189bd664ea69"},
	}
	unkeyed, keyed := NewHasher(nil), NewHasher(key)
	for _, tt := range tests {
		in := make([]byte, tt.n)
		for i := range in {
			in[i] = byte(i % 251)
		}
		if got := Hash(in).String(); got != tt.hash {
			t.Errorf("Hash(%d bytes) = %s, want %s", tt.n, got, tt.hash)
		}
		if got := unkeyed.Sum(in).String(); got != tt.hash {
			t.Errorf("unkeyed Sum(%d bytes) = %s, want %s", tt.n, got, tt.hash)
		}
		if got := keyed.Sum(in).String(); got != tt.keyHash {
			t.Errorf("keyed Sum(%d bytes) = %s, want %s", tt.n, got, tt.keyHash)
		}
	}
}

func TestHasher(t *testing.T) {
	data := goldenData()[:1<<20]
	unkeyed, keyed := NewHasher(nil), NewHasher(testKey)
	if unkeyed.Sum(data) == keyed.Sum(data) {
		t.Error("keyed and unkeyed ids are equal")
	}
	other := bytes.Clone(testKey)
	other[0] ^= 1
	if NewHasher(other).Sum(data) == keyed.Sum(data) {
		t.Error("ids under different keys are equal")
	}
	// The key is copied: changing the caller's slice later changes nothing,
	// also for pooled states created after the change.
	k := bytes.Clone(testKey)
	h := NewHasher(k)
	k[0] ^= 1
	want := keyed.Sum(data)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if h.Sum(data) != want {
				t.Error("hasher depends on the caller's key slice")
			}
		})
	}
	wg.Wait()

	for _, n := range []int{31, 33} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewHasher accepted a %d-byte key", n)
				}
			}()
			NewHasher(make([]byte, n))
		}()
	}
}

// TestHasherConcurrent runs Sum from many goroutines (meaningful under
// -race) and checks that pooled states never leak data between calls.
func TestHasherConcurrent(t *testing.T) {
	data := goldenData()[:64<<10]
	h := NewHasher(testKey)
	sizes := []int{0, 1, 1024, 4096, 8193, 64 << 10}
	want := make([]ID, len(sizes))
	for i, n := range sizes {
		want[i] = h.Sum(data[:n])
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := (g + i) % len(sizes)
				if got := h.Sum(data[:sizes[k]]); got != want[k] {
					t.Errorf("concurrent Sum(%d bytes) = %s, want %s", sizes[k], got.Short(), want[k].Short())
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestHasherAllocs(t *testing.T) {
	data := goldenData()[:1<<20]
	for _, key := range [][]byte{nil, testKey} {
		h := NewHasher(key)
		for _, n := range []int{4 << 10, 1 << 20} {
			allocs := testing.AllocsPerRun(50, func() { h.Sum(data[:n]) })
			// sync.Pool may drop a state at a GC, so allow a fraction.
			if allocs > 0.1 {
				t.Errorf("keyed=%v, %d bytes: %.2f allocations per Sum", key != nil, n, allocs)
			}
		}
	}
}

func TestIDText(t *testing.T) {
	id := Hash([]byte("abc"))
	const want = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
	if got := id.String(); got != want {
		t.Fatalf("String() = %s, want %s", got, want)
	}
	if got := id.Short(); got != want[:8] {
		t.Errorf("Short() = %s, want %s", got, want[:8])
	}
	if id.IsNull() || !(ID{}).IsNull() {
		t.Error("IsNull wrong")
	}
	parsed, err := ParseID(want)
	if err != nil || parsed != id {
		t.Errorf("ParseID(String()) = %v, %v", parsed, err)
	}
	upper, err := ParseID(strings.ToUpper(want))
	if err != nil || upper != id {
		t.Errorf("ParseID(upper case) = %v, %v", upper, err)
	}

	js, err := json.Marshal(map[string]ID{"id": id})
	if err != nil {
		t.Fatal(err)
	}
	if string(js) != `{"id":"`+want+`"}` {
		t.Errorf("JSON %s", js)
	}
	var back map[string]ID
	if err := json.Unmarshal(js, &back); err != nil || back["id"] != id {
		t.Errorf("JSON round trip: %v, %v", back, err)
	}
}

func TestParseIDErrors(t *testing.T) {
	valid := strings.Repeat("ab", 32)
	tests := map[string]string{
		"empty":      "",
		"short":      valid[:62],
		"long":       valid + "ab",
		"odd":        valid[:63],
		"non-hex":    valid[:62] + "zz",
		"space":      " " + valid[:63],
		"multi-byte": valid[:61] + "é",
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			if id, err := ParseID(s); err == nil {
				t.Fatalf("ParseID(%q) = %v, want an error", s, id)
			}
			id := Hash(nil)
			if err := id.UnmarshalText([]byte(s)); err == nil {
				t.Fatalf("UnmarshalText(%q) accepted", s)
			}
			if id != Hash(nil) {
				t.Error("UnmarshalText changed the id on error")
			}
		})
	}
}

func BenchmarkChunker(b *testing.B) {
	data := goldenData()[:randomPart]
	for _, tc := range []struct {
		name  string
		class Class
	}{{"file", FileClass}, {"small", smallClass}} {
		b.Run(tc.name, func(b *testing.B) {
			c := NewChunker(testPol, tc.class)
			buf := make([]byte, tc.class.MaxSize)
			rd := bytes.NewReader(data)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(data)
				c.Reset(rd)
				for {
					if _, err := c.Next(buf); err == io.EOF {
						break
					} else if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

func BenchmarkHasher(b *testing.B) {
	data := goldenData()[:1<<20]
	for _, keyed := range []bool{false, true} {
		var key []byte
		name := "unkeyed"
		if keyed {
			key, name = testKey, "keyed"
		}
		h := NewHasher(key)
		for _, n := range []int{4 << 10, 1 << 20} {
			b.Run(name+"/"+sizeName(n), func(b *testing.B) {
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					h.Sum(data[:n])
				}
			})
		}
	}
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return strconv.Itoa(n>>20) + "MiB"
	}
	return strconv.Itoa(n>>10) + "KiB"
}
