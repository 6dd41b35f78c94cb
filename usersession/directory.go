package usersession

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"
)

// DefaultMaxSessions is the session limit per identity that NewDirectory
// sets when given none.
const DefaultMaxSessions = 3

// maxClockSkew is how far in the future a token's issue time may lie, as
// seen by the verifier's clock, before the token is refused as invalid.
const maxClockSkew = 5 * time.Minute

// UserSession is one device of a user as the directory shows it.
type UserSession struct {
	// Alias is the name the user is listed under: the alias itself if the
	// identity owns it, else alias~hex (see doc.go).
	Alias string
	// IP, Port, Started and Metadata come from the device's current Login;
	// they are empty when the device is not logged in.
	IP       string
	Port     int
	Identity IdentityKey
	Device   DeviceKey
	// DeviceName is from the device's certificate.
	DeviceName string
	Started    time.Time
	// LastSeen is what the runtime last reported through SetPresence; zero
	// if it never did.
	LastSeen time.Time
	// Online: logged in, present, and within the identity's session limit.
	Online   bool
	Metadata map[string]string
}

func (s UserSession) clone() UserSession {
	s.Metadata = maps.Clone(s.Metadata)
	return s
}

// Directory is the fold of all known device feeds into users and their
// sessions. What it shows depends only on the blocks applied to each device
// (not on how devices interleave) and on the presence the runtime reports,
// so every node that holds the same feeds computes the same directory.
//
// Make one with NewDirectory. A Directory is not safe for concurrent use;
// the runtime guards it.
type Directory struct {
	maxSessions int
	devices     map[DeviceKey]*device
	presence    map[DeviceKey]presence
	// view is derived from devices and presence, built on the first read
	// after either changed.
	view *view
}

// device is what the directory keeps of one device feed.
type device struct {
	next uint64 // the index of the block Apply takes next
	// void is why entry 0 was refused; the device's blocks are then ignored.
	void error
	cert *Certificate
	// login is the last Login; it is the current session if loggedIn, that
	// is if no Logout followed it.
	login    *Login
	loggedIn bool
	// logouts tells whether logoutAt, the index of the last Logout, is set.
	logouts  bool
	logoutAt uint64
	// sessionLogins are the indices of the Logins since the last Logout:
	// the logins whose tokens stand.
	sessionLogins []uint64
	// unregistered maps an alias to the latest time this device's feed says
	// its identity unregistered it.
	unregistered map[string]int64
}

type presence struct {
	online bool
	seen   time.Time
}

// NewDirectory returns an empty directory that lets each identity have
// maxSessions sessions online at once (DefaultMaxSessions if maxSessions ≤ 0).
func NewDirectory(maxSessions int) *Directory {
	if maxSessions <= 0 {
		maxSessions = DefaultMaxSessions
	}
	return &Directory{
		maxSessions: maxSessions,
		devices:     map[DeviceKey]*device{},
		presence:    map[DeviceKey]presence{},
	}
}

// Next returns the index of the block of dev that Apply takes next: the
// number of its blocks applied so far.
func (d *Directory) Next(dev DeviceKey) uint64 {
	if dv := d.devices[dev]; dv != nil {
		return dv.next
	}
	return 0
}

// Apply folds block index of device dev's feed into the directory. Blocks
// of a device must come in feed order from 0 (ErrOutOfOrder otherwise, and
// nothing is applied). A block that is not a valid entry, or does not fit
// where it stands, is skipped with an error wrapping ErrBadEntry (or
// ErrBadSignature), and later blocks still apply. If block 0 is not a valid
// certificate for dev, the whole device is ignored: that block and every
// later one give an error wrapping ErrBadCertificate.
func (d *Directory) Apply(dev DeviceKey, index uint64, block []byte) error {
	if next := d.Next(dev); index != next {
		return fmt.Errorf("usersession: apply block %d of device %s: %w: want block %d", index, dev, ErrOutOfOrder, next)
	}
	dv := d.devices[dev]
	if dv == nil {
		dv = &device{}
		d.devices[dev] = dv
	}
	dv.next++
	d.view = nil
	if err := dv.apply(dev, index, block); err != nil {
		return fmt.Errorf("usersession: apply block %d of device %s: %w", index, dev, err)
	}
	return nil
}

