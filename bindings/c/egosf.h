/*
 * egosf.h — libegosf, SnowFlock's C library: clone slots (tickets) from the
 * configured allocator backend, and the SnowFlock guest API (sf_clone and
 * friends) for programs inside a SnowFlock VM.
 *
 * Build:   cc prog.c $(pkg-config --cflags --libs libegosf)
 *
 * ABI
 *   Handles (egosf_handle, egosf_ticket, ...) are opaque; only the two
 *   input structs egosf_request_options and egosf_slot are laid out here.
 *   Every function that can fail returns an int: EGOSF_OK (0) or one of the
 *   EGOSF_E* codes below, which never change value. Every object or string
 *   the library returns is freed by its matching egosf_*_free function, and
 *   by nothing else; "const char *" results are owned by their object and
 *   live as long as it does.
 *
 * Errors
 *   egosf_strerror(code) names a code (a static string). egosf_last_error()
 *   returns the message of the last call that failed ON THE CALLING THREAD
 *   (for example "config /etc/x.yaml: open ...: invalid argument"); it is
 *   kept per thread, so threads never see each other's messages. The
 *   returned string belongs to the library and stays valid until the next
 *   libegosf call on the same thread; copy it to keep it. A successful call
 *   does not clear it.
 *
 * Thread safety
 *   Every function may be called from any thread, concurrently. One
 *   egosf_handle may be shared by many threads at once (requests then wait
 *   first come, first served). Tickets, ticket lists and exit lists are
 *   immutable snapshots: any number of threads may read one at once; free
 *   each exactly once, after every thread is done with it. egosf_close must
 *   not run while other calls on the same handle are in flight, and the
 *   handle must not be used after it. The guest calls (sf_*) share one
 *   connection to the in-guest agent per process, opened on first use.
 *
 * Versions
 *   EGOSF_ABI_VERSION changes only on an incompatible change; new functions
 *   and codes may be added without changing it.
 */
#ifndef EGOSF_H
#define EGOSF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EGOSF_ABI_VERSION 1

/* Result codes. Each stands for one error class of the Go library. */
enum {
	EGOSF_OK = 0,
	/* The arguments are wrong (NULL pointer, min > max, a count < 1, a
	 * release of more than is held, a bad configuration). Retrying cannot
	 * help. */
	EGOSF_EINVAL = 1,
	/* Not enough slots are free now (immediate requests), or the pool can
	 * never hold the minimum asked for. */
	EGOSF_ENONE_AVAILABLE = 2,
	/* The timeout passed before the request could be granted. */
	EGOSF_ETIMEOUT = 3,
	/* No ticket has that ID (never granted, released, or expired). */
	EGOSF_EUNKNOWN_TICKET = 4,
	/* The allocator backend cannot be reached or answered nonsense. */
	EGOSF_EBACKEND_DOWN = 5,
	/* Guest API: no such ticket, checkpoint or VM on the SnowFlock host. */
	EGOSF_ENOT_FOUND = 6,
	/* Guest API: this VM may not do that (another VM's ticket, ...). */
	EGOSF_EPERMISSION = 7,
	/* Guest API: the hypervisor failed to checkpoint or start a VM. */
	EGOSF_EVM_FAILED = 8,
	/* Guest API: the SnowFlock host cannot serve now, or the connection to
	 * the in-guest agent was lost. */
	EGOSF_EUNAVAILABLE = 9,
	/* Guest API: this program does not run inside a SnowFlock guest (no
	 * in-guest agent to talk to). */
	EGOSF_ENOT_IN_GUEST = 10,
	/* A failure of no class above (a bug: see egosf_last_error()). */
	EGOSF_EINTERNAL = 11
};

/* Names a result code: "not inside a SnowFlock guest", ... A static string;
 * unknown codes give "unknown libegosf error code". */
const char *egosf_strerror(int code);

/* The message of the calling thread's last failed call ("" if none). Owned
 * by the library; valid until this thread's next libegosf call. */
const char *egosf_last_error(void);

/* ------------------------------------------------------------------ */
/* Slots: handles and tickets                                          */
/* ------------------------------------------------------------------ */

typedef struct egosf_handle egosf_handle;
typedef struct egosf_ticket egosf_ticket;
typedef struct egosf_ticket_list egosf_ticket_list;

/* Opens the allocator backend that a configuration selects. config_path
 * names a YAML file; NULL means the default search ($SNOWFLOCK_CONFIG,
 * /etc/snowflock/snowflock.yaml, else the built-in default: a static pool
 * of this host). On success *out is a handle for egosf_close. */
int egosf_open(const char *config_path, egosf_handle **out);

/* Closes a handle (NULL is a no-op). Tickets stay held: they outlive the
 * process until released or their lease expires. */
int egosf_close(egosf_handle *h);

/* Options of a request. Zero-initialise it ({0} or memset): every zero
 * field means "the default". */
typedef struct egosf_request_options {
	const char *name;     /* label of the ticket (a job name); NULL: none */
	const char *consumer; /* EGO consumer or Slurm partition; NULL: none */
	const char *resreq;   /* backend resource requirement; NULL: none */
	int exclusive;        /* nonzero: hosts no other ticket uses */
	int immediate;        /* nonzero: fail with EGOSF_ENONE_AVAILABLE
	                         instead of waiting */
	int64_t lease_ms;     /* lease without renewal; 0: the backend's
	                         default; else at least 1000 */
	int64_t timeout_ms;   /* how long to wait; 0: until granted; < 0 is
	                         EGOSF_EINVAL */
} egosf_request_options;

