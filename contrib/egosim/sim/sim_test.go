package sim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/snowflock/snowflock/allocator/ego/wire"
)

// The control API documented in the README: add a host, reclaim, state.
// (The EGO-facing API is exercised by allocator/ego's tests.)
func TestControlAPI(t *testing.T) {
	s, err := New(Default())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	post := func(path, body string) int {
		t.Helper()
		resp, err := http.Post(srv.URL+ControlPrefix+path, "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post("hosts", `{"resourcegroup": "ComputeHosts", "hostname": "simhost3", "slots": 2}`); c != http.StatusOK {
		t.Fatalf("adding a host: %d", c)
	}
	if c := post("hosts", `{"resourcegroup": "ComputeHosts", "hostname": "simhost3", "slots": 2}`); c != http.StatusBadRequest {
		t.Errorf("adding it twice: %d", c)
	}
	// An allocation to reclaim from, made the way a client would.
	s.mu.Lock()
	s.clients["c"] = &client{name: "c", user: "Admin", changed: make(chan struct{}), lastSeen: time.Now()}
	a := &alloc{Allocation: wire.Allocation{ID: "a1", ClientName: "c", Consumer: "/SnowFlock", ResourceGroup: "ComputeHosts", MinSlots: 10, MaxSlots: 10}}
	s.allocs[a.ID], s.order = a, append(s.order, a.ID)
	s.schedule()
	s.mu.Unlock()
	if s.Used() != 10 {
		t.Fatalf("used %d of 10 slots", s.Used())
	}
	if c := post("reclaim", `{"allocationid": "a1", "hostname": "simhost3", "slots": 2, "grace_ms": 50}`); c != http.StatusOK {
		t.Fatalf("reclaim: %d", c)
	}
	if c := post("reclaim", `{"allocationid": "nope", "hostname": "simhost3"}`); c != http.StatusBadRequest {
		t.Errorf("reclaim of an unknown allocation: %d", c)
	}
	time.Sleep(300 * time.Millisecond)
	resp, err := http.Get(srv.URL + ControlPrefix + "state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Used     int       `json:"used"`
		Reclaims []Reclaim `json:"reclaims"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Used != 8 || len(st.Reclaims) != 1 || !st.Reclaims[0].Forced {
		t.Errorf("state after an unanswered reclaim: %+v; want it forced and 8 slots used", st)
	}
}