func (dv *device) apply(dev DeviceKey, index uint64, block []byte) error {
	if dv.void != nil {
		return fmt.Errorf("%w: the device is ignored: %v", ErrBadCertificate, dv.void)
	}
	e, err := decodeEntry(block)
	if index == 0 {
		if err == nil {
			err = certify(dev, e)
		}
		if err != nil {
			dv.void = err
			return fmt.Errorf("%w: %w", ErrBadCertificate, err)
		}
		dv.cert = e.(*Certificate)
		return nil
	}
	if err != nil {
		return err
	}
	switch e := e.(type) {
	case *Certificate:
		return fmt.Errorf("%w: a certificate at entry %d, not 0", ErrBadEntry, index)
	case *Login:
		if e.Alias != dv.cert.Alias {
			return fmt.Errorf("%w: login as %q on a device certified as %q", ErrBadEntry, e.Alias, dv.cert.Alias)
		}
		dv.login, dv.loggedIn = e, true
		dv.sessionLogins = append(dv.sessionLogins, index)
	case *Logout:
		dv.loggedIn = false
		dv.logouts, dv.logoutAt = true, index
		dv.sessionLogins = nil
	case *Unregister:
		if e.Identity != dv.cert.Identity {
			return fmt.Errorf("%w: unregister by %s on a device of %s", ErrBadEntry, e.Identity, dv.cert.Identity)
		}
		if err := e.Verify(); err != nil {
			return err
		}
		if dv.unregistered == nil {
			dv.unregistered = map[string]int64{}
		}
		if at, ok := dv.unregistered[e.Alias]; !ok || e.At > at {
			dv.unregistered[e.Alias] = e.At
		}
	}
	return nil
}

// certify checks that e, entry 0 of dev's feed, is a certificate for dev.
func certify(dev DeviceKey, e Entry) error {
	c, ok := e.(*Certificate)
	if !ok {
		return fmt.Errorf("%w: entry 0 is a %s, not a certificate", ErrBadEntry, e.Type())
	}
	if c.Device != dev {
		return fmt.Errorf("%w: entry 0 certifies device %s", ErrBadEntry, c.Device)
	}
	return c.Verify()
}

// Reset forgets everything applied of dev, as when its feed was truncated:
// its blocks are applied again from 0. What SetPresence said of it stays.
func (d *Directory) Reset(dev DeviceKey) {
	delete(d.devices, dev)
	d.view = nil
}

// SetPresence records what the runtime knows of dev's connectivity: whether
// it is reachable now (for its own device: running), and when it was last
// seen. It may come before any of dev's blocks, and outlives Reset.
func (d *Directory) SetPresence(dev DeviceKey, online bool, lastSeen time.Time) {
	d.presence[dev] = presence{online: online, seen: lastSeen}
	d.view = nil
}

// Users returns every listed user, by name (alias, or alias~hex for an
// identity that lost the alias), each with its primary session (see
// doc.go). Users whose devices are all logged out are listed too, with
// Online false and no address.
func (d *Directory) Users() map[string]UserSession {
	v := d.current()
	users := make(map[string]UserSession, len(v.names))
	for name, list := range v.names {
		users[name] = list[0].UserSession.clone()
	}
	return users
}

// Find returns the primary session of the user listed under name (an alias
// or alias~hex, in any case), or ErrUserNotFound.
func (d *Directory) Find(name string) (UserSession, error) {
	n, _, err := parseName(name)
	if err != nil {
		return UserSession{}, fmt.Errorf("usersession: find: %w", err)
	}
	list := d.current().names[n]
	if list == nil {
		return UserSession{}, fmt.Errorf("usersession: find %q: %w", n, ErrUserNotFound)
	}
	return list[0].UserSession.clone(), nil
}

