package usersession

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// cheapKDF keeps the tests fast; the format is the same at any cost.
var cheapKDF = kdfParams{time: 1, memory: 64, threads: 1}

func testIdentity(n byte) *Identity {
	return identityFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
}

func TestGenerateIdentity(t *testing.T) {
	a, err := GenerateIdentity()
	require.NoError(t, err)
	b, err := GenerateIdentity()
	require.NoError(t, err)
	require.NotEqual(t, a.Key(), b.Key())
	require.False(t, a.Key().IsZero())

	msg := []byte("message")
	sig := a.sign(msg)
	k := a.Key()
	require.True(t, k.verify(msg, &sig))
	require.False(t, b.Key().verify(msg, &sig))
}

func TestNoIdentityIsAnErrorNotAPanic(t *testing.T) {
	for _, id := range []*Identity{nil, {}} {
		_, err := id.Export(nil)
		require.Error(t, err)
		_, err = NewCertificate(id, Certificate{Device: DeviceKey{1}, Peer: [32]byte{1}, Alias: "bob"})
		require.Error(t, err)
		_, err = NewUnregister(id, "bob", time.UnixMilli(0))
		require.Error(t, err)
		require.Error(t, SaveIdentity(filepath.Join(t.TempDir(), "id"), id, nil))
	}
}

func TestIdentityPrintsNoSecret(t *testing.T) {
	id := testIdentity(1)
	seedHex := fmt.Sprintf("%x", id.sk.Seed())
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		out := fmt.Sprintf(format, id)
		require.NotContains(t, strings.ToLower(out), seedHex[:16], format)
	}
	require.Equal(t, "identity "+id.Key().String(), id.String())
}

func TestExportImportPlain(t *testing.T) {
	id := testIdentity(2)
	data, err := id.Export(nil)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(data), "hyperfeed-identity-v1\n"))

	got, err := ImportIdentity(data, nil)
	require.NoError(t, err)
	require.Equal(t, id.Key(), got.Key())
	require.Equal(t, id.sk, got.sk)

	// A passphrase is not needed for an unencrypted identity, and harmless.
	got, err = ImportIdentity(data, []byte("anything"))
	require.NoError(t, err)
	require.Equal(t, id.Key(), got.Key())
}

func TestExportImportEncrypted(t *testing.T) {
	id := testIdentity(3)
	pass := []byte("correct horse battery staple")
	data, err := id.export(pass, cheapKDF, rand.Reader)
	require.NoError(t, err)
	require.NotContains(t, string(data), base64.StdEncoding.EncodeToString(id.sk.Seed())[:20])

	got, err := ImportIdentity(data, pass)
	require.NoError(t, err)
	require.Equal(t, id.sk, got.sk)

	_, err = ImportIdentity(data, []byte("wrong"))
	require.ErrorIs(t, err, ErrPassphrase)
	require.NotErrorIs(t, err, ErrCorruptIdentity)
	_, err = ImportIdentity(data, nil)
	require.ErrorIs(t, err, ErrPassphrase)
	require.ErrorContains(t, err, "encrypted")
	_, err = ImportIdentity(data, []byte{})
	require.ErrorIs(t, err, ErrPassphrase)
}

func TestExportDefaultParameters(t *testing.T) {
	// The one test that pays for the real cost (64 MiB, 3 passes).
	id := testIdentity(4)
	data, err := id.Export([]byte("pw"))
	require.NoError(t, err)
	body, err := decodeIdentity(data)
	require.NoError(t, err)
	require.Equal(t, byte(kindSealed), body[0])
	require.Equal(t, defaultKDF.time, binary.LittleEndian.Uint32(body[33:]))
	require.Equal(t, defaultKDF.memory, binary.LittleEndian.Uint32(body[37:]))
	require.Equal(t, defaultKDF.threads, body[41])
	got, err := ImportIdentity(data, []byte("pw"))
	require.NoError(t, err)
	require.Equal(t, id.Key(), got.Key())

	// Two exports of one identity differ: fresh salt and nonce.
	again, err := id.export([]byte("pw"), cheapKDF, rand.Reader)
	require.NoError(t, err)
	require.NotEqual(t, data, again)
}

