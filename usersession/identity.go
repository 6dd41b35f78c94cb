package usersession

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// Identity is a user's key pair. Its secret never leaves the process except
// through Export (and SaveIdentity), and fmt prints only its public key.
type Identity struct {
	sk  ed25519.PrivateKey
	key IdentityKey
}

// GenerateIdentity returns a fresh random identity.
func GenerateIdentity() (*Identity, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("usersession: generate identity: %w", err)
	}
	return identityFromSeed(seed), nil
}

func identityFromSeed(seed []byte) *Identity {
	sk := ed25519.NewKeyFromSeed(seed)
	id := &Identity{sk: sk}
	copy(id.key[:], sk[ed25519.SeedSize:])
	return id
}

// Key returns the identity's public key.
func (id *Identity) Key() IdentityKey { return id.key }

// String names the identity by its public key, so that printing one by
// mistake shows nothing secret.
func (id *Identity) String() string { return "identity " + id.key.String() }

// GoString is String, for %#v.
func (id *Identity) GoString() string { return id.String() }

// check catches a nil or zero Identity, which would make ed25519 panic.
func (id *Identity) check() error {
	if id == nil || len(id.sk) != ed25519.PrivateKeySize {
		return errors.New("no identity: use GenerateIdentity or LoadIdentity")
	}
	return nil
}

func (id *Identity) sign(msg []byte) (sig [64]byte) {
	copy(sig[:], ed25519.Sign(id.sk, msg))
	return sig
}

// The export format is text, so that it survives being pasted:
//
//	hyperfeed-identity-v1\n
//	base64(body)\n
//
// and the body is one of
//
//	0x00 ‖ identity key (32) ‖ seed (32)
//	0x01 ‖ identity key (32) ‖ u32le argon2id time ‖ u32le memory (KiB) ‖
//	       u8 threads ‖ salt (16) ‖ nonce (24) ‖ XChaCha20-Poly1305(seed) (48)
//
// The public key stays readable so that SaveIdentity can tell, without the
// passphrase, whether a file holds the same identity.
const (
	identityHeader   = "hyperfeed-identity-v1"
	identityAADLabel = "hyperfeed/usersession/identity/v1\x00"
	maxIdentityFile  = 4096

	kindPlain  = 0
	kindSealed = 1

	saltSize       = 16
	plainBodySize  = 1 + 32 + ed25519.SeedSize
	sealedHeadSize = 1 + 32 + 4 + 4 + 1 + saltSize
	sealedBodySize = sealedHeadSize + chacha20poly1305.NonceSizeX + ed25519.SeedSize + chacha20poly1305.Overhead
)

// kdfParams are argon2id's cost parameters.
type kdfParams struct {
	time    uint32
	memory  uint32 // KiB
	threads uint8
}

// defaultKDF is RFC 9106's second recommended setting: 64 MiB, 3 passes,
// 4 lanes, about a tenth of a second on a laptop. The parameters travel in
// the export, so they can be raised later without breaking old files.
var defaultKDF = kdfParams{time: 3, memory: 64 << 10, threads: 4}

// importLimits bounds the parameters an import accepts, so that a hostile
// file cannot make us allocate gigabytes or spin for minutes.
var importLimits = kdfParams{time: 16, memory: 1 << 20, threads: 64}

func (p kdfParams) check(limits kdfParams) error {
	switch {
	case p.time < 1 || p.time > limits.time:
		return fmt.Errorf("argon2id time %d, want 1 to %d", p.time, limits.time)
	case p.threads < 1 || p.threads > limits.threads:
		return fmt.Errorf("argon2id threads %d, want 1 to %d", p.threads, limits.threads)
	case p.memory < 8*uint32(p.threads) || p.memory > limits.memory:
		return fmt.Errorf("argon2id memory %d KiB, want %d to %d", p.memory, 8*uint32(p.threads), limits.memory)
	}
	return nil
}

func (p kdfParams) key(passphrase, salt []byte) []byte {
	return argon2.IDKey(passphrase, salt, p.time, p.memory, p.threads, chacha20poly1305.KeySize)
}

// Export returns the identity in the export format. With a non-empty
// passphrase the seed is encrypted with XChaCha20-Poly1305 under a key that
// argon2id derives from the passphrase and a random salt; with an empty one
// it is stored in the clear, and the file's permissions are all that
// protect it.
func (id *Identity) Export(passphrase []byte) ([]byte, error) {
	return id.export(passphrase, defaultKDF, rand.Reader)
}

