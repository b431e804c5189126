package ego

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/ego/wire"
)

// transport is how the backend reaches EGO: REST (rest.go) or, for sites
// with the EGO SDK, the C API (vem_cgo.go, build tag egocapi).
type transport interface {
	logon(ctx context.Context) error
	consumer(ctx context.Context, path string) (*wire.Consumer, error)
	resourceGroup(ctx context.Context, name string) (*wire.ResourceGroup, error)
	register(ctx context.Context, r wire.RegisterRequest) (*wire.RegisterReply, error)
	create(ctx context.Context, client string, r wire.AllocationRequest) (string, error)
	get(ctx context.Context, id string) (*wire.Allocation, error)
	list(ctx context.Context, client string) ([]wire.Allocation, error)
	release(ctx context.Context, id string, rs []wire.Resource) (*wire.Allocation, error)
	cancel(ctx context.Context, id string) error
	notifications(ctx context.Context, client string, after int64, wait time.Duration) (*wire.NotificationList, error)
}

// rest speaks EGO's REST API (allocator/ego/wire).
type rest struct {
	base     string
	http     *http.Client
	user     string
	password string
	token    string

	mu   sync.Mutex // guards csrf
	csrf string
}

var _ transport = (*rest)(nil)

func newREST(base, user, password, token string) (*rest, error) {
	if _, err := wire.URL(base, wire.PathLogon); err != nil {
		return nil, fmt.Errorf("%v: %w", err, allocator.ErrInvalidArgument)
	}
	jar, _ := cookiejar.New(nil)
	return &rest{base: base, http: &http.Client{Jar: jar}, user: user, password: password, token: token}, nil
}

// call describes one REST call.
type call struct {
	method, path string
	args         []string
	query        url.Values
	body         any
	// notFound is the class of a 404 (what was not found).
	notFound error
}

// do runs a call and returns the reply body (closed by the caller). A 401
// on a password session logs on again once.
func (r *rest) do(ctx context.Context, c call) (io.ReadCloser, error) {
	body, err := r.try(ctx, c)
	if errors.Is(err, errSessionExpired) && r.token == "" && c.path != wire.PathLogon {
		if err := r.logon(ctx); err != nil {
			return nil, err
		}
		body, err = r.try(ctx, c)
	}
	if errors.Is(err, errSessionExpired) {
		who := "the PlatformToken"
		if r.token == "" {
			who = "the credentials of user " + strconv.Quote(r.user)
		}
		return nil, fmt.Errorf("EGO at %s refused %s: %w", r.base, who, allocator.ErrInvalidArgument)
	}
	return body, err
}

var errSessionExpired = errors.New("EGO answered 401")

func (r *rest) try(ctx context.Context, c call) (io.ReadCloser, error) {
	u, err := wire.URL(r.base, c.path, c.args...)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, allocator.ErrInvalidArgument)
	}
	if len(c.query) > 0 {
		u += "?" + c.query.Encode()
	}
	var rd io.Reader
	if c.body != nil {
		b, err := json.Marshal(c.body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, allocator.ErrInvalidArgument)
	}
	req.Header.Set("Accept", "application/json")
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case r.token != "":
		req.Header.Set("Authorization", wire.PlatformTokenScheme+r.token)
	case c.path == wire.PathLogon:
		req.SetBasicAuth(r.user, r.password)
	default:
		r.mu.Lock()
		req.Header.Set(wire.HeaderCSRF, r.csrf)
		r.mu.Unlock()
	}
	what := c.method + " " + c.path
	if len(c.args) > 0 {
		what = c.method + " " + fmt.Sprintf(c.path, toAny(c.args)...)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("EGO %s: %w", what, allocator.ErrTimeout)
		}
		return nil, fmt.Errorf("EGO at %s unreachable: %s: %w", r.base, oneLine(err.Error()), allocator.ErrBackendDown)
	}
	if resp.StatusCode/100 == 2 {
		return resp.Body, nil
	}
	defer resp.Body.Close()
	msg := resp.Status
	if e, err := wire.Decode[wire.Error](resp.Body, nil); err == nil && e.Message != "" {
		msg = oneLine(e.Message)
	}
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, errSessionExpired
	case resp.StatusCode == http.StatusNotFound && c.notFound != nil:
		return nil, fmt.Errorf("EGO: %s: %w", msg, c.notFound)
	case resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusForbidden,
		resp.StatusCode == http.StatusConflict, resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("EGO refused %s: %s: %w", what, msg, allocator.ErrInvalidArgument)
	}
	return nil, fmt.Errorf("EGO %s: %s: %w", what, msg, allocator.ErrBackendDown)
}