// Devices returns all the devices of the user listed under name, primary
// first, then in the order of the primary-device rule. It returns nil for
// an unknown or malformed name.
func (d *Directory) Devices(name string) []UserSession {
	n, _, err := parseName(name)
	if err != nil {
		return nil
	}
	list := d.current().names[n]
	if list == nil {
		return nil
	}
	out := make([]UserSession, len(list))
	for i, s := range list {
		out[i] = s.UserSession.clone()
	}
	return out
}

// Owner returns the identity listed under name: for an alias, the identity
// that owns it under the alias rule.
func (d *Directory) Owner(name string) (IdentityKey, bool) {
	n, _, err := parseName(name)
	if err != nil {
		return IdentityKey{}, false
	}
	list := d.current().names[n]
	if list == nil {
		return IdentityKey{}, false
	}
	return list[0].Identity, true
}

// Certificate returns dev's certificate, once entry 0 of its feed has been
// applied and verified (ErrUnknownDevice before), including when its claim
// was unregistered. Its Peer tells the runtime which swarm peer is the
// device.
func (d *Directory) Certificate(dev DeviceKey) (Certificate, error) {
	if dv := d.devices[dev]; dv != nil && dv.cert != nil {
		return *dv.cert, nil
	}
	return Certificate{}, fmt.Errorf("usersession: certificate of %s: %w", dev, ErrUnknownDevice)
}

// Session returns dev's session as the directory shows it, also when dev is
// logged out. It fails with ErrUnknownDevice if dev has no valid
// certificate, and with ErrUnregistered if its identity unregistered the
// alias it claims.
func (d *Directory) Session(dev DeviceKey) (UserSession, error) {
	s, err := d.current().session(dev)
	if err != nil {
		return UserSession{}, fmt.Errorf("usersession: session of %s: %w", dev, err)
	}
	return s.UserSession.clone(), nil
}

// SessionValid reports whether dev's session may be used: nil if it is
// within its identity's session limit, or ErrSessionLimit if as many
// sessions of the identity as the limit allows are online and all started
// before it (by Started, then device key). A device that is logged in but
// not online is judged as if it came online now. The other errors are
// Session's, and ErrNotLoggedIn.
func (d *Directory) SessionValid(dev DeviceKey) error {
	v := d.current()
	s, err := v.session(dev)
	if err == nil {
		err = v.withinLimit(s, d.maxSessions)
	}
	if err != nil {
		return fmt.Errorf("usersession: session of %s: %w", dev, err)
	}
	return nil
}

// VerifyToken checks a token fully, at time now, in this order: its format
// and signature (ErrTokenInvalid), its expiry (ErrTokenExpired, and
// ErrTokenInvalid if it was issued more than 5 minutes in now's future),
// that the directory holds the device's certificate (ErrTokenUnknown), that
// the certificate's identity and alias are the token's (ErrTokenInvalid),
// that the alias is not unregistered (ErrTokenRevoked), that the login it
// names has been seen (ErrTokenUnknown: its block may not have arrived yet),
// that no Logout followed it (ErrTokenRevoked) and that it is a Login
// (ErrTokenInvalid), and last the session limit (ErrSessionLimit). The
// token returned has Name set to the name the session is listed under.
func (d *Directory) VerifyToken(tok string, now time.Time) (*Token, error) {
	t, err := d.verifyToken(tok, now)
	if err != nil {
		return nil, fmt.Errorf("usersession: verify token: %w", err)
	}
	return t, nil
}

