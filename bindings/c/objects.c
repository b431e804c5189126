/*
 * objects.c — the C half of libegosf: the per-thread last error, the
 * accessors and destructors of the objects the library returns, and the
 * constructors the Go half fills them with. Plain C, no Go calls, so the
 * accessors are cheap and cannot panic.
 */
#include <stdlib.h>
#include <string.h>

#include "egosf.h"
#include "egosf_impl.h"

/* The Go side reads the public input structs through its copies in
 * egosf_impl.h: they must be laid out alike. */
#define SAME_FIELD(pub, priv, f) \
	_Static_assert(offsetof(pub, f) == offsetof(priv, f) && \
	               sizeof(((pub *)0)->f) == sizeof(((priv *)0)->f), #pub "." #f)
SAME_FIELD(struct egosf_request_options, struct egosf__request_options, name);
SAME_FIELD(struct egosf_request_options, struct egosf__request_options, consumer);
SAME_FIELD(struct egosf_request_options, struct egosf__request_options, resreq);
SAME_FIELD(struct egosf_request_options, struct egosf__request_options, exclusive);
SAME_FIELD(struct egosf_request_options, struct egosf__request_options, immediate);
SAME_FIELD(struct egosf_request_options, struct egosf__request_options, lease_ms);
SAME_FIELD(struct egosf_request_options, struct egosf__request_options, timeout_ms);
_Static_assert(sizeof(struct egosf_request_options) == sizeof(struct egosf__request_options), "egosf_request_options size");
SAME_FIELD(struct egosf_slot, struct egosf__slot, host);
SAME_FIELD(struct egosf_slot, struct egosf__slot, count);
_Static_assert(sizeof(struct egosf_slot) == sizeof(struct egosf__slot), "egosf_slot size");

/* The calling thread's last error. A fixed buffer in thread-local storage:
 * nothing to allocate, so nothing to leak when a thread ends, and each
 * thread sees only its own message. Messages longer than the buffer are
 * cut at a UTF-8 character boundary. */
#define EGOSF_ERRMAX 1024
static __thread char last_error[EGOSF_ERRMAX];

void egosf__set_error(const char *msg, size_t len)
{
	if (len >= EGOSF_ERRMAX) {
		len = EGOSF_ERRMAX - 1;
		while (len > 0 && ((unsigned char)msg[len] & 0xC0) == 0x80)
			len--; /* do not split a multi-byte character */
	}
	memcpy(last_error, msg, len);
	last_error[len] = '\0';
}

static void set_error(const char *msg)
{
	egosf__set_error(msg, strlen(msg));
}

const char *egosf_last_error(void)
{
	return last_error;
}

const char *egosf_strerror(int code)
{
	switch (code) {
	case EGOSF_OK: return "success";
	case EGOSF_EINVAL: return "invalid argument";
	case EGOSF_ENONE_AVAILABLE: return "not enough slots available";
	case EGOSF_ETIMEOUT: return "deadline passed";
	case EGOSF_EUNKNOWN_TICKET: return "unknown ticket";
	case EGOSF_EBACKEND_DOWN: return "allocator backend unavailable";
	case EGOSF_ENOT_FOUND: return "not found";
	case EGOSF_EPERMISSION: return "permission denied";
	case EGOSF_EVM_FAILED: return "vm failed";
	case EGOSF_EUNAVAILABLE: return "unavailable";
	case EGOSF_ENOT_IN_GUEST: return "not inside a SnowFlock guest";
	case EGOSF_EINTERNAL: return "internal error in libegosf";
	}
	return "unknown libegosf error code";
}

/* ---- constructors (Go side) ---- */

/* calloc that never returns NULL for n > 0 (out of memory aborts, as Go
 * does), and returns NULL for n == 0. */
static void *xcalloc(size_t n, size_t size)
{
	if (n == 0)
		return NULL;
	void *p = calloc(n, size);
	if (p == NULL)
		abort();
	return p;
}

egosf_ticket *egosf__ticket_new(char *id, char *backend, int granted, int64_t expires_ms, int nhosts)
{
	egosf_ticket *t = xcalloc(1, sizeof *t);
	t->id = id;
	t->backend = backend;
	t->granted = granted;
	t->expires_ms = expires_ms;
	t->nhosts = nhosts;
	t->hosts = xcalloc(nhosts > 0 ? (size_t)nhosts : 0, sizeof *t->hosts);
	return t;
}

void egosf__ticket_set_host(egosf_ticket *t, int i, char *name, char *address, int count)
{
	t->hosts[i].name = name;
	t->hosts[i].address = address;
	t->hosts[i].count = count;
}

egosf_ticket_list *egosf__ticket_list_new(int n)
{
	egosf_ticket_list *l = xcalloc(1, sizeof *l);
	l->n = n;
	l->items = xcalloc(n > 0 ? (size_t)n : 0, sizeof *l->items);
	return l;
}

void egosf__ticket_list_set(egosf_ticket_list *l, int i, egosf_ticket *t)
{
	l->items[i] = t;
}

egosf_exits *egosf__exits_new(int n)
{
	egosf_exits *e = xcalloc(1, sizeof *e);
	e->n = n;
	e->items = xcalloc(n > 0 ? (size_t)n : 0, sizeof *e->items);
	return e;
}

void egosf__exits_set(egosf_exits *e, int i, int clone_id, int killed, char *reason, void *result, size_t len)
{
	e->items[i].clone_id = clone_id;
	e->items[i].killed = killed;
	e->items[i].reason = reason;
	e->items[i].result = result;
	e->items[i].result_len = len;
}

const struct egosf__slot *egosf__slot_at(const struct egosf__slot *slots, size_t i)
{
	return &slots[i];
}

/* ---- tickets ---- */

static const egosf_ticket *ticket_ok(const egosf_ticket *t)
{
	if (t == NULL)
		set_error("ticket is NULL: invalid argument");
	return t;
}

static const egosf_host *host_at(const egosf_ticket *t, int i)
{
	if (ticket_ok(t) == NULL)
		return NULL;
	if (i < 0 || i >= t->nhosts) {
		set_error("host index out of range: invalid argument");
		return NULL;
	}
	return &t->hosts[i];
}

const char *egosf_ticket_id(const egosf_ticket *t)
{
	return ticket_ok(t) ? t->id : NULL;
}

const char *egosf_ticket_backend(const egosf_ticket *t)
{
	return ticket_ok(t) ? t->backend : NULL;
}

int egosf_ticket_granted(const egosf_ticket *t)
{
	return ticket_ok(t) ? t->granted : -1;
}

int64_t egosf_ticket_expires(const egosf_ticket *t)
{
	return ticket_ok(t) ? t->expires_ms : -1;
}

int egosf_ticket_nhosts(const egosf_ticket *t)
{
	return ticket_ok(t) ? t->nhosts : -1;
}

const char *egosf_ticket_host_name(const egosf_ticket *t, int i)
{
	const egosf_host *h = host_at(t, i);
	return h ? h->name : NULL;
}

const char *egosf_ticket_host_address(const egosf_ticket *t, int i)
{
	const egosf_host *h = host_at(t, i);
	return h ? h->address : NULL;
}

int egosf_ticket_host_count(const egosf_ticket *t, int i)
{
	const egosf_host *h = host_at(t, i);
	return h ? h->count : -1;
}

void egosf_ticket_free(egosf_ticket *t)
{
	if (t == NULL)
		return;
	for (int i = 0; i < t->nhosts; i++) {
		free(t->hosts[i].name);
		free(t->hosts[i].address);
	}
	free(t->hosts);
	free(t->id);
	free(t->backend);
	free(t);
}

int egosf_ticket_list_count(const egosf_ticket_list *l)
{
	if (l == NULL) {
		set_error("ticket list is NULL: invalid argument");
		return -1;
	}
	return l->n;
}

const egosf_ticket *egosf_ticket_list_at(const egosf_ticket_list *l, int i)
{
	if (egosf_ticket_list_count(l) < 0)
		return NULL;
	if (i < 0 || i >= l->n) {
		set_error("ticket index out of range: invalid argument");
		return NULL;
	}
	return l->items[i];
}

void egosf_ticket_list_free(egosf_ticket_list *l)
{
	if (l == NULL)
		return;
	for (int i = 0; i < l->n; i++)
		egosf_ticket_free(l->items[i]);
	free(l->items);
	free(l);
}

/* ---- guest API results ---- */

void egosf_string_free(char *s)
{
	free(s);
}

static const egosf_exit *exit_at(const egosf_exits *e, int i)
{
	if (e == NULL) {
		set_error("exit list is NULL: invalid argument");
		return NULL;
	}
	if (i < 0 || i >= e->n) {
		set_error("exit index out of range: invalid argument");
		return NULL;
	}
	return &e->items[i];
}

int egosf_exits_count(const egosf_exits *e)
{
	if (e == NULL) {
		set_error("exit list is NULL: invalid argument");
		return -1;
	}
	return e->n;
}

int egosf_exit_clone_id(const egosf_exits *e, int i)
{
	const egosf_exit *x = exit_at(e, i);
	return x ? x->clone_id : -1;
}

const void *egosf_exit_result(const egosf_exits *e, int i, size_t *len)
{
	const egosf_exit *x = exit_at(e, i);
	if (len != NULL)
		*len = x ? x->result_len : 0;
	return x ? x->result : NULL;
}

int egosf_exit_killed(const egosf_exits *e, int i)
{
	const egosf_exit *x = exit_at(e, i);
	return x ? x->killed : -1;
}

const char *egosf_exit_reason(const egosf_exits *e, int i)
{
	const egosf_exit *x = exit_at(e, i);
	return x ? x->reason : NULL;
}

void egosf_exits_free(egosf_exits *e)
{
	if (e == NULL)
		return;
	for (int i = 0; i < e->n; i++) {
		free(e->items[i].reason);
		free(e->items[i].result);
	}
	free(e->items);
	free(e);
}
