package usersession

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/hyperfeed/hyperfeed/feed"
)

func TestKeysText(t *testing.T) {
	var ik IdentityKey
	var dk DeviceKey
	require.True(t, ik.IsZero())
	require.True(t, dk.IsZero())
	for i := range ik {
		ik[i], dk[i] = byte(i), byte(255-i)
	}
	require.False(t, ik.IsZero())
	require.False(t, dk.IsZero())
	require.Equal(t, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", ik.String())

	gotI, err := ParseIdentityKey(ik.String())
	require.NoError(t, err)
	require.Equal(t, ik, gotI)
	gotD, err := ParseDeviceKey(strings.ToUpper(dk.String()))
	require.NoError(t, err)
	require.Equal(t, dk, gotD)

	// As map keys and values in JSON, through MarshalText.
	b, err := json.Marshal(map[DeviceKey]IdentityKey{dk: ik})
	require.NoError(t, err)
	require.Equal(t, `{"`+dk.String()+`":"`+ik.String()+`"}`, string(b))
	var back map[DeviceKey]IdentityKey
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, ik, back[dk])
}

func TestKeysRejectBadText(t *testing.T) {
	for _, s := range []string{"", "00", strings.Repeat("0", 63), strings.Repeat("0", 65), strings.Repeat("g", 64)} {
		_, err := ParseIdentityKey(s)
		require.Error(t, err, "%q", s)
		_, err = ParseDeviceKey(s)
		require.Error(t, err, "%q", s)
	}
	// A failed decode leaves the key as it was.
	k := IdentityKey{1}
	require.Error(t, k.UnmarshalText([]byte(strings.Repeat("0", 62)+"zz")))
	require.Equal(t, IdentityKey{1}, k)
}

func TestDeviceKeyIsFeedKey(t *testing.T) {
	fk := feed.Key{7, 8, 9}
	dk := DeviceKey(fk)
	require.Equal(t, fk, feed.Key(dk))
	require.Equal(t, fk.String(), dk.String())
}
