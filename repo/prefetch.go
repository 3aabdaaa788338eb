package repo

import (
	"context"
	"sync"

	"repo/chunk"
)

// treePrefetcher loads the parent snapshot's subtrees of a directory in the
// background while the walk is still in that directory, so that decoding
// them (most of an unchanged backup's work besides lstat) runs on another
// core than the walk.
//
// Invariants: at most maxPending trees are loaded or held unclaimed at
// once, which bounds the memory it uses; a tree is handed out at most once
// (take removes it), and one never taken is released by drop. A failed
// load is not remembered: take reports a miss and the caller loads the
// tree itself, getting the error there.
type treePrefetcher struct {
	r   *Repository
	ctx context.Context
	sem chan struct{} // loads running
	wg  sync.WaitGroup

	mu      sync.Mutex
	pending map[chunk.ID]*treeFuture
}

type treeFuture struct {
	done chan struct{}
	t    *Tree
}

const (
	maxPending      = 256
	prefetchLoaders = 2
)

func newTreePrefetcher(ctx context.Context, r *Repository) *treePrefetcher {
	return &treePrefetcher{r: r, ctx: ctx, sem: make(chan struct{}, prefetchLoaders), pending: map[chunk.ID]*treeFuture{}}
}

// prefetch starts loading the subtrees of t's directories, as far as the
// bound allows.
func (p *treePrefetcher) prefetch(t *Tree) {
	if t == nil {
		return
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if n.Type != NodeDir || n.Subtree == nil {
			continue
		}
		id := *n.Subtree
		p.mu.Lock()
		if _, ok := p.pending[id]; ok || len(p.pending) >= maxPending {
			p.mu.Unlock()
			continue
		}
		f := &treeFuture{done: make(chan struct{})}
		p.pending[id] = f
		p.mu.Unlock()
		p.wg.Go(func() {
			defer close(f.done)
			select {
			case p.sem <- struct{}{}:
			case <-p.ctx.Done():
				return
			}
			defer func() { <-p.sem }()
			if t, err := p.r.LoadTree(p.ctx, id); err == nil {
				f.t = t
			}
		})
	}
}

// wait waits for the loads started; Backup calls it before it returns, so
// that none outlives it.
func (p *treePrefetcher) wait() { p.wg.Wait() }

// take returns the prefetched tree id, waiting for its load, or nil if it
// was not prefetched or its load failed.
func (p *treePrefetcher) take(id chunk.ID) *Tree {
	p.mu.Lock()
	f, ok := p.pending[id]
	delete(p.pending, id)
	p.mu.Unlock()
	if !ok {
		return nil
	}
	<-f.done
	return f.t
}

// drop releases the prefetched subtrees of t that the walk did not take
// (directories gone from the source, or excluded).
func (p *treePrefetcher) drop(t *Tree) {
	if t == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range t.Nodes {
		if n := &t.Nodes[i]; n.Type == NodeDir && n.Subtree != nil {
			delete(p.pending, *n.Subtree)
		}
	}
}
