package pack

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"

	"repo/backend"
	"repo/backend/mem"
	"repo/chunk"
	"repo/index"
	"repo/repo/crypto"
)

// sealers returns one sealer of each kind.
func sealers(t testing.TB) []struct {
	name string
	s    crypto.Sealer
} {
	t.Helper()
	k, err := crypto.NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	return []struct {
		name string
		s    crypto.Sealer
	}{{"aead", crypto.NewAEAD(k)}, {"plain", crypto.NewPlain()}}
}

// vocabulary of the pseudo-text; words are drawn Zipf-distributed so that
// the text compresses roughly like prose or source code.
var vocabulary = strings.Fields(`the of and to in is that for it as with was on be by
	this are or from at which not have an but had his they you were their one all
	we can her has there been if more when will would who so no func return err nil
	string int byte struct type var const package import range for else switch case
	default go defer select chan map interface error context backup repository pack
	blob index snapshot tree chunk key seal open read write file directory lock
	config data offset length size hash id version header compress decompress zstd
	level fast default better best random text page database sqlite table row column
	value number count total time date host user path name mode owner group link`)

// pseudoText returns n bytes of deterministic text-like data.
func pseudoText(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	z := rand.NewZipf(r, 1.2, 2, uint64(len(vocabulary)-1))
	var b bytes.Buffer
	b.Grow(n + 32)
	for b.Len() < n {
		b.WriteString(vocabulary[z.Uint64()])
		switch r.IntN(12) {
		case 0:
			b.WriteString(".\n")
		case 1:
			b.WriteString(", ")
		case 2:
			fmt.Fprintf(&b, " %d ", r.IntN(10000))
		default:
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

// randomData returns n deterministic incompressible bytes.
func randomData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestCodecRoundtrip(t *testing.T) {
	inputs := []struct {
		name       string
		data       []byte
		compresses bool // with any level but LevelOff
	}{
		{"empty", nil, false},
		{"one byte", []byte{'x'}, false},
		{"repetitive 100B", bytes.Repeat([]byte("ab"), 50), true},
		{"text 4KiB", pseudoText(2, 4<<10), true},
		{"text 1MiB", pseudoText(3, 1<<20), true},
		{"zeros 1MiB", make([]byte, 1<<20), true},
		{"random 4KiB", randomData(4, 4<<10), false},
		{"random 1MiB", randomData(5, 1<<20), false},
	}
	levels := []Level{LevelOff, zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression}
	for _, sc := range sealers(t) {
		for _, level := range levels {
			c := NewCodec(sc.s, level)
			if c.Sealer() != sc.s {
				t.Fatal("Sealer returned another sealer")
			}
			for _, in := range inputs {
				t.Run(fmt.Sprintf("%s/%v/%s", sc.name, level, in.name), func(t *testing.T) {
					prefix := []byte("prefix")
					stored, comp := c.Encode(bytes.Clone(prefix), in.data)
					if !bytes.HasPrefix(stored, prefix) {
						t.Fatal("Encode did not append to dst")
					}
					stored = stored[len(prefix):]
					wantComp := index.CompressionNone
					if in.compresses && level != LevelOff {
						wantComp = index.CompressionZstd
					}
					if comp != wantComp {
						t.Fatalf("compression %d, want %d", comp, wantComp)
					}
					if comp == index.CompressionZstd && len(stored) >= len(in.data)+sc.s.Overhead() {
						t.Fatalf("compressed blob of %d bytes is not smaller than raw %d", len(stored), len(in.data))
					}
					if comp == index.CompressionNone && len(stored) != len(in.data)+sc.s.Overhead() {
						t.Fatalf("uncompressed blob of %d bytes, want %d", len(stored), len(in.data)+sc.s.Overhead())
					}
					b := index.Blob{Type: index.DataBlob, RawLength: uint32(len(in.data)), Compression: comp}
					got, err := c.Decode(bytes.Clone(prefix), stored, b)
					if err != nil {
						t.Fatalf("Decode: %v", err)
					}
					if !bytes.HasPrefix(got, prefix) || !bytes.Equal(got[len(prefix):], in.data) {
						t.Fatal("Decode returned other bytes")
					}
				})
			}
		}
	}
}

func TestDecodeKeepsCapacity(t *testing.T) {
	c := NewCodec(crypto.NewPlain(), zstd.SpeedFastest)
	raw := pseudoText(6, 10000)
	stored, comp := c.Encode(nil, raw)
	if comp != index.CompressionZstd {
		t.Fatal("text did not compress")
	}
	buf := make([]byte, 0, 1<<20)
	got, err := c.Decode(buf, stored, index.Blob{RawLength: uint32(len(raw)), Compression: comp})
	if err != nil {
		t.Fatal(err)
	}
	if &got[0] != &buf[:1][0] || cap(got) != cap(buf) {
		t.Fatalf("Decode did not decode into dst's array with its capacity (cap %d)", cap(got))
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, sc := range sealers(t) {
		c := NewCodec(sc.s, zstd.SpeedDefault)
		text := pseudoText(7, 50000)
		zStored, zComp := c.Encode(nil, text)
		nStored, nComp := c.Encode(nil, randomData(8, 5000))
		if zComp != index.CompressionZstd || nComp != index.CompressionNone {
			t.Fatalf("unexpected compressions %d, %d", zComp, nComp)
		}
		// A stored blob that inflates far beyond what its entry says: 32 MiB
		// of zeros compress to a few KiB.
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		bomb := sc.s.Seal(nil, enc.EncodeAll(make([]byte, 32<<20), nil))
		// Two frames of 5000 bytes each where the entry claims 5000.
		frame := enc.EncodeAll(pseudoText(9, 5000), nil)
		twoFrames := sc.s.Seal(nil, append(bytes.Clone(frame), frame...))
		flipped := bytes.Clone(zStored)
		flipped[len(flipped)/2] ^= 1

		cases := []struct {
			name   string
			stored []byte
			b      index.Blob
			auth   bool // also matches crypto.ErrAuth
		}{
			{"zstd raw length -1", zStored, index.Blob{RawLength: 49999, Compression: zComp}, false},
			{"zstd raw length +1", zStored, index.Blob{RawLength: 50001, Compression: zComp}, false},
			{"zstd raw length 0", zStored, index.Blob{RawLength: 0, Compression: zComp}, false},
			{"none raw length -1", nStored, index.Blob{RawLength: 4999, Compression: nComp}, false},
			{"none raw length +1", nStored, index.Blob{RawLength: 5001, Compression: nComp}, false},
			{"none read as zstd", nStored, index.Blob{RawLength: 5000, Compression: index.CompressionZstd}, false},
			{"zstd read as none", zStored, index.Blob{RawLength: 50000, Compression: index.CompressionNone}, false},
			{"unknown compression", zStored, index.Blob{RawLength: 50000, Compression: 7}, false},
			{"flipped byte", flipped, index.Blob{RawLength: 50000, Compression: zComp}, true},
			{"truncated", zStored[:len(zStored)-1], index.Blob{RawLength: 50000, Compression: zComp}, true},
			{"shorter than overhead", zStored[:sc.s.Overhead()-1], index.Blob{RawLength: 0, Compression: zComp}, false},
			{"bomb", bomb, index.Blob{RawLength: 1000, Compression: zComp}, false},
			{"bomb one byte short", bomb, index.Blob{RawLength: 32<<20 - 1, Compression: zComp}, false},
			{"raw length above the limit", zStored, index.Blob{RawLength: maxCompressedRaw + 1, Compression: zComp}, false},
			{"two frames", twoFrames, index.Blob{RawLength: 5000, Compression: zComp}, false},
		}
		for _, tc := range cases {
			t.Run(sc.name+"/"+tc.name, func(t *testing.T) {
				dst := []byte("keep")
				got, err := c.Decode(dst, tc.stored, tc.b)
				if !errors.Is(err, ErrDamaged) {
					t.Fatalf("Decode = %v, want ErrDamaged", err)
				}
				if tc.auth && !errors.Is(err, crypto.ErrAuth) {
					t.Fatalf("Decode = %v, want crypto.ErrAuth too", err)
				}
				if string(got) != "keep" {
					t.Fatalf("Decode changed dst to %q", got)
				}
			})
		}
	}
}

func TestCodecConcurrent(t *testing.T) {
	c := NewCodec(crypto.NewPlain(), zstd.SpeedDefault)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			var stored, got []byte
			for i := range 30 {
				raw := pseudoText(uint64(g*100+i), 1000+i*997)
				if i%3 == 0 {
					raw = randomData(uint64(i), 3000)
				}
				var comp uint8
				stored, comp = c.Encode(stored[:0], raw)
				var err error
				got, err = c.Decode(got[:0], stored, index.Blob{RawLength: uint32(len(raw)), Compression: comp})
				if err != nil || !bytes.Equal(got, raw) {
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
}

// testBlob is a plaintext blob and its stored form.
type testBlob struct {
	raw    []byte
	entry  index.Blob // Offset and Length unset
	stored []byte
}

// makeBlobs encodes n blobs alternating text and random data of varied
// sizes, both types.
func makeBlobs(t testing.TB, c *Codec, n, maxSize int) []testBlob {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(n), uint64(maxSize)))
	blobs := make([]testBlob, n)
	for i := range blobs {
		size := r.IntN(maxSize) + 1
		raw := pseudoText(uint64(i), size)
		if i%2 == 1 {
			raw = randomData(uint64(i), size)
		}
		typ := index.DataBlob
		if i%5 == 0 {
			typ = index.TreeBlob
		}
		stored, comp := c.Encode(nil, raw)
		blobs[i] = testBlob{
			raw:    raw,
			stored: stored,
			entry:  index.Blob{Type: typ, ID: chunk.Hash(raw), RawLength: uint32(len(raw)), Compression: comp},
		}
	}
	return blobs
}

// buildPack writes blobs into a pack and checks what Finalize returns.
func buildPack(t testing.TB, s crypto.Sealer, blobs []testBlob) (data []byte, id chunk.ID, entries []index.Blob) {
	t.Helper()
	w := NewWriter(s, 1<<20)
	size := 0
	for _, b := range blobs {
		w.Add(b.entry, b.stored)
		size += len(b.stored)
	}
	if w.Size() != size || w.Count() != len(blobs) {
		t.Fatalf("Size, Count = %d, %d, want %d, %d", w.Size(), w.Count(), size, len(blobs))
	}
	data, id, entries = w.Finalize()
	if id != chunk.Hash(data) {
		t.Fatal("pack id is not the hash of the pack")
	}
	if got, want := int64(len(data)), int64(size)+HeaderSize(s, len(blobs)); got != want {
		t.Fatalf("pack of %d bytes, want blobs + HeaderSize = %d", got, want)
	}
	if len(entries) != len(blobs) {
		t.Fatalf("Finalize returned %d entries, want %d", len(entries), len(blobs))
	}
	off := uint32(0)
	for i, e := range entries {
		want := blobs[i].entry
		want.Offset, want.Length = off, uint32(len(blobs[i].stored))
		if e != want {
			t.Fatalf("entry %d = %+v, want %+v", i, e, want)
		}
		off += e.Length
	}
	return data, id, entries
}

func TestPackRoundtrip(t *testing.T) {
	for _, sc := range sealers(t) {
		t.Run(sc.name, func(t *testing.T) {
			c := NewCodec(sc.s, zstd.SpeedFastest)
			blobs := makeBlobs(t, c, 200, 20000)
			var nz int
			for _, b := range blobs {
				if b.entry.Compression == index.CompressionZstd {
					nz++
				}
			}
			if nz == 0 || nz == len(blobs) {
				t.Fatalf("%d of %d blobs compressed, want both kinds", nz, len(blobs))
			}
			data, _, entries := buildPack(t, sc.s, blobs)

			parsed, err := ParseHeader(sc.s, data, int64(len(data)))
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if fmt.Sprint(parsed) != fmt.Sprint(entries) {
				t.Fatal("parsed entries differ from Finalize's")
			}
			for i, e := range parsed {
				raw, err := c.Decode(nil, data[e.Offset:e.Offset+e.Length], e)
				if err != nil {
					t.Fatalf("blob %d: %v", i, err)
				}
				if chunk.Hash(raw) != e.ID || !bytes.Equal(raw, blobs[i].raw) {
					t.Fatalf("blob %d decodes to other bytes", i)
				}
			}
		})
	}
}

func TestHeaderSize(t *testing.T) {
	for _, sc := range sealers(t) {
		c := NewCodec(sc.s, LevelOff)
		for _, n := range []int{0, 1, 1000} {
			w := NewWriter(sc.s, 0)
			for i := range n {
				stored, _ := c.Encode(nil, []byte{byte(i)})
				w.Add(index.Blob{Type: index.DataBlob, RawLength: 1}, stored)
			}
			blobSize := w.Size()
			data, _, _ := w.Finalize()
			if got, want := HeaderSize(sc.s, n), int64(len(data)-blobSize); got != want {
				t.Errorf("%s: HeaderSize(%d) = %d, Finalize wrote %d", sc.name, n, got, want)
			}
		}
	}
}

func TestParseHeaderEmptyPack(t *testing.T) {
	for _, sc := range sealers(t) {
		data, _, _ := NewWriter(sc.s, 0).Finalize()
		blobs, err := ParseHeader(sc.s, data, int64(len(data)))
		if err != nil || len(blobs) != 0 {
			t.Errorf("%s: ParseHeader of an empty pack = %v, %v", sc.name, blobs, err)
		}
	}
}

func TestParseHeaderShortTail(t *testing.T) {
	s := crypto.NewPlain()
	data, _, entries := buildPack(t, s, makeBlobs(t, NewCodec(s, LevelOff), 10, 100))
	need := int(HeaderSize(s, 10))
	for _, n := range []int{0, 3, 4, need - 1} {
		_, err := ParseHeader(s, data[len(data)-n:], int64(len(data)))
		var short *ShortTailError
		if !errors.As(err, &short) {
			t.Fatalf("tail of %d: ParseHeader = %v, want *ShortTailError", n, err)
		}
		want := need
		if n < 4 {
			want = 4
		}
		if short.Need != want {
			t.Fatalf("tail of %d: Need = %d, want %d", n, short.Need, want)
		}
		if errors.Is(err, ErrDamaged) {
			t.Fatal("ShortTailError matches ErrDamaged")
		}
	}
	got, err := ParseHeader(s, data[len(data)-need:], int64(len(data)))
	if err != nil || fmt.Sprint(got) != fmt.Sprint(entries) {
		t.Fatalf("tail of exactly Need bytes: %v, %v", got, err)
	}
}

func TestParseHeaderDamaged(t *testing.T) {
	for _, sc := range sealers(t) {
		s := sc.s
		data, _, _ := buildPack(t, s, makeBlobs(t, NewCodec(s, zstd.SpeedFastest), 20, 3000))
		hdrStart := len(data) - int(HeaderSize(s, 20))
		flip := func(i int) []byte {
			b := bytes.Clone(data)
			b[i] ^= 0x10
			return b
		}
		cases := []struct {
			name     string
			tail     []byte
			packSize int64
		}{
			{"flip header first byte", flip(hdrStart), int64(len(data))},
			{"flip header middle", flip(hdrStart + 100), int64(len(data))},
			{"flip header last byte", flip(len(data) - 5), int64(len(data))},
			{"flip length low byte", flip(len(data) - 4), int64(len(data))},
			{"flip length high byte", flip(len(data) - 1), int64(len(data))},
			{"truncated end", data[:len(data)-1], int64(len(data) - 1)},
			{"truncated front", data[1:], int64(len(data) - 1)},
			{"truncated to header", data[hdrStart:], int64(len(data) - hdrStart)},
			{"extended end", append(bytes.Clone(data), 0), int64(len(data) + 1)},
			{"tiny pack", data[len(data)-4:], 4},
			{"empty pack", nil, 0},
			{"tail longer than pack", data, int64(len(data) - 1)},
		}
		for _, tc := range cases {
			t.Run(sc.name+"/"+tc.name, func(t *testing.T) {
				_, err := ParseHeader(s, tc.tail, tc.packSize)
				if !errors.Is(err, ErrDamaged) {
					t.Fatalf("ParseHeader = %v, want ErrDamaged", err)
				}
			})
		}
	}
}

// rawPack builds a pack from an arbitrary blob area and header plaintext,
// so that entries a Writer would never write can be tested.
func rawPack(s crypto.Sealer, blobArea int, version byte, entries []index.Blob, extra []byte) []byte {
	hdr := []byte{version}
	for _, e := range entries {
		hdr = index.AppendBlob(hdr, e)
	}
	hdr = append(hdr, extra...)
	data := make([]byte, blobArea)
	data = s.Seal(data, hdr)
	return binary.LittleEndian.AppendUint32(data, uint32(len(data)-blobArea))
}

func TestParseHeaderRejectsEntries(t *testing.T) {
	s := crypto.NewPlain()
	e := func(off, length uint32) index.Blob {
		return index.Blob{Type: index.DataBlob, Offset: off, Length: length, RawLength: 1}
	}
	var unknownType [index.BlobSize]byte // type 0
	cases := []struct {
		name     string
		area     int
		version  byte
		entries  []index.Blob
		extra    []byte
		wantText string
	}{
		{"version 0", 100, 0, []index.Blob{e(0, 50)}, nil, "version"},
		{"version 2", 100, 2, []index.Blob{e(0, 50)}, nil, "version"},
		{"partial entry", 100, 1, []index.Blob{e(0, 50)}, []byte{1, 2, 3}, "multiple"},
		{"unknown type", 100, 1, nil, unknownType[:], "entry 0"},
		{"overlap", 100, 1, []index.Blob{e(0, 50), e(49, 20)}, nil, "overlaps"},
		{"out of order", 100, 1, []index.Blob{e(50, 20), e(0, 20)}, nil, "overlaps"},
		{"duplicate", 100, 1, []index.Blob{e(0, 20), e(0, 20)}, nil, "overlaps"},
		{"into header", 100, 1, []index.Blob{e(0, 50), e(50, 51)}, nil, "past the header"},
		{"far past end", 100, 1, []index.Blob{e(0xffffff00, 0xff)}, nil, "past the header"},
		{"offset+length wraps uint32", 100, 1, []index.Blob{e(0xffffffff, 0xffffffff)}, nil, "past the header"},
		{"shorter than overhead", 100, 1, []index.Blob{e(0, 15)}, nil, "overhead"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := rawPack(s, tc.area, tc.version, tc.entries, tc.extra)
			_, err := ParseHeader(s, data, int64(len(data)))
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("ParseHeader = %v, want ErrDamaged about %q", err, tc.wantText)
			}
		})
	}
	// The valid neighbours of those cases parse: gaps are allowed, and an
	// entry may end exactly where the header starts.
	data := rawPack(s, 100, 1, []index.Blob{e(0, 20), e(30, 20), e(50, 50)}, nil)
	if _, err := ParseHeader(s, data, int64(len(data))); err != nil {
		t.Fatalf("valid header rejected: %v", err)
	}
}

func TestParseHeaderLengthField(t *testing.T) {
	s := crypto.NewPlain()
	data := rawPack(s, 100, 1, nil, nil)
	for _, l := range []uint32{0, 16, uint32(len(data) - 3), maxHeaderLength + 1, 1<<32 - 1} {
		b := bytes.Clone(data)
		binary.LittleEndian.PutUint32(b[len(b)-4:], l)
		if _, err := ParseHeader(s, b, int64(len(b))); !errors.Is(err, ErrDamaged) {
			t.Errorf("header length %d: ParseHeader = %v, want ErrDamaged", l, err)
		}
	}
	// A huge pack does not lift the bound, even with the whole tail at hand.
	big := make([]byte, maxHeaderLength+100)
	binary.LittleEndian.PutUint32(big[len(big)-4:], maxHeaderLength+1)
	_, err := ParseHeader(s, big, int64(len(big)))
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized header: ParseHeader = %v, want ErrDamaged about the limit", err)
	}
}

// countingBackend records the ranged loads it serves.
type countingBackend struct {
	backend.Backend
	loads atomic.Int64
	bytes atomic.Int64
}

func (b *countingBackend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(io.Reader) error) error {
	b.loads.Add(1)
	b.bytes.Add(int64(length))
	return b.Backend.Load(ctx, h, length, offset, fn)
}

func TestReadHeader(t *testing.T) {
	ctx := context.Background()
	s := crypto.NewPlain()
	c := NewCodec(s, LevelOff)
	cases := []struct {
		name      string
		n         int
		wantLoads int64
	}{
		{"small header", 50, 1},
		{"header over 64 KiB", 3000, 2}, // 3000 × 46 bytes ≈ 135 KiB
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			blobs := makeBlobs(t, c, tc.n, 64)
			data, id, entries := buildPack(t, s, blobs)
			be := &countingBackend{Backend: mem.New()}
			h := backend.Handle{Type: backend.PackFile, Name: id.String()}
			if err := be.Save(ctx, h, backend.NewByteReader(data)); err != nil {
				t.Fatal(err)
			}
			got, err := ReadHeader(ctx, be, id, int64(len(data)), s)
			if err != nil {
				t.Fatalf("ReadHeader: %v", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(entries) {
				t.Fatal("ReadHeader returned other entries")
			}
			if n := be.loads.Load(); n != tc.wantLoads {
				t.Errorf("%d loads, want %d", n, tc.wantLoads)
			}
			// Each byte of the tail is loaded once.
			want := min(int64(len(data)), max(tailGuess, HeaderSize(s, tc.n)))
			if n := be.bytes.Load(); n != want {
				t.Errorf("loaded %d bytes, want %d", n, want)
			}
		})
	}
}

func TestReadHeaderErrors(t *testing.T) {
	ctx := context.Background()
	s := crypto.NewPlain()
	data, id, _ := buildPack(t, s, makeBlobs(t, NewCodec(s, LevelOff), 3000, 16))
	be := mem.New()
	if err := be.Save(ctx, backend.Handle{Type: backend.PackFile, Name: id.String()}, backend.NewByteReader(data)); err != nil {
		t.Fatal(err)
	}
	var missing chunk.ID
	missing[0] = 1
	cases := []struct {
		name     string
		id       chunk.ID
		size     int64
		damaged  bool
		notExist bool
	}{
		{"missing pack", missing, 1000, false, true},
		{"size too small", id, 3, true, false},
		{"size one less", id, int64(len(data) - 1), true, false},
		{"size one more", id, int64(len(data) + 1), false, false}, // a short read
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadHeader(ctx, be, tc.id, tc.size, s)
			if err == nil {
				t.Fatal("ReadHeader succeeded")
			}
			if !strings.Contains(err.Error(), tc.id.Short()) {
				t.Errorf("error %q does not name the pack", err)
			}
			if errors.Is(err, ErrDamaged) != tc.damaged {
				t.Errorf("error %q: matches ErrDamaged = %v, want %v", err, !tc.damaged, tc.damaged)
			}
			if errors.Is(err, backend.ErrNotExist) != tc.notExist {
				t.Errorf("error %q: matches ErrNotExist = %v, want %v", err, !tc.notExist, tc.notExist)
			}
		})
	}
}