/* Requests between min and max slots (1 <= min <= max); opts may be NULL
 * (all defaults). On success *out is the granted ticket, to be freed with
 * egosf_ticket_free (freeing does not release the slots). Blocks until
 * granted, the timeout, or at once with opts->immediate. */
int egosf_request(egosf_handle *h, int min, int max,
                  const egosf_request_options *opts, egosf_ticket **out);

/* Slots to give back: count slots on host (count 0: all of them there). */
typedef struct egosf_slot {
	const char *host;
	int count;
} egosf_slot;

/* Gives back slots of ticket id: all of them when nslots is 0 (slots may
 * then be NULL), else those listed. If remaining is not NULL, *remaining is
 * what is left of the ticket (free it), or NULL when nothing is. A release
 * of more than is held fails with EGOSF_EINVAL and changes nothing. */
int egosf_release(egosf_handle *h, const char *id, const egosf_slot *slots,
                  size_t nslots, egosf_ticket **remaining);

/* Extends ticket id's lease to lease_ms from now (0: the backend's
 * default). If out is not NULL, *out is the renewed ticket (free it). */
int egosf_renew(egosf_handle *h, const char *id, int64_t lease_ms,
                egosf_ticket **out);

/* Looks up ticket id; *out is to be freed with egosf_ticket_free. */
int egosf_get(egosf_handle *h, const char *id, egosf_ticket **out);

/* Lists the tickets held through the backend, oldest first; *out is to be
 * freed with egosf_ticket_list_free. */
int egosf_list(egosf_handle *h, egosf_ticket_list **out);

/* Ticket accessors. A NULL ticket or an index out of range gives NULL, or
 * -1 for numbers, and sets egosf_last_error(); they never crash. */
const char *egosf_ticket_id(const egosf_ticket *t);
const char *egosf_ticket_backend(const egosf_ticket *t);
int egosf_ticket_granted(const egosf_ticket *t);   /* slots in all */
int64_t egosf_ticket_expires(const egosf_ticket *t); /* Unix ms; 0: never */
int egosf_ticket_nhosts(const egosf_ticket *t);
const char *egosf_ticket_host_name(const egosf_ticket *t, int i);
const char *egosf_ticket_host_address(const egosf_ticket *t, int i);
int egosf_ticket_host_count(const egosf_ticket *t, int i);
void egosf_ticket_free(egosf_ticket *t); /* NULL is a no-op */

int egosf_ticket_list_count(const egosf_ticket_list *l); /* -1 if NULL */
/* The i-th ticket; owned by the list (do not free it on its own). */
const egosf_ticket *egosf_ticket_list_at(const egosf_ticket_list *l, int i);
void egosf_ticket_list_free(egosf_ticket_list *l); /* NULL is a no-op */

/* ------------------------------------------------------------------ */
/* The SnowFlock guest API (inside a SnowFlock VM)                     */
/* ------------------------------------------------------------------ */
/* Calls go to the in-guest agent at $SF_GUEST_SOCKET (default
 * /run/sfguest.sock). Outside a SnowFlock guest they fail with
 * EGOSF_ENOT_IN_GUEST. Ticket and checkpoint IDs are strings; those the
 * library returns are freed with egosf_string_free. */

typedef struct egosf_exits egosf_exits;

void egosf_string_free(char *s); /* NULL is a no-op */

/* Asks for n clones (the parent counting as clone 0); m <= n are granted:
 * *granted = m, *ticket = the ticket's ID (egosf_string_free). */
int sf_request_ticket(int n, char **ticket, int *granted);

/* Clones this VM with ticket: *id is 0 in the parent, 1..m-1 in each clone,
 * which resumes inside this call. */
int sf_clone(const char *ticket, int *id);

/* Parent: waits until every clone of ticket has called sf_exit (or died);
 * *exits lists them (egosf_exits_free). The ticket is then gone. */
int sf_join(const char *ticket, egosf_exits **exits);

/* Destroys every clone of ticket at once. */
int sf_kill(const char *ticket);

/* Clone: ends this clone, handing result (len bytes, at most 16 KiB;
 * result may be NULL when len is 0) to the parent's sf_join. */
int sf_exit(const void *result, size_t len);

/* Freezes this VM into an immutable checkpoint: *checkpoint is its ID
 * (egosf_string_free), *id is 0 here and the clone's ID in clones made
 * later by sf_create_clones, which resume inside this call. */
int sf_checkpoint_parent(char **checkpoint, int *id);

/* Starts clones of checkpoint with ticket; *created is how many. */
int sf_create_clones(const char *checkpoint, const char *ticket, int *created);

/* Gives back a ticket that was not used to clone. */
int sf_release_ticket(const char *ticket);

/* Exits returned by sf_join. Accessors give -1 / NULL for a NULL list or an
 * index out of range. */
int egosf_exits_count(const egosf_exits *e);
int egosf_exit_clone_id(const egosf_exits *e, int i);
/* The clone's sf_exit result: *len bytes (not NUL-terminated). */
const void *egosf_exit_result(const egosf_exits *e, int i, size_t *len);
/* 1 if the clone did not call sf_exit (it died, its VM failed). */
int egosf_exit_killed(const egosf_exits *e, int i);
/* Why it was killed ("" otherwise). */
const char *egosf_exit_reason(const egosf_exits *e, int i);
void egosf_exits_free(egosf_exits *e); /* NULL is a no-op */

#ifdef __cplusplus
}
#endif

#endif /* EGOSF_H */
