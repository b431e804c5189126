package xenchan

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/snowflock/snowflock/internal/xenstore"
)

// memStore is a test peer for the xenstore wire protocol: a small
// in-memory xenstored serving each client over a net.Pipe, with the
// semantics xenchan relies on (node tree, READ, WRITE, MKDIR, RM,
// DIRECTORY, GET_PERMS, SET_PERMS, GET_DOMAIN_PATH, WATCH with prefix
// matching and a first event, UNWATCH, events before the reply of the
// request that caused them, relative paths per connection's domain, and a
// domain confined to /local/domain/<its id> plus per-node permissions).
// It is no substitute for the tests against real Xen (contrib/testbed/xen):
// quotas, rate limits, transactions and the xenbus device are not here.
type memStore struct {
	mu    sync.Mutex
	nodes map[string]*memNode
	conns map[*memConn]bool

	// dropEvents loses every watch event (the polling fallback must cope).
	dropEvents bool
	// creatorOwns makes a new node its creator's, dom0 included, instead
	// of inheriting its parent's owner as C xenstored does.
	creatorOwns bool
	// writes counts WRITE requests by domain.
	writes map[uint32]int
	// fault, if set, may fail a request with the errno it returns.
	fault func(domid uint32, typ xenstore.MsgType, path string) string
}

type memNode struct {
	value    []byte
	children []string // in creation order, as xenstored keeps them
	perms    []xenstore.Perm
}

type memConn struct {
	s       *memStore
	domid   uint32
	nc      net.Conn
	out     chan []byte
	watches []memWatch
}

type memWatch struct {
	path  string // absolute, or special (@...)
	token string
	rel   bool // given relative: events are relative too
}

func newMemStore() *memStore {
	s := &memStore{
		nodes:  map[string]*memNode{"/": {perms: []xenstore.Perm{{Domid: 0, Access: xenstore.AccessNone}}}},
		conns:  map[*memConn]bool{},
		writes: map[uint32]int{},
	}
	s.create("/local/domain", 0)
	return s
}

// addDomain makes a domain's home as libxl does: /local/domain/<id> owned
// by dom0 and readable by the domain, and data/ owned by the domain.
func (s *memStore) addDomain(id uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	home := fmt.Sprintf("/local/domain/%d", id)
	s.create(home, 0)
	s.nodes[home].perms = []xenstore.Perm{{Domid: 0, Access: xenstore.AccessNone}, {Domid: id, Access: xenstore.AccessRead}}
	s.create(home+"/data", 0)
	s.nodes[home+"/data"].perms = []xenstore.Perm{{Domid: id, Access: xenstore.AccessNone}}
}

// connect returns a client connected as domain domid (0 for dom0).
func (s *memStore) connect(t *testing.T, domid uint32) *xenstore.Client {
	a, b := net.Pipe()
	mc := &memConn{s: s, domid: domid, nc: b, out: make(chan []byte, 4096)}
	s.mu.Lock()
	s.conns[mc] = true
	s.mu.Unlock()
	go mc.writeLoop()
	go mc.serve()
	c := xenstore.NewClient(a)
	t.Cleanup(func() { c.Close() })
	return c
}

func (mc *memConn) writeLoop() {
	for m := range mc.out {
		if _, err := mc.nc.Write(m); err != nil {
			mc.nc.Close()
			for range mc.out { // let senders finish
			}
			return
		}
	}
}

