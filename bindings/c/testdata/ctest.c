/*
 * ctest.c — libegosf's C test: built with gcc against the INSTALLED
 * egosf.h and pkg-config file, run under valgrind by TestC (c_test.go).
 *
 * Usage: ctest CONFIG  — CONFIG is a static pool of 4 slots: h1 and h2 with
 * 2 slots each, holding nothing. $SF_GUEST_SOCKET names no agent.
 * Prints one line per failed check and exits 1 if any failed.
 */
#include <egosf.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond)                                                              \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", \
			        __FILE__, __LINE__, #cond, egosf_last_error());  \
			__atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);      \
		}                                                                \
	} while (0)

#define CHECK_RC(call, want)                                                     \
	do {                                                                     \
		int rc_ = (call);                                                \
		if (rc_ != (want)) {                                             \
			fprintf(stderr, "%s:%d: %s = %d (%s), want %d (%s); last error: %s\n", \
			        __FILE__, __LINE__, #call, rc_, egosf_strerror(rc_), \
			        (want), egosf_strerror(want), egosf_last_error()); \
			__atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);      \
		}                                                                \
	} while (0)

static const char *config;

static void test_strerror(void)
{
	/* Every code has its own name; unknown ones a generic one. */
	for (int a = EGOSF_OK; a <= EGOSF_EINTERNAL; a++) {
		CHECK(egosf_strerror(a) != NULL && egosf_strerror(a)[0] != '\0');
		for (int b = a + 1; b <= EGOSF_EINTERNAL; b++)
			CHECK(strcmp(egosf_strerror(a), egosf_strerror(b)) != 0);
	}
	CHECK(strcmp(egosf_strerror(9999), "unknown libegosf error code") == 0);
	CHECK(strcmp(egosf_strerror(EGOSF_ENOT_IN_GUEST), "not inside a SnowFlock guest") == 0);
}

static void test_open_errors(void)
{
	egosf_handle *h = (egosf_handle *)1;
	CHECK_RC(egosf_open("/nonexistent/snowflock.yaml", &h), EGOSF_EINVAL);
	CHECK(h == NULL);
	CHECK(strstr(egosf_last_error(), "/nonexistent/snowflock.yaml") != NULL);
	CHECK_RC(egosf_open(config, NULL), EGOSF_EINVAL);
	CHECK_RC(egosf_close(NULL), EGOSF_OK);
}