func (d *Directory) verifyToken(tok string, now time.Time) (*Token, error) {
	t, err := parseToken(tok)
	if err != nil {
		return nil, err
	}
	ms := now.UnixMilli()
	if ms >= t.Expires {
		return nil, fmt.Errorf("%w at %s", ErrTokenExpired, time.UnixMilli(t.Expires).UTC().Format(time.RFC3339))
	}
	if t.Issued-maxClockSkew.Milliseconds() > ms { // Issued ≥ 0: no overflow
		return nil, fmt.Errorf("%w: issued at %s, in the future", ErrTokenInvalid, time.UnixMilli(t.Issued).UTC().Format(time.RFC3339))
	}
	v := d.current()
	s := v.sessions[t.Device]
	if s == nil {
		return nil, fmt.Errorf("%w: no certificate of device %s", ErrTokenUnknown, t.Device)
	}
	c := s.dev.cert
	if c.Identity != t.Identity || c.Alias != t.Alias {
		return nil, fmt.Errorf("%w: device %s is certified for %s as %q, not %s as %q", ErrTokenInvalid, t.Device, c.Identity, c.Alias, t.Identity, t.Alias)
	}
	if s.unregistered {
		return nil, fmt.Errorf("%w: %s unregistered %q", ErrTokenRevoked, c.Identity, c.Alias)
	}
	dv := s.dev
	switch {
	case t.Login >= dv.next:
		return nil, fmt.Errorf("%w: login at entry %d of device %s not seen yet", ErrTokenUnknown, t.Login, t.Device)
	case dv.logouts && t.Login < dv.logoutAt:
		return nil, fmt.Errorf("%w: device %s logged out at entry %d", ErrTokenRevoked, t.Device, dv.logoutAt)
	case !slices.Contains(dv.sessionLogins, t.Login):
		return nil, fmt.Errorf("%w: entry %d of device %s is not a login", ErrTokenInvalid, t.Login, t.Device)
	}
	if err := v.withinLimit(s, d.maxSessions); err != nil {
		return nil, err
	}
	t.Name = s.Alias
	return t, nil
}

// view is what the directory shows, derived from its devices and presence.
type view struct {
	// sessions holds every device with a valid certificate.
	sessions map[DeviceKey]*session
	// names maps each listed name to its identity's devices, primary first.
	names map[string][]*session
	// active holds, per identity, its logged-in and present sessions in
	// session-limit order: by Started, then device key.
	active map[IdentityKey][]*session
}

type session struct {
	UserSession // as shown
	dev         *device
	// unregistered: the identity unregistered the certificate's claim; the
	// device is listed nowhere.
	unregistered bool
	present      bool
	started      int64 // the current login's, in Unix milliseconds
	rank         int   // index in the identity's active list, or -1
}

func (s *session) loggedIn() bool { return s.dev.loggedIn }

func (v *view) session(dev DeviceKey) (*session, error) {
	s := v.sessions[dev]
	switch {
	case s == nil:
		return nil, ErrUnknownDevice
	case s.unregistered:
		return nil, fmt.Errorf("%w: %s unregistered %q", ErrUnregistered, s.Identity, s.dev.cert.Alias)
	}
	return s, nil
}

// withinLimit applies the session limit to s.
func (v *view) withinLimit(s *session, max int) error {
	if !s.loggedIn() {
		return ErrNotLoggedIn
	}
	active := v.active[s.Identity]
	ahead := s.rank
	if ahead < 0 {
		// Not active: count the active sessions it would come after.
		ahead = len(active)
		for i, a := range active {
			if limitOrder(s, a) < 0 {
				ahead = i
				break
			}
		}
	}
	if ahead >= max {
		return fmt.Errorf("%w: identity %s has %d sessions online, at most %d, and they started before this one",
			ErrSessionLimit, s.Identity, len(active), max)
	}
	return nil
}

// limitOrder is the order of the session limit: the earliest Started first,
// then the smaller device key.
func limitOrder(a, b *session) int {
	if c := cmp.Compare(a.started, b.started); c != 0 {
		return c
	}
	return bytes.Compare(a.Device[:], b.Device[:])
}

// current returns the view, building it if the state changed since.
func (d *Directory) current() *view {
	if d.view == nil {
		d.view = d.build()
	}
	return d.view
}

type claimKey struct {
	identity IdentityKey
	alias    string
}