func TestImportToleratesWhitespace(t *testing.T) {
	id := testIdentity(5)
	data, err := id.export([]byte("pw"), cheapKDF, rand.Reader)
	require.NoError(t, err)
	header, body, _ := strings.Cut(string(data), "\n")
	var wrapped strings.Builder
	wrapped.WriteString(header + "\r\n")
	for i := 0; i < len(body); i += 10 {
		wrapped.WriteString(body[i:min(i+10, len(body))] + "\r\n  ")
	}
	got, err := ImportIdentity([]byte(wrapped.String()), []byte("pw"))
	require.NoError(t, err)
	require.Equal(t, id.Key(), got.Key())
}

func TestImportCorrupt(t *testing.T) {
	id := testIdentity(6)
	plain, err := id.Export(nil)
	require.NoError(t, err)
	sealed, err := id.export([]byte("pw"), cheapKDF, rand.Reader)
	require.NoError(t, err)

	reencode := func(data []byte, edit func(body []byte) []byte) []byte {
		body, err := decodeIdentity(data)
		require.NoError(t, err)
		body = edit(bytes.Clone(body))
		return []byte(identityHeader + "\n" + base64.StdEncoding.EncodeToString(body) + "\n")
	}
	corrupt := map[string][]byte{
		"empty":            nil,
		"header only":      []byte(identityHeader + "\n"),
		"other header":     bytes.Replace(plain, []byte("v1"), []byte("v2"), 1),
		"no header":        plain[len(identityHeader)+1:],
		"not base64":       append([]byte(identityHeader+"\n"), "!!!!"...),
		"padding missing":  bytes.TrimRight(bytes.TrimSpace(plain), "="),
		"huge":             append(bytes.Clone(plain), bytes.Repeat([]byte(" "), maxIdentityFile)...),
		"unknown kind":     reencode(plain, func(b []byte) []byte { b[0] = 7; return b }),
		"plain truncated":  reencode(plain, func(b []byte) []byte { return b[:len(b)-1] }),
		"plain extended":   reencode(plain, func(b []byte) []byte { return append(b, 0) }),
		"sealed truncated": reencode(sealed, func(b []byte) []byte { return b[:len(b)-1] }),
		"key mismatch":     reencode(plain, func(b []byte) []byte { b[1] ^= 1; return b }),
		"time zero":        reencode(sealed, func(b []byte) []byte { binary.LittleEndian.PutUint32(b[33:], 0); return b }),
		"time huge":        reencode(sealed, func(b []byte) []byte { binary.LittleEndian.PutUint32(b[33:], 1<<30); return b }),
		"memory huge":      reencode(sealed, func(b []byte) []byte { binary.LittleEndian.PutUint32(b[37:], 1<<31); return b }),
		"memory tiny":      reencode(sealed, func(b []byte) []byte { binary.LittleEndian.PutUint32(b[37:], 7); return b }),
		"threads zero":     reencode(sealed, func(b []byte) []byte { b[41] = 0; return b }),
		"threads many":     reencode(sealed, func(b []byte) []byte { b[41] = 200; return b }),
	}
	for name, data := range corrupt {
		_, err := ImportIdentity(data, []byte("pw"))
		require.ErrorIs(t, err, ErrCorruptIdentity, name)
		require.NotErrorIs(t, err, ErrPassphrase, name)
	}

	// Every field of a sealed identity before the ciphertext is bound to it:
	// changing the public key, the parameters or the salt fails to open.
	for _, off := range []int{1, 20, 34, 38, 45, 60} {
		data := reencode(sealed, func(b []byte) []byte { b[off] ^= 0x01; return b })
		_, err := importIdentity(data, []byte("pw"), kdfParams{time: 1 << 10, memory: 1 << 20, threads: 255})
		require.ErrorIs(t, err, ErrPassphrase, "offset %d", off)
	}
	// So is the ciphertext, which looks the same as a wrong passphrase.
	data := reencode(sealed, func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b })
	_, err = ImportIdentity(data, []byte("pw"))
	require.ErrorIs(t, err, ErrPassphrase)
}