func TestWriterLimits(t *testing.T) {
	w := NewWriter(crypto.NewPlain(), 0)
	stored := make([]byte, 16)
	for range MaxBlobs {
		w.Add(index.Blob{Type: index.DataBlob}, stored)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Add beyond MaxBlobs did not panic")
			}
		}()
		w.Add(index.Blob{Type: index.DataBlob}, stored)
	}()
	s := crypto.NewPlain()
	data, _, _ := w.Finalize()
	if HeaderSize(s, MaxBlobs) > maxHeaderLength {
		t.Fatalf("a full header of %d bytes exceeds the reader's limit", HeaderSize(s, MaxBlobs))
	}
	got, err := ParseHeader(s, data, int64(len(data)))
	if err != nil || len(got) != MaxBlobs {
		t.Fatalf("ParseHeader of a full pack: %d entries, %v", len(got), err)
	}
}

func FuzzParseHeader(f *testing.F) {
	s := crypto.NewPlain()
	c := NewCodec(s, zstd.SpeedFastest)
	for _, n := range []int{0, 1, 3} {
		data, _, _ := buildPack(f, s, makeBlobs(f, c, n, 200))
		f.Add(data, uint16(0), false)
		// The header plaintext alone, for the sealed mode below.
		hdrLen := binary.LittleEndian.Uint32(data[len(data)-4:])
		hdr := data[len(data)-4-int(hdrLen) : len(data)-4-s.Overhead()]
		f.Add(hdr, uint16(len(data)-4-int(hdrLen)), true)
	}
	f.Add([]byte{1, 2, 3}, uint16(1), false)
	f.Fuzz(func(t *testing.T, in []byte, front uint16, seal bool) {
		// Unsealed: in is a pack's tail, front bytes precede it. Sealed: in
		// is a header plaintext, sealed properly so that the entry checks
		// are reached, behind a blob area of front bytes.
		tail := in
		if seal {
			tail = s.Seal(make([]byte, 0, len(in)+20), in)
			tail = binary.LittleEndian.AppendUint32(tail, uint32(len(tail)))
		}
		packSize := int64(len(tail)) + int64(front)
		blobs, err := ParseHeader(s, tail, packSize)
		var short *ShortTailError
		if errors.As(err, &short) {
			if short.Need <= len(tail) || int64(short.Need) > packSize {
				t.Fatalf("Need %d with a tail of %d and a pack of %d", short.Need, len(tail), packSize)
			}
			return
		}
		if err != nil {
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("error %v does not match ErrDamaged", err)
			}
			return
		}
		hdrStart := packSize - 4 - int64(binary.LittleEndian.Uint32(tail[len(tail)-4:]))
		var prevEnd int64
		for i, b := range blobs {
			start, end := int64(b.Offset), int64(b.Offset)+int64(b.Length)
			if start < prevEnd || end > hdrStart || b.Length < uint32(s.Overhead()) {
				t.Fatalf("entry %d [%d, %d) accepted; previous end %d, header at %d", i, start, end, prevEnd, hdrStart)
			}
			prevEnd = end
		}
	})
}

