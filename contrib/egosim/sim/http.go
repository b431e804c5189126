package sim

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/snowflock/snowflock/allocator/ego/wire"
)

// sessionCookie names the simulator's session cookie.
const sessionCookie = "egosim_session"

// ControlPrefix prefixes the simulator's own control API (not EGO's):
// POST hosts (wire.Host plus "resourcegroup"), POST reclaim
// ({"allocationid", "hostname", "slots", "grace_ms"}), GET state.
const ControlPrefix = "/egosim/v1/"

// Handler serves the REST API at wire.BasePath and the control API at
// ControlPrefix.
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	b := wire.BasePath
	mux.HandleFunc("GET "+b+wire.PathLogon, s.logon)
	mux.HandleFunc("GET "+b+wire.PathLogoff, s.authed(s.logoff))
	mux.HandleFunc("GET "+b+wire.PathConsumer, s.authed(s.consumer))
	mux.HandleFunc("GET "+b+"resourcegroups/{name}", s.authed(s.resourceGroup))
	mux.HandleFunc("POST "+b+wire.PathClients, s.authed(s.register))
	mux.HandleFunc("DELETE "+b+"clients/{name}", s.authed(s.unregister))
	mux.HandleFunc("POST "+b+"clients/{name}/allocations", s.authed(s.allocate))
	mux.HandleFunc("GET "+b+"clients/{name}/allocations", s.authed(s.listAllocations))
	mux.HandleFunc("GET "+b+"clients/{name}/notifications", s.authed(s.notifications))
	mux.HandleFunc("GET "+b+"allocations/{id}", s.authed(s.getAllocation))
	mux.HandleFunc("DELETE "+b+"allocations/{id}", s.authed(s.cancel))
	mux.HandleFunc("POST "+b+"allocations/{id}/release", s.authed(s.release))
	mux.HandleFunc("POST "+ControlPrefix+"hosts", s.ctlAddHost)
	mux.HandleFunc("POST "+ControlPrefix+"reclaim", s.ctlReclaim)
	mux.HandleFunc("GET "+ControlPrefix+"state", s.ctlState)
	return mux
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	reply(w, code, wire.Error{Code: strings.ReplaceAll(strings.ToUpper(http.StatusText(code)), " ", "_"), Message: fmt.Sprintf(format, args...)})
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		fail(w, http.StatusBadRequest, "malformed request body: %v", err)
		return false
	}
	return true
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func (s *Sim) logon(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	want, known := s.cfg.Users[user]
	if !ok || !known || !equal(pass, want) {
		fail(w, http.StatusUnauthorized, "logon refused: wrong user name or password")
		return
	}
	id, csrf := newID("s"), newID("c")
	s.mu.Lock()
	s.sessions[id] = session{user: user, csrf: csrf}
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true})
	reply(w, http.StatusOK, wire.LogonReply{CSRFToken: csrf})
}

// authed runs h for an authenticated user: a PlatformToken, or a session
// cookie with its CSRF token.
func (s *Sim) authed(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), wire.PlatformTokenScheme); ok {
			if slices.ContainsFunc(s.cfg.Tokens, func(t string) bool { return equal(t, tok) }) {
				h(w, r, TokenUser)
				return
			}
			fail(w, http.StatusUnauthorized, "PlatformToken refused")
			return
		}
		c, err := r.Cookie(sessionCookie)
		if err != nil {
			fail(w, http.StatusUnauthorized, "not logged on")
			return
		}
		s.mu.Lock()
		sess, ok := s.sessions[c.Value]
		s.mu.Unlock()
		if !ok || !equal(r.Header.Get(wire.HeaderCSRF), sess.csrf) {
			fail(w, http.StatusUnauthorized, "session unknown or CSRF token missing")
			return
		}
		h(w, r, sess.user)
	}
}

func (s *Sim) logoff(w http.ResponseWriter, r *http.Request, _ string) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.mu.Lock()
		delete(s.sessions, c.Value)
		s.mu.Unlock()
	}
	reply(w, http.StatusOK, struct{}{})
}

func (s *Sim) consumer(w http.ResponseWriter, r *http.Request, _ string) {
	path := r.URL.Query().Get(wire.QueryConsumerPath)
	s.mu.Lock()
	rgs, ok := s.cfg.Consumers[path]
	s.mu.Unlock()
	if !ok {
		fail(w, http.StatusNotFound, "consumer %s does not exist", path)
		return
	}
	reply(w, http.StatusOK, wire.Consumer{Path: path, ResourceGroups: rgs})
}