static void test_lifecycle(egosf_handle *h)
{
	egosf_request_options o;
	memset(&o, 0, sizeof o);
	o.name = "ctest";
	o.immediate = 1;
	o.lease_ms = 60000;

	egosf_ticket *t = NULL;
	CHECK_RC(egosf_request(h, 3, 3, &o, &t), EGOSF_OK);
	if (t == NULL)
		return;
	CHECK(egosf_ticket_granted(t) == 3);
	CHECK(strncmp(egosf_ticket_id(t), "static-", 7) == 0);
	CHECK(strcmp(egosf_ticket_backend(t), "static") == 0);
	CHECK(egosf_ticket_expires(t) > 0);
	CHECK(egosf_ticket_nhosts(t) == 2);
	CHECK(strcmp(egosf_ticket_host_name(t, 0), "h1") == 0);
	CHECK(strcmp(egosf_ticket_host_address(t, 0), "10.0.0.1") == 0);
	CHECK(egosf_ticket_host_count(t, 0) == 2);
	CHECK(strcmp(egosf_ticket_host_name(t, 1), "h2") == 0);
	CHECK(egosf_ticket_host_count(t, 1) == 1);
	/* Out of range: NULL / -1 and a message, never a crash. */
	CHECK(egosf_ticket_host_name(t, 2) == NULL);
	CHECK(strstr(egosf_last_error(), "out of range") != NULL);
	CHECK(egosf_ticket_host_address(t, -1) == NULL);
	CHECK(egosf_ticket_host_count(t, 99) == -1);

	/* More than is left: none available at once. */
	egosf_ticket *t2 = (egosf_ticket *)1;
	CHECK_RC(egosf_request(h, 2, 4, &o, &t2), EGOSF_ENONE_AVAILABLE);
	CHECK(t2 == NULL);
	/* Waiting with a timeout: the deadline passes. */
	o.immediate = 0;
	o.timeout_ms = 200;
	CHECK_RC(egosf_request(h, 2, 2, &o, &t2), EGOSF_ETIMEOUT);
	o.timeout_ms = 0;

	egosf_ticket_list *l = NULL;
	CHECK_RC(egosf_list(h, &l), EGOSF_OK);
	CHECK(egosf_ticket_list_count(l) == 1);
	CHECK(strcmp(egosf_ticket_id(egosf_ticket_list_at(l, 0)), egosf_ticket_id(t)) == 0);
	CHECK(egosf_ticket_list_at(l, 1) == NULL);
	egosf_ticket_list_free(l);

	egosf_ticket *g = NULL;
	CHECK_RC(egosf_get(h, egosf_ticket_id(t), &g), EGOSF_OK);
	CHECK(egosf_ticket_granted(g) == 3);
	egosf_ticket_free(g);

	egosf_ticket *r = NULL;
	CHECK_RC(egosf_renew(h, egosf_ticket_id(t), 120000, &r), EGOSF_OK);
	CHECK(r != NULL && egosf_ticket_expires(r) > egosf_ticket_expires(t));
	egosf_ticket_free(r);
	CHECK_RC(egosf_renew(h, egosf_ticket_id(t), 0, NULL), EGOSF_OK);
	CHECK_RC(egosf_renew(h, egosf_ticket_id(t), 10, NULL), EGOSF_EINVAL); /* < 1 s */

	/* Over-release changes nothing. */
	egosf_slot too_many = {"h1", 3};
	CHECK_RC(egosf_release(h, egosf_ticket_id(t), &too_many, 1, NULL), EGOSF_EINVAL);
	/* Give back one slot on h1, then the rest. */
	egosf_slot one = {"h1", 1};
	egosf_ticket *left = NULL;
	CHECK_RC(egosf_release(h, egosf_ticket_id(t), &one, 1, &left), EGOSF_OK);
	CHECK(left != NULL && egosf_ticket_granted(left) == 2);
	egosf_ticket_free(left);
	left = (egosf_ticket *)1;
	CHECK_RC(egosf_release(h, egosf_ticket_id(t), NULL, 0, &left), EGOSF_OK);
	CHECK(left == NULL);

	/* Gone now. */
	CHECK_RC(egosf_get(h, egosf_ticket_id(t), &g), EGOSF_EUNKNOWN_TICKET);
	CHECK(g == NULL);
	CHECK_RC(egosf_release(h, egosf_ticket_id(t), NULL, 0, NULL), EGOSF_EUNKNOWN_TICKET);
	CHECK_RC(egosf_renew(h, egosf_ticket_id(t), 0, NULL), EGOSF_EUNKNOWN_TICKET);
	egosf_ticket_free(t);

	/* Default options (opts NULL) wait for and get the whole pool. */
	CHECK_RC(egosf_request(h, 4, 4, NULL, &t), EGOSF_OK);
	CHECK(egosf_ticket_granted(t) == 4);
	CHECK_RC(egosf_release(h, egosf_ticket_id(t), NULL, 0, NULL), EGOSF_OK);
	egosf_ticket_free(t);
}

