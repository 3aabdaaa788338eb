package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"repo/backend"
	"repo/chunk"
)

// Plan is the intent of a multi-step maintenance operation, written before
// its first change and removed after its last.
//
// A plan records intent only; correctness never depends on it. Every
// operation that writes one is built so that the repository is consistent
// after a crash at any instant and a re-run of the same command recomputes
// what is left from the repository itself and finishes the job. A plan
// that outlives its run tells a reader (check, a human) what the
// interrupted run had in mind, and the next run of the same operation says
// that it continues it and removes the plan when done.
type Plan struct {
	ID      chunk.ID  `json:"-"`
	Op      string    `json:"op"` // "prune", "repair", "purge", "forget"
	Created time.Time `json:"created"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Steps   []string  `json:"steps"` // human-readable, in order, e.g. "repack 3 packs (12.1 MiB used of 40.2 MiB)"
	// Objects the operation will remove, so that a reader can tell what an
	// interrupted run had in mind.
	RemovePacks     []chunk.ID `json:"remove_packs,omitempty"`
	RemoveIndex     []chunk.ID `json:"remove_index,omitempty"`
	RemoveSnapshots []chunk.ID `json:"remove_snapshots,omitempty"`
}

// Operations that write plans (Plan.Op).
const (
	OpPrune  = "prune"
	OpRepair = "repair"
	OpPurge  = "purge"
	OpForget = "forget"
)

// PlanCommand is the command line that finishes an interrupted operation
// op, as check suggests it.
func PlanCommand(op string) string {
	switch op {
	case OpRepair:
		return "repo check --repair"
	case OpPurge:
		return "repo purge-broken-files"
	}
	return "repo " + op
}

// SavePlan stores p as a sealed object in plans/, named by the hash of its
// sealed bytes, and sets p.ID. Created, Host and PID are filled in when
// zero. Like every write that commits work, it first checks that this
// process still holds its lock.
func (r *Repository) SavePlan(ctx context.Context, p *Plan) error {
	if err := r.checkLock(ctx); err != nil {
		return err
	}
	if p.Op == "" {
		return errors.New("save plan: no operation")
	}
	if p.Created.IsZero() {
		p.Created = now().UTC().Round(0)
	}
	if p.Host == "" {
		p.Host, _ = os.Hostname()
	}
	if p.PID == 0 {
		p.PID = os.Getpid()
	}
	buf, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode plan: %w", err)
	}
	id, err := r.SaveUnpacked(ctx, backend.PlanFile, buf)
	if err != nil {
		return fmt.Errorf("save plan: %w", err)
	}
	p.ID = id
	return nil
}

// LoadPlan loads plan id, verifying it like every sealed object.
func (r *Repository) LoadPlan(ctx context.Context, id chunk.ID) (*Plan, error) {
	buf, err := r.LoadUnpacked(ctx, backend.PlanFile, id)
	if err != nil {
		return nil, err
	}
	var p Plan
	if err := json.Unmarshal(buf, &p); err != nil {
		return nil, fmt.Errorf("decode plan %s: %w", id.Short(), err)
	}
	if p.Op == "" {
		return nil, fmt.Errorf("decode plan %s: no operation", id.Short())
	}
	p.ID = id
	return &p, nil
}

// Plans returns every readable plan, oldest first (by Created, then id). A
// plan that cannot be read is reported to onError (when not nil) and
// skipped: a plan is only a record of intent, so a damaged one harms
// nothing. Without onError it is an error.
func (r *Repository) Plans(ctx context.Context, onError func(id chunk.ID, err error)) ([]*Plan, error) {
	var ids []chunk.ID
	if err := r.listIDs(ctx, backend.PlanFile, func(id chunk.ID) error {
		ids = append(ids, id)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list plans: %w", err)
	}
	var out []*Plan
	for _, id := range ids {
		p, err := r.LoadPlan(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if onError == nil {
				return nil, err
			}
			onError(id, err)
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Plan) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return a.ID.Compare(b.ID)
	})
	return out, nil
}

// RemovePlan removes plan id; a plan that is gone already is not an error
// (an interrupted run may have removed it). It checks the lock first, as
// every removal does.
func (r *Repository) RemovePlan(ctx context.Context, id chunk.ID) error {
	if err := r.checkLock(ctx); err != nil {
		return err
	}
	h := backend.Handle{Type: backend.PlanFile, Name: id.String()}
	if err := r.be.Remove(ctx, h); err != nil && !errors.Is(err, backend.ErrNotExist) {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	return nil
}

// InterruptedPlans returns the plans of operation op that earlier runs left
// behind, oldest first, and reports each to report (when not nil) as
// "continuing an interrupted <op> started <time> on <host> (plan <id>)".
// Unreadable plans are skipped silently: they say nothing. An operation
// calls it when it starts and removes the plans it returned (RemovePlans)
// once it completed, since a completed run has finished their work too.
func (r *Repository) InterruptedPlans(ctx context.Context, op string, report func(string)) ([]*Plan, error) {
	all, err := r.Plans(ctx, func(chunk.ID, error) {})
	if err != nil {
		return nil, err
	}
	var out []*Plan
	for _, p := range all {
		if p.Op != op {
			continue
		}
		out = append(out, p)
		if report != nil {
			report(fmt.Sprintf("continuing an interrupted %s started %s on %s (plan %s)", op, planTime(p.Created), p.Host, p.ID.Short()))
		}
	}
	return out, nil
}

// RemovePlans removes the given plans (see RemovePlan).
func (r *Repository) RemovePlans(ctx context.Context, plans []*Plan) error {
	for _, p := range plans {
		if err := r.RemovePlan(ctx, p.ID); err != nil {
			return err
		}
	}
	return nil
}

// planTime renders a plan's creation time for messages, in local time as
// the snapshots listing shows times.
func planTime(t time.Time) string {
	return t.Local().Format("2006-01-02 15:04:05")
}
