package usersession_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/hyperfeed/hyperfeed/usersession"
)

// An observer lists the directory, then follows it, without an identity of
// its own and without appearing in it.
func ExampleObserve() {
	o, err := usersession.Observe(usersession.Config{}) // mDNS on every interface; data in the user's cache dir
	if err != nil {
		log.Fatal(err)
	}
	defer o.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.Settle(ctx); err != nil {
		log.Print("not settled; the list may be incomplete: ", err)
	}
	// Watch before reading, so that no change falls in between.
	events := o.Watch(ctx)
	for name, s := range o.GetUsers() {
		fmt.Println(name, s.Online, s.IP, s.Port)
	}
	for e := range events { // until the 10 s are up
		fmt.Println(e.Kind, e.Session.Alias)
	}
}