// build derives the view from the devices and their presence. Map order
// never reaches the result: every choice below is a max, a min or a sort
// on a total order.
func (d *Directory) build() *view {
	v := &view{
		sessions: map[DeviceKey]*session{},
		names:    map[string][]*session{},
		active:   map[IdentityKey][]*session{},
	}

	// The tombstones: for each identity and alias, the latest unregister.
	tombs := map[claimKey]int64{}
	for _, dv := range d.devices {
		if dv.cert == nil {
			continue
		}
		for alias, at := range dv.unregistered {
			k := claimKey{dv.cert.Identity, alias}
			if old, ok := tombs[k]; !ok || at > old {
				tombs[k] = at
			}
		}
	}

	// The sessions, and for each alias the claims that stand: per identity,
	// its earliest Claimed among its devices that are not unregistered.
	claims := map[string]map[IdentityKey]int64{}
	for dev, dv := range d.devices {
		c := dv.cert
		if c == nil {
			continue
		}
		s := &session{dev: dv, rank: -1}
		s.Identity, s.Device, s.DeviceName = c.Identity, dev, c.DeviceName
		v.sessions[dev] = s
		if at, ok := tombs[claimKey{c.Identity, c.Alias}]; ok && c.Claimed <= at {
			s.unregistered = true
			continue
		}
		if claims[c.Alias] == nil {
			claims[c.Alias] = map[IdentityKey]int64{}
		}
		if old, ok := claims[c.Alias][c.Identity]; !ok || c.Claimed < old {
			claims[c.Alias][c.Identity] = c.Claimed
		}
		p := d.presence[dev]
		s.present, s.LastSeen = p.online, p.seen
		if dv.loggedIn {
			l := dv.login
			s.IP, s.Port, s.Metadata = l.IP, l.Port, l.Metadata // cloned on the way out
			s.started, s.Started = l.Started, time.UnixMilli(l.Started).UTC()
			if s.present {
				v.active[c.Identity] = append(v.active[c.Identity], s)
			}
		}
	}

	// The session limit.
	for _, active := range v.active {
		slices.SortFunc(active, limitOrder)
		for i, s := range active {
			s.rank = i
			s.Online = i < d.maxSessions
		}
	}

	// The names, then each name's devices in primary-device order.
	names := map[claimKey]string{}
	for alias, ids := range claims {
		for k, name := range assignNames(alias, ids) {
			names[k] = name
		}
	}
	for _, s := range v.sessions {
		if s.unregistered {
			continue
		}
		s.Alias = names[claimKey{s.Identity, s.dev.cert.Alias}]
		v.names[s.Alias] = append(v.names[s.Alias], s)
	}
	for _, list := range v.names {
		slices.SortFunc(list, primaryOrder)
	}
	return v
}

// assignNames applies the alias rule to the identities claiming alias, each
// with its earliest standing Claimed: the smallest (Claimed, identity key)
// owns the alias, the others are listed as alias~ and 8 hex digits of
// their key, or all 64 if an earlier loser already has those 8.
func assignNames(alias string, claims map[IdentityKey]int64) map[claimKey]string {
	ids := slices.SortedFunc(maps.Keys(claims), func(a, b IdentityKey) int {
		if c := cmp.Compare(claims[a], claims[b]); c != 0 {
			return c
		}
		return bytes.Compare(a[:], b[:])
	})
	names := make(map[claimKey]string, len(ids))
	taken := make(map[string]bool, len(ids))
	for i, id := range ids {
		name := alias
		if i > 0 {
			name = contestedName(alias, id, false)
			if taken[name] {
				name = contestedName(alias, id, true)
			}
		}
		taken[name] = true
		names[claimKey{id, alias}] = name
	}
	return names
}

// primaryOrder sorts a user's devices, primary first: online sessions, the
// latest Started first; then the logged-in sessions that are not online,
// the latest of LastSeen and Started first; then devices not logged in,
// the latest LastSeen first. Ties go to the smaller device key.
func primaryOrder(a, b *session) int {
	if c := cmp.Compare(tier(a), tier(b)); c != 0 {
		return c
	}
	var c int
	switch tier(a) {
	case 0:
		c = b.Started.Compare(a.Started)
	case 1:
		c = latest(b.LastSeen, b.Started).Compare(latest(a.LastSeen, a.Started))
	default:
		c = b.LastSeen.Compare(a.LastSeen)
	}
	if c != 0 {
		return c
	}
	return bytes.Compare(a.Device[:], b.Device[:])
}

func tier(s *session) int {
	switch {
	case s.Online:
		return 0
	case s.loggedIn():
		return 1
	}
	return 2
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
