package repo

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"repo/backend"
	"repo/chunk"
	"repo/repo/crypto"
)

// An encrypted repository has one master key, made by init and never
// changed, and one or more key files in keys/, each wrapping that master
// key with its own password (docs/format.md, "Key files"). So adding a
// password, removing one or changing one writes or removes key files and
// nothing else: no other object is re-encrypted.
//
// Key files are independent of the data, but two removals must not race:
// process A (opened with key 1) removing key 2 while process B (opened
// with key 2) removes key 1 would leave none. RemoveKey and
// ChangePassword are therefore meant to run under the exclusive lock;
// AddKey needs no more than a shared one.

// Errors of the key operations.
var (
	// ErrNotEncrypted: a key operation on an unencrypted repository, which
	// has no key files (adding one would make it unopenable).
	ErrNotEncrypted = errors.New("the repository is not encrypted: it has no keys")
	// ErrKeyNotFound: no key file matches the id or prefix given.
	ErrKeyNotFound = errors.New("key not found")
	// ErrKeyInUse: RemoveKey was asked to remove the key this repository
	// was opened with.
	ErrKeyInUse = errors.New("cannot remove the key in use by this process: open the repository with another key's password to remove it")
	// ErrLastKey: RemoveKey was asked to remove the only key file.
	ErrLastKey = errors.New("cannot remove the only key: the repository would become unreadable")
)

// KeyInfo describes one key file. Its labels are not authenticated: anyone
// with write access to keys/ can change them.
type KeyInfo struct {
	// ID is the key file's name: the BLAKE3 of its bytes, 64 hex digits.
	ID string `json:"id"`
	// Current marks the key file this repository was opened with.
	Current  bool             `json:"current"`
	Created  time.Time        `json:"created"`
	Host     string           `json:"host,omitempty"`
	Username string           `json:"username,omitempty"`
	KDF      crypto.KDFParams `json:"kdf_params"`
	// Err says why the key file could not be loaded or parsed; the other
	// fields except ID and Current are then zero.
	Err error `json:"-"`
}

// ShortID is the first eight hex digits of the key's id, as listings show
// it.
func (k KeyInfo) ShortID() string { return shortKeyID(k.ID) }

func shortKeyID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// KeyOptions describe a new key file.
type KeyOptions struct {
	// Password wraps the master key; it must not be empty.
	Password string
	// KDF parameters; zero means crypto.DefaultKDF.
	KDF crypto.KDFParams
	// Host and Username label the key; "" takes them from this machine and
	// process.
	Host, Username string
}

// keyNames lists keys/.
func (r *Repository) keyNames(ctx context.Context) ([]string, error) {
	var names []string
	if err := r.be.List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return names, nil
}

// loadKeyFile loads and parses key file name, and checks that its bytes
// hash to its name.
func (r *Repository) loadKeyFile(ctx context.Context, name string) (*crypto.KeyFile, error) {
	h := backend.Handle{Type: backend.KeyFile, Name: name}
	buf, err := backend.LoadAll(ctx, r.be, h, nil)
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	if got := chunk.Hash(buf).String(); got != name {
		return nil, fmt.Errorf("load %v: content hashes to %s: the file is damaged", h, shortKeyID(got))
	}
	kf, err := crypto.ParseKeyFile(buf)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", shortKeyID(name), err)
	}
	return kf, nil
}