// goSource returns up to n bytes of Go source from GOROOT, or nil.
func goSource(n int) []byte {
	root := runtimeGOROOT()
	if root == "" {
		return nil
	}
	var buf bytes.Buffer
	for _, dir := range []string{"src/net/http", "src/runtime", "src/go/types"} {
		readGoFiles(root+"/"+dir, &buf, n)
		if buf.Len() >= n {
			return buf.Bytes()[:n]
		}
	}
	return nil
}

type benchInput struct {
	name string
	data []byte
}

func benchInputs(b *testing.B, size int) []benchInput {
	in := []benchInput{
		{"text", pseudoText(42, size)},
		{"random", randomData(42, size)},
	}
	if src := goSource(size); src != nil {
		in = append(in, benchInput{"gosrc", src})
	}
	return in
}

var benchLevels = []Level{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression}

func benchmarkEncode(b *testing.B, size int) {
	k, err := crypto.NewRandomKey()
	if err != nil {
		b.Fatal(err)
	}
	s := crypto.NewAEAD(k)
	for _, in := range benchInputs(b, size) {
		for _, level := range benchLevels {
			c := NewCodec(s, level)
			b.Run(fmt.Sprintf("%s/%v", in.name, level), func(b *testing.B) {
				b.SetBytes(int64(len(in.data)))
				buf := make([]byte, 0, len(in.data)+1024)
				for b.Loop() {
					buf, _ = c.Encode(buf[:0], in.data)
				}
				b.ReportMetric(float64(len(in.data))/float64(len(buf)), "ratio")
			})
		}
	}
}

