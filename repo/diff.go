package repo

import (
	"bytes"
	"context"
	"path"
	"slices"
)

// Kinds of change (DiffChange.Kind): the letters diff prints.
const (
	DiffAdded    = "+"
	DiffRemoved  = "-"
	DiffModified = "M" // content: a file's data, a symlink's target, a device number
	DiffType     = "T" // the entry's type (e.g. a file became a directory)
	DiffMetadata = "U" // only metadata: mode, owner, mtime or extended attributes
)

// DiffChange is one entry that differs between two trees.
type DiffChange struct {
	Path string
	Kind string
	// Old and New are the entry in the old and the new tree; Old is nil
	// for DiffAdded, New for DiffRemoved.
	Old, New *Node
}

// DiffStats counts the changes of a diff. Everything below an added or
// removed directory counts as added or removed; a type change counts only
// in TypeChanged (and its files' bytes), the contents of a directory that
// replaced or was replaced by something else as added or removed.
type DiffStats struct {
	FilesAdded   int `json:"files_added"`
	FilesRemoved int `json:"files_removed"`
	FilesChanged int `json:"files_changed"`
	DirsAdded    int `json:"dirs_added"`
	DirsRemoved  int `json:"dirs_removed"`
	// Others are symlinks, devices, fifos and sockets.
	OthersAdded     int `json:"others_added"`
	OthersRemoved   int `json:"others_removed"`
	OthersChanged   int `json:"others_changed"`
	TypeChanged     int `json:"type_changed"`
	MetadataChanged int `json:"metadata_changed"`
	// BytesAdded sums the sizes of the files added and the new sizes of
	// the files changed; BytesRemoved the sizes of the files removed and
	// the old sizes of the files changed.
	BytesAdded   int64 `json:"bytes_added"`
	BytesRemoved int64 `json:"bytes_removed"`
}

// Diff compares the tree below oldRoot with the one below newRoot (as
// FindNode returns them) and calls fn for each difference, depth first in
// name order, a directory before its contents; p is the path of the roots,
// prefixed to every reported path. Directories whose subtree ids are equal
// are not read: their contents are identical, so the cost grows with the
// changes, not with the trees. The roots' own metadata is compared only
// when neither is a snapshot's root directory, which has none.
//
// fn returning an error stops the diff with that error.
func (r *Repository) Diff(ctx context.Context, p string, oldRoot, newRoot *Node, fn func(DiffChange) error) (DiffStats, error) {
	d := &differ{r: r, fn: fn}
	err := d.node(ctx, p, oldRoot, newRoot, oldRoot.Name == "" || newRoot.Name == "")
	return d.st, err
}

type differ struct {
	r  *Repository
	fn func(DiffChange) error
	st DiffStats
}

// node compares one entry present in both trees (at least one of o, n not
// nil). root skips the comparison of its metadata.
func (d *differ) node(ctx context.Context, p string, o, n *Node, root bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case o == nil:
		return d.whole(ctx, p, n, DiffAdded)
	case n == nil:
		return d.whole(ctx, p, o, DiffRemoved)
	case o.Type != n.Type:
		d.st.TypeChanged++
		if o.Type == NodeFile {
			d.st.BytesRemoved += int64(o.Size)
		}
		if n.Type == NodeFile {
			d.st.BytesAdded += int64(n.Size)
		}
		if err := d.fn(DiffChange{Path: p, Kind: DiffType, Old: o, New: n}); err != nil {
			return err
		}
		if o.Type == NodeDir {
			if err := d.children(ctx, p, o, DiffRemoved); err != nil {
				return err
			}
		}
		if n.Type == NodeDir {
			return d.children(ctx, p, n, DiffAdded)
		}
		return nil
	case o.Type == NodeDir:
		if !root && metadataChanged(o, n) {
			d.st.MetadataChanged++
			if err := d.fn(DiffChange{Path: p, Kind: DiffMetadata, Old: o, New: n}); err != nil {
				return err
			}
		}
		if *o.Subtree == *n.Subtree {
			return nil
		}
		return d.dirs(ctx, p, o, n)
	case contentChanged(o, n):
		if o.Type == NodeFile {
			d.st.FilesChanged++
			d.st.BytesRemoved += int64(o.Size)
			d.st.BytesAdded += int64(n.Size)
		} else {
			d.st.OthersChanged++
		}
		return d.fn(DiffChange{Path: p, Kind: DiffModified, Old: o, New: n})
	case !root && metadataChanged(o, n):
		d.st.MetadataChanged++
		return d.fn(DiffChange{Path: p, Kind: DiffMetadata, Old: o, New: n})
	}
	return nil
}