static void test_bad_arguments(egosf_handle *h)
{
	egosf_ticket *t = (egosf_ticket *)1;
	egosf_request_options o;
	memset(&o, 0, sizeof o);
	o.immediate = 1;

	CHECK_RC(egosf_request(h, 3, 2, &o, &t), EGOSF_EINVAL); /* min > max */
	CHECK(t == NULL);
	CHECK(strstr(egosf_last_error(), "minimum 3 is larger than maximum 2") != NULL);
	CHECK_RC(egosf_request(h, 0, 2, &o, &t), EGOSF_EINVAL);
	CHECK_RC(egosf_request(h, -1, -1, &o, &t), EGOSF_EINVAL);
	CHECK_RC(egosf_request(h, 5, 5, &o, &t), EGOSF_ENONE_AVAILABLE); /* never fits */
	CHECK_RC(egosf_request(NULL, 1, 1, &o, &t), EGOSF_EINVAL);
	CHECK_RC(egosf_request(h, 1, 1, &o, NULL), EGOSF_EINVAL);
	o.timeout_ms = -1;
	CHECK_RC(egosf_request(h, 1, 1, &o, &t), EGOSF_EINVAL);
	o.timeout_ms = 0;
	o.lease_ms = 500;
	CHECK_RC(egosf_request(h, 1, 1, &o, &t), EGOSF_EINVAL);
	o.lease_ms = -5;
	CHECK_RC(egosf_request(h, 1, 1, &o, &t), EGOSF_EINVAL);

	CHECK_RC(egosf_get(h, NULL, &t), EGOSF_EINVAL);
	CHECK_RC(egosf_get(h, "", &t), EGOSF_EINVAL);
	CHECK_RC(egosf_get(h, "static-nosuch", NULL), EGOSF_EINVAL);
	CHECK_RC(egosf_get(NULL, "static-nosuch", &t), EGOSF_EINVAL);
	CHECK_RC(egosf_get(h, "static-nosuch", &t), EGOSF_EUNKNOWN_TICKET);
	CHECK(strstr(egosf_last_error(), "static-nosuch") != NULL);
	CHECK_RC(egosf_release(h, NULL, NULL, 0, NULL), EGOSF_EINVAL);
	CHECK_RC(egosf_release(h, "static-nosuch", NULL, 0, NULL), EGOSF_EUNKNOWN_TICKET);
	CHECK_RC(egosf_release(h, "static-nosuch", NULL, 2, NULL), EGOSF_EINVAL);
	egosf_slot nohost = {NULL, 1};
	CHECK_RC(egosf_release(h, "static-nosuch", &nohost, 1, NULL), EGOSF_EINVAL);
	egosf_slot negative = {"h1", -1};
	CHECK_RC(egosf_release(h, "static-nosuch", &negative, 1, NULL), EGOSF_EINVAL);
	CHECK_RC(egosf_renew(h, NULL, 0, NULL), EGOSF_EINVAL);
	CHECK_RC(egosf_renew(h, "static-nosuch", -1, NULL), EGOSF_EINVAL);
	CHECK_RC(egosf_list(h, NULL), EGOSF_EINVAL);
	CHECK_RC(egosf_list(NULL, NULL), EGOSF_EINVAL);

	/* Accessors and destructors accept NULL. */
	CHECK(egosf_ticket_id(NULL) == NULL);
	CHECK(egosf_ticket_backend(NULL) == NULL);
	CHECK(egosf_ticket_granted(NULL) == -1);
	CHECK(egosf_ticket_expires(NULL) == -1);
	CHECK(egosf_ticket_nhosts(NULL) == -1);
	CHECK(egosf_ticket_host_name(NULL, 0) == NULL);
	CHECK(egosf_ticket_list_count(NULL) == -1);
	CHECK(egosf_ticket_list_at(NULL, 0) == NULL);
	CHECK(egosf_exits_count(NULL) == -1);
	CHECK(egosf_exit_clone_id(NULL, 0) == -1);
	size_t len = 7;
	CHECK(egosf_exit_result(NULL, 0, &len) == NULL && len == 0);
	CHECK(egosf_exit_killed(NULL, 0) == -1);
	CHECK(egosf_exit_reason(NULL, 0) == NULL);
	egosf_ticket_free(NULL);
	egosf_ticket_list_free(NULL);
	egosf_exits_free(NULL);
	egosf_string_free(NULL);
}

/* Outside a guest every sf_* call says so; bad arguments are caught
 * first. */