func (mc *memConn) serve() {
	defer func() {
		mc.s.mu.Lock()
		delete(mc.s.conns, mc)
		close(mc.out)
		mc.s.mu.Unlock()
		mc.nc.Close()
	}()
	for {
		var h [16]byte
		if _, err := io.ReadFull(mc.nc, h[:]); err != nil {
			return
		}
		typ := xenstore.MsgType(binary.LittleEndian.Uint32(h[0:]))
		id, tx := binary.LittleEndian.Uint32(h[4:]), binary.LittleEndian.Uint32(h[8:])
		n := binary.LittleEndian.Uint32(h[12:])
		if n > xenstore.XENSTORE_PAYLOAD_MAX {
			return // xenstored drops such a connection
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(mc.nc, payload); err != nil {
			return
		}
		mc.s.mu.Lock()
		rtyp, reply, after := mc.handle(typ, payload)
		if len(reply) > xenstore.XENSTORE_PAYLOAD_MAX {
			rtyp, reply = xenstore.XS_ERROR, []byte("E2BIG\x00")
		}
		mc.out <- frame(rtyp, id, tx, reply)
		if after != nil {
			after()
		}
		mc.s.mu.Unlock()
	}
}

func frame(typ xenstore.MsgType, id, tx uint32, payload []byte) []byte {
	b := make([]byte, 16, 16+len(payload))
	binary.LittleEndian.PutUint32(b[0:], uint32(typ))
	binary.LittleEndian.PutUint32(b[4:], id)
	binary.LittleEndian.PutUint32(b[8:], tx)
	binary.LittleEndian.PutUint32(b[12:], uint32(len(payload)))
	return append(b, payload...)
}

func errReply(errno string) (xenstore.MsgType, []byte, func()) {
	return xenstore.XS_ERROR, []byte(errno + "\x00"), nil
}

var ok = []byte("OK\x00")

// handle serves one request under s.mu. after, if set, runs after the
// reply is queued (the first event of a watch follows its reply).
func (mc *memConn) handle(typ xenstore.MsgType, payload []byte) (xenstore.MsgType, []byte, func()) {
	s := mc.s
	args := strings.Split(string(payload), "\x00")
	arg := func(i int) string {
		if i < len(args) {
			return args[i]
		}
		return ""
	}
	switch typ {
	case xenstore.XS_WATCH, xenstore.XS_UNWATCH:
		if len(args) < 3 {
			return errReply("EINVAL")
		}
		path, token := args[0], args[1]
		abs, special, okPath := mc.resolve(path, true)
		if !okPath {
			return errReply("EINVAL")
		}
		if !special && !mc.confined(abs) {
			return errReply("EACCES")
		}
		w := memWatch{path: abs, token: token, rel: !special && path[0] != '/'}
		i := slices.IndexFunc(mc.watches, func(x memWatch) bool { return x.path == w.path && x.token == w.token })
		if typ == xenstore.XS_UNWATCH {
			if i < 0 {
				return errReply("ENOENT")
			}
			mc.watches = slices.Delete(mc.watches, i, i+1)
			return typ, ok, nil
		}
		if i >= 0 {
			return errReply("EEXIST")
		}
		mc.watches = append(mc.watches, w)
		return typ, ok, func() { mc.event(w, path) }
	case xenstore.XS_GET_DOMAIN_PATH:
		id, err := strconv.ParseUint(arg(0), 10, 16)
		if err != nil {
			return errReply("EINVAL")
		}
		return typ, fmt.Appendf(nil, "/local/domain/%d\x00", id), nil
	}

	var path string
	var value []byte
	if typ == xenstore.XS_WRITE {
		i := bytes.IndexByte(payload, 0)
		if i < 0 {
			return errReply("EINVAL")
		}
		path, value = string(payload[:i]), payload[i+1:]
	} else {
		path = arg(0)
	}
	abs, _, okPath := mc.resolve(path, false)
	if !okPath {
		return errReply("EINVAL")
	}
	if !mc.confined(abs) {
		return errReply("EACCES")
	}
	if s.fault != nil {
		if errno := s.fault(mc.domid, typ, abs); errno != "" {
			return errReply(errno)
		}
	}
	n := s.nodes[abs]
	switch typ {
	case xenstore.XS_READ, xenstore.XS_DIRECTORY, xenstore.XS_GET_PERMS:
		if n == nil {
			return errReply("ENOENT")
		}
		if !mc.may(n, xenstore.AccessRead) {
			return errReply("EACCES")
		}
		switch typ {
		case xenstore.XS_READ:
			return typ, n.value, nil
		case xenstore.XS_DIRECTORY:
			var b []byte
			for _, c := range n.children {
				b = append(append(b, c...), 0)
			}
			return typ, b, nil
		}
		var b []byte
		for _, p := range n.perms {
			b = append(append(b, p.String()...), 0)
		}
		return typ, b, nil
	case xenstore.XS_WRITE, xenstore.XS_MKDIR:
		if typ == xenstore.XS_WRITE {
			s.writes[mc.domid]++
		}
		if n != nil {
			if !mc.may(n, xenstore.AccessWrite) {
				return errReply("EACCES")
			}
			if typ == xenstore.XS_MKDIR {
				return typ, ok, nil
			}
		} else {
			if !mc.may(s.nodes[s.ancestor(abs)], xenstore.AccessWrite) {
				return errReply("EACCES")
			}
			n = s.create(abs, mc.domid)
		}
		if typ == xenstore.XS_WRITE {
			n.value = slices.Clone(value)
		}
		s.fire(abs, false)
		return typ, ok, nil
	case xenstore.XS_RM:
		if n == nil {
			if s.nodes[parent(abs)] == nil {
				return errReply("ENOENT")
			}
			return typ, ok, nil
		}
		if abs == "/" {
			return errReply("EINVAL")
		}
		if !mc.may(n, xenstore.AccessWrite) {
			return errReply("EACCES")
		}
		for p := range s.nodes {
			if p == abs || strings.HasPrefix(p, abs+"/") {
				delete(s.nodes, p)
			}
		}
		pn := s.nodes[parent(abs)]
		pn.children = slices.DeleteFunc(pn.children, func(c string) bool { return c == abs[strings.LastIndexByte(abs, '/')+1:] })
		s.fire(abs, true)
		return typ, ok, nil
	case xenstore.XS_SET_PERMS:
		if n == nil {
			return errReply("ENOENT")
		}
		var perms []xenstore.Perm
		for _, a := range args[1:] {
			if a == "" {
				continue
			}
			p, err := xenstore.ParsePerm(a)
			if err != nil {
				return errReply("EINVAL")
			}
			perms = append(perms, p)
		}
		if len(perms) == 0 {
			return errReply("EINVAL")
		}
		if mc.domid != 0 && n.perms[0].Domid != mc.domid {
			return errReply("EACCES")
		}
		if mc.domid != 0 && perms[0].Domid != mc.domid {
			return errReply("EPERM")
		}
		n.perms = perms
		s.fire(abs, false)
		return typ, ok, nil
	}
	return errReply("ENOSYS")
}

// resolve makes path absolute against the connection's home.
func (mc *memConn) resolve(path string, allowSpecial bool) (abs string, special, ok bool) {
	switch {
	case path == "", strings.Contains(path, "//"), len(path) > 1 && strings.HasSuffix(path, "/"):
		return "", false, false
	case path[0] == '@':
		return path, true, allowSpecial
	case path[0] == '/':
		return path, false, true
	}
	return fmt.Sprintf("/local/domain/%d/%s", mc.domid, path), false, true
}

// confined: a domain other than dom0 touches only its own home.
func (mc *memConn) confined(abs string) bool {
	if mc.domid == 0 {
		return true
	}
	home := fmt.Sprintf("/local/domain/%d", mc.domid)
	return abs == home || strings.HasPrefix(abs, home+"/")
}

// may reports whether the connection has access a to n: dom0 and the
// owner always, others by their entry or the default (the first entry).
func (mc *memConn) may(n *memNode, a xenstore.Access) bool {
	if mc.domid == 0 || n.perms[0].Domid == mc.domid {
		return true
	}
	got := n.perms[0].Access
	for _, p := range n.perms[1:] {
		if p.Domid == mc.domid {
			got = p.Access
			break
		}
	}
	return got == xenstore.AccessBoth || got == a
}

func parent(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// ancestor returns the nearest existing ancestor of p.
func (s *memStore) ancestor(p string) string {
	for p != "/" {
		p = parent(p)
		if s.nodes[p] != nil {
			return p
		}
	}
	return "/"
}

// create makes p and its missing parents, each inheriting its parent's
// permissions, owned by the creator if it is a domain (or always, with
// creatorOwns). Callers hold s.mu or own s.
func (s *memStore) create(p string, creator uint32) *memNode {
	if n := s.nodes[p]; n != nil {
		return n
	}
	par := s.create(parent(p), creator)
	n := &memNode{perms: slices.Clone(par.perms)}
	if creator != 0 || s.creatorOwns {
		n.perms[0].Domid = creator
	}
	s.nodes[p] = n
	par.children = append(par.children, p[strings.LastIndexByte(p, '/')+1:])
	return n
}

// fire queues the events of a change at abs: for every watch on abs or a
// parent, and after a removal for every watch below abs too (with the
// watch's own path, as xenstored does).
func (s *memStore) fire(abs string, removed bool) {
	for mc := range s.conns {
		for _, w := range mc.watches {
			switch {
			case w.path == abs || w.path == "/" || strings.HasPrefix(abs, w.path+"/"):
				mc.event(w, abs)
			case removed && strings.HasPrefix(w.path, abs+"/"):
				mc.event(w, w.path)
			}
		}
	}
}

// event queues one WATCH_EVENT for w about abs (or w's special path).
func (mc *memConn) event(w memWatch, abs string) {
	if mc.s.dropEvents {
		return
	}
	path := abs
	if w.rel {
		path = strings.TrimPrefix(abs, fmt.Sprintf("/local/domain/%d/", mc.domid))
	}
	mc.out <- frame(xenstore.XS_WATCH_EVENT, 0, 0, []byte(path+"\x00"+w.token+"\x00"))
}