func (id *Identity) export(passphrase []byte, p kdfParams, random io.Reader) ([]byte, error) {
	if err := id.check(); err != nil {
		return nil, fmt.Errorf("usersession: export identity: %w", err)
	}
	seed := id.sk.Seed()
	defer clear(seed)
	var body []byte
	if len(passphrase) == 0 {
		body = make([]byte, 0, plainBodySize)
		body = append(body, kindPlain)
		body = append(body, id.key[:]...)
		body = append(body, seed...)
	} else {
		body = make([]byte, sealedHeadSize, sealedBodySize)
		body[0] = kindSealed
		copy(body[1:], id.key[:])
		binary.LittleEndian.PutUint32(body[33:], p.time)
		binary.LittleEndian.PutUint32(body[37:], p.memory)
		body[41] = p.threads
		salt := body[42:sealedHeadSize]
		nonce := make([]byte, chacha20poly1305.NonceSizeX)
		if _, err := io.ReadFull(random, salt); err != nil {
			return nil, fmt.Errorf("usersession: export identity: %w", err)
		}
		if _, err := io.ReadFull(random, nonce); err != nil {
			return nil, fmt.Errorf("usersession: export identity: %w", err)
		}
		key := p.key(passphrase, salt)
		defer clear(key)
		aead, err := chacha20poly1305.NewX(key)
		if err != nil {
			return nil, fmt.Errorf("usersession: export identity: %w", err)
		}
		aad := append([]byte(identityAADLabel), body...)
		body = append(body, nonce...)
		body = aead.Seal(body, nonce, seed, aad)
	}
	defer clear(body)
	out := make([]byte, 0, len(identityHeader)+2+base64.StdEncoding.EncodedLen(len(body)))
	out = append(out, identityHeader+"\n"...)
	out = base64.StdEncoding.AppendEncode(out, body)
	return append(out, '\n'), nil
}

// ImportIdentity reads an identity in the export format. An encrypted one
// needs its passphrase: a wrong or empty one gives ErrPassphrase. A
// passphrase given for an unencrypted identity is not needed and is
// ignored. Anything malformed gives ErrCorruptIdentity.
func ImportIdentity(data, passphrase []byte) (*Identity, error) {
	id, err := importIdentity(data, passphrase, importLimits)
	if err != nil {
		return nil, fmt.Errorf("usersession: import identity: %w", err)
	}
	return id, nil
}

func importIdentity(data, passphrase []byte, limits kdfParams) (*Identity, error) {
	body, err := decodeIdentity(data)
	if err != nil {
		return nil, err
	}
	defer clear(body)
	var stored IdentityKey
	copy(stored[:], body[1:33])
	var seed []byte
	switch body[0] {
	case kindPlain:
		seed = body[33:]
	case kindSealed:
		p := kdfParams{
			time:    binary.LittleEndian.Uint32(body[33:]),
			memory:  binary.LittleEndian.Uint32(body[37:]),
			threads: body[41],
		}
		if err := p.check(limits); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorruptIdentity, err)
		}
		if len(passphrase) == 0 {
			return nil, fmt.Errorf("%w: identity %s is encrypted", ErrPassphrase, stored)
		}
		key := p.key(passphrase, body[42:sealedHeadSize])
		defer clear(key)
		aead, err := chacha20poly1305.NewX(key)
		if err != nil {
			return nil, err
		}
		nonce := body[sealedHeadSize : sealedHeadSize+chacha20poly1305.NonceSizeX]
		aad := append([]byte(identityAADLabel), body[:sealedHeadSize]...)
		seed, err = aead.Open(nil, nonce, body[sealedHeadSize+chacha20poly1305.NonceSizeX:], aad)
		if err != nil {
			return nil, fmt.Errorf("%w for identity %s", ErrPassphrase, stored)
		}
		defer clear(seed)
	}
	id := identityFromSeed(seed)
	if id.key != stored {
		return nil, fmt.Errorf("%w: seed is for %s, file says %s", ErrCorruptIdentity, id.key, stored)
	}
	return id, nil
}

