// Package source reads what a backup saves: entries of the file system, their
// metadata and their contents. It knows nothing of the repository format;
// the backup pipeline in package repo turns what it returns into trees and
// blobs. Later additions belong here too: a live SQLite database streamed as
// a consistent page image, stdin, a command's stdout, freeze/thaw hooks.
//
// # Files
//
// Lstat describes one entry without following a final symlink: type and Go
// mode bits, owner (ids and cached names), nanosecond times, inode, device
// numbers, link count, the raw bytes of a symlink target and the extended
// attributes. ReadDirNames lists a directory in bytewise order, the order
// trees are stored in. OpenFile opens a regular file for reading without
// changing its atime and refuses anything that is not a regular file any
// more, so a file swapped for a FIFO or a symlink between the walk and the
// read neither blocks the backup nor leads it outside the tree. SetXattrs is
// the restore side of the attributes Lstat reads.
//
// Excluder compiles the exclude patterns once and answers per entry. It
// treats a path as excluded when the path or one of its ancestors matches,
// so a backup target named below an excluded directory is excluded too.
//
// # Caveats
//
//   - Linux only (O_NOATIME, the l*xattr calls).
//   - Names and link targets are Go strings holding the raw bytes; they need
//     not be valid UTF-8 and may contain newlines.
//   - Extended attributes the caller may not read (trusted.*, or security.*
//     without privilege) or that the file system does not support are
//     skipped without an error, so a backup as an ordinary user records
//     fewer attributes than one as root.
//   - User and group names are looked up once per id per process; a rename
//     in /etc/passwd during a long run is not noticed.
//   - Reading a symlink's target may update the link's atime (the kernel
//     has no O_NOATIME for readlink); Lstat reports the atime from before.
//   - Nothing here is atomic with respect to concurrent writers: an entry
//     may change between Lstat, OpenFile and the read. Callers compare what
//     they saw before and after if they care.
package source