// fetch runs a call and decodes its reply with check.
func fetch[T any](ctx context.Context, r *rest, c call, check func(*T) error) (*T, error) {
	body, err := r.do(ctx, c)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	v, err := wire.Decode(body, check)
	if err != nil {
		return nil, fmt.Errorf("EGO at %s answered %s %s with garbage: %v: %w", r.base, c.method, c.path, err, allocator.ErrBackendDown)
	}
	return v, nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (r *rest) logon(ctx context.Context) error {
	if r.token != "" {
		return nil // a PlatformToken needs no session
	}
	v, err := fetch(ctx, r, call{method: http.MethodGet, path: wire.PathLogon}, wire.CheckLogon)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.csrf = v.CSRFToken
	r.mu.Unlock()
	return nil
}

func (r *rest) consumer(ctx context.Context, path string) (*wire.Consumer, error) {
	return fetch[wire.Consumer](ctx, r, call{method: http.MethodGet, path: wire.PathConsumer,
		query: url.Values{wire.QueryConsumerPath: {path}}, notFound: allocator.ErrInvalidArgument}, nil)
}

func (r *rest) resourceGroup(ctx context.Context, name string) (*wire.ResourceGroup, error) {
	return fetch(ctx, r, call{method: http.MethodGet, path: wire.PathResourceGroup, args: []string{name}, notFound: allocator.ErrInvalidArgument}, wire.CheckResourceGroup)
}

func (r *rest) register(ctx context.Context, req wire.RegisterRequest) (*wire.RegisterReply, error) {
	return fetch(ctx, r, call{method: http.MethodPost, path: wire.PathClients, body: req}, wire.CheckRegister)
}

func (r *rest) create(ctx context.Context, client string, req wire.AllocationRequest) (string, error) {
	v, err := fetch(ctx, r, call{method: http.MethodPost, path: wire.PathClientAllocations, args: []string{client}, body: req, notFound: allocator.ErrInvalidArgument}, wire.CheckCreated)
	if err != nil {
		return "", err
	}
	return v.ID, nil
}

func (r *rest) get(ctx context.Context, id string) (*wire.Allocation, error) {
	return fetch(ctx, r, call{method: http.MethodGet, path: wire.PathAllocation, args: []string{id}, notFound: allocator.ErrUnknownAllocation}, wire.CheckAllocation)
}

func (r *rest) list(ctx context.Context, client string) ([]wire.Allocation, error) {
	v, err := fetch(ctx, r, call{method: http.MethodGet, path: wire.PathClientAllocations, args: []string{client}}, wire.CheckAllocationList)
	if err != nil {
		return nil, err
	}
	return v.Allocations, nil
}

func (r *rest) release(ctx context.Context, id string, rs []wire.Resource) (*wire.Allocation, error) {
	return fetch(ctx, r, call{method: http.MethodPost, path: wire.PathAllocationRelease, args: []string{id},
		body: wire.ReleaseRequest{Resources: rs}, notFound: allocator.ErrUnknownAllocation}, wire.CheckAllocation)
}

func (r *rest) cancel(ctx context.Context, id string) error {
	body, err := r.do(ctx, call{method: http.MethodDelete, path: wire.PathAllocation, args: []string{id}, notFound: allocator.ErrUnknownAllocation})
	if err != nil {
		return err
	}
	return body.Close()
}

func (r *rest) notifications(ctx context.Context, client string, after int64, wait time.Duration) (*wire.NotificationList, error) {
	q := url.Values{wire.QueryAfter: {strconv.FormatInt(after, 10)}, wire.QueryWait: {strconv.Itoa(int(wait / time.Second))}}
	return fetch(ctx, r, call{method: http.MethodGet, path: wire.PathNotifications, args: []string{client}, query: q}, wire.CheckNotifications)
}
