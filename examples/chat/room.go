package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/swarm"
	"github.com/hyperfeed/hyperfeed/usersession"
)

// maxText is the longest message, in bytes.
const maxText = 4096

// header is block 0 of every room feed: it names the room and the device
// whose session publishes the feed, so that nobody can pass another's feed
// off as their own (the feed is signed: only its writer could have written
// the header).
type header struct {
	Chat   int    `json:"chat"` // 1
	Room   string `json:"room"`
	Device string `json:"device"` // hex of the usersession.DeviceKey
}

// message is every later block of a room feed.
type message struct {
	At   int64  `json:"at"` // Unix milliseconds, the writer's clock
	Text string `json:"text"`
}

// room is one chat room as this user sees it: the user's own feed, the
// feeds of the others that it replicates, and who is present.
type room struct {
	name  string
	store *feed.Store
	sw    *swarm.Swarm // the session's: the room's feeds go on its connections
	own   *feed.Feed
	// knownPath lists the feeds whose header has been checked against the
	// session that published them, one "room feed-key device-key" line
	// each, so that a restart shows them before anyone is online.
	knownPath string
	kick      chan struct{} // a feed changed: look for new messages

	outMu sync.Mutex
	out   io.Writer

	mu       sync.Mutex
	self     usersession.DeviceKey
	selfName string
	members  map[feed.Key]*member               // checked, shown
	pending  map[feed.Key]usersession.DeviceKey // replicating, header not seen yet
	refused  map[feed.Key]bool                  // header did not match
	names    map[usersession.DeviceKey]string   // from the directory
	present  map[string]bool                    // names online in the room
	cancels  []func()                           // feed subscriptions
	loads    map[feed.Key]*swarm.Download       // live downloads
}

// member is a feed shown in the room.
type member struct {
	f      *feed.Feed
	device usersession.DeviceKey
	next   uint64 // the first block not shown yet
}

// shown is a message on its way to the screen.
type shown struct {
	at    int64
	name  string
	text  string
	key   feed.Key
	index uint64
}

// openRoom opens the room for the user of session self, whose feed for it
// is own: it writes own's header on first use, and opens the feeds known
// from earlier runs.
func openRoom(name string, store *feed.Store, own *feed.Feed, knownPath string, self usersession.UserSession, out io.Writer) (*room, error) {
	r := &room{
		name: name, store: store, own: own, knownPath: knownPath, out: out,
		self: self.Device, selfName: self.Alias,
		kick:    make(chan struct{}, 1),
		members: map[feed.Key]*member{},
		pending: map[feed.Key]usersession.DeviceKey{},
		refused: map[feed.Key]bool{},
		names:   map[usersession.DeviceKey]string{self.Device: self.Alias},
		present: map[string]bool{},
		loads:   map[feed.Key]*swarm.Download{},
	}
	if own.Len() == 0 {
		h, _ := json.Marshal(header{Chat: 1, Room: name, Device: self.Device.String()})
		if _, err := own.Append(h); err != nil {
			return nil, err
		}
	} else if err := r.checkHeader(own, self.Device); err != nil {
		return nil, fmt.Errorf("own feed of room %s: %w", name, err)
	}
	r.members[own.Key()] = &member{f: own, device: self.Device, next: 1}
	if err := r.loadKnown(); err != nil {
		return nil, err
	}
	return r, nil
}

// loadKnown opens the feeds that earlier runs checked.
func (r *room) loadKnown() error {
	f, err := os.Open(r.knownPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 || fields[0] != r.name {
			continue
		}
		key, err := feed.ParseKey(fields[1])
		if err != nil {
			return fmt.Errorf("%s: %w", r.knownPath, err)
		}
		dev, err := usersession.ParseDeviceKey(fields[2])
		if err != nil {
			return fmt.Errorf("%s: %w", r.knownPath, err)
		}
		if _, ok := r.members[key]; ok {
			continue
		}
		f, err := r.store.Get(key)
		if err != nil {
			return err
		}
		r.members[key] = &member{f: f, device: dev, next: 1}
	}
	return sc.Err()
}

// start replicates the room's feeds on sw, the session's swarm: its peers
// are the directory's, which are the room's.
func (r *room) start(sw *swarm.Swarm) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sw = sw
	for key, m := range r.members {
		if err := r.replicateLocked(key, m.f); err != nil {
			return err
		}
	}
	return nil
}

// replicateLocked follows f live on the swarm and wakes the room when it
// changes. Attach, not Replicate: the feed's readers are the directory's
// peers, to whom the session is connected already, so the feed needs no
// topic of its own. The caller holds r.mu.
func (r *room) replicateLocked(key feed.Key, f *feed.Feed) error {
	rep, err := r.sw.Attach(f)
	if err != nil {
		return err
	}
	if !f.Writable() { // the user's own feed has nothing to fetch
		r.loads[key] = rep.Download(0, swarm.Live)
	}
	r.cancels = append(r.cancels, f.Subscribe(func(feed.Event) { r.wake() }))
	return nil
}

func (r *room) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// stop ends the room's subscriptions and downloads; the swarm is the
// session's, which closes it, and the store the caller's.
func (r *room) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.cancels {
		c()
	}
	r.cancels = nil
	for _, d := range r.loads {
		d.Cancel()
	}
	clear(r.loads)
}

