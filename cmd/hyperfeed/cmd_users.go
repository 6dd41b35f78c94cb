package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/usersession"
)

// defaultUsersWait bounds how long users waits for the directory to settle:
// a node's default heartbeat (usersession.DefaultHeartbeatInterval) for
// finding peers, and as long again for the devices they list to connect.
const defaultUsersWait = 2 * usersession.DefaultHeartbeatInterval

func cmdUsers(e *env, args []string) error {
	fs := e.flags()
	topic := fs.String("topic", usersession.DefaultTopic, "show the directory with the topic `NAME` (the nodes' Config.Topic)")
	dir := fs.String("dir", "", "keep the replicated device feeds and this observer's peer key in `DIR` (default: hyperfeed/usersession/observer/… in the user's cache directory)")
	wait := fs.Duration("wait", defaultUsersWait, "wait at most `DURATION` for peers and their devices before printing; 0 prints at once what DIR holds")
	watch := fs.Bool("watch", false, "keep watching: redraw the table on a terminal, else print a line per change, until interrupted")
	asJSON := fs.Bool("json", false, "print a JSON array of the devices (with --watch, one line per change)")
	heartbeat := fs.Duration("heartbeat", 0, "the heartbeat interval `DURATION` that the directory's nodes use (default 5s)")
	offlineAfter := fs.Duration("offline-after", 0, "how long a silent device stays online, `DURATION`, as the directory's nodes have it (default 3 heartbeats)")
	maxSessions := fs.Int("max-sessions", 0, "the `N` sessions per user that may be online at once, as the directory's nodes have it (default 3)")
	if _, err := e.parse(fs, args, 0); err != nil {
		return err
	}
	if *wait < 0 {
		return usageErrorf("--wait %v is negative", *wait)
	}
	secret, err := e.secret()
	if err != nil {
		return err
	}
	cfg := usersession.Config{
		Dir: *dir, Topic: *topic, Secret: secret,
		Peers: e.g.peers, Interfaces: e.g.ifaces, NoMDNS: e.g.noMDNS, ListenAddr: e.g.listen,
		MaxSessions: *maxSessions, HeartbeatInterval: *heartbeat, OfflineAfter: *offlineAfter,
		Logger: e.log,
	}
	o, release, err := e.observe(cfg)
	if err != nil {
		return err
	}
	defer release()
	if e.g.noMDNS && len(e.g.peers) == 0 {
		e.log.Warn("no mDNS and no --peer: only the devices that earlier runs learnt of can be reached")
	}

	if *wait > 0 {
		ctx, cancel := context.WithTimeout(e.ctx, *wait)
		err := o.Settle(ctx)
		cancel()
		switch {
		case e.ctx.Err() != nil && *watch:
			return nil // interrupting is how a watch ends
		case e.ctx.Err() != nil:
			return e.stopped(nil, "while waiting for peers")
		case err != nil:
			e.log.Warn("the directory did not settle in time: users or their presence may be missing", "wait", *wait)
		}
	}
	if !*watch {
		return printUsers(e.stdout, o, *asJSON, time.Now())
	}
	return watchUsers(e, o, *asJSON)
}

// observe starts the observer. Without --dir, a second users running at
// the same time finds the default directory locked and takes a temporary
// one, as a second peer takes a temporary key (see identity). release
// stops the observer and removes a temporary directory.
func (e *env) observe(cfg usersession.Config) (o *usersession.Observer, release func(), err error) {
	o, err = usersession.Observe(cfg)
	if errors.Is(err, feed.ErrLocked) && cfg.Dir == "" {
		tmp, terr := os.MkdirTemp("", "hyperfeed-users-")
		if terr != nil {
			return nil, nil, terr
		}
		e.log.Info("the observer's directory is in use by another process; running with a temporary one", "dir", tmp)
		cfg.Dir = tmp
		if o, err = usersession.Observe(cfg); err != nil {
			os.RemoveAll(tmp)
			return nil, nil, err
		}
		return o, func() { o.Close(); os.RemoveAll(tmp) }, nil
	}
	if errors.Is(err, usersession.ErrInvalidConfig) {
		return nil, nil, usageErrorf("%s", tidy(err.Error()))
	}
	if err != nil {
		return nil, nil, err
	}
	return o, func() { o.Close() }, nil
}

// userRow is one device as users shows it; its JSON names are part of the
// command's interface.
type userRow struct {
	Alias      string                  `json:"alias"` // the name listed: alias, or alias~hex
	Identity   usersession.IdentityKey `json:"identity"`
	Device     usersession.DeviceKey   `json:"device"`
	DeviceName string                  `json:"device_name"`
	Primary    bool                    `json:"primary"` // the device the name's lookups answer with
	Address    string                  `json:"address"` // ip:port of the session; "" when logged out
	Online     bool                    `json:"online"`
	LastSeen   *time.Time              `json:"last_seen"` // nil: never seen by this observer
	Started    *time.Time              `json:"started"`   // nil: logged out
	Metadata   map[string]string       `json:"metadata"`
}