// dirs compares the entries of two directories by merging their sorted
// name lists.
func (d *differ) dirs(ctx context.Context, p string, o, n *Node) error {
	ot, err := d.r.LoadTree(ctx, *o.Subtree)
	if err != nil {
		return err
	}
	nt, err := d.r.LoadTree(ctx, *n.Subtree)
	if err != nil {
		return err
	}
	i, j := 0, 0
	for i < len(ot.Nodes) || j < len(nt.Nodes) {
		var on, nn *Node
		switch {
		case j == len(nt.Nodes) || (i < len(ot.Nodes) && ot.Nodes[i].Name < nt.Nodes[j].Name):
			on = &ot.Nodes[i]
			i++
		case i == len(ot.Nodes) || nt.Nodes[j].Name < ot.Nodes[i].Name:
			nn = &nt.Nodes[j]
			j++
		default:
			on, nn = &ot.Nodes[i], &nt.Nodes[j]
			i++
			j++
		}
		name := nn
		if name == nil {
			name = on
		}
		if err := d.node(ctx, path.Join(p, name.Name), on, nn, false); err != nil {
			return err
		}
	}
	return nil
}

// whole reports n and everything below it as added or removed.
func (d *differ) whole(ctx context.Context, p string, n *Node, kind string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	add := kind == DiffAdded
	count := func(a, r *int) {
		if add {
			*a++
		} else {
			*r++
		}
	}
	switch n.Type {
	case NodeDir:
		count(&d.st.DirsAdded, &d.st.DirsRemoved)
	case NodeFile:
		count(&d.st.FilesAdded, &d.st.FilesRemoved)
		if add {
			d.st.BytesAdded += int64(n.Size)
		} else {
			d.st.BytesRemoved += int64(n.Size)
		}
	default:
		count(&d.st.OthersAdded, &d.st.OthersRemoved)
	}
	c := DiffChange{Path: p, Kind: kind}
	if add {
		c.New = n
	} else {
		c.Old = n
	}
	if err := d.fn(c); err != nil {
		return err
	}
	if n.Type != NodeDir {
		return nil
	}
	return d.children(ctx, p, n, kind)
}

// children reports everything below directory n as added or removed.
func (d *differ) children(ctx context.Context, p string, n *Node, kind string) error {
	t, err := d.r.LoadTree(ctx, *n.Subtree)
	if err != nil {
		return err
	}
	for i := range t.Nodes {
		if err := d.whole(ctx, path.Join(p, t.Nodes[i].Name), &t.Nodes[i], kind); err != nil {
			return err
		}
	}
	return nil
}

// contentChanged reports whether two entries of the same type (not
// directories) hold different content: a file's blob list, size or
// database page map; a symlink's target; a device's number.
func contentChanged(o, n *Node) bool {
	switch o.Type {
	case NodeFile:
		if o.Size != n.Size || !slices.Equal(o.Content, n.Content) || (o.Database == nil) != (n.Database == nil) {
			return true
		}
		return o.Database != nil && o.Database.PageMap != n.Database.PageMap
	case NodeSymlink:
		return o.LinkTarget != n.LinkTarget
	case NodeDevice, NodeCharDevice:
		return o.Rdev != n.Rdev
	}
	return false
}

// metadataChanged reports whether the metadata a restore sets differs:
// mode, owner, mtime, extended attributes. Access and change times,
// inode, device and link count are not compared: they change without
// anyone changing the file.
func metadataChanged(o, n *Node) bool {
	return o.Mode != n.Mode || o.UID != n.UID || o.GID != n.GID || o.User != n.User || o.Group != n.Group ||
		!o.ModTime.Equal(n.ModTime) || !xattrsEqual(o.Xattrs, n.Xattrs)
}

func xattrsEqual(a, b []Xattr) bool {
	return slices.EqualFunc(a, b, func(x, y Xattr) bool { return x.Name == y.Name && bytes.Equal(x.Value, y.Value) })
}
