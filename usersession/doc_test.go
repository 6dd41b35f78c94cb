package usersession_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/usersession"
)

// The flow the runtime follows: a device feed opens with a certificate and
// a login, the directory folds the feed, and a token for the session
// verifies against it.
func Example() {
	dir, _ := os.MkdirTemp("", "usersession-example")
	defer os.RemoveAll(dir)
	store, err := feed.OpenStore(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	// A named feed, so that the device keeps its key (and its secret, which
	// signs tokens) across restarts.
	secret, _ := store.NamedKey("usersession/device")
	f, err := store.Named("usersession/device")
	if err != nil {
		log.Fatal(err)
	}
	dev := usersession.DeviceKey(f.Key())

	id, _ := usersession.GenerateIdentity()
	peer := [32]byte{1} // the node's swarm.KeyPair.Public
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	cert, err := usersession.NewCertificate(id, usersession.Certificate{
		Device: dev, Peer: peer, Alias: "Alice", DeviceName: "laptop",
		Claimed: now.UnixMilli(), Created: now.UnixMilli(),
	})
	if err != nil {
		log.Fatal(err)
	}
	b0, _ := usersession.EncodeEntry(cert)
	b1, _ := usersession.EncodeEntry(&usersession.Login{Alias: "alice", IP: "192.0.2.7", Port: 4977, Started: now.UnixMilli()})
	if _, err := f.Append(b0, b1); err != nil {
		log.Fatal(err)
	}

	d := usersession.NewDirectory(0)
	for i := d.Next(dev); i < f.Len(); i++ {
		b, err := f.Get(context.Background(), i)
		if err != nil {
			log.Fatal(err)
		}
		if err := d.Apply(dev, i, b); err != nil {
			log.Print(err) // a bad entry is skipped; the feed goes on
		}
	}
	d.SetPresence(dev, true, now)
	u, _ := d.Find("ALICE")
	fmt.Println(u.Alias, u.IP, u.Port, u.DeviceName, u.Online)

	tok, _ := usersession.IssueToken(secret, usersession.TokenClaims{
		Identity: id.Key(), Device: dev, Alias: "alice", Login: 1,
		Issued: now.UnixMilli(), Expires: now.Add(time.Hour).UnixMilli(),
	})
	t, err := d.VerifyToken(tok, now.Add(time.Minute))
	fmt.Println(t.Name, err)
	_, err = d.VerifyToken(tok, now.Add(2*time.Hour))
	fmt.Println(err)
	// Output:
	// alice 192.0.2.7 4977 laptop true
	// alice <nil>
	// usersession: verify token: usersession: token expired at 2025-01-02T04:04:05Z
}
