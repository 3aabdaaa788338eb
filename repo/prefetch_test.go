package repo

import (
	"context"
	"fmt"
	"testing"
)

// TestTreePrefetcher checks the prefetcher's contract: a prefetched tree is
// handed out once and equals a direct load, no more than maxPending are
// held, a tree not prefetched (or gone) is a miss, and drop releases what
// was not taken.
func TestTreePrefetcher(t *testing.T) {
	r, _ := newTestRepo(t, false)
	ctx := context.Background()
	s := r.NewSaver(ctx)
	parent := &Tree{}
	for i := range maxPending + 10 {
		id, err := s.SaveTree(&Tree{Nodes: []Node{{Name: fmt.Sprint("f", i), Type: NodeFile}}})
		if err != nil {
			t.Fatal(err)
		}
		parent.Nodes = append(parent.Nodes, Node{Name: fmt.Sprintf("d%04d", i), Type: NodeDir, Subtree: &id})
	}
	if _, err := s.Finish(); err != nil {
		t.Fatal(err)
	}

	p := newTreePrefetcher(ctx, r)
	p.prefetch(parent)
	if n := len(p.pending); n != maxPending {
		t.Errorf("%d trees pending, want the bound %d", n, maxPending)
	}
	first := *parent.Nodes[0].Subtree
	got := p.take(first)
	want, err := r.LoadTree(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || !nodesEqual(got.Nodes, want.Nodes) {
		t.Errorf("prefetched tree %+v, want %+v", got, want)
	}
	if p.take(first) != nil {
		t.Error("a tree was handed out twice")
	}
	if p.take(*parent.Nodes[maxPending+5].Subtree) != nil {
		t.Error("a tree beyond the bound was prefetched")
	}
	p.drop(parent)
	if n := len(p.pending); n != 0 {
		t.Errorf("%d trees pending after drop", n)
	}
	p.wait()
}