// send appends a message to the user's feed; it shows when the room next
// looks at its feeds, like everyone else's.
func (r *room) send(text string) error {
	if len(text) > maxText {
		return fmt.Errorf("message is %d bytes, at most %d", len(text), maxText)
	}
	b, _ := json.Marshal(message{At: time.Now().UnixMilli(), Text: text})
	_, err := r.own.Append(b)
	return err
}

// show prints the messages not shown yet, of every feed, ordered by time.
func (r *room) show() {
	r.mu.Lock()
	for key, dev := range r.pending {
		if err := r.bindLocked(key, dev); err != nil {
			r.printf("! %s's feed for %s refused: %v\n", r.nameLocked(dev), r.name, err)
		}
	}
	var batch []shown
	for key, m := range r.members {
		for ; m.next < m.f.Len() && m.f.Has(m.next); m.next++ {
			b, err := m.f.Get(context.Background(), m.next)
			if err != nil {
				break
			}
			var msg message
			if err := json.Unmarshal(b, &msg); err != nil {
				continue // not a message: skipped, as a later version's block would be
			}
			batch = append(batch, shown{at: msg.At, name: r.nameLocked(m.device), text: msg.Text, key: key, index: m.next})
		}
	}
	r.mu.Unlock()
	slices.SortFunc(batch, func(a, b shown) int {
		return cmp.Or(cmp.Compare(a.at, b.at), strings.Compare(a.name, b.name),
			slices.Compare(a.key[:], b.key[:]), cmp.Compare(a.index, b.index))
	})
	for _, s := range batch {
		r.printf("[%s] %s: %s\n", r.name, s.name, oneLine(s.text))
	}
}

// bindLocked checks a pending feed's header once block 0 is in: only then
// are its messages shown, and remembered across restarts. Until block 0
// arrives it does nothing.
func (r *room) bindLocked(key feed.Key, dev usersession.DeviceKey) error {
	f, err := r.store.Get(key) // open already: the same *Feed
	if err != nil {
		return err
	}
	if !f.Has(0) {
		return nil
	}
	delete(r.pending, key)
	if err := r.checkHeader(f, dev); err != nil {
		r.refused[key] = true
		if d, ok := r.loads[key]; ok {
			d.Cancel()
			delete(r.loads, key)
		}
		return err
	}
	if err := appendLine(r.knownPath, fmt.Sprintf("%s %s %s\n", r.name, key, dev)); err != nil {
		return err
	}
	r.members[key] = &member{f: f, device: dev, next: 1}
	return nil
}

func (r *room) checkHeader(f *feed.Feed, dev usersession.DeviceKey) error {
	b, err := f.Get(context.Background(), 0)
	if err != nil {
		return err
	}
	var h header
	if err := json.Unmarshal(b, &h); err != nil || h.Chat != 1 {
		return errors.New("not a chat feed")
	}
	if h.Room != r.name {
		return fmt.Errorf("a feed of room %q", h.Room)
	}
	if h.Device != dev.String() {
		return fmt.Errorf("the feed belongs to another device (%s, not %s)", h.Device, dev)
	}
	return nil
}

// update reads the directory and announces who joined and left the room
// since it last did.
func (r *room) update(node *usersession.Node) {
	joined, left := r.read(node)
	for _, name := range joined {
		r.printf("* %s joined\n", name)
	}
	for _, name := range left {
		r.printf("* %s left\n", name)
	}
	r.wake()
}

// read reads the directory: it learns the room feeds that sessions
// publish and replicates them, and returns who came into the room and who
// went since the last read. It dials no one: the session connects to every
// session online, the room's included.
func (r *room) read(node *usersession.Node) (joined, left []string) {
	users := node.GetUsers()
	present := map[string]bool{}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(users)) {
		for _, s := range node.Devices(name) {
			r.names[s.Device] = name
			v, ok := s.Metadata["chat:"+r.name]
			if !ok || s.Device == r.self {
				continue
			}
			key, err := feed.ParseKey(v)
			if err != nil {
				continue
			}
			if s.Online {
				present[name] = true
			}
			_, member := r.members[key]
			_, pending := r.pending[key]
			if member || pending || r.refused[key] {
				continue
			}
			f, err := r.store.Get(key)
			if err != nil {
				r.printf("! cannot open %s's feed: %v\n", name, err)
				continue
			}
			if err := r.replicateLocked(key, f); err != nil {
				continue // the swarm closed: the chat is stopping
			}
			r.pending[key] = s.Device
		}
	}
	for _, name := range slices.Sorted(maps.Keys(present)) {
		if !r.present[name] {
			joined = append(joined, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(r.present)) {
		if !present[name] {
			left = append(left, name)
		}
	}
	r.present = present
	return joined, left
}

// who lists the names present in the room, this user's first.
func (r *room) who() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(append([]string{r.selfName}, slices.Sorted(maps.Keys(r.present))...), ", ")
}

// nameLocked is the name the directory lists a device under.
func (r *room) nameLocked(dev usersession.DeviceKey) string {
	if n, ok := r.names[dev]; ok {
		return n
	}
	return "device-" + dev.String()[:8]
}

func (r *room) printf(format string, args ...any) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	fmt.Fprintf(r.out, format, args...)
}

// oneLine keeps a message on its line: a peer's text is data, not layout.
func oneLine(s string) string {
	return strings.Map(func(c rune) rune {
		if c < ' ' || c == 0x7f {
			return ' '
		}
		return c
	}, s)
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