// Keys lists the key files, oldest first. A key file that cannot be read
// is listed with Err set. It does not derive any password's key, so it is
// cheap. An unencrypted repository has none.
func (r *Repository) Keys(ctx context.Context) ([]KeyInfo, error) {
	names, err := r.keyNames(ctx)
	if err != nil {
		return nil, err
	}
	current := r.KeyID()
	out := make([]KeyInfo, 0, len(names))
	for _, name := range names {
		ki := KeyInfo{ID: name, Current: name == current}
		kf, err := r.loadKeyFile(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			ki.Err = err
		} else {
			ki.Created, ki.Host, ki.Username, ki.KDF = kf.Created, kf.Host, kf.Username, kf.Params
		}
		out = append(out, ki)
	}
	slices.SortFunc(out, func(a, b KeyInfo) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// FindKey resolves a key id or a unique prefix of one to the key file's
// name: ErrKeyNotFound when none matches, an error when several do.
func (r *Repository) FindKey(ctx context.Context, ref string) (string, error) {
	ref = strings.ToLower(ref)
	names, err := r.keyNames(ctx)
	if err != nil {
		return "", err
	}
	var match []string
	for _, name := range names {
		if strings.HasPrefix(name, ref) {
			match = append(match, name)
		}
	}
	switch {
	case ref == "" || len(match) == 0:
		return "", fmt.Errorf("%s: %w", ref, ErrKeyNotFound)
	case len(match) > 1:
		return "", fmt.Errorf("key prefix %q is ambiguous: %d keys match", ref, len(match))
	}
	return match[0], nil
}

// AddKey stores a new key file wrapping the master key with opts.Password
// and returns its id. The file is read back and opened before AddKey
// returns, so a key it reports works. Nothing else is written.
func (r *Repository) AddKey(ctx context.Context, opts KeyOptions) (string, error) {
	if r.key == nil {
		return "", ErrNotEncrypted
	}
	if opts.Password == "" {
		return "", errors.New("add key: empty password")
	}
	name, err := addKey(ctx, r.be, r.key, opts.Password, opts.KDF, opts.Host, opts.Username)
	if err != nil {
		return "", err
	}
	if err := r.verifyKey(ctx, name, opts.Password); err != nil {
		return name, fmt.Errorf("new key %s: %w", shortKeyID(name), err)
	}
	return name, nil
}

// verifyKey checks that key file name, as stored, opens with password to
// this repository's master key.
func (r *Repository) verifyKey(ctx context.Context, name, password string) error {
	kf, err := r.loadKeyFile(ctx, name)
	if err != nil {
		return err
	}
	k, err := kf.Open(password)
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	defer clear(k.Encrypt[:])
	defer clear(k.BlobID[:])
	if subtle.ConstantTimeCompare(k.Encrypt[:], r.key.Encrypt[:]) != 1 || subtle.ConstantTimeCompare(k.BlobID[:], r.key.BlobID[:]) != 1 {
		return errors.New("read back: it holds another master key")
	}
	return nil
}

// RemoveKey removes key file id (a full name; see FindKey). It refuses to
// remove the only key file (ErrLastKey) and the one this repository was
// opened with (ErrKeyInUse), so at least that one remains. The caller
// holds the exclusive lock.
func (r *Repository) RemoveKey(ctx context.Context, id string) error {
	if r.key == nil {
		return ErrNotEncrypted
	}
	names, err := r.keyNames(ctx)
	if err != nil {
		return err
	}
	switch {
	case !slices.Contains(names, id):
		return fmt.Errorf("%s: %w", shortKeyID(id), ErrKeyNotFound)
	case len(names) == 1:
		return ErrLastKey
	case id == r.KeyID():
		return fmt.Errorf("%s: %w", shortKeyID(id), ErrKeyInUse)
	}
	return r.removeKeyFile(ctx, id)
}

// removeKeyFile removes key file id, after checking the lock.
func (r *Repository) removeKeyFile(ctx context.Context, id string) error {
	if err := r.checkLock(ctx); err != nil {
		return err
	}
	h := backend.Handle{Type: backend.KeyFile, Name: id}
	if err := r.be.Remove(ctx, h); err != nil && !errors.Is(err, backend.ErrNotExist) {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	return nil
}

// PasswordChange is what ChangePassword did.
type PasswordChange struct {
	// Added is the new key file, Removed the one the repository was opened
	// with ("" when it could not be removed).
	Added, Removed string
}

// ChangePassword replaces the key file this repository was opened with by
// one wrapping the master key with opts.Password: it adds the new key
// file (verified, see AddKey) and only then removes the old one, so a
// crash or error in between leaves both, each opening the repository with
// its own password, never none. From then on KeyID is the new key. The
// caller holds the exclusive lock.
//
// When the removal fails, the error says so and the result still names
// the added key.
func (r *Repository) ChangePassword(ctx context.Context, opts KeyOptions) (PasswordChange, error) {
	old := r.KeyID()
	if r.key == nil || old == "" {
		return PasswordChange{}, ErrNotEncrypted
	}
	added, err := r.AddKey(ctx, opts)
	if err != nil {
		if added != "" {
			// Saved but not verified: leave the old key alone.
			return PasswordChange{Added: added}, fmt.Errorf("%w (the old key %s is kept)", err, shortKeyID(old))
		}
		return PasswordChange{}, err
	}
	r.keyMu.Lock()
	r.keyName = added
	r.keyMu.Unlock()
	res := PasswordChange{Added: added}
	if err := r.removeKeyFile(ctx, old); err != nil {
		return res, fmt.Errorf("new key %s saved, but the old key %s was not removed, so both passwords open the repository: %w",
			shortKeyID(added), shortKeyID(old), err)
	}
	res.Removed = old
	return res, nil
}
