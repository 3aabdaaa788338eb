package index

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"repo/chunk"
)

// TestWalkFile: WalkFile sees exactly what DecodeFile decodes, pack by
// pack, with the supersedes list.
func TestWalkFile(t *testing.T) {
	f := makeFile(3, 7, 5)
	f.Supersedes = []chunk.ID{testID(1), testID(2)}
	f.Packs = append(f.Packs, Pack{ID: testID(99)}) // a pack without blobs
	var got []Pack
	sup, err := WalkFile(f.Encode(), func(p Pack) error {
		got = append(got, Pack{ID: p.ID, Blobs: slices.Clone(p.Blobs)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sup, f.Supersedes) {
		t.Errorf("supersedes %v, want %v", sup, f.Supersedes)
	}
	if !reflect.DeepEqual(got, f.Packs) {
		t.Errorf("walked packs differ from the encoded ones")
	}

	errStop := errors.New("stop")
	calls := 0
	if _, err := WalkFile(f.Encode(), func(Pack) error { calls++; return errStop }); err != errStop || calls != 1 {
		t.Errorf("fn's error: got %v after %d calls, want it unchanged after 1", err, calls)
	}
}

// TestWalkFileMalformed: a malformed file is an error wrapping
// ErrMalformed before fn sees any pack, also when only a late blob entry
// is bad.
func TestWalkFileMalformed(t *testing.T) {
	good := makeFile(4, 3, 4).Encode()
	badType := slices.Clone(good)
	// The type byte of the last blob of the last pack.
	badType[len(badType)-BlobSize] = 9
	for name, b := range map[string][]byte{
		"truncated":    good[:len(good)-1],
		"trailing":     append(slices.Clone(good), 0),
		"no magic":     append([]byte("XIDX"), good[4:]...),
		"bad blob":     badType,
		"empty buffer": nil,
	} {
		t.Run(name, func(t *testing.T) {
			calls := 0
			_, err := WalkFile(b, func(Pack) error { calls++; return nil })
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("got %v, want ErrMalformed", err)
			}
			if calls != 0 {
				t.Errorf("fn called %d times on a malformed file", calls)
			}
			if _, derr := DecodeFile(b); derr == nil {
				t.Errorf("DecodeFile accepts what WalkFile refuses")
			}
		})
	}
}