// decodeIdentity checks the export format's framing and returns the body,
// whose kind byte and length are known to agree.
func decodeIdentity(data []byte) ([]byte, error) {
	if len(data) > maxIdentityFile {
		return nil, fmt.Errorf("%w: over %d bytes", ErrCorruptIdentity, maxIdentityFile)
	}
	first, rest, _ := bytes.Cut(data, []byte("\n"))
	if string(bytes.TrimSuffix(first, []byte("\r"))) != identityHeader {
		return nil, fmt.Errorf("%w: does not start with %q", ErrCorruptIdentity, identityHeader)
	}
	// Line breaks and spaces that an editor or a mail client added are
	// dropped; what is left must be strict base64.
	text := bytes.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, rest)
	defer clear(text)
	body := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Strict().Decode(body, text)
	if err != nil {
		clear(body)
		return nil, fmt.Errorf("%w: %v", ErrCorruptIdentity, err)
	}
	body = body[:n]
	want := 0
	if len(body) > 0 {
		switch body[0] {
		case kindPlain:
			want = plainBodySize
		case kindSealed:
			want = sealedBodySize
		default:
			clear(body)
			return nil, fmt.Errorf("%w: unknown kind %d", ErrCorruptIdentity, body[0])
		}
	}
	if len(body) != want || want == 0 {
		clear(body)
		return nil, fmt.Errorf("%w: body is %d bytes, want %d", ErrCorruptIdentity, len(body), want)
	}
	return body, nil
}

// SaveIdentity writes id to path in the export format (see Export), with
// mode 0600, atomically: a crash leaves either the old file or the new one
// whole. It replaces a file only if that file holds the same identity (as
// to change the passphrase); over any other file, including one that is
// not an identity, it fails with ErrIdentityExists, because an identity
// lost is an alias lost for good. To replace an identity, remove the file
// first.
func SaveIdentity(path string, id *Identity, passphrase []byte) error {
	return saveIdentity(path, id, passphrase, defaultKDF)
}

func saveIdentity(path string, id *Identity, passphrase []byte, p kdfParams) error {
	data, err := id.export(passphrase, p, rand.Reader)
	if err != nil {
		return err
	}
	defer clear(data)
	if err := writeIdentity(path, id.key, data); err != nil {
		return fmt.Errorf("usersession: save identity %s: %w", path, err)
	}
	return nil
}

func writeIdentity(path string, key IdentityKey, data []byte) (err error) {
	old, err := readIdentityFile(path)
	defer clear(old)
	exists := err == nil
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		body, err := decodeIdentity(old)
		if err != nil {
			return fmt.Errorf("%w: the file there is not an identity (%v)", ErrIdentityExists, err)
		}
		other := IdentityKey(body[1:33])
		clear(body)
		if other != key {
			return fmt.Errorf("%w: the file there holds identity %s", ErrIdentityExists, other)
		}
	}

	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes files 0600 already; say so rather than rely on it.
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if err = errors.Join(err, tmp.Close()); err != nil {
		return err
	}
	if exists {
		err = os.Rename(tmp.Name(), path)
	} else {
		// A link cannot replace a file, so an identity that another
		// process saved since ReadFile above is kept.
		err = os.Link(tmp.Name(), path)
		switch {
		case errors.Is(err, fs.ErrExist):
			return fmt.Errorf("%w: a file appeared there while saving", ErrIdentityExists)
		case err != nil:
			// Some file systems have no hard links.
			err = os.Rename(tmp.Name(), path)
		default:
			os.Remove(tmp.Name())
		}
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for syncing there
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// LoadIdentity reads an identity that SaveIdentity wrote. It refuses, with
// ErrInsecureIdentity, a file that its group or others may read or write
// (mode stricter than 0600 is fine): an unencrypted seed there is as good as
// published, and an encrypted one is open to offline guessing. On Windows,
// where Go does not report ACLs as mode bits, the mode is not checked.
func LoadIdentity(path string, passphrase []byte) (*Identity, error) {
	id, err := loadIdentity(path, passphrase, importLimits)
	if err != nil {
		return nil, fmt.Errorf("usersession: load identity %s: %w", path, err)
	}
	return id, nil
}

func loadIdentity(path string, passphrase []byte, limits kdfParams) (*Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Stat the file opened, not the path, so that what is checked is what
	// is read.
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file", ErrCorruptIdentity)
	}
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: mode %04o, want 0600 or stricter", ErrInsecureIdentity, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxIdentityFile+1))
	if err != nil {
		return nil, err
	}
	defer clear(data)
	return importIdentity(data, passphrase, limits)
}

// readIdentityFile reads path, or as much of it as tells that it is too
// large to be an identity.
func readIdentityFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxIdentityFile+1))
}
