package wire

import (
	"bytes"
	"testing"
)

// Every reply parser must turn any bytes into a value that passed its
// checks or an error: never a panic.
func FuzzReplies(f *testing.F) {
	for _, seed := range []string{
		`{"csrftoken":"abc"}`,
		`{"clientname":"c","allocations":[{"allocationid":"1","resources":[{"hostname":"h","slots":2}]}],"lastseq":3}`,
		`{"notifications":[{"seq":1,"type":"RESOURCE_ADD","allocationid":"1","resources":[{"hostname":"h","slots":1}]}],"lastseq":1}`,
		`{"notifications":[{"seq":2,"type":"RESOURCE_RECLAIM","allocationid":"1","resources":[{"hostname":"h","slots":1}],"deadline":"2026-01-01T00:00:00Z"}],"lastseq":2}`,
		`{"name":"rg","hosts":[{"hostname":"h1","slots":4}]}`,
		`{"allocationid":"x"}`, `[]`, `null`, `{"seq":`, "\x00\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if v, err := Decode(bytes.NewReader(data), CheckLogon); err == nil && v.CSRFToken == "" {
			t.Errorf("logon without token accepted")
		}
		if v, err := Decode(bytes.NewReader(data), CheckRegister); err == nil {
			for _, a := range v.Allocations {
				for _, r := range a.Resources {
					if r.Slots <= 0 || r.Host == "" {
						t.Errorf("bad resource accepted: %+v", r)
					}
				}
			}
		}
		if v, err := Decode(bytes.NewReader(data), CheckNotifications); err == nil {
			for i := 1; i < len(v.Notifications); i++ {
				if v.Notifications[i].Seq <= v.Notifications[i-1].Seq {
					t.Errorf("out-of-order notifications accepted")
				}
			}
		}
		_, _ = Decode(bytes.NewReader(data), CheckAllocation)
		_, _ = Decode(bytes.NewReader(data), CheckResourceGroup)
		_, _ = Decode(bytes.NewReader(data), CheckCreated)
		_, _ = Decode[Consumer](bytes.NewReader(data), nil)
		_, _ = Decode[Error](bytes.NewReader(data), nil)
	})
}

func TestURL(t *testing.T) {
	for base, want := range map[string]string{
		"http://ego:8080":                   "http://ego:8080/platform/rest/ego/v1/allocations/a%2Fb",
		"https://ego/platform/rest/ego/v1/": "https://ego/platform/rest/ego/v1/allocations/a%2Fb",
		"http://127.0.0.1:1/prefix":         "http://127.0.0.1:1/prefix/platform/rest/ego/v1/allocations/a%2Fb",
	} {
		got, err := URL(base, PathAllocation, "a/b")
		if err != nil || got != want {
			t.Errorf("URL(%q) = %q, %v; want %q", base, got, err, want)
		}
	}
	for _, bad := range []string{"", "ego:8080", "ftp://ego", "http://"} {
		if _, err := URL(bad, PathLogon); err == nil {
			t.Errorf("URL(%q) accepted", bad)
		}
	}
	if _, err := Decode(bytes.NewReader(bytes.Repeat([]byte(" "), MaxReply+2)), CheckLogon); err == nil {
		t.Errorf("oversized reply accepted")
	}
}