// rows lists every device of every user, by name, primary first.
func rows(o *usersession.Observer) []userRow {
	var out []userRow
	for _, name := range slices.Sorted(maps.Keys(o.GetUsers())) {
		for i, s := range o.Devices(name) {
			r := userRow{
				Alias: name, Identity: s.Identity, Device: s.Device, DeviceName: s.DeviceName,
				Primary: i == 0, Online: s.Online, Metadata: s.Metadata,
			}
			if s.IP != "" {
				r.Address = net.JoinHostPort(s.IP, strconv.Itoa(s.Port))
			}
			if !s.LastSeen.IsZero() {
				r.LastSeen = &s.LastSeen
			}
			if !s.Started.IsZero() {
				r.Started = &s.Started
			}
			if r.Metadata == nil {
				r.Metadata = map[string]string{}
			}
			out = append(out, r)
		}
	}
	return out
}

func printUsers(w io.Writer, o *usersession.Observer, asJSON bool, now time.Time) error {
	list := rows(o)
	if asJSON {
		if list == nil {
			list = []userRow{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	_, err := w.Write(table(list, now))
	return err
}

// table renders rows as the aligned text users prints.
func table(list []userRow, now time.Time) []byte {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ALIAS\tDEVICE\tADDRESS\tONLINE\tLAST SEEN")
	for _, r := range list {
		online := "no"
		if r.Online {
			online = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Alias, deviceLabel(r.DeviceName, r.Device), orDash(r.Address), online, lastSeen(r.LastSeen, now))
	}
	tw.Flush()
	return b.Bytes()
}

// deviceLabel names a device by its name and the start of its key, since
// one user's devices may share a host name.
func deviceLabel(name string, key usersession.DeviceKey) string {
	short := key.String()[:8]
	if name == "" {
		return short
	}
	return name + " (" + short + ")"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// lastSeen says when the observer last saw a device: "now" while connected
// to it, else how long ago its connection ended.
func lastSeen(t *time.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	d := now.Sub(*t)
	switch {
	case d < time.Second:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return t.Local().Format(time.DateOnly)
}

// watchUsers shows the directory and its changes until interrupted: on a
// terminal, the table redrawn in place (also every second, for the last
// seen times); otherwise the table, then a line per change; with asJSON,
// the whole list again as one line after each change.
func watchUsers(e *env, o *usersession.Observer, asJSON bool) error {
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	// Watch before reading, so that no change falls in between.
	events := o.Watch(ctx)
	tty := !asJSON && isTerminal(e.stdout)
	var tick <-chan time.Time
	var drawn []byte
	draw := func() error {
		t := table(rows(o), time.Now())
		if bytes.Equal(t, drawn) {
			return nil
		}
		drawn = t
		// Home and clear, rather than moving up over the last table: a
		// line the terminal wrapped would throw the count off.
		_, err := fmt.Fprintf(e.stdout, "\x1b[H\x1b[2J%s", t)
		return err
	}
	switch {
	case asJSON:
		if err := printJSONLine(e.stdout, rows(o)); err != nil {
			return err
		}
	case tty:
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
		if err := draw(); err != nil {
			return err
		}
	default:
		if err := printUsers(e.stdout, o, false, time.Now()); err != nil {
			return err
		}
	}
	for {
		select {
		case <-e.ctx.Done():
			return nil // interrupting is how a watch ends
		case <-tick:
			if err := draw(); err != nil {
				return err
			}
		case ev, ok := <-events:
			if !ok {
				return nil // ctx ended: interrupted
			}
			var err error
			switch {
			case asJSON:
				drain(events) // one line for a burst of changes
				err = printJSONLine(e.stdout, rows(o))
			case tty:
				drain(events)
				err = draw()
			default:
				err = printEvent(e.stdout, ev, time.Now())
			}
			if err != nil {
				return err
			}
		}
	}
}

// drain takes the events already queued.
func drain(events <-chan usersession.Event) {
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

func printJSONLine(w io.Writer, list []userRow) error {
	if list == nil {
		list = []userRow{}
	}
	return json.NewEncoder(w).Encode(list)
}

// printEvent writes a change as one line: the time, what happened, the
// name, the address, and the device (last, since its name may hold spaces).
func printEvent(w io.Writer, ev usersession.Event, now time.Time) error {
	s := ev.Session
	addr := ""
	if s.IP != "" {
		addr = net.JoinHostPort(s.IP, strconv.Itoa(s.Port))
	}
	_, err := fmt.Fprintf(w, "%s %s %s %s %s\n", now.Format(time.RFC3339), ev.Kind, s.Alias, orDash(addr), deviceLabel(s.DeviceName, s.Device))
	return err
}