static void test_guest_outside(void)
{
	char *ticket = (char *)1, *cp = (char *)1;
	int granted = 7, id = 7, created = 7;
	egosf_exits *exits = (egosf_exits *)1;

	CHECK_RC(sf_request_ticket(4, &ticket, &granted), EGOSF_ENOT_IN_GUEST);
	CHECK(ticket == NULL && granted == 0);
	CHECK(strstr(egosf_last_error(), "not inside a SnowFlock guest") != NULL);
	CHECK_RC(sf_clone("t-1", &id), EGOSF_ENOT_IN_GUEST);
	CHECK_RC(sf_join("t-1", &exits), EGOSF_ENOT_IN_GUEST);
	CHECK(exits == NULL);
	CHECK_RC(sf_kill("t-1"), EGOSF_ENOT_IN_GUEST);
	CHECK_RC(sf_exit("done", 4), EGOSF_ENOT_IN_GUEST);
	CHECK_RC(sf_exit(NULL, 0), EGOSF_ENOT_IN_GUEST);
	CHECK_RC(sf_checkpoint_parent(&cp, &id), EGOSF_ENOT_IN_GUEST);
	CHECK(cp == NULL);
	CHECK_RC(sf_create_clones("cp-1", "t-1", &created), EGOSF_ENOT_IN_GUEST);
	CHECK_RC(sf_release_ticket("t-1"), EGOSF_ENOT_IN_GUEST);

	CHECK_RC(sf_request_ticket(0, &ticket, &granted), EGOSF_EINVAL);
	CHECK_RC(sf_request_ticket(2, NULL, &granted), EGOSF_EINVAL);
	CHECK_RC(sf_clone(NULL, &id), EGOSF_EINVAL);
	CHECK_RC(sf_clone("t-1", NULL), EGOSF_EINVAL);
	CHECK_RC(sf_join(NULL, &exits), EGOSF_EINVAL);
	CHECK_RC(sf_join("t-1", NULL), EGOSF_EINVAL);
	CHECK_RC(sf_kill(NULL), EGOSF_EINVAL);
	CHECK_RC(sf_exit(NULL, 5), EGOSF_EINVAL);
	static char big[16 * 1024 + 1];
	CHECK_RC(sf_exit(big, sizeof big), EGOSF_EINVAL);
	CHECK_RC(sf_checkpoint_parent(NULL, &id), EGOSF_EINVAL);
	CHECK_RC(sf_create_clones(NULL, "t-1", &created), EGOSF_EINVAL);
	CHECK_RC(sf_create_clones("cp-1", "t-1", NULL), EGOSF_EINVAL);
	CHECK_RC(sf_release_ticket(""), EGOSF_EINVAL);
}

/* Threads share one handle: each requests and releases slots, waiting its
 * turn, and checks that its last error is its own. */
#define THREADS 6
#define ROUNDS 8

struct worker {
	egosf_handle *h;
	int n;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	char bad[64];
	snprintf(bad, sizeof bad, "static-thread-%d", w->n);
	for (int i = 0; i < ROUNDS; i++) {
		egosf_request_options o;
		memset(&o, 0, sizeof o);
		o.timeout_ms = 60000;
		egosf_ticket *t = NULL;
		CHECK_RC(egosf_request(w->h, 1, 2, &o, &t), EGOSF_OK);
		if (t == NULL)
			continue;
		int granted = egosf_ticket_granted(t);
		CHECK(granted >= 1 && granted <= 2);
		/* An error of this thread's own, while others fail and succeed. */
		egosf_ticket *g = NULL;
		CHECK_RC(egosf_get(w->h, bad, &g), EGOSF_EUNKNOWN_TICKET);
		CHECK(strstr(egosf_last_error(), bad) != NULL);
		CHECK_RC(egosf_release(w->h, egosf_ticket_id(t), NULL, 0, NULL), EGOSF_OK);
		CHECK(strstr(egosf_last_error(), bad) != NULL); /* success keeps it */
		egosf_ticket_free(t);
	}
	return NULL;
}

static void test_threads(egosf_handle *h)
{
	pthread_t tid[THREADS];
	struct worker w[THREADS];
	for (int i = 0; i < THREADS; i++) {
		w[i].h = h;
		w[i].n = i;
		CHECK(pthread_create(&tid[i], NULL, work, &w[i]) == 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(tid[i], NULL);
	egosf_ticket_list *l = NULL;
	CHECK_RC(egosf_list(h, &l), EGOSF_OK);
	CHECK(egosf_ticket_list_count(l) == 0); /* everything given back */
	egosf_ticket_list_free(l);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: ctest CONFIG\n");
		return 2;
	}
	config = argv[1];
	test_strerror();
	test_open_errors();

	egosf_handle *h = NULL;
	CHECK_RC(egosf_open(config, &h), EGOSF_OK);
	if (h == NULL)
		return 1;
	test_lifecycle(h);
	test_bad_arguments(h);
	test_guest_outside();
	test_threads(h);
	CHECK_RC(egosf_close(h), EGOSF_OK);

	if (failures) {
		fprintf(stderr, "ctest: %d check(s) failed\n", failures);
		return 1;
	}
	printf("ctest: all checks passed\n");
	return 0;
}