func TestSaveLoadIdentity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "identity")
	id := testIdentity(7)
	require.NoError(t, saveIdentity(path, id, []byte("pw"), cheapKDF))

	fi, err := os.Stat(path)
	require.NoError(t, err)
	if runtime.GOOS != "windows" {
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	}
	got, err := LoadIdentity(path, []byte("pw"))
	require.NoError(t, err)
	require.Equal(t, id.Key(), got.Key())
	_, err = LoadIdentity(path, []byte("nope"))
	require.ErrorIs(t, err, ErrPassphrase)
	require.ErrorContains(t, err, path)

	// The same identity may be saved again, say with a new passphrase.
	require.NoError(t, saveIdentity(path, id, nil, cheapKDF))
	got, err = LoadIdentity(path, nil)
	require.NoError(t, err)
	require.Equal(t, id.Key(), got.Key())

	// No temporary file is left behind.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)
}

func TestSaveIdentityRefusesToReplaceAnother(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "identity")
	first := testIdentity(8)
	require.NoError(t, saveIdentity(path, first, nil, cheapKDF))
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	err = saveIdentity(path, testIdentity(9), nil, cheapKDF)
	require.ErrorIs(t, err, ErrIdentityExists)
	require.ErrorContains(t, err, first.Key().String())
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, before, after)

	// Nor a file that is not an identity at all.
	other := filepath.Join(dir, "notes")
	require.NoError(t, os.WriteFile(other, []byte("my notes"), 0o600))
	require.ErrorIs(t, saveIdentity(other, first, nil, cheapKDF), ErrIdentityExists)
	b, err := os.ReadFile(other)
	require.NoError(t, err)
	require.Equal(t, "my notes", string(b))

	// Removing the file first is the explicit way to replace it.
	require.NoError(t, os.Remove(path))
	require.NoError(t, saveIdentity(path, testIdentity(9), nil, cheapKDF))
	got, err := LoadIdentity(path, nil)
	require.NoError(t, err)
	require.Equal(t, testIdentity(9).Key(), got.Key())

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2)
}

func TestLoadIdentityRefusesInsecureFile(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows reports no Unix permission bits")
	}
	path := filepath.Join(t.TempDir(), "identity")
	require.NoError(t, saveIdentity(path, testIdentity(10), nil, cheapKDF))
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o666, 0o602} {
		require.NoError(t, os.Chmod(path, mode))
		_, err := LoadIdentity(path, nil)
		require.ErrorIs(t, err, ErrInsecureIdentity, "%04o", mode)
		require.ErrorContains(t, err, fmt.Sprintf("%04o", mode))
	}
	for _, mode := range []os.FileMode{0o400, 0o600} {
		require.NoError(t, os.Chmod(path, mode))
		_, err := LoadIdentity(path, nil)
		require.NoError(t, err, "%04o", mode)
	}
}

func TestLoadIdentityErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadIdentity(filepath.Join(dir, "missing"), nil)
	require.ErrorIs(t, err, os.ErrNotExist)

	_, err = LoadIdentity(dir, nil)
	require.ErrorIs(t, err, ErrCorruptIdentity)

	junk := filepath.Join(dir, "junk")
	require.NoError(t, os.WriteFile(junk, bytes.Repeat([]byte("x"), 10000), 0o600))
	_, err = LoadIdentity(junk, nil)
	require.ErrorIs(t, err, ErrCorruptIdentity)
}

func FuzzImportIdentity(f *testing.F) {
	id := testIdentity(11)
	plain, err := id.Export(nil)
	require.NoError(f, err)
	sealed, err := id.export([]byte("pw"), cheapKDF, bytes.NewReader(make([]byte, 64)))
	require.NoError(f, err)
	f.Add(plain, []byte(nil))
	f.Add(sealed, []byte("pw"))
	f.Add(sealed, []byte("px"))
	f.Add([]byte(identityHeader+"\n"), []byte(nil))
	f.Add([]byte("garbage"), []byte("pw"))
	// Cheap limits, so that a mutated cost parameter cannot stall the
	// fuzzer; the parsing is the same as ImportIdentity's.
	limits := kdfParams{time: 2, memory: 256, threads: 4}
	f.Fuzz(func(t *testing.T, data, pass []byte) {
		got, err := importIdentity(data, pass, limits)
		if err != nil {
			if !errorsIsAny(err, ErrCorruptIdentity, ErrPassphrase) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		// What imports exports to something that imports as the same.
		again, err := got.export(pass, cheapKDF, bytes.NewReader(make([]byte, 64)))
		require.NoError(t, err)
		back, err := importIdentity(again, pass, limits)
		require.NoError(t, err)
		require.Equal(t, got.sk, back.sk)
	})
}