func (s *Sim) resourceGroup(w http.ResponseWriter, r *http.Request, _ string) {
	name := r.PathValue("name")
	s.mu.Lock()
	hosts, ok := s.cfg.ResourceGroups[name]
	hosts = slices.Clone(hosts)
	s.mu.Unlock()
	if !ok {
		fail(w, http.StatusNotFound, "resource group %s does not exist", name)
		return
	}
	reply(w, http.StatusOK, wire.ResourceGroup{Name: name, Hosts: hosts})
}

// clientOf returns client name if user owns it, touching it (a call from a
// client keeps it alive). Preconditions: s.mu held.
func (s *Sim) clientOf(w http.ResponseWriter, name, user string) *client {
	c := s.clients[name]
	if c == nil {
		fail(w, http.StatusNotFound, "client %s is not registered", name)
		return nil
	}
	if c.user != user {
		fail(w, http.StatusForbidden, "client %s belongs to another user", name)
		return nil
	}
	c.lastSeen = time.Now()
	return c
}

func (s *Sim) register(w http.ResponseWriter, r *http.Request, user string) {
	var req wire.RegisterRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.ClientName == "" || req.TTL < 0 {
		fail(w, http.StatusBadRequest, "clientname is required and ttl must not be negative")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[req.ClientName]
	if c != nil && c.user != user {
		fail(w, http.StatusConflict, "client name %s is registered by another user", req.ClientName)
		return
	}
	if c == nil {
		c = &client{name: req.ClientName, user: user, changed: make(chan struct{})}
		s.clients[req.ClientName] = c
	}
	c.ttl, c.lastSeen = time.Duration(req.TTL)*time.Second, time.Now()
	reply(w, http.StatusOK, wire.RegisterReply{ClientName: c.name, Allocations: s.allocationsOf(c.name), LastSeq: c.seq})
}

// allocationsOf lists a client's allocations. Preconditions: s.mu held.
func (s *Sim) allocationsOf(name string) []wire.Allocation {
	out := []wire.Allocation{}
	for _, id := range s.order {
		if a := s.allocs[id]; a.ClientName == name {
			cp := a.Allocation
			cp.Resources = slices.Clone(a.Resources)
			out = append(out, cp)
		}
	}
	return out
}

func (s *Sim) unregister(w http.ResponseWriter, r *http.Request, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clientOf(w, r.PathValue("name"), user)
	if c == nil {
		return
	}
	for _, id := range slices.Clone(s.order) {
		if s.allocs[id].ClientName == c.name {
			s.end(id, "client unregistered", false)
		}
	}
	delete(s.clients, c.name)
	reply(w, http.StatusOK, struct{}{})
}

func (s *Sim) allocate(w http.ResponseWriter, r *http.Request, user string) {
	var req wire.AllocationRequest
	if !readJSON(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clientOf(w, r.PathValue("name"), user)
	if c == nil {
		return
	}
	rgs, ok := s.cfg.Consumers[req.Consumer]
	switch {
	case !ok:
		fail(w, http.StatusNotFound, "consumer %s does not exist", req.Consumer)
		return
	case !slices.Contains(rgs, req.ResourceGroup):
		fail(w, http.StatusNotFound, "resource group %s does not exist or is not available to consumer %s", req.ResourceGroup, req.Consumer)
		return
	case req.MinSlots < 1 || req.MaxSlots < req.MinSlots:
		fail(w, http.StatusBadRequest, "want 1 <= minslots <= maxslots, got %d and %d", req.MinSlots, req.MaxSlots)
		return
	}
	a := &alloc{Allocation: wire.Allocation{
		ID: newID("ego-"), ClientName: c.name, Name: req.Name, Description: req.Description, Consumer: req.Consumer,
		ResourceGroup: req.ResourceGroup, MinSlots: req.MinSlots, MaxSlots: req.MaxSlots, Exclusive: req.Exclusive,
		State: wire.StatePending, Resources: []wire.Resource{}, Created: time.Now().UTC(),
	}}
	s.allocs[a.ID] = a
	s.order = append(s.order, a.ID)
	s.schedule()
	reply(w, http.StatusCreated, wire.AllocationCreated{ID: a.ID})
}

func (s *Sim) listAllocations(w http.ResponseWriter, r *http.Request, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.clientOf(w, r.PathValue("name"), user); c != nil {
		reply(w, http.StatusOK, wire.AllocationList{Allocations: s.allocationsOf(c.name)})
	}
}

// allocationOf returns allocation id if its client belongs to user.
// Preconditions: s.mu held.
func (s *Sim) allocationOf(w http.ResponseWriter, id, user string) *alloc {
	a := s.allocs[id]
	if a == nil || s.clients[a.ClientName] == nil || s.clients[a.ClientName].user != user {
		fail(w, http.StatusNotFound, "allocation %s does not exist", id)
		return nil
	}
	s.clients[a.ClientName].lastSeen = time.Now()
	return a
}

func (s *Sim) getAllocation(w http.ResponseWriter, r *http.Request, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.allocationOf(w, r.PathValue("id"), user); a != nil {
		cp := a.Allocation
		cp.Resources = slices.Clone(a.Resources)
		reply(w, http.StatusOK, cp)
	}
}

func (s *Sim) cancel(w http.ResponseWriter, r *http.Request, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.allocationOf(w, r.PathValue("id"), user); a != nil {
		s.end(a.ID, "cancelled", false)
		reply(w, http.StatusOK, struct{}{})
	}
}

func (s *Sim) release(w http.ResponseWriter, r *http.Request, user string) {
	var req wire.ReleaseRequest
	if !readJSON(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.allocationOf(w, r.PathValue("id"), user)
	if a == nil {
		return
	}
	for _, res := range req.Resources {
		i := slices.IndexFunc(a.Resources, func(x wire.Resource) bool { return x.Host == res.Host })
		if i < 0 || res.Slots < 0 || res.Slots > a.Resources[i].Slots {
			fail(w, http.StatusBadRequest, "allocation %s does not hold %d slots on %s", a.ID, res.Slots, res.Host)
			return
		}
	}
	for _, res := range req.Resources {
		s.take(a, res.Host, res.Slots)
	}
	// AUTOADJ: the demand drops to what is still held, so the released
	// slots are not given back.
	a.MaxSlots = a.held()
	if len(a.Resources) == 0 {
		s.end(a.ID, "released", false)
		reply(w, http.StatusOK, wire.Allocation{ID: a.ID, ClientName: a.ClientName, Name: a.Name, State: "RELEASED", Resources: []wire.Resource{}})
		return
	}
	s.schedule()
	cp := a.Allocation
	cp.Resources = slices.Clone(a.Resources)
	reply(w, http.StatusOK, cp)
}

func (s *Sim) notifications(w http.ResponseWriter, r *http.Request, user string) {
	q := r.URL.Query()
	after, _ := strconv.ParseInt(q.Get(wire.QueryAfter), 10, 64)
	wait, _ := strconv.Atoi(q.Get(wire.QueryWait))
	deadline := time.Now().Add(time.Duration(min(max(wait, 0), 60)) * time.Second)
	for {
		s.mu.Lock()
		c := s.clientOf(w, r.PathValue("name"), user)
		if c == nil {
			s.mu.Unlock()
			return
		}
		var out []wire.Notification
		for _, n := range c.notes {
			if n.Seq > after {
				out = append(out, n)
			}
		}
		changed, seq := c.changed, c.seq
		s.mu.Unlock()
		left := time.Until(deadline)
		if len(out) > 0 || left <= 0 {
			reply(w, http.StatusOK, wire.NotificationList{Notifications: out, LastSeq: seq})
			return
		}
		select {
		case <-changed:
		case <-time.After(left):
		case <-r.Context().Done():
			return
		case <-s.stop:
			fail(w, http.StatusServiceUnavailable, "simulator stopping")
			return
		}
	}
}

func (s *Sim) ctlAddHost(w http.ResponseWriter, r *http.Request) {
	var req struct {
		wire.Host
		ResourceGroup string `json:"resourcegroup"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if err := s.AddHost(req.ResourceGroup, req.Host); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	reply(w, http.StatusOK, req.Host)
}

func (s *Sim) ctlReclaim(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AllocationID string `json:"allocationid"`
		Host         string `json:"hostname"`
		Slots        int    `json:"slots"`
		GraceMS      int64  `json:"grace_ms"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	rc, err := s.Reclaim(req.AllocationID, req.Host, req.Slots, time.Duration(req.GraceMS)*time.Millisecond)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	reply(w, http.StatusOK, rc)
}

func (s *Sim) ctlState(w http.ResponseWriter, _ *http.Request) {
	reply(w, http.StatusOK, map[string]any{"allocations": s.Allocations(), "reclaims": s.Reclaims(), "used": s.Used()})
}
