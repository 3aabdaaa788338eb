// Package sftp stores a repository on an SFTP server, reached over SSH
// (golang.org/x/crypto/ssh and github.com/pkg/sftp) or through a command
// that speaks SFTP on its stdin and stdout (Options.Command, like
// restic's -o sftp.command). The layout is the one backend/local uses:
//
//	config
//	keys/<name>  index/<name>  snapshots/<name>  locks/<name>
//	quarantine/<name>
//	data/<first two characters of name>/<name>
//
// Locations are "sftp:[user@]host[:port]:path" or
// "sftp://[user@]host[:port]/path"; see ParseLocation. A relative path
// starts at the login directory.
//
// # Trust and authentication
//
// Host keys are checked against ~/.ssh/known_hosts (and
// /etc/ssh/ssh_known_hosts), or Options.KnownHostsFile. An unknown host,
// and loudly a changed key, is a permanent *HostKeyError that names the
// offered fingerprint and how to accept it; Options.HostKeyFingerprint
// accepts exactly one key. Nothing is ever written to known_hosts. Keys
// come from the ssh agent and ~/.ssh/id_ed25519, id_ecdsa and id_rsa, or
// only from Options.IdentityFiles. Encrypted key files cannot be used
// (there is nobody to ask for the passphrase): they are skipped, and the
// authentication error says so; load them into the agent instead. Only
// public key authentication is offered.
//
// # Saving
//
// Save writes a temporary file ".tmp-<random>" in the object's directory,
// makes it read-only, fsyncs it (fsync@openssh.com, where offered),
// closes it and publishes it with hardlink@openssh.com, which fails when
// the object exists: Save never replaces, and Properties.ExclusiveCreate
// is true. A server without the hardlink extension gets a rename instead
// (posix-rename@openssh.com where offered, which replaces an existing
// object atomically; plain SFTP rename, which keeps it), and
// ExclusiveCreate is false. SFTP cannot fsync a directory: when Save
// returns, the content is on the server's disk, but a crash of the server
// in the next seconds (before its file system commits the directory) may
// lose the new name. The object is then missing, never partial.
//
// A Save that fails removes its temporary file. One whose connection
// died, or was cancelled while the server hung, may leave it behind;
// List never shows it. RemoveTemp (backend.TempCleaner, which prune
// calls) removes such files once they have not been written to for the
// given age, comparing the server's modification times with the local
// clock.
//
// # Connections and cancellation
//
// Each of Options.Connections SFTP sessions (default 4) has its own SSH
// connection, opened when first needed and reopened after it broke:
// OpenSSH serves a connection in one process, so separate connections
// spread the encryption over more CPUs than channels of one connection
// do. An operation holds one session from start to end; Load holds it
// while its fn runs, so fn must not call the backend when Connections
// is 1 (List does not hold a session while calling its fn).
//
// pkg/sftp requests do not watch a context, so an operation whose context
// is cancelled and that has not finished shortly after has its session's
// connection (or command) closed under it; it then returns the context's
// error at once. A keepalive on every SSH connection closes it when the
// server stops answering, so that an operation on a vanished server
// fails instead of hanging until TCP gives up.
//
// # Errors
//
// A missing object is backend.ErrNotExist; denied access, unsupported
// operations, host key and authentication failures are permanent; a lost
// connection is transient (a retry reconnects). OpenSSH reports most
// other failures, a full disk among them, as a generic failure, which is
// treated as transient.
package sftp