func BenchmarkEncode1MiB(b *testing.B) { benchmarkEncode(b, 1<<20) }
func BenchmarkEncode4KiB(b *testing.B) { benchmarkEncode(b, 4<<10) }

func BenchmarkEncodeParallel1MiB(b *testing.B) {
	s := crypto.NewPlain()
	for _, level := range benchLevels {
		c := NewCodec(s, level)
		data := pseudoText(42, 1<<20)
		b.Run(fmt.Sprintf("text/%v", level), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.RunParallel(func(pb *testing.PB) {
				var buf []byte
				for pb.Next() {
					buf, _ = c.Encode(buf[:0], data)
				}
			})
		})
	}
}

func BenchmarkDecode1MiB(b *testing.B) {
	k, err := crypto.NewRandomKey()
	if err != nil {
		b.Fatal(err)
	}
	s := crypto.NewAEAD(k)
	for _, in := range benchInputs(b, 1<<20) {
		for _, level := range benchLevels {
			c := NewCodec(s, level)
			stored, comp := c.Encode(nil, in.data)
			blob := index.Blob{RawLength: uint32(len(in.data)), Compression: comp}
			b.Run(fmt.Sprintf("%s/%v", in.name, level), func(b *testing.B) {
				b.SetBytes(int64(len(in.data)))
				buf := make([]byte, 0, len(in.data))
				for b.Loop() {
					var err error
					if buf, err = c.Decode(buf[:0], stored, blob); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// runtimeGOROOT asks the go command, since runtime.GOROOT is deprecated.
func runtimeGOROOT() string {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// readGoFiles appends the .go files of dir to buf until it holds n bytes.
func readGoFiles(dir string, buf *bytes.Buffer, n int) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if buf.Len() >= n {
			return
		}
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil {
			buf.Write(b)
		}
	}
}

func TestDecodeBombAllocates(t *testing.T) {
	s := crypto.NewPlain()
	c := NewCodec(s, zstd.SpeedFastest)
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	bomb := s.Seal(nil, enc.EncodeAll(make([]byte, 48<<20), nil))
	b := index.Blob{RawLength: 1000, Compression: index.CompressionZstd}
	dst := make([]byte, 0, 2000)
	// Warm up the shared decoder's buffers.
	for range 2 * runtime.GOMAXPROCS(0) {
		_, _ = c.Decode(dst, bomb, b)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = c.Decode(dst, bomb, b)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("Decode = %v, want ErrDamaged", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 2<<20 {
		t.Fatalf("decoding a bomb allocated %d bytes", n)
	}
}

func TestLooksRandom(t *testing.T) {
	withZeros := randomData(11, 1<<20)
	clear(withZeros[500_000 : 500_000+16<<10]) // covers a sample
	cases := []struct {
		name string
		data []byte
		want bool
	}{
		{"random 1MiB", randomData(10, 1<<20), true},
		{"random 64KiB", randomData(12, 64<<10), true},
		{"random 8MiB", randomData(13, 8<<20), true},
		{"random below the sampling size", randomData(14, 64<<10-1), false},
		{"text 1MiB", pseudoText(15, 1<<20), false},
		{"zeros 1MiB", make([]byte, 1<<20), false},
		{"random with zeros in a sample", withZeros, false},
	}
	for _, tc := range cases {
		if got := looksRandom(tc.data); got != tc.want {
			t.Errorf("%s: looksRandom = %v, want %v", tc.name, got, tc.want)
		}
	}
}
