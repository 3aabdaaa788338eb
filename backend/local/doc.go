// Package local stores a repository in a directory of the local file
// system, one file per object:
//
//	config
//	keys/<name>  index/<name>  snapshots/<name>  locks/<name>
//	quarantine/<name>
//	data/<first two characters of name>/<name>
//
// A type directory that is missing (e.g. quarantine/ in a repository
// created before that type existed) lists as empty and is made by the
// first Save into it.
//
// Save writes a temporary file whose name starts with "." in the object's
// directory, fsyncs it, makes it read-only and publishes it with a hard
// link (which fails if the object exists, so Save never replaces), then
// fsyncs the directory. A crash leaves at most a ".tmp-*" file, which List
// never shows. On file systems without hard links Save falls back to
// check-then-rename; two processes saving the same name at the same instant
// may then both succeed, the later one replacing the earlier, which is
// harmless for content-addressed objects.
//
// On Linux, packs of 1 MiB or more are written, and ranges of 1 MiB or
// more read, with O_DIRECT, bypassing the page cache (see copyDirect and
// directReader); a file system that refuses it gets the cached path.
//
// Objects are read-only files; removing one needs only write permission on
// its directory. A full disk (ENOSPC, EDQUOT) and denied access are
// permanent errors.
package local
