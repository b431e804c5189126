/*
 * egosf_impl.h — libegosf's private layout of the opaque types of egosf.h,
 * shared by the Go exports (their cgo preamble) and objects.c. Not
 * installed. It must not declare the functions of egosf.h: cgo declares the
 * Go exports itself (without const), which would conflict.
 */
#ifndef EGOSF_IMPL_H
#define EGOSF_IMPL_H

#include <stddef.h>
#include <stdint.h>

typedef struct egosf_handle {
	uint64_t id; /* key of the Go client in the handle table */
} egosf_handle;

typedef struct egosf_host {
	char *name;
	char *address;
	int count;
} egosf_host;

typedef struct egosf_ticket {
	char *id;
	char *backend;
	int granted;
	int64_t expires_ms;
	int nhosts;
	egosf_host *hosts;
} egosf_ticket;

typedef struct egosf_ticket_list {
	int n;
	egosf_ticket **items;
} egosf_ticket_list;

typedef struct egosf_exit {
	int clone_id;
	int killed;
	char *reason;
	void *result;
	size_t result_len;
} egosf_exit;

typedef struct egosf_exits {
	int n;
	egosf_exit *items;
} egosf_exits;

/* Copies of the two public input structs of egosf.h (the Go side cannot
 * include egosf.h). objects.c, which sees both, checks that their layouts
 * are the same, field by field. */
struct egosf__request_options {
	const char *name;
	const char *consumer;
	const char *resreq;
	int exclusive;
	int immediate;
	int64_t lease_ms;
	int64_t timeout_ms;
};

struct egosf__slot {
	const char *host;
	int count;
};

#ifndef EGOSF_H
typedef struct egosf__request_options egosf_request_options;
typedef struct egosf__slot egosf_slot;
#endif

/* Constructors for the Go side; the egosf_*_free functions free them.
 * Strings passed in are malloc'd (C.CString) and owned by the object. */
egosf_ticket *egosf__ticket_new(char *id, char *backend, int granted, int64_t expires_ms, int nhosts);
void egosf__ticket_set_host(egosf_ticket *t, int i, char *name, char *address, int count);
egosf_ticket_list *egosf__ticket_list_new(int n);
void egosf__ticket_list_set(egosf_ticket_list *l, int i, egosf_ticket *t);
egosf_exits *egosf__exits_new(int n);
void egosf__exits_set(egosf_exits *e, int i, int clone_id, int killed, char *reason, void *result, size_t len);
const struct egosf__slot *egosf__slot_at(const struct egosf__slot *slots, size_t i);

/* Sets the calling thread's last error message (copied, truncated). */
void egosf__set_error(const char *msg, size_t len);

#endif /* EGOSF_IMPL_H */
