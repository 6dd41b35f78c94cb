package merkle_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/hyperfeed/hyperfeed/merkle"
	"github.com/stretchr/testify/require"
)

// The vectors were produced by the npm hypercore package in compat mode; see
// testdata/README in ../shared/vectors. Replaying them byte for byte is what
// makes Hypercore a test oracle for this package.
type vectorFile struct {
	Prefix string       `json:"prefix"`
	Cases  []vectorCase `json:"cases"`
}

type vectorCase struct {
	Name         string       `json:"name"`
	Seed         string       `json:"seed"`
	PublicKey    string       `json:"publicKey"`
	Key          string       `json:"key"`
	DiscoveryKey string       `json:"discoveryKey"`
	Steps        []vectorStep `json:"steps"`
}

type vectorStep struct {
	Op     string `json:"op"`
	Blocks []struct {
		Size int    `json:"size"`
		Fill string `json:"fill"`
	} `json:"blocks"`
	LeafHashes []string `json:"leafHashes"`
	Length     uint64   `json:"length"`
	ByteLength uint64   `json:"byteLength"`
	Fork       uint64   `json:"fork"`
	Roots      []struct {
		Index uint64 `json:"index"`
		Size  uint64 `json:"size"`
		Hash  string `json:"hash"`
	} `json:"roots"`
	TreeHash  string `json:"treeHash"`
	Signable  string `json:"signable"`
	Signature string `json:"signature"`
}

func loadVectors(t testing.TB) vectorFile {
	t.Helper()
	raw, err := os.ReadFile("testdata/hypercore-compat.json")
	require.NoError(t, err)
	var v vectorFile
	require.NoError(t, json.Unmarshal(raw, &v))
	require.NotEmpty(t, v.Cases)
	return v
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}

func unhex32(t testing.TB, s string) (out [32]byte) {
	t.Helper()
	b := unhex(t, s)
	require.Len(t, b, 32)
	copy(out[:], b)
	return out
}

// vectorBlock is the ASCII string fill repeated and cut to size bytes.
func vectorBlock(size int, fill string) []byte {
	if size == 0 {
		return []byte{}
	}
	return []byte(strings.Repeat(fill, size/len(fill)+1)[:size])
}

func TestHypercoreVectors(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.Cases {
		t.Run(c.Name, func(t *testing.T) {
			sk := ed25519.NewKeyFromSeed(unhex(t, c.Seed))
			var key [32]byte
			copy(key[:], sk.Public().(ed25519.PublicKey))
			require.Equal(t, c.PublicKey, hex.EncodeToString(key[:]))
			require.Equal(t, c.Key, hex.EncodeToString(key[:]), "compat mode: the key is the public key")
			dk := merkle.DiscoveryKey(key)
			require.Equal(t, c.DiscoveryKey, hex.EncodeToString(dk[:]))

			nodes := map[uint64]merkle.Node{}
			get := func(i uint64) (merkle.Node, bool) { n, ok := nodes[i]; return n, ok }
			var roots []merkle.Node
			var length, fork uint64
			for si, st := range c.Steps {
				switch st.Op {
				case "append":
					require.Len(t, st.LeafHashes, len(st.Blocks))
					for bi, b := range st.Blocks {
						data := vectorBlock(b.Size, b.Fill)
						require.Len(t, data, b.Size)
						leaf := merkle.Leaf(length, data)
						require.Equal(t, st.LeafHashes[bi], hex.EncodeToString(leaf.Hash[:]), "step %d block %d leaf", si, bi)
						var created []merkle.Node
						roots, created = merkle.AppendLeaf(roots, leaf, nil)
						for _, n := range created {
							nodes[n.Index] = n
						}
						length++
					}
				case "truncate":
					require.Less(t, st.Length, length)
					length = st.Length
					fork++
					var err error
					roots, err = merkle.RootsFrom(length, get)
					require.NoError(t, err)
				default:
					t.Fatalf("unknown op %q", st.Op)
				}
				require.Equal(t, st.Length, length, "step %d length", si)
				require.Equal(t, st.Fork, fork, "step %d fork", si)
				require.Len(t, roots, len(st.Roots), "step %d roots", si)
				var byteLen uint64
				for ri, r := range st.Roots {
					require.Equal(t, r.Index, roots[ri].Index, "step %d root %d index", si, ri)
					require.Equal(t, r.Size, roots[ri].Size, "step %d root %d size", si, ri)
					require.Equal(t, r.Hash, hex.EncodeToString(roots[ri].Hash[:]), "step %d root %d hash", si, ri)
					byteLen += r.Size
				}
				require.Equal(t, st.ByteLength, byteLen, "step %d byte length", si)
				idx := merkle.Roots(length)
				for ri := range roots {
					require.Equal(t, idx[ri], roots[ri].Index)
				}
				th := merkle.TreeHash(roots)
				require.Equal(t, st.TreeHash, hex.EncodeToString(th[:]), "step %d tree hash", si)
				sig := merkle.Signable(th, length, fork)
				require.Equal(t, st.Signable, hex.EncodeToString(sig[:]), "step %d signable", si)
				require.Equal(t, st.Signature, hex.EncodeToString(merkle.Sign(sk, th, length, fork)), "step %d signature", si)
				require.True(t, merkle.VerifySignature(key, th, length, fork, unhex(t, st.Signature)))
			}
		})
	}
}
